//! Pools: named sets of backends, each balanced, checked and retried on its own. The top-level
//! `backends` are the pool `default`; a `[pools.NAME]` section gives only what differs from the
//! top level, key by key (its `health_check.path` alone, say), the rest is inherited.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderName;

use super::HeaderRules;
use super::backends;
use super::header_rules::header_rules;
use super::raw::{RawHealthCheck, RawLimits, RawPassiveHealth, RawPool, RawRetry, RawSticky};
use super::sections;
use super::values::{Problems, duration};
use super::{Algorithm, BackendSpec, HealthCheckConfig, PassiveHealthConfig, RetryConfig};

/// The name of the pool the top-level `backends` make, and where unrouted requests go.
pub const DEFAULT_POOL: &str = "default";

/// One pool, every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub algorithm: Algorithm,
    /// What `algorithm = "hash"` hashes, and how far it lets one backend exceed the average.
    pub hash: HashConfig,
    pub backends: Vec<BackendSpec>,
    pub health_check: HealthCheckConfig,
    pub passive_health: PassiveHealthConfig,
    pub retry: RetryConfig,
    /// Requests that may wait for one of its backends at its `max_connections`.
    pub backend_queue: usize,
    pub backend_queue_timeout: Duration,
    pub sticky: Option<StickyConfig>,
    /// `[pools.NAME.request_headers]` / `response_headers`: between the top-level rules and a
    /// route's (empty for `default`, whose rules are the top-level ones).
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HashConfig {
    pub key: HashKey,
    /// No backend takes more than this many times the pool's average in-flight requests (per
    /// unit of weight); the next one on the ring takes the overflow.
    pub balance: f64,
}

impl Default for HashConfig {
    fn default() -> Self {
        HashConfig {
            key: HashKey::ClientIp,
            balance: 1.25,
        }
    }
}

/// The part of a request `algorithm = "hash"` sends to the same backend every time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
    /// The path without the query.
    Path,
    Query(String),
}

impl std::str::FromStr for HashKey {
    type Err = String;

    fn from_str(text: &str) -> Result<HashKey, String> {
        let named = |prefix: &str| {
            text.strip_prefix(prefix)
                .filter(|name| !name.is_empty())
                .map(str::to_string)
        };
        if text == "client_ip" {
            Ok(HashKey::ClientIp)
        } else if text == "path" {
            Ok(HashKey::Path)
        } else if let Some(name) = named("header:") {
            HeaderName::try_from(name.as_str())
                .map(HashKey::Header)
                .map_err(|_| format!("{name:?} is not a header name"))
        } else if let Some(name) = named("cookie:") {
            if is_token(&name) {
                Ok(HashKey::Cookie(name))
            } else {
                Err(format!("{name:?} is not a cookie name"))
            }
        } else if let Some(name) = named("query:") {
            Ok(HashKey::Query(name))
        } else {
            Err(format!(
                "{text:?} is not one of \"client_ip\", \"path\", \"header:NAME\", \
                 \"cookie:NAME\", \"query:NAME\""
            ))
        }
    }
}

/// Sticky sessions by cookie: the first answer names its backend in a cookie, later requests
/// carrying it go back there while it is available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    pub cookie: String,
    /// `Max-Age` of the cookie; none: a session cookie.
    pub ttl: Option<Duration>,
    /// Signs the cookie values; replicas that share it honour each other's cookies. None: a
    /// random secret per process (cookies then follow one replica, and not across restarts).
    pub secret: Option<String>,
}

/// RFC 6265 cookie names are RFC 9110 tokens.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The top-level sections as written: what every pool inherits, key by key.
#[derive(Debug, Default)]
pub(super) struct Inherited {
    pub health_check: RawHealthCheck,
    pub passive_health: RawPassiveHealth,
    pub retry: RawRetry,
    pub limits: RawLimits,
}

/// Listener-wide limits, which mean nothing for one pool.
const LISTENER_LIMITS: &str = "max_header_bytes, max_uri_bytes, max_body_bytes, \
                               max_client_connections, listen_backlog";

/// Validates the `[pools.NAME]` sections. Their backends get their TLS later, with the others.
pub(super) fn named(
    raw: BTreeMap<String, RawPool>,
    top: &Inherited,
    problems: &mut Problems,
) -> Vec<PoolConfig> {
    let mut pools = Vec::with_capacity(raw.len());
    for (name, pool) in raw {
        let prefix = format!("pools.{name}.");
        if !is_pool_name(&name) {
            problems.add(
                format!("pools.{name}"),
                "a pool name is letters, digits, '-' and '_'",
            );
        }
        let limits = pool.limits.unwrap_or_default();
        if limits.max_header_bytes.is_some()
            || limits.max_uri_bytes.is_some()
            || limits.max_body_bytes.is_some()
            || limits.max_client_connections.is_some()
            || limits.listen_backlog.is_some()
        {
            problems.add(
                format!("{prefix}limits"),
                format!(
                    "{LISTENER_LIMITS} apply to the listener: set them in the top-level [limits]"
                ),
            );
        }
        let limits = limits.over(&top.limits);
        let (limits, backend_max) = problems.scoped(&prefix, |p| sections::limits(limits, p));
        let backends = backends::backend_list(
            &prefix,
            &pool.backends,
            &pool.backend,
            backend_max,
            problems,
        );
        let written =
            pool.backends.as_ref().map_or(0, Vec::len) + pool.backend.as_ref().map_or(0, Vec::len);
        if written == 0 {
            problems.add(
                format!("{prefix}backends"),
                "a pool needs at least one backend",
            );
        }
        let algorithm = backends::algorithm(&prefix, pool.algorithm.as_deref(), problems);
        let hash = hash(
            &prefix,
            algorithm,
            pool.hash_key.as_deref(),
            pool.hash_balance,
            problems,
        );
        pools.push(PoolConfig {
            algorithm,
            hash,
            backends,
            health_check: problems.scoped(&prefix, |p| {
                sections::health_check(
                    pool.health_check
                        .unwrap_or_default()
                        .over(&top.health_check),
                    p,
                )
            }),
            passive_health: problems.scoped(&prefix, |p| {
                sections::passive_health(
                    pool.passive_health
                        .unwrap_or_default()
                        .over(&top.passive_health),
                    p,
                )
            }),
            retry: problems.scoped(&prefix, |p| {
                sections::retry(pool.retry.unwrap_or_default().over(&top.retry), p)
            }),
            backend_queue: limits.backend_queue,
            backend_queue_timeout: limits.backend_queue_timeout,
            sticky: pool.sticky.map(|s| sticky(&prefix, s, problems)),
            request_headers: header_rules(
                &format!("{prefix}request_headers"),
                pool.request_headers,
                problems,
            ),
            response_headers: header_rules(
                &format!("{prefix}response_headers"),
                pool.response_headers,
                problems,
            ),
            name,
        });
    }
    pools
}

fn is_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `hash_key` and `hash_balance` of a pool (`prefix` "" for the top level).
pub(super) fn hash(
    prefix: &str,
    algorithm: Algorithm,
    key: Option<&str>,
    balance: Option<f64>,
    problems: &mut Problems,
) -> HashConfig {
    let d = HashConfig::default();
    if algorithm != Algorithm::Hash {
        for (given, name) in [
            (key.is_some(), "hash_key"),
            (balance.is_some(), "hash_balance"),
        ] {
            if given {
                problems.add(
                    format!("{prefix}{name}"),
                    "only used with algorithm = \"hash\"",
                );
            }
        }
    }
    let key = match key.map(str::parse::<HashKey>) {
        None => d.key,
        Some(Ok(key)) => key,
        Some(Err(reason)) => {
            problems.add(format!("{prefix}hash_key"), reason);
            d.key
        }
    };
    let balance = match balance {
        None => d.balance,
        Some(b) if (1.0..=100.0).contains(&b) => b,
        Some(b) => {
            problems.add(
                format!("{prefix}hash_balance"),
                format!("must be between 1.0 and 100.0, got {b}"),
            );
            d.balance
        }
    };
    HashConfig { key, balance }
}

pub(super) fn sticky(prefix: &str, raw: RawSticky, problems: &mut Problems) -> StickyConfig {
    let key = |k: &str| format!("{prefix}sticky.{k}");
    let cookie = raw.cookie.unwrap_or_else(|| "alb_srv".to_string());
    if !is_token(&cookie) {
        problems.add(key("cookie"), format!("{cookie:?} is not a cookie name"));
    }
    let ttl = raw
        .ttl
        .map(|text| duration(&key("ttl"), Some(text), Duration::ZERO, problems));
    if raw.secret.as_ref().is_some_and(|s| s.len() < 16) {
        problems.add(key("secret"), "must be at least 16 characters");
    }
    StickyConfig {
        cookie,
        ttl: ttl.filter(|t| !t.is_zero()),
        secret: raw.secret,
    }
}
