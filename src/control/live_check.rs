//! `alb check --live`: the config's backends as alb would find and probe them right now. Names
//! are resolved by the same discovery alb runs (same resolver, same name servers), each address
//! is probed once with its pool's health check, all at once, so the whole check takes one probe
//! timeout at most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::health::{ProbeError, probe};
use crate::proxy::Proxy;

/// What one probe of one backend found.
#[derive(Debug, Clone)]
pub struct LiveResult {
    pub pool: String,
    pub url: String,
    /// The DNS name it was found through, if any.
    pub dns_name: Option<String>,
    /// A connection (and TLS handshake) could be made.
    pub reachable: bool,
    /// Passed the pool's health check.
    pub healthy: bool,
    /// The status it answered, or why there is none.
    pub detail: String,
    pub latency: Duration,
    /// For an `https://` backend: the name its certificate was verified against.
    pub tls_name: Option<String>,
}

/// Resolves and probes every backend of `config`.
pub async fn live_check(config: &Config) -> Vec<LiveResult> {
    let proxy = Arc::new(Proxy::new(config));
    let control = Arc::new(super::ControlPlane::new(proxy.clone(), None));
    // Resolves every name once (or gives up after its lookup timeout) and applies the addresses.
    let discovery = control.start_discovery().await;
    drop(discovery);
    let snapshot = proxy.snapshot();
    let mut probes = tokio::task::JoinSet::new();
    for (order, (pool, settings)) in snapshot.pools().iter().zip(config.all_pools()).enumerate() {
        for (position, backend) in pool.backends().iter().enumerate() {
            let (backend, check) = (backend.clone(), settings.health_check.clone());
            let name = pool.name().to_string();
            probes.spawn(async move {
                let started = Instant::now();
                let result = probe(&backend, &check).await;
                let latency = started.elapsed();
                let (reachable, detail) = match &result {
                    Ok(status) => (true, status.to_string()),
                    Err(ProbeError::Connect(e)) => (false, e.to_string()),
                    Err(e) => (true, e.to_string()),
                };
                let row = LiveResult {
                    pool: name,
                    url: backend.url().to_string(),
                    dns_name: backend.dns_name().map(str::to_string),
                    reachable,
                    healthy: result.is_ok(),
                    detail,
                    latency,
                    tls_name: backend
                        .tls()
                        .map(|tls| tls.server_name.to_str().into_owned()),
                };
                ((order, position), row)
            });
        }
    }
    let mut rows: Vec<_> = probes.join_all().await;
    rows.sort_by_key(|(at, _)| *at);
    rows.into_iter().map(|(_, row)| row).collect()
}

/// The pools in which no backend passed: alb would answer their requests with 503.
pub fn pools_without_healthy(config: &Config, results: &[LiveResult]) -> Vec<String> {
    config
        .all_pools()
        .into_iter()
        .map(|pool| pool.name)
        .filter(|name| !results.iter().any(|r| &r.pool == name && r.healthy))
        .collect()
}
