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
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl ProxyStats {
    pub fn record_local(&self, method: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.local[method.min(METHOD_CLASSES.len() - 1)][class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn local(&self, method: usize, class: usize) -> u64 {
        self.local[method][class].load(Ordering::Relaxed)
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}
