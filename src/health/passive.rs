//! Passive health (outlier ejection): a run of failures on live traffic (connect errors, resets,
//! timeouts, and 5xx answers if configured) ejects a backend at once, without waiting for the
//! next probe. An ejection lasts `ejection_time` × the number of ejections in a row (capped at
//! `max_ejection_time`); afterwards the active checker lets the backend back in as soon as a probe
//! passes. At most `max_ejected_percent` of the pool is ejected at any time, so a fault that hits
//! every backend (or alb's own network) cannot empty the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::PassiveHealthConfig;
use crate::upstream::Backend;

#[derive(Debug)]
pub struct OutlierDetector {
    config: PassiveHealthConfig,
    pool: Vec<Arc<Backend>>,
    ejections: AtomicU64,
    /// Held while counting the ejected backends and ejecting one, so that two backends failing
    /// at once cannot both pass the `max_ejected_percent` check before either is ejected. Taken
    /// only at the end of a failure run, never on the request path otherwise, and never across
    /// an await.
    deciding: Mutex<()>,
}

impl OutlierDetector {
    pub fn new(config: &PassiveHealthConfig, pool: &[Arc<Backend>]) -> OutlierDetector {
        OutlierDetector {
            config: config.clone(),
            pool: pool.to_vec(),
            ejections: AtomicU64::new(0),
            deciding: Mutex::new(()),
        }
    }

    /// Ejections since start.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Whether an answer with `status` counts as the backend's failure.
    pub fn counts_status(&self, status: u16) -> bool {
        status >= 500
            && self.config.enabled
            && self.config.count_5xx
            && self.config.failure_statuses.contains(&status)
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
        let _deciding = self.deciding.lock().unwrap_or_else(|p| p.into_inner());
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
            if !backend.is_healthy() {
                // Already DOWN by its health checks: the outage was logged once, there.
                tracing::info!(
                    backend = backend.url(),
                    failures = run,
                    "backend {} (already DOWN) ejected too",
                    backend.label()
                );
                return;
            }
            tracing::warn!(
                backend = backend.url(),
                failures = run,
                last = what,
                ejected_for = ?duration,
                "backend {} is DOWN: ejected after {run} consecutive failures on live traffic (last: {what}) for {duration:?}",
                backend.label()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Backends whose failure runs end at the same instant: the cap must hold for all of them
    /// together, not for each one alone. Many rounds, so that the threads do meet.
    #[test]
    fn the_ejection_cap_holds_for_simultaneous_failures() {
        const N: usize = 16;
        let urls: Vec<String> = (0..N)
            .map(|i| format!("http://127.0.0.1:{}", i + 1))
            .collect();
        let config = Config::with_backends(([127, 0, 0, 1], 0).into(), &urls).unwrap();
        let mut passive = config.passive_health.clone();
        passive.consecutive_failures = 1;
        passive.max_ejected_percent = 50;
        for _ in 0..300 {
            let pool: Vec<Arc<Backend>> = config
                .backends
                .iter()
                .map(|spec| Arc::new(Backend::new(spec)))
                .collect();
            let detector = Arc::new(OutlierDetector::new(&passive, &pool));
            let start = Arc::new(std::sync::Barrier::new(N));
            let threads: Vec<_> = pool
                .iter()
                .map(|backend| {
                    let (backend, detector, start) =
                        (backend.clone(), detector.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        detector.record_failure(&backend, "test");
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let ejected = pool.iter().filter(|b| b.is_ejected()).count();
            assert_eq!(ejected, N / 2, "the cap lets half of the pool be ejected");
        }
    }
}
