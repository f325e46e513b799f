//! Validation of the optional sections: health checks, timeouts, retries, passive health, limits,
//! admin, PROXY protocol.

use std::time::Duration;

use super::raw::{
    RawAdmin, RawDiscovery, RawHealthCheck, RawLimits, RawPassiveHealth, RawProxyProtocol,
    RawRetry, RawTimeouts,
};
use super::values::{Problems, count, duration, positive_duration, size};
use super::{
    ADMIN_TOKEN_ENV, AdminConfig, DiscoveryConfig, HealthCheckConfig, Limits, PassiveHealthConfig,
    ProxyProtocolConfig, RetryConfig, Timeouts,
};

pub(super) fn admin(raw: RawAdmin, problems: &mut Problems) -> AdminConfig {
    let d = AdminConfig::default();
    let listen = match raw.listen.as_deref() {
        None => d.listen,
        Some("off") => None,
        Some(text) => match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.add(
                    "admin.listen",
                    format!("{text:?} is not an IP address with a port (or \"off\")"),
                );
                None
            }
        },
    };
    let token = raw
        .token
        .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        problems.add("admin.token", "must be at least 16 characters");
    }
    let allowed_hosts = raw
        .allowed_hosts
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, given)| match allowed_host(given) {
            Ok(host) => Some(host),
            Err(reason) => {
                problems.add(
                    format!("admin.allowed_hosts[{i}]"),
                    format!("{given:?} {reason}"),
                );
                None
            }
        })
        .collect();
    AdminConfig {
        listen,
        explicit: raw.listen.is_some(),
        token,
        allowed_hosts,
    }
}

/// One `admin.allowed_hosts` entry as the Host check compares it: a DNS name (lower case,
/// without a trailing dot) or an IP address. No port (a port forward or NAT changes it, and the
/// rebinding defence rests on the name), no scheme, no wildcard: each name is one the operator
/// answers for.
fn allowed_host(given: &str) -> Result<String, &'static str> {
    if let Ok(ip) = given
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(ip.to_string());
    }
    let name = given
        .strip_suffix('.')
        .unwrap_or(given)
        .to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(
            "is not a host name like \"ops.example.com\" or an IP address (no port, scheme or wildcard)",
        );
    }
    Ok(name)
}

/// The trusted list is checked even while disabled, so that turning the feature on later cannot
/// reveal a typo; it is required when enabled, since trusting nobody would refuse every client.
pub(super) fn proxy_protocol(
    raw: RawProxyProtocol,
    problems: &mut Problems,
) -> ProxyProtocolConfig {
    let enabled = raw.enabled.unwrap_or(false);
    let given = raw.trusted.unwrap_or_default();
    let trusted = super::ipnet::networks("proxy_protocol.trusted", &given, problems);
    if enabled && given.is_empty() {
        problems.add(
            "proxy_protocol.trusted",
            "must list the load balancers that send the header when proxy_protocol.enabled is \
             true, e.g. trusted = [\"10.0.0.0/8\"]",
        );
    }
    ProxyProtocolConfig { enabled, trusted }
}

pub(super) fn health_check(raw: RawHealthCheck, problems: &mut Problems) -> HealthCheckConfig {
    let d = HealthCheckConfig::default();
    let path = raw.path.unwrap_or(d.path.clone());
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        problems.add(
            "health_check.path",
            format!("{path:?} must be an absolute path such as \"/health\""),
        );
    }
    HealthCheckConfig {
        path,
        interval: positive_duration("health_check.interval", raw.interval, d.interval, problems),
        timeout: positive_duration("health_check.timeout", raw.timeout, d.timeout, problems),
        rise: count("health_check.rise", raw.rise, d.rise, 1, 1000, problems),
        fall: count("health_check.fall", raw.fall, d.fall, 1, 1000, problems),
        slow_start: duration(
            "health_check.slow_start",
            raw.slow_start,
            d.slow_start,
            problems,
        ),
    }
}

pub(super) fn timeouts(raw: RawTimeouts, problems: &mut Problems) -> Timeouts {
    let d = Timeouts::default();
    let mut positive = |key: &str, value, default| {
        positive_duration(&format!("timeouts.{key}"), value, default, problems)
    };
    let connect = positive("connect", raw.connect, d.connect);
    let response = positive("response", raw.response, d.response);
    let upstream_idle = positive("upstream_idle", raw.upstream_idle, d.upstream_idle);
    let client_header = positive("client_header", raw.client_header, d.client_header);
    let client_body_idle = positive("client_body_idle", raw.client_body_idle, d.client_body_idle);
    let keepalive_idle = positive("keepalive_idle", raw.keepalive_idle, d.keepalive_idle);
    let write = positive("write", raw.write, d.write);
    let tunnel_idle = positive("tunnel_idle", raw.tunnel_idle, d.tunnel_idle);
    let request = raw
        .request
        .map(|text| positive_duration("timeouts.request", Some(text), Duration::MAX, problems));
    Timeouts {
        connect,
        response,
        upstream_idle,
        client_header,
        client_body_idle,
        keepalive_idle,
        write,
        request,
        drain: duration("timeouts.drain", raw.drain, d.drain, problems),
        tunnel_idle,
    }
}

pub(super) fn retry(raw: RawRetry, problems: &mut Problems) -> RetryConfig {
    let d = RetryConfig::default();
    let on_status = statuses(
        "retry.on_status",
        &raw.on_status.unwrap_or_default(),
        problems,
    );
    RetryConfig {
        attempts: count("retry.attempts", raw.attempts, d.attempts, 1, 10, problems),
        budget_percent: count(
            "retry.budget_percent",
            raw.budget_percent,
            d.budget_percent,
            0,
            100,
            problems,
        ),
        budget_min_per_second: count(
            "retry.budget_min_per_second",
            raw.budget_min_per_second,
            d.budget_min_per_second,
            0,
            1_000_000,
            problems,
        ),
        on_status,
        on_timeout: raw.on_timeout.unwrap_or(d.on_timeout),
        max_body_buffer: size(
            "retry.max_body_buffer",
            raw.max_body_buffer,
            d.max_body_buffer,
            problems,
        ),
    }
}

pub(super) fn passive_health(
    raw: RawPassiveHealth,
    problems: &mut Problems,
) -> PassiveHealthConfig {
    let d = PassiveHealthConfig::default();
    let key = |k: &str| format!("passive_health.{k}");
    let ejection_time = positive_duration(
        &key("ejection_time"),
        raw.ejection_time,
        d.ejection_time,
        problems,
    );
    let max_ejection_time = positive_duration(
        &key("max_ejection_time"),
        raw.max_ejection_time,
        d.max_ejection_time,
        problems,
    );
    if max_ejection_time < ejection_time {
        problems.add(
            key("max_ejection_time"),
            format!("must not be shorter than ejection_time ({ejection_time:?})"),
        );
    }
    PassiveHealthConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        consecutive_failures: count(
            &key("consecutive_failures"),
            raw.consecutive_failures,
            d.consecutive_failures,
            1,
            1000,
            problems,
        ),
        count_5xx: raw.count_5xx.unwrap_or(d.count_5xx),
        failure_statuses: match raw.failure_statuses {
            None => d.failure_statuses,
            Some(list) => statuses(&key("failure_statuses"), &list, problems),
        },
        ejection_time,
        max_ejection_time,
        max_ejected_percent: count(
            &key("max_ejected_percent"),
            raw.max_ejected_percent,
            d.max_ejected_percent,
            0,
            100,
            problems,
        ),
    }
}

/// The limits, and the default `max_connections` of every backend.
pub(super) fn limits(raw: RawLimits, problems: &mut Problems) -> (Limits, Option<u32>) {
    let d = Limits::default();
    let key = |k: &str| format!("limits.{k}");
    let max_header_bytes = size(
        &key("max_header_bytes"),
        raw.max_header_bytes,
        d.max_header_bytes as u64,
        problems,
    );
    if max_header_bytes < 1024 {
        problems.add(key("max_header_bytes"), "must be at least 1024 bytes");
    }
    let max_uri_bytes = size(
        &key("max_uri_bytes"),
        raw.max_uri_bytes,
        d.max_uri_bytes as u64,
        problems,
    );
    if max_uri_bytes < 16 {
        problems.add(key("max_uri_bytes"), "must be at least 16 bytes");
    }
    let max_body_bytes = raw
        .max_body_bytes
        .map(|v| size(&key("max_body_bytes"), Some(v), u64::MAX, problems));
    let max_client_connections = count(
        &key("max_client_connections"),
        raw.max_client_connections,
        d.max_client_connections as u32,
        1,
        10_000_000,
        problems,
    ) as usize;
    let backend_max = raw.backend_max_connections.map(|n| {
        count(
            &key("backend_max_connections"),
            Some(n),
            1,
            1,
            1_000_000,
            problems,
        )
    });
    let listen_backlog = count(
        &key("listen_backlog"),
        raw.listen_backlog,
        d.listen_backlog,
        1,
        65_535,
        problems,
    );
    let limits = Limits {
        listen_backlog,
        max_header_bytes: max_header_bytes.min(u32::MAX as u64) as usize,
        max_uri_bytes: max_uri_bytes.min(u32::MAX as u64) as usize,
        max_body_bytes,
        max_client_connections,
        backend_queue: count(
            &key("backend_queue"),
            raw.backend_queue,
            d.backend_queue as u32,
            0,
            1_000_000,
            problems,
        ) as usize,
        backend_queue_timeout: positive_duration(
            &key("backend_queue_timeout"),
            raw.backend_queue_timeout,
            d.backend_queue_timeout,
            problems,
        ),
    };
    (limits, backend_max)
}

/// A list of 5xx statuses: only a backend's own failures can be retried or count against it.
fn statuses(key: &str, list: &[i64], problems: &mut Problems) -> Vec<u16> {
    list.iter()
        .filter_map(|&code| match code {
            500..=599 => Some(code as u16),
            _ => {
                problems.add(key, format!("{code} is not a 5xx status"));
                None
            }
        })
        .collect()
}

pub(super) fn discovery(
    raw: RawDiscovery,
    base: &std::path::Path,
    problems: &mut Problems,
) -> DiscoveryConfig {
    let d = DiscoveryConfig::default();
    let min_interval = positive_duration(
        "discovery.min_interval",
        raw.min_interval,
        d.min_interval,
        problems,
    );
    let max_interval = positive_duration(
        "discovery.max_interval",
        raw.max_interval,
        d.max_interval,
        problems,
    );
    if min_interval > max_interval {
        problems.add(
            "discovery.max_interval",
            format!("{max_interval:?} is shorter than discovery.min_interval ({min_interval:?})"),
        );
    }
    let mut nameservers = Vec::new();
    for (i, text) in raw.nameservers.unwrap_or_default().iter().enumerate() {
        // A bare IP means the DNS port, as in resolv.conf.
        let parsed = text.parse().or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        });
        match parsed {
            Ok(addr) => nameservers.push(addr),
            Err(_) => problems.add(
                format!("discovery.nameservers[{i}]"),
                format!("{text:?} is not an IP address (with an optional port)"),
            ),
        }
    }
    let kubernetes = raw.kubernetes.unwrap_or_default();
    if let Some(url) = &kubernetes.api_server {
        let scheme = url.parse::<http::Uri>().ok().and_then(|u| {
            let scheme = u.scheme_str()?.to_string();
            u.authority()?;
            Some(scheme)
        });
        if !matches!(scheme.as_deref(), Some("https" | "http")) {
            problems.add(
                "discovery.kubernetes.api_server",
                format!("{url:?} is not an https:// (or http://) URL"),
            );
        }
    }
    DiscoveryConfig {
        min_interval,
        max_interval,
        nameservers,
        kubernetes: super::KubernetesApi {
            api_server: kubernetes.api_server,
            token_file: readable_file(
                "discovery.kubernetes.token_file",
                kubernetes.token_file,
                base,
                problems,
            ),
            ca_file: readable_file(
                "discovery.kubernetes.ca_file",
                kubernetes.ca_file,
                base,
                problems,
            ),
        },
    }
}

/// A file named relative to the config file's directory, as certificates are; one alb cannot
/// read is a problem now (`alb check` says so), not a watch failing later.
fn readable_file(
    key: &str,
    name: Option<String>,
    base: &std::path::Path,
    problems: &mut Problems,
) -> Option<std::path::PathBuf> {
    let path = base.join(name?);
    if let Err(e) = std::fs::File::open(&path) {
        problems.add(key, format!("cannot read {}: {e}", path.display()));
    }
    Some(path)
}
