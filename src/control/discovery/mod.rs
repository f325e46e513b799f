//! Discovery: a backend given by a name stands for every backend the name leads to, one backend
//! each, as Envoy's strict DNS and HAProxy's server templates do. `http://backend:8081` is every
//! address the name resolves to (A/AAAA); `srv+http://_web._tcp.example` every target of the SRV
//! records, at their ports and weights, the next priority as backups;
//! `k8s://namespace/service:port` every endpoint of the Service's EndpointSlices, with its zone,
//! terminating ones drained.
//!
//! One task resolves each DNS source again when its answer's TTL runs out (clamped to
//! `discovery.min_interval`..`max_interval`) and, when a source's backends changed, rebuilds the
//! snapshot like a reload: new addresses get health checks and traffic, vanished ones leave the
//! pool (requests in flight on them finish), unchanged ones are kept with their health, counters
//! and pooled connections. A failed or empty answer changes nothing: the source keeps its last
//! backends (a DNS hiccup never empties a pool) and is asked again sooner, backing off.
//! A name never resolved yet stays one backend resolved on each new connection, as before.

mod dns;
mod endpoints;
mod found;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use super::ControlPlane;
use crate::config::{BackendAddr, BackendSpec};
pub use dns::MAX_ADDRESSES_PER_NAME;
use dns::{Answer, LOOKUP_TIMEOUT};
pub use found::{Discovered, Found, SourceRecord};

/// How often a Kubernetes API server that could not be set up (no token yet, a bad CA) is
/// tried again.
const API_RETRY: Duration = Duration::from_secs(5);

/// How a DNS source is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lookup {
    Addresses,
    Service,
}

/// The DNS sources among `specs`, by key.
fn dns_sources(specs: &[BackendSpec]) -> Vec<(String, Lookup)> {
    let mut sources: Vec<(String, Lookup)> = specs
        .iter()
        .filter_map(|s| match &s.addr {
            BackendAddr::Name { host, .. } => Some((host.clone(), Lookup::Addresses)),
            BackendAddr::Srv { name } => Some((name.clone(), Lookup::Service)),
            BackendAddr::Ip(_) | BackendAddr::Kubernetes(_) => None,
        })
        .collect();
    sources.sort();
    sources.dedup();
    sources
}

/// The running discovery task; dropping it stops it.
#[derive(Debug)]
pub struct DiscoveryTask(tokio::task::JoinHandle<()>);

impl Drop for DiscoveryTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// When a name is asked again, and how many of its lookups in a row failed.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    at: Instant,
    failures: u32,
}

impl ControlPlane {
    /// Every source discovery knows, with what it found and how its lookups went.
    pub fn discovered_names(&self) -> Vec<(String, SourceRecord)> {
        crate::control::lock(&self.discovered).records()
    }

    /// Resolves every backend name once (so that the first requests already spread over all
    /// addresses; a name that has not answered within [`LOOKUP_TIMEOUT`] is not waited for, it
    /// is applied when it answers), then keeps them resolved in a background task. None if no resolver could be
    /// set up: names are then resolved on each new connection, as before, and a warning says so.
    pub async fn start_discovery(self: &Arc<Self>) -> Option<DiscoveryTask> {
        let config = self.proxy.snapshot().config().discovery.clone();
        let resolver = match dns::resolver(&config) {
            Ok(resolver) => resolver,
            Err(e) => {
                tracing::warn!(
                    "DNS discovery is off (no resolver: {e}); backend names are resolved on each new connection"
                );
                return None;
            }
        };
        let (first_round, first_round_done) = tokio::sync::oneshot::channel();
        let control = self.clone();
        let task = tokio::spawn(async move {
            let mut schedule = HashMap::new();
            let mut watches = endpoints::Watches::default();
            let first_lists = control.sync_watches(&mut watches);
            control.discover_due(&resolver, &mut schedule).await;
            // The first lists are waited for as DNS answers are: not past the lookup timeout.
            let _ = tokio::time::timeout(LOOKUP_TIMEOUT, async {
                for first_list in first_lists {
                    let _ = first_list.await;
                }
            })
            .await;
            let _ = first_round.send(());
            loop {
                let notified = control.rediscover.notified();
                // An API server that could not be set up is tried again every few seconds.
                let retry = watches.failing().then(|| Instant::now() + API_RETRY);
                let next = schedule
                    .values()
                    .map(|s: &Schedule| s.at)
                    .chain(retry)
                    .min();
                match next {
                    Some(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at.into()) => {}
                            () = notified => {}
                        }
                    }
                    None => notified.await,
                }
                control.sync_watches(&mut watches);
                control.discover_due(&resolver, &mut schedule).await;
            }
        });
        let _ = tokio::time::timeout(LOOKUP_TIMEOUT, first_round_done).await;
        Some(DiscoveryTask(task))
    }

    /// One round: resolves the names that are due (new ones at once), forgets names no longer
    /// configured, and applies the result if any name's addresses changed.
    async fn discover_due(
        &self,
        resolver: &TokioResolver,
        schedule: &mut HashMap<String, Schedule>,
    ) {
        let snapshot = self.proxy.snapshot();
        let config = snapshot.config();
        let bounds = (config.discovery.min_interval, config.discovery.max_interval);
        let specs: Vec<BackendSpec> = config
            .all_pools()
            .into_iter()
            .flat_map(|pool| pool.backends)
            .collect();
        let sources = dns_sources(&specs);
        let configured = |key: &String| sources.iter().any(|(k, _)| k == key);
        let dropped: Vec<String> = schedule
            .keys()
            .filter(|k| !configured(k))
            .cloned()
            .collect();
        schedule.retain(|key, _| configured(key));
        // The due sources are looked up at once: one that times out does not hold up the others
        // (nor, at start, the first request by the sum of every timeout).
        let now = Instant::now();
        let due: Vec<(String, Lookup)> = sources
            .iter()
            .filter(|(key, _)| schedule.get(key).is_none_or(|s| s.at <= now))
            .cloned()
            .collect();
        // The resolver's cache would answer from the first lookup for the whole TTL; this
        // schedule is the cache, and it asks again sooner than the TTL when `max_interval` says so.
        resolver.clear_cache();
        let mut lookups = tokio::task::JoinSet::new();
        for (key, kind) in due {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let answer = match kind {
                    Lookup::Addresses => dns::addresses(&resolver, &key).await,
                    Lookup::Service => dns::service(&resolver, &key).await,
                };
                (key, answer)
            });
        }
        // Each answer is applied as it arrives.
        while let Some(done) = lookups.join_next().await {
            let Ok((key, answer)) = done else { continue };
            let due = schedule.entry(key.clone()).or_insert(Schedule {
                at: now,
                failures: 0,
            });
            if self.record(&key, answer, due, bounds) {
                self.apply_discovered();
            }
        }
        // DNS sources no longer configured are forgotten (the Kubernetes ones by their watchers).
        let forgotten = {
            let mut discovered = crate::control::lock(&self.discovered);
            dropped
                .iter()
                .filter(|key| discovered.sources.remove(*key).is_some())
                .count()
                > 0
        };
        if forgotten {
            self.apply_discovered();
        }
    }

    /// Records the answer of a lookup of `name` and when to ask again; true if its addresses
    /// changed.
    fn record(
        &self,
        name: &str,
        answer: Answer,
        due: &mut Schedule,
        (min, max): (Duration, Duration),
    ) -> bool {
        let now = Instant::now();
        let mut discovered = crate::control::lock(&self.discovered);
        let record = discovered.sources.entry(name.to_string()).or_default();
        match answer {
            Ok((found, valid_until)) if !found.is_empty() => {
                record.lookups_ok += 1;
                let ttl = valid_until.saturating_duration_since(now);
                *due = Schedule {
                    at: now + ttl.clamp(min, max),
                    failures: 0,
                };
                if record.found == found {
                    return false;
                }
                let addrs: Vec<String> = found.iter().map(Found::label).collect();
                tracing::info!(name, ?addrs, "backend name {name} resolves to {addrs:?}");
                record.found = found;
                true
            }
            failed => {
                record.lookups_failed += 1;
                due.failures = due.failures.saturating_add(1);
                let backoff = min.saturating_mul(1 << due.failures.min(16).saturating_sub(1));
                due.at = now + backoff.min(max);
                if due.failures == 1 {
                    let why = match failed {
                        Err(e) => e,
                        Ok(_) => "no addresses".to_string(),
                    };
                    tracing::warn!(
                        name,
                        "backend name {name} did not resolve ({why}); keeping its last {} address(es)",
                        record.found.len()
                    );
                }
                false
            }
        }
    }
}
