//! The data plane as one config built it ([`Snapshot`]), and where one request goes in it
//! ([`Plan`]): its route, pool, retry rules and timeouts, and what ties it to a backend.

use std::sync::Arc;

use http::{HeaderValue, Request};

use super::Scheme;
use super::route::{RequestKey, RouteTable};
use super::{BackendPool, ClientInfo, ProxyError, ProxyStats, RetryPolicy, RouteLimiter, affinity};
use crate::config::{BackendSpec, Config, DEFAULT_POOL, Limits, Timeouts};
use crate::health::OutlierDetector;
use crate::shared_state::SharedStore;
use crate::upstream::Backend;

/// The data plane as one config made it: its pools of backends, the routes to them and the
/// settings requests are handled by, swapped whole on reload: requests that started on the old
/// snapshot finish on it.
#[derive(Debug)]
pub struct Snapshot {
    pub(super) config: Config,
    pub(super) pools: Vec<BackendPool>,
    pub(super) routes: RouteTable,
    /// Each route's pools (indices into `pools`), by weight, with the route's retry rules.
    pub(super) route_targets: Vec<Vec<Target>>,
    /// Where requests no route takes go; none: 404.
    pub(super) default_pool: Option<usize>,
    /// Each route's rate limiter, if it has a `rate_limit` (kept across reloads that leave the
    /// route's limit as it was, so a reload is no way to reset a client's bucket).
    pub(super) route_limits: Vec<Option<RouteLimiter>>,
    /// The `[shared_state]` store the limiters share (kept across reloads that leave the section
    /// as it was: one connection).
    pub(super) shared_store: Option<Arc<SharedStore>>,
    /// Every backend of every pool, pool after pool.
    pub(super) backends: Vec<Arc<Backend>>,
    pub(super) timeouts: Timeouts,
    pub(super) limits: Limits,
    pub(super) access_log: bool,
    pub(super) retry_after: HeaderValue,
    pub(super) explain: bool,
    pub(super) stats: Arc<ProxyStats>,
    pub(super) tracer: crate::trace::Tracer,
}

/// One pool a route sends to.
#[derive(Debug)]
pub(super) struct Target {
    pool: usize,
    weight: u32,
    /// The route's `retry` for this pool, over the pool's budget; none: the pool's policy.
    retry: Option<RetryPolicy>,
}

/// Where one request goes and by which rules, once routing chose.
pub(super) struct Plan<'a> {
    pub(super) pool: &'a BackendPool,
    pub(super) retry: &'a RetryPolicy,
    pub(super) timeouts: &'a Timeouts,
    /// The route that matched, if any (explain headers).
    pub(super) route: Option<usize>,
    /// The request's hash for `algorithm = "hash"`.
    pub(super) key: Option<u64>,
    /// The backend (index in the pool) the request's sticky cookie names.
    pub(super) sticky: Option<usize>,
    /// The client came over TLS: a sticky cookie is set `Secure`.
    pub(super) secure: bool,
}

impl Snapshot {
    /// Builds the snapshot for `config`, each pool's backends passed through `expand` (which
    /// replaces a DNS name by the addresses it resolved to, see `control::discovery`). Backends
    /// of the same pool in `previous` that are unchanged (same URL, weight and connection limit)
    /// are kept as they are, with their health, counters and pooled connections.
    pub fn new(
        config: &Config,
        expand: &dyn Fn(&[BackendSpec]) -> Vec<BackendSpec>,
        stats: Arc<ProxyStats>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let retry_after = config.health_check.interval.as_secs_f64().ceil().max(1.0) as u64;
        let pools: Vec<BackendPool> = config
            .all_pools()
            .iter()
            .map(|pool| {
                let before = previous
                    .and_then(|p| p.pool(&pool.name))
                    .map_or(&[][..], BackendPool::backends);
                BackendPool::new(pool, &expand(&pool.backends), before, stats.clone())
            })
            .collect();
        let index = |name: &str| pools.iter().position(|p| p.name() == name);
        let route_targets = config
            .routes
            .iter()
            .map(|route| {
                route
                    .targets
                    .iter()
                    .filter_map(|t| {
                        let pool = index(&t.pool)?;
                        let retry = t
                            .retry
                            .as_ref()
                            .map(|r| RetryPolicy::sharing_budget(r, &pools[pool].retry));
                        Some(Target {
                            pool,
                            weight: t.weight,
                            retry,
                        })
                    })
                    .collect()
            })
            .collect();
        let shared_store = config.shared_state.as_ref().map(|section| {
            let kept = previous
                .filter(|p| p.config.shared_state.as_ref() == Some(section))
                .and_then(|p| p.shared_store.clone());
            kept.unwrap_or_else(|| {
                Arc::new(SharedStore::start(section, stats.shared_state.clone()))
            })
        });
        let shared = config.shared_state.as_ref().zip(shared_store.as_ref());
        let route_limits = config
            .routes
            .iter()
            .map(|route| {
                let limit = route.rate_limit.as_ref()?;
                let kept = previous.and_then(|p| {
                    p.config
                        .routes
                        .iter()
                        .zip(&p.route_limits)
                        .filter(|(r, _)| r.rate_limit.as_ref() == Some(limit))
                        .filter_map(|(_, l)| l.as_ref())
                        .find(|l| l.fits(route, limit, shared_store.as_ref()))
                        .cloned()
                });
                Some(kept.unwrap_or_else(|| RouteLimiter::new(route, limit, shared)))
            })
            .collect();
        Snapshot {
            config: config.clone(),
            route_limits,
            shared_store,
            routes: RouteTable::new(&config.routes),
            route_targets,
            default_pool: index(DEFAULT_POOL),
            backends: pools
                .iter()
                .flat_map(|p| p.backends().iter().cloned())
                .collect(),
            pools,
            timeouts: config.timeouts.clone(),
            limits: config.limits.clone(),
            access_log: config.access_log,
            retry_after: HeaderValue::from(retry_after),
            explain: config.explain,
            tracer: crate::trace::Tracer::new(
                config.tracing.as_ref(),
                previous.map(|p| &p.tracer),
                &stats.trace,
            ),
            stats,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every backend, of every pool.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn pools(&self) -> &[BackendPool] {
        &self.pools
    }

    pub fn pool(&self, name: &str) -> Option<&BackendPool> {
        self.pools.iter().find(|p| p.name() == name)
    }

    /// Requests each route took, in route order, since this snapshot began.
    pub fn route_hits(&self) -> Vec<u64> {
        self.routes.hits()
    }

    /// The first pool's passive health (the only pool's, in a config without pools).
    pub fn outliers(&self) -> &Arc<OutlierDetector> {
        self.pools[0].outliers()
    }

    /// The route `request` takes, if any (counted as a hit), and the path as routing read it
    /// when that is not the path as sent (see `path_reading::PathReading`), for the request to
    /// go on with; `Err` for a path backends read in more than one way.
    pub(super) fn route_for<B>(
        &self,
        request: &Request<B>,
        client: &ClientInfo,
        trusted_peer: bool,
    ) -> Result<(Option<usize>, Option<String>), ProxyError> {
        if self.routes.is_empty() {
            return Ok((None, None));
        }
        let ambiguous = |_| ProxyError::AmbiguousPath;
        let verified = client
            .tls
            .as_ref()
            .is_some_and(|t| t.client_subject.is_some());
        let key = RequestKey::of(request, verified, trusted_peer).map_err(ambiguous)?;
        let route = self.routes.find(&key).map_err(ambiguous)?;
        Ok((route, key.into_read_path()))
    }

    /// Where `request` goes once routing chose `route` (none: the pool `default`).
    pub(super) fn plan<B>(
        &self,
        route: Option<usize>,
        request: &Request<B>,
        client: &ClientInfo,
    ) -> Result<Plan<'_>, ProxyError> {
        let target = route.and_then(|r| self.split(r));
        let pool_index = match (route, target) {
            (Some(_), Some(target)) => target.pool,
            (Some(_), None) => return Err(ProxyError::NoRoute),
            (None, _) => self.default_pool.ok_or(ProxyError::NoRoute)?,
        };
        let pool = &self.pools[pool_index];
        Ok(Plan {
            pool,
            retry: target.and_then(|t| t.retry.as_ref()).unwrap_or(&pool.retry),
            timeouts: route
                .and_then(|r| self.routes.get(r).timeouts.as_ref())
                .unwrap_or(&self.timeouts),
            route,
            key: pool
                .hash_key()
                .and_then(|key| affinity::hash_of(key, request, client)),
            sticky: pool
                .sticky
                .as_ref()
                .and_then(|sticky| sticky.backend_for(request.headers())),
            secure: client.scheme == Scheme::Https,
        })
    }

    /// Takes one request from the route's rate limit; the wait until the next is allowed when
    /// it is spent. Asks the `[shared_state]` store when there is one and this replica holds no
    /// lease for the key: at most `shared_state.timeout`, then the replica decides alone.
    pub(super) async fn over_limit<B>(
        &self,
        route: usize,
        request: &Request<B>,
        client: &ClientInfo,
    ) -> Option<std::time::Duration> {
        let limiter = self.route_limits[route].as_ref()?;
        let limit = self.routes.get(route).rate_limit.as_ref()?;
        let decision = limiter.check(&affinity::rate_key(&limit.key, request, client));
        decision.finish().await.err()
    }

    /// The pool of `route` for this request: by weight when the route splits.
    fn split(&self, route: usize) -> Option<&Target> {
        let targets = &self.route_targets[route];
        if targets.len() <= 1 {
            return targets.first();
        }
        let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
        let mut ticket = fastrand::u64(..total.max(1));
        targets.iter().find(|t| {
            let hit = ticket < u64::from(t.weight);
            ticket = ticket.saturating_sub(u64::from(t.weight));
            hit
        })
    }
}
