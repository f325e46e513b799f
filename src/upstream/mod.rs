//! Backends: their identity, live state (health, in-flight requests), the keep-alive connections
//! alb holds to each of them, and the session of one request with one of them ([`exchange`]).
//!
//! All per-backend state is atomics so that picking a backend and counting requests never takes a
//! lock. `Relaxed` ordering is enough everywhere here: each counter is an independent statistic read
//! for balancing decisions, and no other memory is published through it.

mod conn;
mod h1_session;
mod h2_liveness;
mod h2_session;
mod limit;
mod outbound;
mod pool;
mod request_body;
mod session;
mod stats;
mod stream;
mod upload;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::config::{BackendAddr, BackendSpec, BackendTls};

pub use conn::{ConnectError, UpstreamConn};
pub use h2_session::H2Connection;
pub use limit::{ConnectionLimit, QueueError};
pub use outbound::{AddedFields, Outbound};
pub use pool::ConnectionPool;
pub use request_body::{BodyError, BodyLimits, IncomingBody, IncomingError, RequestBody, Streamed};
pub use session::{Answer, Progress, SessionError, SessionRequest, Unanswered};
pub use stats::{
    BackendStats, Histogram, LATENCY_BUCKETS, METHOD_CLASSES, STATUS_CLASSES, method_class,
};
pub use stream::UpstreamStream;
pub use upload::{Upload, UploadError};

/// What an operator asked of a backend through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    /// In rotation (if healthy).
    Enabled = 0,
    /// No new requests; in-flight ones finish; health checks go on.
    Draining = 1,
    /// No new requests, idle connections closed.
    Disabled = 2,
}

impl AdminState {
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

/// One attempt on `backend`: sends the request in the backend's protocol and waits for the
/// response head.
pub async fn exchange(
    backend: &Backend,
    request: SessionRequest<'_>,
    body: RequestBody,
    timeouts: &crate::config::Timeouts,
) -> Result<Answer, Unanswered> {
    if backend.is_http2() {
        // Boxed: the rarer protocol's larger state does not weigh on every HTTP/1.1 request.
        return Box::pin(h2_session::exchange_h2(backend, request, body, timeouts))
            .await
            .map(Answer::Http2);
    }
    h1_session::exchange_h1(backend, request, body, timeouts).await
}

/// Milliseconds since the first call: a clock that fits in an atomic.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] at an instant already read (saves a clock read where the caller has one).
pub fn ms_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_millis() as u64
}

/// One backend server and everything alb knows about it right now.
///
/// Split in two by who reads what: the fields here are the ones every pick reads (availability,
/// load, weight, recent latency), small enough to share one cache line, so that sampling among
/// thousands of backends touches one line per backend looked at. Everything else lives behind
/// `cold`, read per request or per probe only once this backend was chosen. Building a pool's
/// backends before putting any of them into its `Arc` keeps those small blocks next to each other
/// (see `Snapshot::new`).
#[derive(Debug)]
pub struct Backend {
    in_flight: AtomicU64,
    /// Picks of this backend that a tie on load decided: the tie-breaker of weighted
    /// least-connections and least-time.
    picks: AtomicU64,
    /// Exponentially weighted recent latency in microseconds (least time's cost, the dashboard and
    /// the API); here rather than in [`BackendStats`] because least time reads it on every pick.
    recent_latency_micros: AtomicU64,
    weight: u32,
    /// Verdict of the active health checks.
    healthy: AtomicBool,
    /// Taken out by passive health (failures on live traffic) until the checker lets it back.
    ejected: AtomicBool,
    /// [`AdminState`] as its discriminant.
    admin: AtomicU8,
    cold: Box<Cold>,
}

/// The part of a [`Backend`] that selection never reads.
#[derive(Debug)]
struct Cold {
    url: String,
    /// The DNS name this address was found through, if any.
    dns_name: Option<String>,
    zone: Option<String>,
    backup: bool,
    /// Drained because discovery says it is terminating (not by an operator): undone when
    /// discovery puts it back in rotation.
    terminating: AtomicBool,
    addr: BackendAddr,
    /// For an `https://` backend: its TLS client and the name its certificate must carry.
    tls: Option<BackendTls>,
    host_header: HeaderValue,
    /// Last probe: passed, and why not.
    last_probe: std::sync::Mutex<Option<(bool, String)>>,
    stats: BackendStats,
    ejected_until_ms: AtomicU64,
    /// How many times in a row it was ejected: each ejection lasts one base time longer.
    ejections: AtomicU32,
    /// Consecutive failed requests on live traffic.
    failures: AtomicU32,
    /// When it last came back into rotation (for slow start); 0 = has been in from the start.
    back_since_ms: AtomicU64,
    /// Woken by the proxy when real traffic failed to reach this backend, so that the health
    /// checker probes it now instead of at the next interval.
    recheck: Notify,
    /// Gone from the configuration (a reload, a runtime removal, discovery): what outlives a
    /// request on it (a tunnel) is told through `retire`.
    retired: AtomicBool,
    retire: Notify,
    pool: ConnectionPool,
    http2: bool,
    h2: H2Connection,
    limit: Option<ConnectionLimit>,
}

impl Backend {
    pub fn new(spec: &BackendSpec) -> Backend {
        Backend::with_queue(spec, 0)
    }

    /// A backend whose `max_connections` (if any) lets up to `queue` requests wait.
    pub fn with_queue(spec: &BackendSpec, queue: usize) -> Backend {
        Backend {
            in_flight: AtomicU64::new(0),
            picks: AtomicU64::new(0),
            recent_latency_micros: AtomicU64::new(0),
            weight: spec.weight.max(1),
            healthy: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            admin: AtomicU8::new(AdminState::Enabled as u8),
            cold: Box::new(Cold {
                url: spec.url.clone(),
                dns_name: spec.dns_name.clone(),
                zone: spec.zone.clone(),
                backup: spec.backup,
                terminating: AtomicBool::new(false),
                addr: spec.addr.clone(),
                tls: spec.tls.clone(),
                host_header: HeaderValue::from_str(&spec.authority)
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                last_probe: std::sync::Mutex::new(None),
                stats: BackendStats::default(),
                ejected_until_ms: AtomicU64::new(0),
                ejections: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                back_since_ms: AtomicU64::new(0),
                recheck: Notify::new(),
                retired: AtomicBool::new(false),
                retire: Notify::new(),
                pool: ConnectionPool::default(),
                http2: spec.http2,
                h2: H2Connection::default(),
                limit: spec
                    .max_connections
                    .map(|max| ConnectionLimit::new(max, queue)),
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.cold.url
    }

    /// How logs name it: the URL, and the DNS name it was found through if any.
    pub fn label(&self) -> String {
        match &self.cold.dns_name {
            Some(name) => format!("{} ({name})", self.cold.url),
            None => self.cold.url.clone(),
        }
    }

    /// `name:port` for an address found by DNS discovery.
    pub fn dns_name(&self) -> Option<&str> {
        self.cold.dns_name.as_deref()
    }

    /// The zone it runs in, if known.
    pub fn zone(&self) -> Option<&str> {
        self.cold.zone.as_deref()
    }

    /// Picked only when nothing else in its pool is left.
    pub fn is_backup(&self) -> bool {
        self.cold.backup
    }

    pub fn addr(&self) -> &BackendAddr {
        &self.cold.addr
    }

    /// `host:port`, the Host header for requests that came without one and for health checks.
    pub fn tls(&self) -> Option<&BackendTls> {
        self.cold.tls.as_ref()
    }

    /// Spoken to in HTTP/2 (`h2c://`, or `https://` with `upstream_tls.http2`).
    pub fn is_http2(&self) -> bool {
        self.cold.http2
    }

    /// The HTTP/2 connection to this backend (unused for HTTP/1.1 backends).
    pub(crate) fn h2(&self) -> &H2Connection {
        &self.cold.h2
    }

    pub fn host_header(&self) -> &HeaderValue {
        &self.cold.host_header
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The configured `max_connections`, if any.
    pub fn max_connections(&self) -> Option<u32> {
        self.cold.limit.as_ref().map(ConnectionLimit::max)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health flag and returns the previous value.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            self.cold
                .back_since_ms
                .store(now_ms().max(1), Ordering::Relaxed);
        }
        was
    }

    /// Whether new requests may go here: healthy by the active checks, not ejected, and not
    /// drained or disabled by an operator.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.ejected.load(Ordering::Relaxed)
            && self.admin.load(Ordering::Relaxed) == AdminState::Enabled as u8
    }

    pub fn admin_state(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }

    /// Drains it while discovery says it is terminating, and takes it back when discovery puts
    /// it in rotation again; a drain or disable by an operator is left as it is.
    pub fn follow_discovery(&self, terminating: bool) {
        if terminating {
            if self.admin_state() == AdminState::Enabled {
                self.set_admin_state(AdminState::Draining);
                self.cold.terminating.store(true, Ordering::Relaxed);
            }
        } else if self.cold.terminating.swap(false, Ordering::Relaxed)
            && self.admin_state() == AdminState::Draining
        {
            self.set_admin_state(AdminState::Enabled);
        }
    }

    pub fn set_admin_state(&self, state: AdminState) {
        self.admin.store(state as u8, Ordering::Relaxed);
        if state == AdminState::Disabled {
            self.cold.pool.clear();
        }
    }

    pub fn stats(&self) -> &BackendStats {
        &self.cold.stats
    }

    /// Counts an answered request in the statistics and folds its latency into the recent one.
    pub fn record_response(&self, method: usize, status: u16, latency: Duration) {
        self.cold.stats.record_response(method, status, latency);
        // EWMA with weight 1/8, racy by design: a lost update only delays the average a little.
        let sample = latency.as_micros() as u64;
        let old = self.recent_latency_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.recent_latency_micros.store(new, Ordering::Relaxed);
    }

    /// Exponentially weighted recent time to response headers; zero before the first response.
    #[inline]
    pub fn recent_latency(&self) -> Duration {
        Duration::from_micros(self.recent_latency_micros.load(Ordering::Relaxed))
    }

    pub fn record_probe(&self, passed: bool, detail: String) {
        *self
            .cold
            .last_probe
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((passed, detail));
    }

    /// The last probe's verdict and detail, if any probe ran yet.
    pub fn last_probe(&self) -> Option<(bool, String)> {
        self.cold
            .last_probe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Ejects the backend until `now + duration`; false if it already was.
    pub(crate) fn eject(&self, base: Duration, max: Duration) -> Option<Duration> {
        if self.ejected.swap(true, Ordering::Relaxed) {
            return None;
        }
        let n = self
            .cold
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        self.cold.stats.ejections.fetch_add(1, Ordering::Relaxed);
        let duration = base.saturating_mul(n).min(max);
        self.cold
            .ejected_until_ms
            .store(now_ms() + duration.as_millis() as u64, Ordering::Relaxed);
        Some(duration)
    }

    /// Whether an ejection is over by the clock (the checker still has to see a passing probe).
    pub(crate) fn ejection_elapsed(&self) -> bool {
        now_ms() >= self.cold.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Time left in the current ejection.
    pub(crate) fn ejection_left(&self) -> Duration {
        let until = self.cold.ejected_until_ms.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(now_ms()))
    }

    /// Ends an ejection; false if it was not ejected.
    pub(crate) fn readmit(&self) -> bool {
        let was = self.ejected.swap(false, Ordering::Relaxed);
        if was {
            self.cold.failures.store(0, Ordering::Relaxed);
            self.cold
                .back_since_ms
                .store(now_ms().max(1), Ordering::Relaxed);
        }
        was
    }

    /// Forgets past ejections once the backend has behaved for a while.
    pub(crate) fn forgive_ejections(&self) {
        if self.cold.ejections.load(Ordering::Relaxed) != 0 {
            self.cold.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failed request; returns the number of failures in a row.
    pub(crate) fn note_failure(&self) -> u32 {
        self.cold
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// A successful request resets the run of failures (without writing when there was none, to
    /// keep the cache line shared on the hot path).
    #[inline]
    pub(crate) fn note_success(&self) {
        if self.cold.failures.load(Ordering::Relaxed) != 0 {
            self.cold.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Share of full traffic during slow start: from 0 when it came back to 1 after `ramp`.
    pub fn warmth(&self, ramp: Duration) -> f64 {
        let since = self.cold.back_since_ms.load(Ordering::Relaxed);
        if since == 0 || ramp.is_zero() {
            return 1.0;
        }
        let elapsed = now_ms().saturating_sub(since) as f64;
        (elapsed / ramp.as_millis() as f64).clamp(0.0, 1.0)
    }

    pub fn limit(&self) -> Option<&ConnectionLimit> {
        self.cold.limit.as_ref()
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn picks(&self) -> u64 {
        self.picks.load(Ordering::Relaxed)
    }

    pub(crate) fn note_pick(&self) {
        self.picks.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a backend joining a running pool level with the least-picked one there, instead of
    /// at zero, which would win every tie until it caught up with backends that ran for hours.
    pub(crate) fn start_picks_at(&self, picks: u64) {
        self.picks.store(picks, Ordering::Relaxed);
    }

    pub fn pool(&self) -> &ConnectionPool {
        &self.cold.pool
    }

    /// Asks the health checker to probe this backend now: traffic just failed to reach it.
    pub fn request_recheck(&self) {
        self.cold.recheck.notify_one();
    }

    pub(crate) async fn recheck_requested(&self) {
        self.cold.recheck.notified().await;
    }

    /// Says that this backend left the configuration. Requests on it finish as they are; what
    /// could go on for hours (a tunnel) watches [`Backend::retired`].
    pub fn retire(&self) {
        self.cold.retired.store(true, Ordering::Release);
        self.cold.retire.notify_waiters();
    }

    /// Completes once [`Backend::retire`] was called.
    pub async fn retired(&self) {
        let notified = self.cold.retire.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.cold.retired.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// Counts one request as in flight on a backend for as long as it lives: from the pick until the
/// response body has been streamed to the client or the client went away (the guard travels inside
/// the response body and is dropped with it).
#[derive(Debug)]
pub struct InFlightGuard {
    backend: Arc<Backend>,
    /// The backend's connection slot, when it has a `max_connections`.
    slot: Option<OwnedSemaphorePermit>,
}

impl InFlightGuard {
    pub fn new(backend: Arc<Backend>) -> InFlightGuard {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            backend,
            slot: None,
        }
    }

    /// Takes a connection slot of a limited backend, waiting in its queue if need be.
    pub async fn acquire_slot(&mut self, wait: Duration) -> Result<(), QueueError> {
        if let Some(limit) = self.backend.limit() {
            self.slot = Some(limit.acquire(wait).await?);
        }
        Ok(())
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
