//! `[locality]`: the zone this replica runs in, so that each pool sends its requests to backends
//! in the same zone while they can take them (cross-zone traffic is slower and, on every cloud,
//! billed) and spills over to the other zones when they cannot.

use super::raw::RawLocality;
use super::values::{Problems, count};

/// Where this replica runs, and when its zone's backends stop being enough.
#[derive(Debug, Clone, PartialEq)]
pub struct Locality {
    /// This replica's zone; none: no zone is preferred, every backend is picked alike.
    pub zone: Option<String>,
    /// The same-zone backends take the traffic only while at least this share of them is
    /// available (healthy, not ejected, not drained): below it, the few left would carry what
    /// a whole zone carried.
    pub min_healthy: f64,
    /// The same-zone backends count as overloaded, and a request spills over, when every
    /// available one has this many requests in flight. None: a backend's own `max_connections`
    /// when it has one, else no bound (only health spills over).
    pub max_in_flight: Option<u32>,
}

impl Default for Locality {
    fn default() -> Self {
        Locality {
            zone: None,
            min_healthy: 0.5,
            max_in_flight: None,
        }
    }
}

pub(super) fn locality(raw: RawLocality, problems: &mut Problems) -> Locality {
    let defaults = Locality::default();
    let zone = match (raw.zone, raw.zone_env) {
        (Some(_), Some(_)) => {
            problems.add("locality.zone", "give `zone` or `zone_env`, not both");
            None
        }
        (Some(zone), None) => Some(zone),
        // The Kubernetes downward API or the orchestrator puts the zone in the environment.
        (None, Some(var)) => match std::env::var(&var) {
            Ok(zone) => Some(zone),
            Err(_) => {
                problems.add(
                    "locality.zone_env",
                    format!("the environment variable {var:?} is not set"),
                );
                None
            }
        },
        (None, None) => None,
    };
    if let Some(zone) = &zone {
        zone_name("locality.zone", zone, problems);
    }
    let min_healthy = match raw.min_healthy {
        None => defaults.min_healthy,
        Some(share) if (0.0..=1.0).contains(&share) => share,
        Some(share) => {
            problems.add(
                "locality.min_healthy",
                format!("{share} is not a share between 0.0 and 1.0"),
            );
            defaults.min_healthy
        }
    };
    let max_in_flight = raw
        .max_in_flight
        .map(|n| count("locality.max_in_flight", Some(n), 1, 1, 1_000_000, problems));
    Locality {
        zone,
        min_healthy,
        max_in_flight,
    }
}

/// Whether `zone` reads as a zone's name (see [`zone_name`]); discovery drops any other.
pub fn is_zone_name(zone: &str) -> bool {
    !zone.is_empty() && zone.len() <= 128 && zone.bytes().all(|b| b.is_ascii_graphic())
}

/// A zone is a label like `eu-west-1a` or `topology.kubernetes.io/zone`'s values: printable,
/// without spaces, so that it reads the same in the config, the API and the metrics.
pub(super) fn zone_name(key: &str, zone: &str, problems: &mut Problems) {
    if !is_zone_name(zone) {
        problems.add(
            key,
            format!("{zone:?} is not a zone name (1 to 128 visible ASCII characters)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{BackendAddr, Config};

    fn keys(text: &str) -> Vec<String> {
        match Config::from_toml(text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| p.key.clone()).collect(),
        }
    }

    #[test]
    fn discovered_backends_are_read_from_their_urls() {
        let config = Config::from_toml(
            "backends = [\"srv+h2c://_grpc._tcp.Example.internal.\", \"k8s://shop/web:http\", \
             \"k8s+https://shop/api:8443\"]\n",
            "t.toml",
        )
        .expect("valid");
        let got: Vec<(&str, &str, &BackendAddr, bool)> = config
            .backends
            .iter()
            .map(|b| (b.url.as_str(), b.scheme(), &b.addr, b.http2))
            .collect();
        assert_eq!(got[0].0, "srv+h2c://_grpc._tcp.example.internal");
        assert_eq!((got[0].1, got[0].3), ("h2c", true));
        assert_eq!(got[1].0, "k8s://shop/web:http");
        assert_eq!(
            got[1].2,
            &BackendAddr::Kubernetes(crate::config::ServiceRef {
                namespace: "shop".into(),
                service: "web".into(),
                port: crate::config::PortRef::Name("http".into())
            })
        );
        assert_eq!((got[2].0, got[2].1), ("k8s+https://shop/api:8443", "https"));
        assert!(config.backends[2].tls.is_some());
    }

    #[test]
    fn a_mistake_names_its_key() {
        for (text, key) in [
            ("backends = [\"srv+http://web.example\"]\n", "backends[0]"),
            (
                "backends = [\"srv+ftp://_a._tcp.example\"]\n",
                "backends[0]",
            ),
            ("backends = [\"k8s://shop/web\"]\n", "backends[0]"),
            ("backends = [\"k8s://Shop_1/web:http\"]\n", "backends[0]"),
            (
                "[[backend]]\nurl = \"http://127.0.0.1:1\"\nzone = \"eu west\"\n",
                "backend[0].zone",
            ),
            (
                "[[backend]]\nurl = \"k8s://shop/web:http\"\nzone = \"a\"\n",
                "backend[0].zone",
            ),
            (
                "backends = [\"http://127.0.0.1:1\"]\n[locality]\nmin_healthy = 1.5\n",
                "locality.min_healthy",
            ),
            (
                "backends = [\"http://127.0.0.1:1\"]\n[locality]\nzone_env = \"ALB_TEST_NO_SUCH_VARIABLE\"\n",
                "locality.zone_env",
            ),
            (
                "backends = [\"http://127.0.0.1:1\"]\n[locality]\nmax_in_flight = 0\n",
                "locality.max_in_flight",
            ),
            (
                "backends = [\"k8s://shop/web:http\"]\n[discovery.kubernetes]\n\
                 api_server = \"https://10.0.0.1:6443\"\ntoken_file = \"/no/such/token\"\n",
                "discovery.kubernetes.token_file",
            ),
        ] {
            assert_eq!(keys(text), [key], "{text}");
        }
    }

    #[test]
    fn k8s_urls_the_watch_can_never_match_are_refused() {
        let accepted: Vec<&str> = [
            "k8s://shop/cart:0",
            "k8s://shop/cart:70000",
            "k8s://shop/9cart:80",
            "k8s://shop/cart:a-very-long-port-name",
            "k8s://shop/cart:http--alt",
        ]
        .into_iter()
        .filter(|url| Config::from_toml(&format!("backends = [\"{url}\"]\n"), "t.toml").is_ok())
        .collect();
        assert!(accepted.is_empty(), "accepted: {accepted:?}");
    }
}
