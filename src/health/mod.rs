//! Active health checks: one task per backend, all running concurrently, each probing its backend
//! with `GET <path>` on a fresh connection (so a probe measures what a new request would meet) and
//! flipping the backend's health flag after `rise` successes or `fall` failures in a row.
//!
//! Start-up state: every backend starts UP, so traffic flows from the first instant, and the first
//! probes run at once. A backend whose very first probe fails is marked DOWN immediately rather than
//! after `fall` probes: a backend that is down at start-up should not take traffic for `fall`
//! intervals. From then on `rise`/`fall` apply.
//!
//! The proxy also asks for an early probe when real traffic could not connect to a backend
//! ([`Backend::request_recheck`]), and probes a backend whose state is changing at most a second
//! apart. Together they turn a dead backend into a DOWN one in about a second instead of `fall`
//! full intervals, while the decision stays with the checker and its thresholds.

mod passive;
mod probe;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::{HealthCheckConfig, PassiveHealthConfig};
use crate::upstream::Backend;

pub use passive::OutlierDetector;
pub use probe::{ProbeError, probe};

/// Shortest gap between two probes of one backend, however often traffic asks for a recheck.
const MIN_GAP: Duration = Duration::from_millis(100);
/// Longest gap between probes while a backend is DOWN or its state is changing (some, but not yet
/// `fall`, failures), so that a change is confirmed in about a second rather than in `fall` or
/// `rise` full intervals (HAProxy's `fastinter` and `downinter`).
const CONFIRM_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the health checks of a set of backends until dropped or shut down.
#[derive(Debug, Default)]
pub struct HealthChecker {
    checks: Vec<Check>,
}

/// One backend's probing task, and what it was started with.
#[derive(Debug)]
struct Check {
    backend: Arc<Backend>,
    config: HealthCheckConfig,
    forgive_after: Duration,
    task: JoinHandle<()>,
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for check in &self.checks {
            check.task.abort();
        }
    }
}

impl HealthChecker {
    /// Starts one probing task per backend on the current runtime.
    pub fn start(
        backends: &[Arc<Backend>],
        config: &HealthCheckConfig,
        passive: &PassiveHealthConfig,
    ) -> HealthChecker {
        let mut checker = HealthChecker::default();
        checker.spawn(backends, config, passive);
        checker
    }

    /// Adds the checks of one pool's backends, with that pool's settings.
    pub fn spawn(
        &mut self,
        backends: &[Arc<Backend>],
        config: &HealthCheckConfig,
        passive: &PassiveHealthConfig,
    ) {
        self.spawn_or_keep(backends, config, passive, None);
    }

    /// Like [`HealthChecker::spawn`], but a backend already checked by `running` with the same
    /// settings keeps its task, which goes on at its own pace: a change elsewhere in the pool
    /// (an endpoint of a Service turning ready, a DNS answer, a runtime addition) probes only
    /// what is new, not every backend at once.
    pub fn spawn_or_keep(
        &mut self,
        backends: &[Arc<Backend>],
        config: &HealthCheckConfig,
        passive: &PassiveHealthConfig,
        mut running: Option<&mut HealthChecker>,
    ) {
        let forgive_after = passive.max_ejection_time;
        for backend in backends {
            let kept = running.as_deref_mut().and_then(|running| {
                let at = running.checks.iter().position(|c| {
                    Arc::ptr_eq(&c.backend, backend)
                        && c.config == *config
                        && c.forgive_after == forgive_after
                })?;
                Some(running.checks.swap_remove(at))
            });
            let check = kept.unwrap_or_else(|| Check {
                backend: backend.clone(),
                config: config.clone(),
                forgive_after,
                task: tokio::spawn(check_loop(backend.clone(), config.clone(), forgive_after)),
            });
            self.checks.push(check);
        }
    }

    /// Stops every probing task.
    pub async fn stop(mut self) {
        let checks = std::mem::take(&mut self.checks);
        for check in &checks {
            check.task.abort();
        }
        for check in checks {
            let _ = check.task.await;
        }
    }
}

/// Consecutive results and the rise/fall decision for one backend.
#[derive(Debug)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    successes: u32,
    failures: u32,
    first: bool,
}

/// What a probe result changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl HealthState {
    /// The state of a backend never probed before: its first failed probe marks it DOWN at once.
    pub fn new(config: &HealthCheckConfig) -> HealthState {
        HealthState {
            rise: config.rise,
            fall: config.fall,
            successes: 0,
            failures: 0,
            first: true,
        }
    }

    /// The state for `backend` when its checks (re)start. A backend probed before (its checks
    /// restarted by a reload) keeps its verdict until `fall` probes in a row fail: only a
    /// backend alb knows nothing about yet is taken out by one failed probe.
    pub fn for_backend(backend: &Backend, config: &HealthCheckConfig) -> HealthState {
        HealthState {
            first: backend.last_probe().is_none(),
            ..HealthState::new(config)
        }
    }

    /// Whether the latest results point away from the current state without having decided yet.
    pub fn is_changing(&self, currently_up: bool) -> bool {
        if currently_up {
            self.failures > 0
        } else {
            self.successes > 0
        }
    }

    /// Records one probe result against the backend's current state and says whether it flips.
    pub fn record(&mut self, passed: bool, currently_up: bool) -> Option<Transition> {
        let first = std::mem::take(&mut self.first);
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!currently_up && self.successes >= self.rise).then_some(Transition::Up)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (currently_up && (first || self.failures >= self.fall)).then_some(Transition::Down)
        }
    }
}

async fn check_loop(backend: Arc<Backend>, config: HealthCheckConfig, forgive_after: Duration) {
    let mut state = HealthState::for_backend(&backend, &config);
    let mut readmitted_at: Option<tokio::time::Instant> = None;
    loop {
        let result = probe(&backend, &config).await;
        let passed = result.is_ok();
        let detail = match &result {
            Ok(_) => "passed".to_string(),
            Err(e) => e.to_string(),
        };
        backend.record_probe(passed, detail);
        match state.record(passed, backend.is_healthy()) {
            Some(Transition::Down) => {
                backend.set_healthy(false);
                let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
                // One DOWN line per outage: passive health may have taken it out already.
                if backend.is_ejected() {
                    tracing::info!(backend = backend.url(), %reason, "backend {} (already out) fails its health checks too: {reason}", backend.label());
                } else {
                    tracing::warn!(backend = backend.url(), %reason, "backend {} is DOWN: {reason}", backend.label());
                }
            }
            Some(Transition::Up) => {
                backend.set_healthy(true);
                tracing::info!(
                    backend = backend.url(),
                    "backend {} is UP again",
                    backend.label()
                );
            }
            None => {}
        }
        // An ejected backend comes back once its time is served and a probe passes.
        if passed && backend.is_ejected() && backend.ejection_elapsed() && backend.readmit() {
            readmitted_at = Some(tokio::time::Instant::now());
            if backend.is_healthy() {
                tracing::info!(
                    backend = backend.url(),
                    "backend {} is UP again: ejection over and probe passed",
                    backend.label()
                );
            }
        }
        if readmitted_at.is_some_and(|at| at.elapsed() >= forgive_after) && !backend.is_ejected() {
            backend.forgive_ejections();
            readmitted_at = None;
        }
        // A DOWN backend, or one whose state is changing, is probed at least every second, so that
        // one starting after alb (compose) or recovering is back in a second or two.
        let mut interval = if !backend.is_healthy() || state.is_changing(true) {
            config.interval.min(CONFIRM_INTERVAL)
        } else {
            config.interval
        };
        if backend.is_ejected() {
            interval = interval.min(backend.ejection_left() + MIN_GAP);
        }
        wait_next(&backend, interval).await;
    }
}

/// Sleeps one interval with ±10 % jitter, so that probes of many backends (and of many balancers)
/// spread out instead of arriving in bursts, or less when traffic asked for a recheck.
async fn wait_next(backend: &Backend, interval: Duration) {
    let jitter = 0.9 + fastrand::f64() * 0.2;
    let sleep = tokio::time::sleep(interval.mul_f64(jitter));
    let recheck = async {
        backend.recheck_requested().await;
        tokio::time::sleep(MIN_GAP).await;
    };
    first_of(sleep, recheck).await;
}

async fn first_of(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    tokio::select! {
        () = a => {}
        () = b => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rise: u32, fall: u32) -> HealthState {
        HealthState::new(&HealthCheckConfig {
            rise,
            fall,
            ..HealthCheckConfig::default()
        })
    }

    #[test]
    fn a_failing_first_probe_marks_down_at_once() {
        let mut s = state(2, 3);
        assert_eq!(s.record(false, true), Some(Transition::Down));
    }

    #[test]
    fn fall_counts_consecutive_failures_after_the_first_probe() {
        let mut s = state(2, 3);
        assert_eq!(s.record(true, true), None);
        assert_eq!(s.record(false, true), None);
        assert!(s.is_changing(true));
        assert_eq!(s.record(false, true), None);
        assert_eq!(
            s.record(true, true),
            None,
            "a success resets the failure count"
        );
        assert!(!s.is_changing(true));
        assert_eq!(s.record(false, true), None);
        assert_eq!(s.record(false, true), None);
        assert_eq!(s.record(false, true), Some(Transition::Down));
    }

    #[test]
    fn rise_counts_consecutive_successes() {
        let mut s = state(2, 1);
        assert_eq!(s.record(false, true), Some(Transition::Down));
        assert_eq!(s.record(true, false), None);
        assert_eq!(
            s.record(false, false),
            None,
            "a failure resets the success count"
        );
        assert_eq!(s.record(true, false), None);
        assert_eq!(s.record(true, false), Some(Transition::Up));
    }
}
