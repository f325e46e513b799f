//! Balancer-wide statistics (per-backend ones live on each backend). Relaxed atomics: each value is
//! an independent counter read only for reporting.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::upstream::{Histogram, METHOD_CLASSES, STATUS_CLASSES};

#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Attempts sent again to another backend.
    pub retries: AtomicU64,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: AtomicU64,
    /// Responses alb made itself (no backend answer), by method and status class.
    local: [[AtomicU64; STATUS_CLASSES.len()]; METHOD_CLASSES.len()],
    /// From a request's arrival to the end of its response.
    pub request_duration: Histogram,
    pub client_connections: AtomicI64,
    pub bytes_to_clients: AtomicU64,
    /// Upgraded connections open now (see `proxy::tunnel`; kept by its `OpenTunnel` guard).
    pub tunnels_open: AtomicI64,
    /// Bytes carried by tunnels, each way.
    pub tunnel_bytes_to_backends: AtomicU64,
    pub tunnel_bytes_to_clients: AtomicU64,
    /// Requests no route matched, answered 404 (no pool `default`).
    pub no_route: AtomicU64,
    /// Requests refused with 429 by a route's rate limit.
    pub rate_limited: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Client connections and requests by the HTTP version they spoke (label `protocol`).
    pub h1_connections: AtomicU64,
    pub h1_requests: AtomicU64,
    pub h2_connections: AtomicU64,
    pub h2_requests: AtomicU64,
    /// HTTP/2 connections closed with ENHANCE_YOUR_CALM for resetting streams too fast.
    pub h2_reset_floods: AtomicU64,
    /// HTTP/2 connections h2's own guards closed with ENHANCE_YOUR_CALM (see `downstream::h2`).
    pub h2_abuse_closed: AtomicU64,
    /// Spans exported, dropped (queue full) and lost (export failed); kept across reloads.
    pub trace: std::sync::Arc<crate::trace::TraceStats>,
    /// Whether the `[shared_state]` store answers, its round trips and the decisions made
    /// locally without it; kept across reloads.
    pub shared_state: std::sync::Arc<crate::shared_state::SharedStateStats>,
    /// Connections closed before their PROXY protocol header was taken, by [`HeaderRefusal`].
    proxy_header_refused: [AtomicU64; HeaderRefusal::ALL.len()],
    /// TLS handshakes that failed, by [`TlsFailure`].
    tls_failures: [AtomicU64; TlsFailure::ALL.len()],
}

/// Why a TLS handshake failed (label `reason` of `alb_tls_handshake_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// No complete handshake within `timeouts.client_header`.
    Timeout,
    /// The client closed (or reset) before the handshake was done.
    Closed,
    /// The first bytes are not a TLS record: plain HTTP sent to the TLS port, most often.
    NotTls,
    /// The SNI name matches no certificate.
    UnknownName,
    /// The client offers only protocol versions alb refuses (SSL 3, TLS 1.0, 1.1).
    ProtocolVersion,
    /// Nothing in common besides the version: cipher suites, groups, signature schemes, ALPN.
    Incompatible,
    /// A malformed or misbehaving handshake.
    BadHello,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 7] = [
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::NotTls,
        TlsFailure::UnknownName,
        TlsFailure::ProtocolVersion,
        TlsFailure::Incompatible,
        TlsFailure::BadHello,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::NotTls => "not_tls",
            TlsFailure::UnknownName => "unknown_sni",
            TlsFailure::ProtocolVersion => "protocol_version",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::BadHello => "bad_handshake",
        }
    }
}

/// Why a connection was closed for want of a good PROXY protocol header (label `reason` of
/// `alb_proxy_protocol_rejected_total`): each points at a different fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRefusal {
    /// From a source outside `proxy_protocol.trusted`: a client going around the balancer, or
    /// a balancer missing from the list.
    Untrusted,
    /// A trusted source sent something else first: the balancer does not send the header.
    Missing,
    /// A header that breaks the specification.
    Malformed,
    /// No complete header within `timeouts.client_header`.
    Timeout,
    /// The connection ended (or failed) before a complete header.
    Closed,
}

impl HeaderRefusal {
    pub const ALL: [HeaderRefusal; 5] = [
        HeaderRefusal::Untrusted,
        HeaderRefusal::Missing,
        HeaderRefusal::Malformed,
        HeaderRefusal::Timeout,
        HeaderRefusal::Closed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HeaderRefusal::Untrusted => "untrusted",
            HeaderRefusal::Missing => "missing",
            HeaderRefusal::Malformed => "malformed",
            HeaderRefusal::Timeout => "timeout",
            HeaderRefusal::Closed => "closed",
        }
    }
}

impl ProxyStats {
    pub fn record_local(&self, method: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.local[method.min(METHOD_CLASSES.len() - 1)][class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn local(&self, method: usize, class: usize) -> u64 {
        self.local[method][class].load(Ordering::Relaxed)
    }

    pub fn record_header_refused(&self, reason: HeaderRefusal) {
        self.proxy_header_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for want of a good PROXY protocol header, for `reason`.
    pub fn header_refused(&self, reason: HeaderRefusal) -> u64 {
        self.proxy_header_refused[reason as usize].load(Ordering::Relaxed)
    }

    pub fn record_tls_failure(&self, reason: TlsFailure) {
        self.tls_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// TLS handshakes failed for `reason`.
    pub fn tls_failures(&self, reason: TlsFailure) -> u64 {
        self.tls_failures[reason as usize].load(Ordering::Relaxed)
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}
