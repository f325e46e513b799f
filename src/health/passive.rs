//! Passive health (outlier ejection): a run of failures on live traffic (connect errors, resets,
//! timeouts, and 5xx answers if configured) ejects a backend at once, without waiting for the
//! next probe. An ejection lasts `ejection_time` × the number of ejections in a row (capped at
//! `max_ejection_time`); afterwards the active checker lets the backend back in as soon as a probe
//! passes. At most `max_ejected_percent` of the pool is ejected at any time, so a fault that hits
//! every backend (or alb's own network) cannot empty the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::PassiveHealthConfig;
use crate::upstream::Backend;

#[derive(Debug)]
pub struct OutlierDetector {
    config: PassiveHealthConfig,
    pool: Vec<Arc<Backend>>,
    ejections: AtomicU64,
}

impl OutlierDetector {
    pub fn new(config: &PassiveHealthConfig, pool: &[Arc<Backend>]) -> OutlierDetector {
        OutlierDetector {
            config: config.clone(),
            pool: pool.to_vec(),
            ejections: AtomicU64::new(0),
        }
    }

    /// Ejections since start.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub fn counts_5xx(&self) -> bool {
        self.config.enabled && self.config.count_5xx
    }

    pub fn record_success(&self, backend: &Backend) {
        backend.note_success();
    }

    /// Counts a failed request on `backend`, ejecting it when the run of failures is long enough.
    pub fn record_failure(&self, backend: &Backend, what: &str) {
        if !self.config.enabled {
            return;
        }
        let run = backend.note_failure();
        if run < self.config.consecutive_failures || backend.is_ejected() {
            return;
        }
        let ejected = self.pool.iter().filter(|b| b.is_ejected()).count();
        let allowed = self.pool.len() * self.config.max_ejected_percent as usize / 100;
        if ejected >= allowed {
            tracing::debug!(
                backend = backend.url(),
                ejected,
                allowed,
                "not ejecting: the pool is at its max_ejected_percent"
            );
            return;
        }
        if let Some(duration) =
            backend.eject(self.config.ejection_time, self.config.max_ejection_time)
        {
            self.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                backend = backend.url(),
                failures = run,
                last = what,
                ejected_for = ?duration,
                "backend {} is DOWN: ejected after {run} consecutive failures on live traffic (last: {what}) for {duration:?}",
                backend.url()
            );
        }
    }
}
