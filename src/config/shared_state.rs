//! `[shared_state]`: the Redis that alb replicas share, so that every route's `rate_limit` holds
//! for the fleet as a whole instead of for each replica (see `proxy::rate_limit` for how a
//! decision is made, `shared_state` for the connection).

use std::time::Duration;

use super::raw::RawSharedState;
use super::values::{Problems, count, positive_duration};

/// The store and how far alb relies on it. Equal configs keep the running connection (and the
/// routes' limiters) across a reload; a changed one is applied by a reload: a new connection,
/// and limiters whose buckets start from what Redis holds under the (new) prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedStateConfig {
    /// The URL as written: `redis://` or `rediss://` (TLS), with user, password and database.
    pub redis: String,
    /// The URL without its credentials, for logs and the admin API.
    pub display: String,
    /// Longest a request waits on Redis for one decision; past it the decision is made locally.
    pub timeout: Duration,
    /// Replicas expected to share the store: while Redis does not answer, each one limits a
    /// route locally at `per_second / replicas` (burst likewise), so that the fleet stays near
    /// the configured rate.
    pub replicas: u32,
    /// Put in front of every key alb writes (`PREFIX:rl:...`): several fleets, one Redis.
    pub prefix: String,
    /// Tokens a replica takes from a bucket in one round trip at most; none: chosen per route
    /// (see [`SharedStateConfig::lease_for`]). 1: every request that passes asks Redis.
    pub lease: Option<u32>,
}

/// The default budget: a Redis on the same network answers a script in well under a
/// millisecond (50 µs on loopback, a few hundred in a zone), so 20 ms (Envoy's rate-limit
/// service default too) is forty times a normal answer (room for a busy moment: a fork for a
/// snapshot, a slow neighbour, a busy container network, where the fleet test on Docker saw 10 ms
/// missed often enough to let the fleet overshoot) while a request that meets a silent Redis
/// loses at most 20 ms, once: the store is then marked down and the next requests decide locally
/// at once.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);

/// Tokens per lease at most, whatever the rate: 1,000 round trips a second take a million.
pub const MAX_LEASE: u32 = 1_000;

impl SharedStateConfig {
    /// Tokens a replica may take at once from a bucket of `per_second` and `burst`: the given
    /// `lease`, or a hundredth of a second's worth, and never more than half the burst split
    /// over the replicas (so that tokens held by the others cannot empty the bucket of a
    /// client that stays under its limit); at least 1, at most [`MAX_LEASE`].
    pub fn lease_for(&self, per_second: u32, burst: u32) -> u32 {
        if let Some(lease) = self.lease {
            return lease;
        }
        let by_rate = per_second / 100;
        let by_burst = burst / (2 * self.replicas.max(1));
        by_rate.min(by_burst).clamp(1, MAX_LEASE)
    }
}

impl std::fmt::Debug for SharedStateConfig {
    /// Without the password the URL may hold.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStateConfig")
            .field("redis", &self.display)
            .field("timeout", &self.timeout)
            .field("replicas", &self.replicas)
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .finish()
    }
}

pub(super) fn shared_state(raw: RawSharedState, problems: &mut Problems) -> SharedStateConfig {
    let (redis, display) = match raw.redis {
        None => {
            problems.add(
                "shared_state.redis",
                "is required: the Redis URL, e.g. \"redis://redis:6379\"",
            );
            (String::new(), String::new())
        }
        Some(url) => match display(&url) {
            Ok(display) => (url, display),
            Err(reason) => {
                problems.add("shared_state.redis", reason);
                (String::new(), String::new())
            }
        },
    };
    let timeout = positive_duration(
        "shared_state.timeout",
        raw.timeout,
        DEFAULT_TIMEOUT,
        problems,
    );
    if timeout > Duration::from_secs(1) {
        problems.add(
            "shared_state.timeout",
            "must be at most 1s: every rate-limited request may wait this long",
        );
    }
    let replicas = count(
        "shared_state.replicas",
        raw.replicas,
        1,
        1,
        10_000,
        problems,
    );
    let prefix = raw.prefix.unwrap_or_else(|| "alb".to_string());
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        problems.add(
            "shared_state.prefix",
            format!("{prefix:?}: 1 to 64 visible ASCII characters, no spaces"),
        );
    }
    let lease = raw
        .lease
        .map(|given| count("shared_state.lease", Some(given), 1, 1, MAX_LEASE, problems));
    SharedStateConfig {
        redis,
        display,
        timeout,
        replicas,
        prefix,
        lease,
    }
}

/// Checks the URL the way the client will read it, and returns it without credentials.
fn display(url: &str) -> Result<String, String> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(format!(
            "{:?} needs redis:// or rediss:// (TLS), e.g. \"redis://redis:6379/0\"",
            redact(url)
        ));
    }
    if url.contains('#') {
        return Err(format!(
            "{:?}: no #fragment (#insecure is not supported: the server's certificate is \
             always verified)",
            redact(url)
        ));
    }
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("{:?} is not a Redis URL: {e}", redact(url)))?;
    let (scheme, host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => ("redis", host, port),
        redis::ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host, port),
        _ => return Err(format!("{:?}: only TCP addresses", redact(url))),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(format!(
        "{scheme}://{host}:{port}/{}",
        info.redis_settings().db()
    ))
}

/// `url` with whatever stands between `://` and `@` (user and password) replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}***{}", &url[..start + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(section: &str) -> Result<Config, Vec<String>> {
        let text = format!("backends = [\"http://127.0.0.1:9\"]\n[shared_state]\n{section}");
        Config::from_toml(&text, "t.toml")
            .map_err(|e| e.problems().iter().map(|p| p.key.clone()).collect())
    }

    #[test]
    fn a_url_alone_takes_every_default() {
        let config = load("redis = \"redis://127.0.0.1:6379\"").expect("valid");
        let shared = config.shared_state.expect("[shared_state] given");
        assert_eq!(shared.display, "redis://127.0.0.1:6379/0");
        assert_eq!(shared.timeout, super::DEFAULT_TIMEOUT);
        assert_eq!((shared.replicas, shared.prefix.as_str()), (1, "alb"));
        assert_eq!(shared.lease, None);
        let none = Config::from_toml("backends = [\"http://127.0.0.1:9\"]\n", "t.toml");
        assert!(none.expect("valid").shared_state.is_none());
    }

    #[test]
    fn tls_credentials_and_database_are_read_and_kept_out_of_logs() {
        let config = load(
            "redis = \"rediss://fleet:s3cret@redis.internal:6380/2\"\ntimeout = \"25ms\"\n\
             replicas = 3\nprefix = \"edge-eu\"\nlease = 1\n",
        )
        .expect("valid");
        let shared = config.shared_state.expect("[shared_state] given");
        assert_eq!(shared.display, "rediss://redis.internal:6380/2");
        assert_eq!(shared.timeout, std::time::Duration::from_millis(25));
        assert_eq!((shared.replicas, shared.lease), (3, Some(1)));
        assert!(!format!("{shared:?}").contains("s3cret"));
    }

    #[test]
    fn mistakes_name_their_key_and_refuse_to_start() {
        for (text, key) in [
            ("timeout = \"5ms\"", "shared_state.redis"),
            ("redis = \"http://redis:6379\"", "shared_state.redis"),
            ("redis = \"redis:6379\"", "shared_state.redis"),
            ("redis = \"redis://\"", "shared_state.redis"),
            ("redis = \"redis://redis:6379/zero\"", "shared_state.redis"),
            (
                "redis = \"rediss://redis:6379/#insecure\"",
                "shared_state.redis",
            ),
            ("redis = \"redis://redis:99999\"", "shared_state.redis"),
        ] {
            let keys = load(text).expect_err(text);
            assert_eq!(keys, [key], "{text}");
        }
        let url = "redis = \"redis://r:6379\"\n";
        for (text, key) in [
            ("timeout = \"0s\"", "shared_state.timeout"),
            ("timeout = \"2s\"", "shared_state.timeout"),
            ("timeout = \"soon\"", "shared_state.timeout"),
            ("replicas = 0", "shared_state.replicas"),
            ("prefix = \"\"", "shared_state.prefix"),
            ("prefix = \"a b\"", "shared_state.prefix"),
            ("lease = 0", "shared_state.lease"),
            ("lease = 5000", "shared_state.lease"),
        ] {
            let keys = load(&format!("{url}{text}")).expect_err(text);
            assert_eq!(keys, [key], "{text}");
        }
        assert!(
            load("redis = \"redis://r\"\nhost = \"r\"").is_err(),
            "unknown keys"
        );
    }

    #[test]
    fn a_password_is_never_echoed_in_an_error() {
        let Err(error) = Config::from_toml(
            "backends = [\"http://127.0.0.1:9\"]\n[shared_state]\n\
             redis = \"http://user:hunter2@redis:6379\"\n",
            "t.toml",
        ) else {
            panic!("an http:// URL is refused");
        };
        let text = error.to_string();
        assert!(text.contains("shared_state.redis"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn the_lease_is_a_hundredth_of_a_second_within_half_the_burst_per_replica() {
        let shared = |replicas, lease| super::SharedStateConfig {
            redis: String::new(),
            display: String::new(),
            timeout: super::DEFAULT_TIMEOUT,
            replicas,
            prefix: "alb".into(),
            lease,
        };
        assert_eq!(shared(1, None).lease_for(1_000_000, 1_000_000), 1_000);
        assert_eq!(shared(1, None).lease_for(100_000, 1_000_000), 1_000);
        assert_eq!(shared(1, None).lease_for(10_000, 1_000_000), 100);
        assert_eq!(shared(3, None).lease_for(10_000, 60), 10);
        assert_eq!(shared(3, None).lease_for(200, 10), 1);
        assert_eq!(shared(2, None).lease_for(200, 10), 2);
        assert_eq!(shared(1, None).lease_for(1, 1), 1);
        assert_eq!(shared(3, Some(7)).lease_for(200, 10), 7);
    }
}
