//! Backends: their identity, live state (health, in-flight requests) and the keep-alive connections
//! alb holds to each of them.
//!
//! All per-backend state is atomics so that picking a backend and counting requests never takes a
//! lock. `Relaxed` ordering is enough everywhere here: each counter is an independent statistic read
//! for balancing decisions, and no other memory is published through it.

mod connect;
mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::HeaderValue;
use tokio::sync::Notify;

use crate::config::{BackendAddr, BackendSpec};

pub use connect::{ConnectError, connect};
pub use pool::{ConnectionPool, UpstreamSender};

/// One backend server and everything alb knows about it right now.
#[derive(Debug)]
pub struct Backend {
    url: String,
    addr: BackendAddr,
    host_header: HeaderValue,
    weight: u32,
    healthy: AtomicBool,
    in_flight: AtomicU64,
    /// Requests ever picked for this backend: the tie-breaker of weighted least-connections.
    picks: AtomicU64,
    /// Woken by the proxy when real traffic failed to reach this backend, so that the health
    /// checker probes it now instead of at the next interval.
    recheck: Notify,
    pool: ConnectionPool,
}

impl Backend {
    pub fn new(spec: &BackendSpec) -> Backend {
        Backend {
            url: spec.url.clone(),
            addr: spec.addr.clone(),
            host_header: HeaderValue::from_str(&spec.authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            weight: spec.weight.max(1),
            healthy: AtomicBool::new(true),
            in_flight: AtomicU64::new(0),
            picks: AtomicU64::new(0),
            recheck: Notify::new(),
            pool: ConnectionPool::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> &BackendAddr {
        &self.addr
    }

    /// `host:port`, the Host header for requests that came without one and for health checks.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health flag and returns the previous value.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
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

    pub fn pool(&self) -> &ConnectionPool {
        &self.pool
    }

    /// Asks the health checker to probe this backend now: traffic just failed to reach it.
    pub fn request_recheck(&self) {
        self.recheck.notify_one();
    }

    pub(crate) async fn recheck_requested(&self) {
        self.recheck.notified().await;
    }
}

/// Counts one request as in flight on a backend for as long as it lives: from the pick until the
/// response body has been streamed to the client or the client went away (the guard travels inside
/// the response body and is dropped with it).
#[derive(Debug)]
pub struct InFlightGuard {
    backend: Arc<Backend>,
}

impl InFlightGuard {
    pub fn new(backend: Arc<Backend>) -> InFlightGuard {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { backend }
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
