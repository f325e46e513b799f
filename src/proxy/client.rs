//! Who a request came from, as the connection it arrived on says: the peer's address, the
//! listener (the scheme), and for TLS what the handshake settled (the certificate's names, a
//! verified client certificate). Computed once per connection; the request's own fields never
//! change it unless the peer is a trusted proxy (see `header_policy`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

/// The scheme a client used to reach alb: what X-Forwarded-Proto tells the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    /// The client came over the TLS listener.
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub(super) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The client connection a request arrived on, computed once per connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    /// The client's IP as an X-Forwarded-For element.
    pub ip_header: HeaderValue,
    /// Which listener it came to: X-Forwarded-Proto, and whether `tls.redirect_http` applies.
    pub scheme: Scheme,
    /// What the TLS handshake settled, for a client of the TLS listener.
    pub tls: Option<Arc<TlsSession>>,
}

/// What a TLS handshake settled that requests on the connection are held to.
#[derive(Debug, Clone, Default)]
pub struct TlsSession {
    /// The DNS names (SANs, `*.example.com` wildcards kept as written) of the certificate the
    /// handshake chose: a request whose Host none covers gets 421 (RFC 9110 §15.5.20).
    pub certificate_names: Arc<[String]>,
    /// The subject of the client's certificate, when one was presented and verified (mTLS).
    pub client_subject: Option<Arc<str>>,
}

impl ClientInfo {
    pub fn new(addr: SocketAddr) -> ClientInfo {
        let ip = addr.ip().to_string();
        let ip_header = HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown"));
        ClientInfo {
            addr,
            ip_header,
            scheme: Scheme::Http,
            tls: None,
        }
    }

    /// The same client, come over `scheme`.
    pub fn over(self, scheme: Scheme) -> ClientInfo {
        ClientInfo { scheme, ..self }
    }

    /// The same client, over a TLS session that settled `tls`.
    pub fn with_tls(self, tls: Arc<TlsSession>) -> ClientInfo {
        ClientInfo {
            scheme: Scheme::Https,
            tls: Some(tls),
            ..self
        }
    }
}
