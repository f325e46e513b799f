//! The config file exactly as written: serde structs that reject unknown keys and keep every value
//! loosely typed (strings for durations, signed integers for counts) so that validation, not serde,
//! reports a bad value together with the key it belongs to.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub algorithm: Option<String>,
    pub backends: Option<Vec<String>>,
    pub backend: Option<Vec<RawBackend>>,
    pub health_check: Option<RawHealthCheck>,
    pub timeouts: Option<RawTimeouts>,
    pub retry: Option<RawRetry>,
    pub passive_health: Option<RawPassiveHealth>,
    pub limits: Option<RawLimits>,
    pub access_log: Option<bool>,
    pub workers: Option<i64>,
    pub explain: Option<bool>,
    pub underscores_in_headers: Option<String>,
    pub admin: Option<RawAdmin>,
    pub discovery: Option<RawDiscovery>,
    pub proxy_protocol: Option<RawProxyProtocol>,
    pub forwarded: Option<RawForwarded>,
    pub request_id: Option<RawRequestId>,
    pub request_headers: Option<RawHeaderRules>,
    pub response_headers: Option<RawHeaderRules>,
    pub upstream_tls: Option<RawUpstreamTls>,
    pub tls: Option<RawTls>,
    pub http2: Option<RawHttp2>,
    pub hash_key: Option<String>,
    pub hash_balance: Option<f64>,
    pub sticky: Option<RawSticky>,
    /// Named pools besides the top-level one (`default`), by name.
    pub pools: Option<std::collections::BTreeMap<String, RawPool>>,
    pub route: Option<Vec<RawRoute>>,
    pub tracing: Option<RawTracing>,
    pub shared_state: Option<RawSharedState>,
}

/// `[pools.NAME]`: a pool of backends with its own balancing; every section it does not give is
/// the top-level one, key by key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub backends: Option<Vec<String>>,
    pub backend: Option<Vec<RawBackend>>,
    pub algorithm: Option<String>,
    pub hash_key: Option<String>,
    pub hash_balance: Option<f64>,
    pub health_check: Option<RawHealthCheck>,
    pub passive_health: Option<RawPassiveHealth>,
    pub retry: Option<RawRetry>,
    pub limits: Option<RawLimits>,
    pub sticky: Option<RawSticky>,
    pub request_headers: Option<RawHeaderRules>,
    pub response_headers: Option<RawHeaderRules>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub cookie: Option<String>,
    pub ttl: Option<String>,
    pub secret: Option<String>,
}

/// `[[route]]`: conditions (all given must hold) and what to do with a request that meets them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<std::collections::BTreeMap<String, RawHeaderMatch>>,
    pub pool: Option<String>,
    pub split: Option<Vec<RawSplit>>,
    pub strip_prefix: Option<bool>,
    pub timeouts: Option<RawTimeouts>,
    pub retry: Option<RawRetry>,
    pub rate_limit: Option<RawRateLimit>,
    pub client_certificate: Option<bool>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub rewrite_prefix: Option<String>,
    pub redirect: Option<RawRedirect>,
    pub request_headers: Option<RawHeaderRules>,
    pub response_headers: Option<RawHeaderRules>,
}

/// A header condition: a value the field must have, or `true` (present) / `false` (absent).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawHeaderMatch {
    Value(String),
    Present(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub pool: String,
    pub weight: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_second: Option<i64>,
    pub burst: Option<i64>,
    pub key: Option<String>,
    pub max_keys: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub verify: Option<bool>,
    pub http2: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub redirect_http: Option<bool>,
    pub certificate: Option<Vec<RawCertificate>>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
}

/// A certificate chain and its key, both PEM files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub min_interval: Option<String>,
    pub max_interval: Option<String>,
    pub nameservers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp2 {
    pub tls: Option<bool>,
    pub cleartext: Option<bool>,
    pub max_concurrent_streams: Option<i64>,
    pub stream_window: Option<RawSize>,
    pub connection_window: Option<RawSize>,
    pub max_resets_per_second: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    pub enabled: Option<bool>,
    pub trusted: Option<Vec<String>>,
}

/// `[forwarded]`: which peers are believed about the client.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwarded {
    pub trusted: Option<Vec<String>>,
    pub client_header: Option<String>,
    pub rfc7239: Option<bool>,
}

/// `[request_id]`: the X-Request-Id every forwarded request carries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestId {
    pub enabled: Option<bool>,
    pub response: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub url: String,
    pub weight: Option<i64>,
    pub max_connections: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub slow_start: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub response: Option<String>,
    pub upstream_idle: Option<String>,
    pub client_header: Option<String>,
    pub client_body_idle: Option<String>,
    pub keepalive_idle: Option<String>,
    pub write: Option<String>,
    pub request: Option<String>,
    pub drain: Option<String>,
    pub tunnel_idle: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<i64>,
    pub budget_percent: Option<i64>,
    pub budget_min_per_second: Option<i64>,
    pub on_status: Option<Vec<i64>>,
    pub on_timeout: Option<bool>,
    pub max_body_buffer: Option<RawSize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveHealth {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<i64>,
    pub count_5xx: Option<bool>,
    pub failure_statuses: Option<Vec<i64>>,
    pub ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    pub max_ejected_percent: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<RawSize>,
    pub max_uri_bytes: Option<RawSize>,
    pub max_body_bytes: Option<RawSize>,
    pub max_client_connections: Option<i64>,
    pub listen_backlog: Option<i64>,
    pub backend_max_connections: Option<i64>,
    pub backend_queue: Option<i64>,
    pub backend_queue_timeout: Option<String>,
}

/// A byte size: a plain number of bytes, or a string with a unit ("64KiB", "10MB").
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `section.over(&base)`: the section with every key it leaves out taken from `base`, so that a
/// pool or a route writes only what differs from the top level.
macro_rules! inherit {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        impl $ty {
            pub fn over(self, base: &$ty) -> $ty {
                $ty { $($field: self.$field.or_else(|| base.$field.clone())),* }
            }
        }
    )*};
}

inherit! {
    RawHealthCheck { path, interval, timeout, rise, fall, slow_start }
    RawTimeouts {
        connect, response, upstream_idle, client_header, client_body_idle, keepalive_idle, write,
        request, drain, tunnel_idle,
    }
    RawRetry { attempts, budget_percent, budget_min_per_second, on_status, on_timeout, max_body_buffer }
    RawPassiveHealth {
        enabled, consecutive_failures, count_5xx, failure_statuses, ejection_time,
        max_ejection_time, max_ejected_percent,
    }
    RawLimits {
        max_header_bytes, max_uri_bytes, max_body_bytes, max_client_connections, listen_backlog,
        backend_max_connections, backend_queue, backend_queue_timeout,
    }
}

/// `[tracing]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub endpoint: Option<String>,
    pub sampling: Option<f64>,
    pub service_name: Option<String>,
    pub queue_size: Option<i64>,
    pub max_batch: Option<i64>,
    pub flush_interval: Option<String>,
    pub export_timeout: Option<String>,
}

/// `[shared_state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedState {
    pub redis: Option<String>,
    pub timeout: Option<String>,
    pub replicas: Option<i64>,
    pub prefix: Option<String>,
    pub lease: Option<i64>,
}

/// `request_headers` / `response_headers` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    pub set: Option<std::collections::BTreeMap<String, String>>,
    pub add: Option<std::collections::BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

/// `redirect = { to = "https://{host}{path}", status = 308 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: String,
    pub status: Option<u16>,
}
