//! A route's rate limit, the one decision the request handler asks for ([`RouteLimiter::check`]):
//! in this process's table (`local`), or, with `[shared_state]`, in buckets every replica shares
//! in Redis (`shared`), with the local table as the fallback while Redis does not answer.
//!
//! A local decision is made at once. A shared one is made at once too when the replica holds a
//! lease of tokens for the key, or knows the key's bucket is empty until some instant; otherwise
//! it costs one round trip to Redis, never longer than `shared_state.timeout`.

mod local;
mod shared;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use local::{DEFAULT_MAX_KEYS, RateLimiter};
pub use shared::SharedLimit;

use crate::config::{RateLimitConfig, RouteConfig, SharedStateConfig};
use crate::shared_state::SharedStore;

/// One route's limiter. Cloning it shares its state: a snapshot built by a reload keeps the
/// limiter of a route whose limit did not change, so that a reload is no way to reset a bucket.
#[derive(Debug, Clone)]
pub enum RouteLimiter {
    Local(Arc<RateLimiter>),
    Shared(Arc<SharedLimit>),
}

/// What [`RouteLimiter::check`] decided: `Ok` if the request may pass, else the wait until one
/// would (for `Retry-After`); now, or once Redis answered.
pub enum Decision {
    Now(Result<(), Duration>),
    /// Boxed: the handler's future stays as small as it was for the local decision.
    Ask(Pin<Box<dyn Future<Output = Result<(), Duration>> + Send>>),
}

impl Decision {
    pub async fn finish(self) -> Result<(), Duration> {
        match self {
            Decision::Now(decided) => decided,
            Decision::Ask(asking) => asking.await,
        }
    }
}

impl RouteLimiter {
    /// The limiter of `route`'s `limit`: shared through `store` when there is one.
    pub fn new(
        route: &RouteConfig,
        limit: &RateLimitConfig,
        shared: Option<(&SharedStateConfig, &Arc<SharedStore>)>,
    ) -> RouteLimiter {
        match shared {
            None => RouteLimiter::Local(Arc::new(RateLimiter::new(
                f64::from(limit.per_second),
                limit.burst,
                limit.max_keys,
            ))),
            Some((config, store)) => {
                RouteLimiter::Shared(Arc::new(SharedLimit::new(route, limit, config, store)))
            }
        }
    }

    /// Whether this limiter, built for a route with the same `limit`, is the one `route` under
    /// `shared` would build (then a reload keeps it).
    pub fn fits(
        &self,
        route: &RouteConfig,
        limit: &RateLimitConfig,
        shared: Option<&Arc<SharedStore>>,
    ) -> bool {
        match (self, shared) {
            (RouteLimiter::Local(_), None) => true,
            (RouteLimiter::Shared(limiter), Some(store)) => limiter.fits(route, limit, store),
            _ => false,
        }
    }

    /// Counts one request of `key`; see [`Decision`].
    pub fn check(&self, key: &[u8]) -> Decision {
        let now = Instant::now();
        match self {
            RouteLimiter::Local(limiter) => Decision::Now(limiter.check(key, now)),
            RouteLimiter::Shared(limiter) => limiter.check(key, now),
        }
    }
}
