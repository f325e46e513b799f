//! Routes: `[[route]]` tables, first match wins. Each names conditions on a request (all given
//! must hold) and the pool it goes to, or a weighted split over pools. Validation refuses a
//! route that names no known pool and one that can never match because an earlier route takes
//! every request it would; it warns of a pool no route reaches.

use std::collections::BTreeMap;

use http::{HeaderName, Method};

use super::pools::DEFAULT_POOL;
use super::raw::{RawHeaderMatch, RawRateLimit, RawRetry, RawRoute, RawTimeouts};
use super::sections;
use super::values::{Problems, count, route_path};
use super::{Problem, RetryConfig, RoutePolicy, Timeouts};

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub host: Option<HostPattern>,
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderCondition>,
    /// One pool (`pool`), or several with weights (`split`).
    pub targets: Vec<RouteTarget>,
    /// Forward the path without `path_prefix` (always starting with `/`).
    pub strip_prefix: bool,
    /// The route's `timeouts` over the top-level ones, when it gives any.
    pub timeouts: Option<Timeouts>,
    pub rate_limit: Option<RateLimitConfig>,
    /// Condition: the client presented a certificate the TLS listener verified.
    pub client_certificate: bool,
    pub policy: RoutePolicy,
}

impl RouteConfig {
    /// No condition at all: every request that reaches it matches.
    pub fn is_catch_all(&self) -> bool {
        self.host.is_none()
            && self.path_prefix.is_none()
            && self.path.is_none()
            && self.methods.is_empty()
            && self.headers.is_empty()
            && !self.client_certificate
    }
}

/// A host condition, matched case-insensitively against the request's host without its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: any name under it, not the name itself.
    Suffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub test: HeaderTest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    /// Some field of that name has exactly this value.
    Equals(String),
    Present,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub pool: String,
    pub weight: u32,
    /// The route's `retry` over this pool's, when the route gives one.
    pub retry: Option<RetryConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_second: u32,
    pub burst: u32,
    pub key: RateKey,
    /// Keys tracked at once (16 bytes each, taken as keys arrive); past it the key nearest to
    /// being forgotten anyway gives up its place.
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    /// Requests without the field share one bucket.
    Header(HeaderName),
}

/// Whether `prefix` (a `path_prefix`) matches `path` on whole segments: `/static/` and
/// `/static` both match `/static/app.js` and `/static`, neither matches `/staticx`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if path.starts_with(prefix) {
        return prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/';
    }
    // `/admin` is under `/admin/`: most servers serve it as the directory (nginx redirects it
    // there, Express's non-strict routing serves it), so it must not slip to another route.
    prefix.len() > 1 && prefix.strip_suffix('/') == Some(path)
}

/// Timeouts that belong to a client connection, not to where its requests go.
const CLIENT_TIMEOUTS: &str = "client_header, client_body_idle, keepalive_idle and drain";

/// Validates the routes against the pools there are (`pool_retry`: each pool's `retry` section
/// as it resolved, raw, so that a route's `retry` can go over it key by key).
pub(super) fn routes(
    raw: Vec<RawRoute>,
    pool_retry: &BTreeMap<String, RawRetry>,
    top_timeouts: &RawTimeouts,
    problems: &mut Problems,
) -> Vec<RouteConfig> {
    let routes: Vec<RouteConfig> = raw
        .into_iter()
        .enumerate()
        .map(|(i, route)| {
            one(
                &format!("route[{i}]."),
                route,
                pool_retry,
                top_timeouts,
                problems,
            )
        })
        .collect();
    for (j, later) in routes.iter().enumerate() {
        if let Some(i) = routes[..j]
            .iter()
            .position(|earlier| covers(earlier, later))
        {
            problems.add(
                format!("route[{j}]"),
                format!("can never match: route[{i}] comes first and takes every request it would"),
            );
        }
    }
    routes
}

/// Pools that no route sends to, when there are routes (then only unrouted requests reach
/// `default`, which is a use of it).
pub(super) fn unused_pools<'a>(
    routes: &[RouteConfig],
    pools: impl Iterator<Item = &'a str>,
) -> Vec<Problem> {
    if routes.is_empty() {
        return Vec::new();
    }
    pools
        .filter(|name| *name != DEFAULT_POOL)
        .filter(|name| {
            !routes
                .iter()
                .any(|r| r.targets.iter().any(|t| t.pool == *name))
        })
        .map(|name| Problem {
            key: format!("pools.{name}"),
            reason: "no route sends requests to this pool".into(),
        })
        .collect()
}

fn one(
    prefix: &str,
    mut raw: RawRoute,
    pool_retry: &BTreeMap<String, RawRetry>,
    top_timeouts: &RawTimeouts,
    problems: &mut Problems,
) -> RouteConfig {
    let key = |k: &str| format!("{prefix}{k}");
    let policy = super::route_policy::route_policy(prefix, &mut raw, problems);
    let host = raw
        .host
        .as_deref()
        .and_then(|text| match host_pattern(text) {
            Ok(pattern) => Some(pattern),
            Err(reason) => {
                problems.add(key("host"), reason);
                None
            }
        });
    for (name, value) in [("path_prefix", &raw.path_prefix), ("path", &raw.path)] {
        if let Some(path) = value {
            route_path(&key(name), path, problems);
        }
    }
    if raw.path.is_some() && raw.path_prefix.is_some() {
        problems.add(key("path"), "give path or path_prefix, not both");
    }
    let strip_prefix = raw.strip_prefix.unwrap_or(false);
    if strip_prefix && raw.path_prefix.is_none() {
        problems.add(key("strip_prefix"), "needs a path_prefix to strip");
    }
    let methods = raw
        .methods
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(m, text)| match Method::from_bytes(text.as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => {
                problems.add(
                    format!("{prefix}methods[{m}]"),
                    format!("{text:?} is not a method"),
                );
                None
            }
        })
        .collect();
    let headers = raw
        .headers
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, test)| match HeaderName::try_from(name.as_str()) {
            Ok(header) => Some(HeaderCondition {
                name: header,
                test: match test {
                    RawHeaderMatch::Value(value) => HeaderTest::Equals(value),
                    RawHeaderMatch::Present(true) => HeaderTest::Present,
                    RawHeaderMatch::Present(false) => HeaderTest::Absent,
                },
            }),
            Err(_) => {
                problems.add(format!("{prefix}headers.{name}"), "not a header name");
                None
            }
        })
        .collect();
    let targets = if policy.redirect.is_some() {
        if raw.pool.is_some() || raw.split.is_some() || raw.retry.is_some() {
            problems.add(
                key("redirect"),
                "a redirect route sends to no pool: give no pool, split or retry",
            );
        }
        Vec::new()
    } else {
        targets(prefix, raw.pool, raw.split, raw.retry, pool_retry, problems)
    };
    let timeouts = raw.timeouts.map(|t| {
        if t.client_header.is_some()
            || t.client_body_idle.is_some()
            || t.keepalive_idle.is_some()
            || t.drain.is_some()
        {
            problems.add(
                key("timeouts"),
                format!("{CLIENT_TIMEOUTS} apply to client connections: set them in the top-level [timeouts]"),
            );
        }
        problems.scoped(prefix, |p| sections::timeouts(t.over(top_timeouts), p))
    });
    RouteConfig {
        host,
        path_prefix: raw.path_prefix,
        path: raw.path,
        methods,
        headers,
        targets,
        strip_prefix,
        timeouts,
        rate_limit: raw.rate_limit.map(|r| rate_limit(prefix, r, problems)),
        client_certificate: raw.client_certificate.unwrap_or(false),
        policy,
    }
}

fn host_pattern(text: &str) -> Result<HostPattern, String> {
    let host = text.trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, host.clone()),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Err(format!(
            "{text:?} is not a host name (exact, or \"*.example.com\"; no port: it is ignored)"
        ));
    }
    Ok(if wildcard {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name)
    })
}

fn targets(
    prefix: &str,
    pool: Option<String>,
    split: Option<Vec<super::raw::RawSplit>>,
    retry: Option<RawRetry>,
    pool_retry: &BTreeMap<String, RawRetry>,
    problems: &mut Problems,
) -> Vec<RouteTarget> {
    let named: Vec<(String, String, u32)> = match (pool, split) {
        (Some(_), Some(_)) => {
            problems.add(format!("{prefix}split"), "give pool or split, not both");
            Vec::new()
        }
        (None, None) => {
            problems.add(format!("{prefix}pool"), "a route needs a pool (or a split)");
            Vec::new()
        }
        (Some(pool), None) => vec![(format!("{prefix}pool"), pool, 1)],
        (None, Some(split)) => {
            if split.is_empty() {
                problems.add(format!("{prefix}split"), "lists no pool");
            }
            split
                .into_iter()
                .enumerate()
                .map(|(s, entry)| {
                    let key = format!("{prefix}split[{s}]");
                    let weight = count(
                        &format!("{key}.weight"),
                        Some(entry.weight),
                        1,
                        0,
                        10_000,
                        problems,
                    );
                    (format!("{key}.pool"), entry.pool, weight)
                })
                .collect()
        }
    };
    if let Some(r) = &retry
        && (r.budget_percent.is_some() || r.budget_min_per_second.is_some())
    {
        problems.add(
            format!("{prefix}retry"),
            "budget_percent and budget_min_per_second belong to the pool: its backends take the \
             retries of every route",
        );
    }
    if !named.is_empty() && named.iter().all(|(_, _, w)| *w == 0) {
        problems.add(format!("{prefix}split"), "every weight is 0");
    }
    named
        .into_iter()
        .filter_map(|(key, pool, weight)| {
            let Some(base) = pool_retry.get(&pool) else {
                let known: Vec<&str> = pool_retry.keys().map(String::as_str).collect();
                problems.add(
                    key,
                    format!("no pool {pool:?} (there are: {})", known.join(", ")),
                );
                return None;
            };
            let retry = retry
                .clone()
                .map(|r| problems.scoped(prefix, |p| sections::retry(r.over(base), p)));
            Some(RouteTarget {
                pool,
                weight,
                retry,
            })
        })
        .collect()
}

fn rate_limit(prefix: &str, raw: RawRateLimit, problems: &mut Problems) -> RateLimitConfig {
    let key = |k: &str| format!("{prefix}rate_limit.{k}");
    if raw.per_second.is_none() {
        problems.add(
            key("per_second"),
            "is required: requests per second allowed per key",
        );
    }
    let per_second = count(
        &key("per_second"),
        raw.per_second,
        1,
        1,
        1_000_000,
        problems,
    );
    let burst = count(
        &key("burst"),
        raw.burst,
        per_second,
        1,
        10_000_000,
        problems,
    );
    let rate_key = match raw.key.as_deref() {
        None | Some("client_ip") => RateKey::ClientIp,
        Some(text) => match text.strip_prefix("header:").map(HeaderName::try_from) {
            Some(Ok(name)) => RateKey::Header(name),
            _ => {
                problems.add(
                    key("key"),
                    format!("{text:?} is not \"client_ip\" or \"header:NAME\""),
                );
                RateKey::ClientIp
            }
        },
    };
    let max_keys = count(
        &key("max_keys"),
        raw.max_keys,
        1_000_000,
        1_000,
        100_000_000,
        problems,
    ) as usize;
    RateLimitConfig {
        per_second,
        burst,
        key: rate_key,
        max_keys,
    }
}

/// Whether every request `later` matches is matched by `earlier` too (so `later` never is).
/// Conservative: true only when each condition of `earlier` is implied by one of `later`.
fn covers(earlier: &RouteConfig, later: &RouteConfig) -> bool {
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostPattern::Exact(a)), Some(HostPattern::Exact(b))) => a == b,
        (Some(HostPattern::Suffix(a)), Some(HostPattern::Exact(b))) => {
            HostPattern::Suffix(a.clone()).matches(b)
        }
        (Some(HostPattern::Suffix(a)), Some(HostPattern::Suffix(b))) => b.ends_with(a.as_str()),
        (Some(HostPattern::Exact(_)), Some(HostPattern::Suffix(_))) => false,
    };
    let later_path = later.path.as_deref().or(later.path_prefix.as_deref());
    let path = match (&earlier.path_prefix, &earlier.path) {
        (Some(prefix), _) => later_path.is_some_and(|p| prefix_matches(prefix, p)),
        (None, Some(exact)) => later.path.as_deref() == Some(exact.as_str()),
        (None, None) => true,
    };
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    let headers = earlier.headers.iter().all(|h| later.headers.contains(h));
    let certificate = !earlier.client_certificate || later.client_certificate;
    host && path && methods && headers && certificate
}
