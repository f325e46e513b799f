//! `/healthz` and `/readyz`: the answers an orchestrator's probes need (Kubernetes liveness and
//! readiness). Both are open to every source without a token, because the kubelet probes from the
//! node's address, not from loopback, and a probe cannot be given a secret it would leak in every
//! pod spec. They reveal no more than "alive" and a one-line reason, and cost a few atomic loads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::upstream::{AdminState, Backend};

/// Where the balancer is in its life, as far as readiness cares. Kept apart from the proxy
/// because only the server loop knows when it starts accepting and when it starts draining.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

/// The phases of [`Lifecycle`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Config loaded, listeners not all bound yet.
    Starting,
    /// Every listener bound, accepting clients.
    Serving,
    /// Shutdown began: no new clients are accepted, in-flight requests finish.
    Draining,
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Draining,
        }
    }

    /// Both listeners are bound and the accept loop is about to run.
    pub fn serving(&self) {
        // Never back from draining to serving: a late call must not make a stopping pod ready.
        let _ = self
            .0
            .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Shutdown began: readiness fails from now on, so that a load balancer in front (or the
    /// endpoints controller, if the preStop pause was too short) stops sending new clients.
    pub fn draining(&self) {
        self.0.store(2, Ordering::Relaxed);
    }
}

/// The readiness verdict: `Ok` with a summary line, or `Err` with the reason it is not ready.
///
/// Ready means: serving (config loaded, since a [`crate::Server`] only exists with a valid one;
/// listeners bound; not draining) and at least one backend that would be picked for a new request
/// (healthy by the active checks, not ejected, not drained or disabled). A pod whose every backend
/// is down would only answer 503, so taking it out of a Service's endpoints loses nothing.
pub fn readiness(phase: Phase, backends: &[Arc<Backend>]) -> Result<String, String> {
    match phase {
        Phase::Starting => return Err("starting: listeners not bound yet".into()),
        Phase::Draining => return Err("shutting down: draining in-flight requests".into()),
        Phase::Serving => {}
    }
    if backends.is_empty() {
        return Err("no backends configured".into());
    }
    let available = backends.iter().filter(|b| b.is_available()).count();
    if available > 0 {
        return Ok(format!(
            "ready: {available} of {} backends available",
            backends.len()
        ));
    }
    let (mut down, mut ejected, mut off) = (0, 0, 0);
    for b in backends {
        if b.admin_state() != AdminState::Enabled {
            off += 1;
        } else if !b.is_healthy() {
            down += 1;
        } else if b.is_ejected() {
            ejected += 1;
        }
    }
    Err(format!(
        "no backend available: 0 of {} ({down} down, {ejected} ejected, {off} drained or disabled)",
        backends.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn backends(n: usize) -> Vec<Arc<Backend>> {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
            .collect();
        let config = Config::with_backends(([127, 0, 0, 1], 0).into(), &urls).expect("config");
        config
            .backends
            .iter()
            .map(|s| Arc::new(Backend::new(s)))
            .collect()
    }

    #[test]
    fn ready_while_serving_with_one_backend_available() {
        let pool = backends(3);
        pool[0].set_healthy(false);
        pool[1].set_admin_state(AdminState::Draining);
        assert_eq!(
            readiness(Phase::Serving, &pool),
            Ok("ready: 1 of 3 backends available".to_string())
        );
    }

    #[test]
    fn not_ready_when_no_backend_would_be_picked() {
        let pool = backends(3);
        pool[0].set_healthy(false);
        pool[1].set_healthy(false);
        pool[2].set_admin_state(AdminState::Disabled);
        let reason = readiness(Phase::Serving, &pool).expect_err("not ready");
        assert_eq!(
            reason,
            "no backend available: 0 of 3 (2 down, 0 ejected, 1 drained or disabled)"
        );
        assert!(!reason.contains('\n'));
        assert_eq!(
            readiness(Phase::Serving, &[]),
            Err("no backends configured".to_string())
        );
    }

    #[test]
    fn not_ready_before_serving_or_once_draining_whatever_the_backends() {
        let pool = backends(1);
        assert!(readiness(Phase::Starting, &pool).is_err());
        let life = Lifecycle::default();
        assert_eq!(life.phase(), Phase::Starting);
        life.serving();
        assert_eq!(life.phase(), Phase::Serving);
        life.draining();
        life.serving();
        assert_eq!(life.phase(), Phase::Draining, "no way back from draining");
        assert_eq!(
            readiness(life.phase(), &pool),
            Err("shutting down: draining in-flight requests".to_string())
        );
    }
}
