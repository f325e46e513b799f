//! Configuration: the TOML file is parsed into raw structs (`raw`), then validated into the typed
//! [`Config`] below (`validate`). Nothing on the request path ever sees raw config.

mod backends;
mod client_auth;
mod edge;
mod error;
mod header_rules;
mod http2;
mod ipnet;
mod pools;
mod raw;
mod route_policy;
mod routes;
mod sections;
mod shared_state;
mod tls;
mod tracing;
mod upstream_tls;
mod validate;
mod values;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::http1::Underscores;

pub use client_auth::{CertificateAuth, ClientAuth, ClientAuthMode};
pub use edge::{ClientHeader, ForwardedConfig, RequestIdConfig};
pub use error::{ConfigError, Problem};
pub use header_rules::{HeaderRules, Template, Var, is_protected};
pub use http2::Http2Config;
pub use ipnet::IpNet;
pub use pools::{DEFAULT_POOL, HashConfig, HashKey, PoolConfig, StickyConfig};
pub use route_policy::{Redirect, RoutePolicy};
pub use routes::{
    HeaderCondition, HeaderTest, HostPattern, RateKey, RateLimitConfig, RouteConfig, RouteTarget,
    prefix_matches,
};
pub use shared_state::{DEFAULT_TIMEOUT as SHARED_STATE_TIMEOUT, MAX_LEASE, SharedStateConfig};
pub use tls::{
    CertificateSet, EXPIRY_WARNING_DAYS, LoadedCertificate, TlsConfig, crypto_provider, date,
};
pub use tracing::{OtlpEndpoint, TracingConfig};
pub use upstream_tls::UpstreamTls;

/// A validated configuration. Build one with [`Config::load`] or [`Config::from_toml`].
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// How the top-level pool (`default`) balances; the other pools have their own.
    pub algorithm: Algorithm,
    pub hash: HashConfig,
    pub sticky: Option<StickyConfig>,
    /// The top-level backends: the pool `default` (none when only named pools are given).
    pub backends: Vec<BackendSpec>,
    /// `[pools.NAME]`, by name, every setting resolved.
    pub pools: Vec<PoolConfig>,
    /// `[[route]]`, in file order: the first that matches a request chooses its pool.
    pub routes: Vec<RouteConfig>,
    /// What is odd but not wrong (a pool no route uses): `alb check` and start-up say it.
    pub warnings: Vec<Problem>,
    pub health_check: HealthCheckConfig,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    pub passive_health: PassiveHealthConfig,
    pub limits: Limits,
    /// One log line per request (target `alb::access`).
    pub access_log: bool,
    /// Runtime threads; 0 = one per CPU the process may use.
    pub workers: usize,
    /// Adds `x-alb-backend` and `x-alb-reason` to every response: where it went and why.
    pub explain: bool,
    /// Request fields whose names hold `_`: dropped (default), refused or passed on.
    pub underscores_in_headers: Underscores,
    pub admin: AdminConfig,
    pub discovery: DiscoveryConfig,
    pub proxy_protocol: ProxyProtocolConfig,
    pub forwarded: ForwardedConfig,
    pub request_id: RequestIdConfig,
    /// Header rules for every request and every response, before a route's own.
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// `[upstream_tls]`, built when a backend is `https://` or the section is written.
    pub upstream_tls: Option<std::sync::Arc<UpstreamTls>>,
    /// The TLS listener (`[tls]`); none: plain HTTP only.
    pub tls: Option<TlsConfig>,
    /// `[http2]`: HTTP/2 from clients.
    pub http2: Http2Config,
    /// `[tracing]`: spans exported over OTLP; none: trace context passed on, nothing recorded.
    pub tracing: Option<TracingConfig>,
    /// `[shared_state]`: the Redis replicas share route rate limits through; none: each
    /// replica limits on its own.
    pub shared_state: Option<SharedStateConfig>,
}

/// How backends given by a DNS name are found: one backend per address the name resolves to,
/// resolved again when the answer's TTL runs out, within these bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Shortest time between two resolutions of a name (a TTL of 0 or 1 s does not turn alb into
    /// a DNS load generator); also the first wait after a failed one.
    pub min_interval: Duration,
    /// Longest: a name is resolved again at least this often, whatever its TTL (Docker's DNS
    /// answers with 600 s; a scaled service should not take ten minutes to be seen).
    pub max_interval: Duration,
    /// Name servers to ask (`ip:port`); empty: those of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            nameservers: Vec::new(),
        }
    }
}

/// PROXY protocol (v1 and v2) on the client listener: behind an L4 balancer (a cloud NLB,
/// HAProxy in TCP mode) every connection comes from the balancer, and the header it sends first
/// is the only place the client's address is found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyProtocolConfig {
    /// Off by default: a header from anyone would let any client choose the address alb logs
    /// and forwards.
    pub enabled: bool,
    /// The sources allowed to send a header (the balancers). When enabled, a connection from
    /// anywhere else is closed, and one from here must start with a header.
    pub trusted: Vec<IpNet>,
}

impl ProxyProtocolConfig {
    /// Whether a connection from `ip` may (and must) start with a header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }
}

/// The admin listener (metrics, API, dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// None: no admin listener.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` was written in the file: a default address that is taken only earns a
    /// warning, an explicit one that cannot be bound stops alb.
    pub explicit: bool,
    /// Bearer token for write calls, from the file or `ALB_ADMIN_TOKEN`; none: writes are off.
    pub token: Option<String>,
    /// Names (lower case) or IP addresses a request's Host may give besides the listener's own
    /// address and `localhost` (`admin.allowed_hosts`): any other Host is refused, so that a
    /// page whose name was rebound to this address (DNS rebinding) cannot read or turn it.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            explicit: false,
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Environment variable holding the admin token when the file has none.
pub const ADMIN_TOKEN_ENV: &str = "ALB_ADMIN_TOKEN";

/// How the next backend is chosen; see `balance` for each algorithm's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    LeastConn,
    RoundRobin,
    Random,
    P2c,
    LeastTime,
    /// Consistent hashing of a request key with bounded load (`hash_key`, `hash_balance`).
    Hash,
}

impl Algorithm {
    pub const NAMES: &'static str = "least_conn, round_robin, random, p2c, least_time, hash";

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::LeastConn => "least_conn",
            Algorithm::RoundRobin => "round_robin",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
            Algorithm::LeastTime => "least_time",
            Algorithm::Hash => "hash",
        }
    }
}

impl FromStr for Algorithm {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "least_conn" => Ok(Algorithm::LeastConn),
            "round_robin" => Ok(Algorithm::RoundRobin),
            "random" => Ok(Algorithm::Random),
            "p2c" => Ok(Algorithm::P2c),
            "least_time" => Ok(Algorithm::LeastTime),
            "hash" => Ok(Algorithm::Hash),
            _ => Err(()),
        }
    }
}

/// Where a backend lives. IP literals are parsed once; names are resolved on each new connection so
/// that a container restarted with a new address (compose, Kubernetes) is found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Normalised `http://host:port`, used in logs and to detect duplicates.
    pub url: String,
    /// `host:port` as written (brackets kept for IPv6): the Host header of health checks.
    pub authority: String,
    pub addr: BackendAddr,
    pub weight: u32,
    /// Most requests in flight to this backend at once; more wait in its queue.
    pub max_connections: Option<u32>,
    /// For one address of a name found by DNS: the `name:port` it was found through.
    pub dns_name: Option<String>,
    /// For an `https://` backend: how its TLS is spoken.
    pub tls: Option<BackendTls>,
    /// Spoken to in HTTP/2: `h2c://`, or `https://` with `upstream_tls.http2`.
    pub http2: bool,
}

/// How an `https://` backend is reached: the TLS client of its config, and the name its
/// certificate must carry (sent as SNI when it is a DNS name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    pub client: std::sync::Arc<UpstreamTls>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// After coming back UP, a backend's share of new requests ramps from nothing to full over
    /// this time. Zero: off.
    pub slow_start: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 2,
            slow_start: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend; past it the backend counts as unreachable (503, retried elsewhere).
    pub connect: Duration,
    /// From the end of the request upload until the upstream's response headers (504 after).
    pub response: Duration,
    /// Longest silence between two pieces of a backend's response body; the response is cut after.
    pub upstream_idle: Duration,
    /// From a request's first byte to the end of its head (slowloris guard); 408 and close after.
    pub client_header: Duration,
    /// Longest silence between two pieces of a client's request body; 408 and close after.
    pub client_body_idle: Duration,
    /// How long an idle keep-alive client connection is kept open.
    pub keepalive_idle: Duration,
    /// Longest a write to a client or to a backend may make no progress; the connection is
    /// closed after (and a backend's slot freed). A slow client never counts against a backend.
    pub write: Duration,
    /// Optional overall limit from a request's arrival to its response headers, retries
    /// included; 504 after.
    pub request: Option<Duration>,
    /// How long a graceful shutdown waits for in-flight requests before closing what is left;
    /// also how long a tunnel to a backend that a reload removed may go on.
    pub drain: Duration,
    /// Longest an upgraded connection (a WebSocket tunnel) may carry no byte either way.
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(30),
            upstream_idle: Duration::from_secs(60),
            client_header: Duration::from_secs(10),
            client_body_idle: Duration::from_secs(30),
            keepalive_idle: Duration::from_secs(60),
            write: Duration::from_secs(30),
            request: None,
            drain: Duration::from_secs(30),
            tunnel_idle: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Tries in all, the first one included (1 = never retry).
    pub attempts: u32,
    /// Retries may add at most this share (percent) of recent requests...
    pub budget_percent: u32,
    /// ...plus this many per second, so that a quiet service can still retry.
    pub budget_min_per_second: u32,
    /// Backend answers that are retried on another backend (idempotent requests only).
    pub on_status: Vec<u16>,
    /// Whether an idempotent request whose response headers timed out is retried elsewhere.
    pub on_timeout: bool,
    /// Request bodies up to this size are kept so that the request can be retried.
    pub max_body_buffer: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 2,
            budget_percent: 20,
            budget_min_per_second: 10,
            on_status: Vec::new(),
            on_timeout: true,
            max_body_buffer: 64 * 1024,
        }
    }
}

/// Outlier ejection: failures seen on live traffic take a backend out at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealthConfig {
    pub enabled: bool,
    /// Consecutive failed requests (connect errors, resets, timeouts) that eject a backend.
    pub consecutive_failures: u32,
    /// Whether answers with a status in `failure_statuses` count as failures. On by default:
    /// a backend that answers 500 at once to everything but passes its health check is the
    /// fastest to answer, so least connections would give it the largest share.
    pub count_5xx: bool,
    /// The statuses that count when `count_5xx` is on.
    pub failure_statuses: Vec<u16>,
    /// First ejection lasts this long; each repeated ejection one more time as long.
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// Never eject more than this share (percent) of the pool.
    pub max_ejected_percent: u32,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig {
            enabled: true,
            consecutive_failures: 5,
            count_5xx: true,
            failure_statuses: vec![500, 502, 503, 504],
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Size and concurrency limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header fields; 431 above.
    pub max_header_bytes: usize,
    /// Request target; 414 above.
    pub max_uri_bytes: usize,
    /// Request body; 413 above (also for chunked bodies, as they stream). None: unlimited.
    pub max_body_bytes: Option<u64>,
    /// Client connections open at once; alb stops accepting while at the limit.
    pub max_client_connections: usize,
    /// Connections the kernel completes and queues for the client listener before alb accepts
    /// them (capped by `net.core.somaxconn`): room for a burst of reconnections.
    pub listen_backlog: u32,
    /// Requests that may wait for a backend at its `max_connections`; 503 beyond.
    pub backend_queue: usize,
    /// How long a request may wait in that queue; 503 after.
    pub backend_queue_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
            max_client_connections: 20_000,
            listen_backlog: 4096,
            backend_queue: 128,
            backend_queue_timeout: Duration::from_secs(5),
        }
    }
}

pub const MAX_WEIGHT: u32 = 10_000;

impl Config {
    /// Every pool: `default` from the top-level settings first (when it has backends), then the
    /// named ones.
    pub fn all_pools(&self) -> Vec<PoolConfig> {
        let mut pools = Vec::with_capacity(self.pools.len() + 1);
        if !self.backends.is_empty() {
            pools.push(PoolConfig {
                name: DEFAULT_POOL.to_string(),
                algorithm: self.algorithm,
                hash: self.hash.clone(),
                backends: self.backends.clone(),
                health_check: self.health_check.clone(),
                passive_health: self.passive_health.clone(),
                retry: self.retry.clone(),
                backend_queue: self.limits.backend_queue,
                backend_queue_timeout: self.limits.backend_queue_timeout,
                sticky: self.sticky.clone(),
                request_headers: HeaderRules::default(),
                response_headers: HeaderRules::default(),
            });
        }
        pools.extend(self.pools.iter().cloned());
        pools
    }

    /// Reads and validates a config file; the error lists every problem found, each naming its key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        // Certificate files are named relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &origin, base)
    }

    /// Validates config text; `origin` names where it came from in error messages.
    /// Files it names are read relative to the working directory.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse(text, origin, Path::new("."))
    }

    /// Validates config text whose relative file names are relative to `base`.
    fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        validate::validate(raw, base).map_err(|problems| ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        })
    }

    /// A config for the given backend URLs with every default, as `alb demo` and tests use it.
    pub fn with_backends(listen: SocketAddr, urls: &[String]) -> Result<Config, ConfigError> {
        let raw = raw::RawConfig {
            listen: Some(listen.to_string()),
            backends: Some(urls.to_vec()),
            ..Default::default()
        };
        validate::validate(raw, Path::new(".")).map_err(|problems| ConfigError::Invalid {
            origin: "(built-in)".into(),
            problems,
        })
    }
}
