//! A route's rate limit shared by the replicas through Redis: GCRA buckets kept there by a script
//! (`shared_state`), taken from in leases of a few tokens so that most decisions stay local.
//!
//! A replica asks its bucket for up to `lease` tokens at once, spends one on the request that
//! asked and keeps the rest for the key's next requests, for at most [`LEASE_LIFE`]. An empty
//! bucket answers how long until it holds a token again, and the replica refuses the key's
//! requests until then without asking. Every token that lets a request through was taken from the
//! one bucket, so the fleet together never passes more than the rate and burst allow; a leased
//! token that expires unused was taken for nothing, which only makes the limit stricter, and the
//! lease size (see `SharedStateConfig::lease_for`) keeps that small: at most a hundredth of a
//! second of the rate, at most half the burst split over the replicas.
//!
//! Measured on S1's load (BENCHMARKS.md, "Shared rate limits"): one round trip per request
//! (`lease = 1`) cost a third of the throughput on a two-core host, where Redis's own CPU
//! competes with alb's; leases kept it within a few per cent of the local limiter.
//!
//! While Redis does not answer, each replica limits the route in its own table at its share of
//! the rate (`per_second / replicas`, the burst likewise).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Decision, RateLimiter};
use crate::config::{RateLimitConfig, RouteConfig, SharedStateConfig};
use crate::shared_state::{Grant, SharedStore};

/// Longest a leased token is kept: a replica that holds tokens must not sit on them while the
/// bucket refills, then spend both (a burst larger than configured).
pub const LEASE_LIFE: Duration = Duration::from_secs(1);

/// Locks the lease table is split under.
const SHARDS: usize = 16;

/// How often a full shard of the lease table is swept of expired leases at most: a flood of new
/// keys costs one sweep per shard per 100 ms, not one per request.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// One route's shared limit; see the module docs.
pub struct SharedLimit {
    store: Arc<SharedStore>,
    /// `PREFIX:rl:ROUTE:`, the key's bytes follow.
    bucket: Vec<u8>,
    interval: Duration,
    /// `(burst - 1)` intervals.
    slack: Duration,
    lease: u32,
    /// The decisions while Redis does not answer, at this replica's share.
    fallback: RateLimiter,
    /// What the limiter was built from, to know whether a reload may keep it.
    made_for: (String, RateLimitConfig),
    hasher: RandomState,
    leases: Box<[Mutex<Leases>]>,
    /// Keys each shard holds leases for at most (the route's `max_keys` split).
    per_shard: usize,
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimit")
            .field("bucket", &String::from_utf8_lossy(&self.bucket))
            .field("interval", &self.interval)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Leases {
    by_key: HashMap<u64, Lease>,
    next_sweep: Option<Instant>,
}

/// What this replica knows of one key's bucket.
#[derive(Clone, Copy)]
struct Lease {
    /// Tokens taken and not spent yet...
    tokens: u32,
    /// ...usable until then.
    until: Instant,
    /// The bucket was empty: refused until then without asking.
    empty_until: Instant,
}

impl SharedLimit {
    pub fn new(
        route: &RouteConfig,
        limit: &RateLimitConfig,
        config: &SharedStateConfig,
        store: &Arc<SharedStore>,
    ) -> SharedLimit {
        let id = route_id(route, limit);
        let per_second = f64::from(limit.per_second.max(1));
        let interval = Duration::from_secs_f64(1.0 / per_second);
        let replicas = config.replicas.max(1);
        SharedLimit {
            store: store.clone(),
            bucket: format!("{}:rl:{id}:", config.prefix).into_bytes(),
            interval,
            slack: interval.saturating_mul(limit.burst.max(1) - 1),
            lease: config.lease_for(limit.per_second, limit.burst),
            fallback: RateLimiter::new(
                per_second / f64::from(replicas),
                limit.burst.div_ceil(replicas),
                limit.max_keys,
            ),
            made_for: (id, limit.clone()),
            hasher: RandomState::new(),
            leases: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (limit.max_keys / SHARDS).max(16),
        }
    }

    pub(super) fn fits(
        &self,
        route: &RouteConfig,
        limit: &RateLimitConfig,
        store: &Arc<SharedStore>,
    ) -> bool {
        Arc::ptr_eq(&self.store, store)
            && self.made_for.1 == *limit
            && self.made_for.0 == route_id(route, limit)
    }

    pub(super) fn check(self: &Arc<Self>, key: &[u8], now: Instant) -> Decision {
        let hash = self.hasher.hash_one(key);
        if let Some(decided) = self.decide_locally(hash, now) {
            return Decision::Now(decided);
        }
        if !self.store.is_up() {
            self.store.unavailable();
            return Decision::Now(self.fallback.check(key, now));
        }
        let limiter = self.clone();
        let key = key.to_vec();
        Decision::Ask(Box::pin(async move { limiter.ask(hash, key).await }))
    }

    /// A decision from what this replica holds for the key: a token of its lease, or the
    /// bucket known to be empty.
    fn decide_locally(&self, hash: u64, now: Instant) -> Option<Result<(), Duration>> {
        let mut leases = self.shard(hash);
        let lease = leases.by_key.get_mut(&hash)?;
        if now < lease.empty_until {
            return Some(Err(lease.empty_until - now));
        }
        if lease.tokens > 0 && now < lease.until {
            lease.tokens -= 1;
            return Some(Ok(()));
        }
        None
    }

    /// Asks Redis for a lease; the local table decides when it does not answer in time.
    async fn ask(&self, hash: u64, key: Vec<u8>) -> Result<(), Duration> {
        let mut bucket = Vec::with_capacity(self.bucket.len() + key.len());
        bucket.extend_from_slice(&self.bucket);
        bucket.extend_from_slice(&key);
        let answer = self
            .store
            .take(&bucket, self.interval, self.slack, self.lease)
            .await;
        let now = Instant::now();
        match answer {
            Some(Grant { tokens: 0, wait }) => {
                // A wait of 0 would be a bucket that is not empty: one tick at least.
                let wait = wait.max(Duration::from_micros(1));
                self.remember(hash, now, |lease| lease.empty_until = now + wait);
                Err(wait)
            }
            Some(Grant { tokens, .. }) => {
                if tokens > 1 {
                    self.remember(hash, now, |lease| {
                        let kept = if lease.until > now { lease.tokens } else { 0 };
                        lease.tokens = kept.saturating_add(tokens - 1);
                        lease.until = now + LEASE_LIFE;
                    });
                }
                Ok(())
            }
            None => self.fallback.check(&key, now),
        }
    }

    /// Updates (or makes) the key's lease, unless the shard is full of live ones: then the
    /// tokens are dropped (stricter, never looser).
    fn remember(&self, hash: u64, now: Instant, update: impl FnOnce(&mut Lease)) {
        let mut leases = self.shard(hash);
        if !leases.by_key.contains_key(&hash) && leases.by_key.len() >= self.per_shard {
            if leases.next_sweep.is_some_and(|at| now < at) {
                return;
            }
            leases
                .by_key
                .retain(|_, lease| lease.until > now || lease.empty_until > now);
            leases.next_sweep = Some(now + SWEEP_EVERY);
            if leases.by_key.len() >= self.per_shard {
                return;
            }
        }
        let lease = leases.by_key.entry(hash).or_insert(Lease {
            tokens: 0,
            until: now,
            empty_until: now,
        });
        update(lease);
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Leases> {
        // The high bits: the map inside hashes the whole value again.
        let shard = &self.leases[(hash >> 60) as usize % SHARDS];
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A name for the route's buckets that every replica running the same config computes alike: a
/// hash (64-bit FNV-1a, in hex) of what the route matches and its limit, so that reordering routes
/// does not mix two routes' buckets, and a changed limit starts new ones.
fn route_id(route: &RouteConfig, limit: &RateLimitConfig) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{:?}",
        route.host,
        route.path_prefix,
        route.path,
        route.methods,
        route.headers,
        route.client_certificate,
        limit.per_second,
        limit.burst,
        limit.key,
    );
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::shared_state::SharedStateStats;

    fn config(extra: &str) -> Config {
        Config::from_toml(
            &format!(
                "backends = [\"http://127.0.0.1:9\"]\n\
                 [shared_state]\nredis = \"redis://127.0.0.1:1\"\nreplicas = 2\n{extra}\n\
                 [[route]]\npath_prefix = \"/api\"\npool = \"default\"\n\
                 rate_limit = {{ per_second = 100, burst = 10 }}\n\
                 [[route]]\npath_prefix = \"/\"\npool = \"default\"\n\
                 rate_limit = {{ per_second = 100, burst = 10 }}\n"
            ),
            "t.toml",
        )
        .expect("valid")
    }

    fn limiter(config: &Config, route: usize) -> Arc<SharedLimit> {
        let shared = config.shared_state.as_ref().expect("[shared_state]");
        // No runtime here: the store never connects, so it is down.
        let store = Arc::new(SharedStore::start(
            shared,
            Arc::new(SharedStateStats::default()),
        ));
        let route = &config.routes[route];
        let limit = route.rate_limit.as_ref().expect("a limit");
        Arc::new(SharedLimit::new(route, limit, shared, &store))
    }

    #[test]
    fn routes_get_buckets_of_their_own_named_alike_by_every_replica() {
        let config = config("prefix = \"edge\"");
        let (api, all) = (limiter(&config, 0), limiter(&config, 1));
        let name = |l: &SharedLimit| String::from_utf8(l.bucket.clone()).expect("text");
        assert!(name(&api).starts_with("edge:rl:"), "{}", name(&api));
        assert_ne!(name(&api), name(&all));
        // Another process (another random hasher, another store) names them alike.
        assert_eq!(name(&api), name(&limiter(&config, 0)));
    }

    #[test]
    fn while_redis_is_down_the_replica_limits_at_its_share() {
        let config = config("");
        let limiter = limiter(&config, 0);
        let now = Instant::now();
        let passed = (0..100)
            .filter(|_| matches!(limiter.check(b"k", now), Decision::Now(Ok(()))))
            .count();
        // A burst of 10 over two replicas: 5 each.
        assert_eq!(passed, 5);
        let Decision::Now(Err(wait)) = limiter.check(b"k", now) else {
            panic!("decided locally, refused");
        };
        // 50 per second each: 20 ms between two requests.
        assert_eq!(wait, Duration::from_millis(20));
    }

    #[test]
    fn a_lease_is_spent_locally_then_expires() {
        let config = config("");
        let limiter = limiter(&config, 0);
        let now = Instant::now();
        let hash = limiter.hasher.hash_one(b"k");
        limiter.remember(hash, now, |lease| {
            lease.tokens = 2;
            lease.until = now + LEASE_LIFE;
        });
        assert_eq!(limiter.decide_locally(hash, now), Some(Ok(())));
        assert_eq!(limiter.decide_locally(hash, now), Some(Ok(())));
        assert_eq!(limiter.decide_locally(hash, now), None, "spent: ask Redis");
        limiter.remember(hash, now, |lease| lease.tokens = 1);
        assert_eq!(
            limiter.decide_locally(hash, now + LEASE_LIFE),
            None,
            "expired"
        );
        limiter.remember(hash, now, |lease| {
            lease.empty_until = now + Duration::from_millis(30);
        });
        let later = now + Duration::from_millis(10);
        assert_eq!(
            limiter.decide_locally(hash, later),
            Some(Err(Duration::from_millis(20)))
        );
    }

    #[test]
    fn the_lease_table_stays_bounded() {
        let config = config("");
        let limiter = limiter(&config, 0);
        let now = Instant::now();
        for key in 0..20 * limiter.per_shard as u64 * SHARDS as u64 / 10 {
            let hash = limiter.hasher.hash_one(key.to_le_bytes());
            limiter.remember(hash, now, |lease| {
                lease.tokens = 1;
                lease.until = now + LEASE_LIFE;
            });
        }
        for shard in limiter.leases.iter() {
            let shard = shard.lock().expect("not poisoned");
            assert!(shard.by_key.len() <= limiter.per_shard);
        }
        // Once they expired, new keys find room again.
        let later = now + LEASE_LIFE + SWEEP_EVERY;
        let hash = limiter.hasher.hash_one(b"new");
        limiter.remember(hash, later, |lease| {
            lease.tokens = 1;
            lease.until = later + LEASE_LIFE;
        });
        assert_eq!(limiter.decide_locally(hash, later), Some(Ok(())));
    }
}
