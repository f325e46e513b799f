//! One pool of backends: the backends a request may go to, the algorithm that picks among them,
//! their passive health and the pool's retry policy. A snapshot holds its pools; a route chooses
//! the pool.

use std::sync::Arc;
use std::time::Duration;

use super::{ProxyStats, RetryPolicy, StickyCookies};
use crate::balance::{ConsistentHash, Exclude, Selector, Tiers, selector_for};
use crate::config::{Algorithm, BackendSpec, HashKey, Locality, PoolConfig};
use crate::health::OutlierDetector;
use crate::upstream::Backend;

#[derive(Debug)]
pub struct BackendPool {
    name: String,
    backends: Vec<Arc<Backend>>,
    selector: Box<dyn Selector>,
    /// Zones and backups, when its backends do not all stand alike.
    tiers: Option<Tiers>,
    outliers: Arc<OutlierDetector>,
    slow_start: Duration,
    algorithm: &'static str,
    /// What `algorithm = "hash"` hashes; none for the other algorithms.
    hash_key: Option<HashKey>,
    pub(super) retry: RetryPolicy,
    pub(super) queue_timeout: Duration,
    /// `[pools.NAME.sticky]`: the cookie naming each backend.
    pub(super) sticky: Option<StickyCookies>,
    /// The pool's header rules, each way.
    pub(super) request_headers: crate::config::HeaderRules,
    pub(super) response_headers: crate::config::HeaderRules,
}

impl BackendPool {
    /// The pool of `specs`, balanced as `config` says. Backends of `previous` that are unchanged
    /// (same URL, weight, connection limit and TLS identity: settings and the files' contents)
    /// are kept as they are, with their health, counters and pooled connections; a rotated
    /// client certificate or CA makes new ones, whose connections use it.
    pub fn new(
        config: &PoolConfig,
        locality: &Locality,
        specs: &[BackendSpec],
        previous: &[Arc<Backend>],
        stats: Arc<ProxyStats>,
    ) -> BackendPool {
        let slots: Vec<Result<Arc<Backend>, Backend>> = specs
            .iter()
            .map(|spec| {
                previous
                    .iter()
                    .find(|b| {
                        b.url() == spec.url
                            && b.weight() == spec.weight
                            && b.max_connections() == spec.max_connections
                            && b.tls() == spec.tls.as_ref()
                            && b.zone() == spec.zone.as_deref()
                            && b.is_backup() == spec.backup
                    })
                    .cloned()
                    .ok_or_else(|| Backend::with_queue(spec, config.backend_queue))
            })
            .collect();
        // The new backends go into their `Arc`s only now that all of them are built, so that the
        // allocator lays these small blocks (what selection reads) side by side instead of
        // between each backend's cold part: in a pool of thousands, picks then stay within
        // fewer pages and cache lines.
        // Tie wins per unit of weight of the least-picked backend that stays.
        let level = slots
            .iter()
            .filter_map(|slot| slot.as_ref().ok())
            .map(|b| b.picks() / u64::from(b.weight()))
            .min()
            .unwrap_or(0);
        let backends: Vec<Arc<Backend>> = slots
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|fresh| {
                    fresh.start_picks_at(level.saturating_mul(u64::from(fresh.weight())));
                    Arc::new(fresh)
                })
            })
            .collect();
        // A terminating endpoint stays for what is in flight on it and takes nothing new.
        for (backend, spec) in backends.iter().zip(specs) {
            backend.follow_discovery(spec.draining);
        }
        let tiers = Tiers::new(&backends, config.algorithm, config.hash.balance, locality);
        let selector: Box<dyn Selector> = match config.algorithm {
            Algorithm::Hash => Box::new(ConsistentHash::new(&backends, config.hash.balance)),
            other => selector_for(other, &backends),
        };
        BackendPool {
            name: config.name.clone(),
            request_headers: config.request_headers.clone(),
            response_headers: config.response_headers.clone(),
            sticky: config.sticky.as_ref().and_then(|sticky| {
                let secret = match &sticky.secret {
                    Some(text) => super::derive_secret(text),
                    None => super::process_secret(),
                };
                let urls: Vec<&str> = backends.iter().map(|b| b.url()).collect();
                StickyCookies::new(&sticky.cookie, sticky.ttl, &secret, &urls)
                    .inspect_err(|e| {
                        tracing::error!(pool = config.name, "sticky sessions off: {e}")
                    })
                    .ok()
            }),
            selector,
            tiers,
            outliers: Arc::new(OutlierDetector::new(&config.passive_health, &backends)),
            backends,
            slow_start: config.health_check.slow_start,
            algorithm: config.algorithm.name(),
            hash_key: (config.algorithm == Algorithm::Hash).then(|| config.hash.key.clone()),
            retry: RetryPolicy::new(&config.retry, stats),
            queue_timeout: config.backend_queue_timeout,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn outliers(&self) -> &Arc<OutlierDetector> {
        &self.outliers
    }

    /// Picks a backend; during slow start a recovering backend is passed over in proportion to
    /// how far its ramp still has to go.
    pub fn pick(&self, exclude: &Exclude, key: Option<u64>) -> Option<usize> {
        let index = self.select(exclude, key)?;
        if self.slow_start.is_zero() {
            return Some(index);
        }
        let warmth = self.backends[index].warmth(self.slow_start);
        if warmth >= 1.0 || fastrand::f64() < warmth {
            return Some(index);
        }
        let mut others = exclude.clone();
        others.add(index);
        self.select(&others, None).or(Some(index))
    }

    fn select(&self, exclude: &Exclude, key: Option<u64>) -> Option<usize> {
        match (&self.tiers, key) {
            (Some(tiers), key) => tiers.select(exclude, key),
            (None, Some(key)) => self.selector.select_keyed(&self.backends, exclude, key),
            (None, None) => self.selector.select(&self.backends, exclude),
        }
    }

    /// Where `index` stands in the order of preference: 0 for the first tier (this zone, or
    /// every backend when none is preferred), higher for other zones and backups.
    pub fn tier_of(&self, index: usize) -> usize {
        self.tiers.as_ref().map_or(0, |tiers| tiers.tier_of(index))
    }

    /// Whether any backend besides the excluded ones could take a retry.
    pub fn has_other(&self, exclude: &Exclude) -> bool {
        self.backends
            .iter()
            .enumerate()
            .any(|(i, b)| b.is_available() && !exclude.contains(i))
    }

    /// Why `index` was picked, in a line: the algorithm and the load it saw (for `explain`).
    pub fn explain_pick(&self, index: usize, attempt: u32) -> String {
        use std::fmt::Write;
        let mut reason = format!("{} attempt={attempt} candidates:", self.algorithm);
        for (i, b) in self.backends.iter().enumerate().take(16) {
            let mark = if i == index { "*" } else { "" };
            let state = if b.is_available() { "up" } else { "out" };
            let _ = write!(
                reason,
                " {mark}{} in_flight={} weight={} {state};",
                b.url(),
                b.in_flight(),
                b.weight()
            );
        }
        reason
    }
}
