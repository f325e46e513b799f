//! Configuration: the TOML file is parsed into raw structs (`raw`), then validated into the typed
//! [`Config`] below (`validate`). Nothing on the request path ever sees raw config.

mod error;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use error::{ConfigError, Problem};

/// A validated configuration. Build one with [`Config::load`] or [`Config::from_toml`].
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendSpec>,
    pub health_check: HealthCheckConfig,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    /// One log line per request (target `alb::access`).
    pub access_log: bool,
}

/// How the next backend is chosen; see `balance` for each algorithm's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    LeastConn,
    RoundRobin,
    Random,
    P2c,
}

impl Algorithm {
    pub const NAMES: &'static str = "least_conn, round_robin, random, p2c";

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::LeastConn => "least_conn",
            Algorithm::RoundRobin => "round_robin",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend; past it the backend counts as unreachable (502, retried elsewhere).
    pub connect: Duration,
    /// From sending the request until the upstream's response headers arrive (504 after).
    pub response: Duration,
    /// How long a graceful shutdown waits for in-flight requests before closing what is left.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(30),
            drain: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Tries in all, the first one included (1 = never retry).
    pub attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { attempts: 2 }
    }
}

pub const MAX_WEIGHT: u32 = 10_000;

impl Config {
    /// Reads and validates a config file; the error lists every problem found, each naming its key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        Config::from_toml(&text, &origin)
    }

    /// Validates config text; `origin` names where it came from in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        validate::validate(raw).map_err(|problems| ConfigError::Invalid {
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
        validate::validate(raw).map_err(|problems| ConfigError::Invalid {
            origin: "(built-in)".into(),
            problems,
        })
    }
}
