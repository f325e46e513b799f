//! Turns [`RawConfig`] into a typed [`Config`], collecting every problem instead of stopping at the
//! first one.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::raw::{RawConfig, RawHealthCheck, RawRetry, RawTimeouts};
use super::{
    Algorithm, BackendAddr, BackendSpec, Config, HealthCheckConfig, MAX_WEIGHT, Problem,
    RetryConfig, Timeouts,
};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    let listen = listen(raw.listen.as_deref(), &mut problems);
    let algorithm = algorithm(raw.algorithm.as_deref(), &mut problems);
    let backends = backends(&raw, &mut problems);
    let health_check = health_check(raw.health_check.unwrap_or_default(), &mut problems);
    let timeouts = timeouts(raw.timeouts.unwrap_or_default(), &mut problems);
    let retry = retry(raw.retry.unwrap_or_default(), &mut problems);
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Config {
        listen,
        algorithm,
        backends,
        health_check,
        timeouts,
        retry,
        access_log: raw.access_log.unwrap_or(true),
    })
}

fn listen(value: Option<&str>, problems: &mut Problems) -> SocketAddr {
    let text = value.unwrap_or(DEFAULT_LISTEN);
    text.parse().unwrap_or_else(|_| {
        problems.add(
            "listen",
            format!("{text:?} is not an IP address with a port, like \"127.0.0.1:8080\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    })
}

fn algorithm(value: Option<&str>, problems: &mut Problems) -> Algorithm {
    let Some(text) = value else {
        return Algorithm::default();
    };
    text.parse().unwrap_or_else(|()| {
        problems.add(
            "algorithm",
            format!(
                "unknown algorithm {text:?}, expected one of {}",
                Algorithm::NAMES
            ),
        );
        Algorithm::default()
    })
}

fn backends(raw: &RawConfig, problems: &mut Problems) -> Vec<BackendSpec> {
    let entries: Vec<(String, &str, Option<i64>)> = match (&raw.backends, &raw.backend) {
        (Some(_), Some(_)) => {
            problems.add(
                "backend",
                "use either `backends = [...]` or `[[backend]]` tables, not both",
            );
            return Vec::new();
        }
        (Some(urls), None) => urls
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("backends[{i}]"), url.as_str(), None))
            .collect(),
        (None, Some(tables)) => tables
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("backend[{i}]"), b.url.as_str(), b.weight))
            .collect(),
        (None, None) => Vec::new(),
    };
    if entries.is_empty() {
        problems.add(
            "backends",
            "no backends configured: give at least one, e.g. backends = [\"http://127.0.0.1:8081\"]",
        );
    }
    let mut seen = HashSet::new();
    let mut specs = Vec::with_capacity(entries.len());
    for (key, url, weight) in entries {
        let weight = backend_weight(&key, weight, problems);
        let Some(spec) = backend_url(&key, url, weight, problems) else {
            continue;
        };
        if !seen.insert(spec.url.clone()) {
            problems.add(key, format!("duplicate backend {}", spec.url));
            continue;
        }
        specs.push(spec);
    }
    specs
}

fn backend_weight(key: &str, weight: Option<i64>, problems: &mut Problems) -> u32 {
    match weight {
        None => 1,
        Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(&w) => w as u32,
        Some(w) => {
            problems.add(
                format!("{key}.weight"),
                format!("weight must be between 1 and {MAX_WEIGHT}, got {w}"),
            );
            1
        }
    }
}

/// Accepts `http://host[:port][/]` only: no path prefix, query, user info or other scheme, since alb
/// would otherwise silently drop them.
fn backend_url(key: &str, url: &str, weight: u32, problems: &mut Problems) -> Option<BackendSpec> {
    let mut fail = |reason: String| {
        problems.add(key, format!("{url:?}: {reason}"));
        None
    };
    if url.contains('#') {
        return fail("a fragment is not supported, give only http://host:port".into());
    }
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => return fail(format!("not a valid URL ({e})")),
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return fail(format!("scheme {other:?} is not supported, use http://")),
        None => return fail("missing scheme, write it as http://host:port".into()),
    }
    let Some(authority) = uri.authority() else {
        return fail("missing host".into());
    };
    if authority.as_str().contains('@') {
        return fail("user info in backend URLs is not supported".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return fail("a path or query is not supported, give only http://host:port".into());
    }
    let host = authority.host();
    if host.is_empty() {
        return fail("missing host".into());
    }
    // Read the port text ourselves: `Authority::port` hides an out-of-range port as "no port".
    let port_text = authority.as_str()[host.len()..]
        .strip_prefix(':')
        .unwrap_or("");
    let port = match port_text {
        "" => 80,
        text => match text.parse::<u16>() {
            Ok(0) | Err(_) => return fail(format!("port {text:?} is not between 1 and 65535")),
            Ok(port) => port,
        },
    };
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let (addr, authority) = match bare_host.parse::<IpAddr>() {
        // The canonical text of the address, so that two spellings of one IP are one backend.
        Ok(ip) => {
            let sa = SocketAddr::new(ip, port);
            (BackendAddr::Ip(sa), sa.to_string())
        }
        Err(_) => {
            let host = bare_host.to_ascii_lowercase();
            let authority = format!("{host}:{port}");
            (BackendAddr::Name { host, port }, authority)
        }
    };
    Some(BackendSpec {
        url: format!("http://{authority}"),
        authority,
        addr,
        weight,
    })
}

fn health_check(raw: RawHealthCheck, problems: &mut Problems) -> HealthCheckConfig {
    let default = HealthCheckConfig::default();
    let path = raw.path.unwrap_or(default.path.clone());
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        problems.add(
            "health_check.path",
            format!("{path:?} must be an absolute path such as \"/health\""),
        );
    }
    HealthCheckConfig {
        path,
        interval: positive_duration(
            "health_check.interval",
            raw.interval,
            default.interval,
            problems,
        ),
        timeout: positive_duration(
            "health_check.timeout",
            raw.timeout,
            default.timeout,
            problems,
        ),
        rise: count("health_check.rise", raw.rise, default.rise, 1, problems),
        fall: count("health_check.fall", raw.fall, default.fall, 1, problems),
    }
}

fn timeouts(raw: RawTimeouts, problems: &mut Problems) -> Timeouts {
    let default = Timeouts::default();
    Timeouts {
        connect: positive_duration("timeouts.connect", raw.connect, default.connect, problems),
        response: positive_duration(
            "timeouts.response",
            raw.response,
            default.response,
            problems,
        ),
        drain: duration("timeouts.drain", raw.drain, default.drain, problems),
    }
}

fn retry(raw: RawRetry, problems: &mut Problems) -> RetryConfig {
    let default = RetryConfig::default();
    RetryConfig {
        attempts: count(
            "retry.attempts",
            raw.attempts,
            default.attempts,
            1,
            problems,
        ),
    }
}

fn count(key: &str, value: Option<i64>, default: u32, min: u32, problems: &mut Problems) -> u32 {
    const MAX: i64 = 1000;
    match value {
        None => default,
        Some(v) if (i64::from(min)..=MAX).contains(&v) => v as u32,
        Some(v) => {
            problems.add(key, format!("must be between {min} and {MAX}, got {v}"));
            default
        }
    }
}

fn duration(
    key: &str,
    value: Option<String>,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let Some(text) = value else {
        return default;
    };
    humantime::parse_duration(text.trim()).unwrap_or_else(|e| {
        problems.add(
            key,
            format!("{text:?} is not a duration ({e}); write it like \"5s\" or \"500ms\""),
        );
        default
    })
}

fn positive_duration(
    key: &str,
    value: Option<String>,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let before = problems.0.len();
    let parsed = duration(key, value, default, problems);
    if parsed.is_zero() && problems.0.len() == before {
        problems.add(key, "must be greater than zero");
        return default;
    }
    parsed
}
