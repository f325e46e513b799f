//! DNS discovery: a backend given by a name (`http://backend:8081`) stands for every address the
//! name resolves to, one backend each, as Envoy's strict DNS and HAProxy's server templates do.
//!
//! One task resolves each name again when its answer's TTL runs out (clamped to
//! `discovery.min_interval`..`max_interval`) and, when a name's addresses changed, rebuilds the
//! snapshot like a reload: new addresses get health checks and traffic, vanished ones leave the
//! pool (requests in flight on them finish), unchanged ones are kept with their health, counters
//! and pooled connections. A failed or empty answer changes nothing: the name keeps its last
//! addresses (a DNS hiccup never empties a pool) and is asked again sooner, backing off.
//! A name never resolved yet stays one backend resolved on each new connection, as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::ControlPlane;
use crate::config::{BackendAddr, BackendSpec, DiscoveryConfig};

/// How long one lookup may take (per name server try).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Most addresses one name may bring (each a backend with its health check): whoever answers for
/// the name must not be able to grow the pool without bound.
pub const MAX_ADDRESSES_PER_NAME: usize = 256;

/// What each name last resolved to, and how its lookups went (for the metrics).
#[derive(Debug, Default)]
pub struct Discovered {
    names: BTreeMap<String, NameRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecord {
    /// The last non-empty answer, sorted; empty until the name first resolved.
    pub addrs: Vec<IpAddr>,
    pub lookups_ok: u64,
    pub lookups_failed: u64,
}

impl Discovered {
    /// `specs` with every resolved name replaced by one backend per address. The URL of such a
    /// backend is its address (what it is known by in the API, logs and metrics); the name stays
    /// its Host for health checks and its `dns_name`.
    pub fn expand(&self, specs: &[BackendSpec]) -> Vec<BackendSpec> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let resolved = match &spec.addr {
                BackendAddr::Name { host, port } => self
                    .names
                    .get(host)
                    .filter(|r| !r.addrs.is_empty())
                    .map(|r| (&r.addrs, *port)),
                BackendAddr::Ip(_) => None,
            };
            let Some((addrs, port)) = resolved else {
                if seen.insert(spec.url.clone()) {
                    out.push(spec.clone());
                }
                continue;
            };
            for ip in addrs {
                let addr = SocketAddr::new(*ip, port);
                // The scheme stays the name's: an https:// name's addresses speak TLS, an
                // h2c:// name's HTTP/2.
                let scheme = spec.url.split("://").next().unwrap_or("http");
                let url = format!("{scheme}://{addr}");
                if seen.insert(url.clone()) {
                    out.push(BackendSpec {
                        url,
                        addr: BackendAddr::Ip(addr),
                        dns_name: Some(spec.authority.clone()),
                        ..spec.clone()
                    });
                }
            }
        }
        out
    }

    /// Every name with its record, by name.
    pub fn records(&self) -> Vec<(String, NameRecord)> {
        self.names
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }
}

/// The names among `specs`' hosts.
fn names_in(specs: &[BackendSpec]) -> Vec<String> {
    let mut names: Vec<String> = specs
        .iter()
        .filter_map(|s| match &s.addr {
            BackendAddr::Name { host, .. } => Some(host.clone()),
            BackendAddr::Ip(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
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
    /// Every backend name discovery knows, with what it resolved to and how its lookups went.
    pub fn discovered_names(&self) -> Vec<(String, NameRecord)> {
        crate::control::lock(&self.discovered).records()
    }

    /// Resolves every backend name once (so that the first requests already spread over all
    /// addresses; a name that has not answered within [`LOOKUP_TIMEOUT`] is not waited for, it
    /// is applied when it answers), then keeps them resolved in a background task. None if no resolver could be
    /// set up: names are then resolved on each new connection, as before, and a warning says so.
    pub async fn start_discovery(self: &Arc<Self>) -> Option<DiscoveryTask> {
        let config = self.proxy.snapshot().config().discovery.clone();
        let resolver = match resolver(&config) {
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
            control.discover_due(&resolver, &mut schedule).await;
            let _ = first_round.send(());
            loop {
                let notified = control.rediscover.notified();
                let next = schedule.values().map(|s: &Schedule| s.at).min();
                match next {
                    Some(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at.into()) => {}
                            () = notified => {}
                        }
                    }
                    None => notified.await,
                }
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
        let names = names_in(&specs);
        schedule.retain(|name, _| names.contains(name));
        // The due names are looked up at once: one that times out does not hold up the others
        // (nor, at start, the first request by the sum of every timeout).
        let now = Instant::now();
        let due: Vec<String> = names
            .iter()
            .filter(|name| schedule.get(*name).is_none_or(|s| s.at <= now))
            .cloned()
            .collect();
        // The resolver's cache would answer from the first lookup for the whole TTL; this
        // schedule is the cache, and it asks again sooner than the TTL when `max_interval` says so.
        resolver.clear_cache();
        let mut lookups = tokio::task::JoinSet::new();
        for name in due {
            let resolver = resolver.clone();
            lookups.spawn(async move {
                let answer = lookup(&resolver, &name).await;
                (name, answer)
            });
        }
        // Each answer is applied as it arrives.
        while let Some(done) = lookups.join_next().await {
            let Ok((name, answer)) = done else { continue };
            let due = schedule.entry(name.clone()).or_insert(Schedule {
                at: now,
                failures: 0,
            });
            if self.record(&name, answer, due, bounds) {
                self.apply_discovered();
            }
        }
        let forgotten = {
            let mut discovered = crate::control::lock(&self.discovered);
            let before = discovered.names.len();
            discovered.names.retain(|name, _| names.contains(name));
            discovered.names.len() != before
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
        answer: Result<(Vec<IpAddr>, Instant), String>,
        due: &mut Schedule,
        (min, max): (Duration, Duration),
    ) -> bool {
        let now = Instant::now();
        let mut discovered = crate::control::lock(&self.discovered);
        let record = discovered.names.entry(name.to_string()).or_default();
        match answer {
            Ok((addrs, valid_until)) if !addrs.is_empty() => {
                record.lookups_ok += 1;
                let ttl = valid_until.saturating_duration_since(now);
                *due = Schedule {
                    at: now + ttl.clamp(min, max),
                    failures: 0,
                };
                if record.addrs == addrs {
                    return false;
                }
                tracing::info!(name, ?addrs, "backend name {name} resolves to {addrs:?}");
                record.addrs = addrs;
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
                        record.addrs.len()
                    );
                }
                false
            }
        }
    }
}

/// One lookup of `name`: its addresses, sorted, and until when the answer is valid.
async fn lookup(resolver: &TokioResolver, name: &str) -> Result<(Vec<IpAddr>, Instant), String> {
    let lookup = resolver.lookup_ip(name).await.map_err(|e| e.to_string())?;
    let mut addrs: Vec<IpAddr> = lookup.iter().collect();
    addrs.sort();
    addrs.dedup();
    if addrs.len() > MAX_ADDRESSES_PER_NAME {
        tracing::warn!(
            name,
            "backend name {name} resolves to {} addresses; only the first {MAX_ADDRESSES_PER_NAME} (in address order) are used",
            addrs.len()
        );
        addrs.truncate(MAX_ADDRESSES_PER_NAME);
    }
    Ok((addrs, lookup.valid_until()))
}

/// The system's resolver (`/etc/resolv.conf`, `/etc/hosts`), or one asking the configured
/// name servers.
fn resolver(config: &DiscoveryConfig) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.timeout = LOOKUP_TIMEOUT;
    options.attempts = 2;
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_keeps_the_scheme_and_tls_of_its_name() {
        let mut discovered = Discovered::default();
        discovered.names.insert(
            "backend".into(),
            NameRecord {
                addrs: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
                ..NameRecord::default()
            },
        );
        let config = crate::Config::from_toml(
            "backends = [\"https://backend:8443\", \"http://backend:8080\"]\n",
            "test",
        )
        .unwrap();
        let urls: Vec<(String, bool)> = discovered
            .expand(&config.backends)
            .iter()
            .map(|b| (b.url.clone(), b.tls.is_some()))
            .collect();
        assert_eq!(
            urls,
            [
                ("https://10.0.0.1:8443".to_string(), true),
                ("https://10.0.0.2:8443".to_string(), true),
                ("http://10.0.0.1:8080".to_string(), false),
                ("http://10.0.0.2:8080".to_string(), false),
            ]
        );
    }
}
