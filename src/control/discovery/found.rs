//! What discovery found, and the backends it stands for: each source (a DNS name, an SRV name, a
//! Kubernetes Service) keeps its last non-empty answer, and a pool's configured backends are
//! expanded into one backend per address found, carrying what the source said of it (an SRV
//! weight and priority, an endpoint's zone and whether it is terminating).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use rustls::pki_types::ServerName;

use crate::config::{BackendAddr, BackendSpec, BackendTls, MAX_WEIGHT};

/// One backend a source found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub ip: IpAddr,
    /// The port, for sources that give one (SRV, Kubernetes); an A/AAAA answer takes the
    /// configured port.
    pub port: Option<u16>,
    /// The host name it was found under (an SRV target): its Host for health checks and the
    /// name its certificate must carry.
    pub host: Option<String>,
    pub weight: Option<u32>,
    pub backup: bool,
    pub zone: Option<String>,
    /// Terminating: kept in the pool for the requests in flight, given no new ones.
    pub draining: bool,
}

impl Found {
    /// How logs show it: the address, its port when the source gave one, and what else it said.
    pub fn label(&self) -> String {
        let mut label = match self.port {
            Some(port) => std::net::SocketAddr::new(self.ip, port).to_string(),
            None => self.ip.to_string(),
        };
        if let Some(weight) = self.weight {
            label += &format!(" weight {weight}");
        }
        if self.backup {
            label += " backup";
        }
        if let Some(zone) = &self.zone {
            label += &format!(" zone {zone}");
        }
        if self.draining {
            label += " terminating";
        }
        label
    }

    /// An address of an A/AAAA answer: nothing known but the address.
    pub fn address(ip: IpAddr) -> Found {
        Found {
            ip,
            port: None,
            host: None,
            weight: None,
            backup: false,
            zone: None,
            draining: false,
        }
    }
}

/// What each source last found, and how its lookups went (for the metrics).
#[derive(Debug, Default)]
pub struct Discovered {
    pub(super) sources: BTreeMap<String, SourceRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRecord {
    /// The last non-empty answer, sorted; empty until the source first answered.
    pub found: Vec<Found>,
    pub lookups_ok: u64,
    pub lookups_failed: u64,
}

/// The key a backend's source is recorded under: the host of a DNS name, the SRV name, or
/// `namespace/service:port`; none for an address.
pub fn source_key(addr: &BackendAddr) -> Option<String> {
    match addr {
        BackendAddr::Ip(_) => None,
        BackendAddr::Name { host, .. } => Some(host.clone()),
        BackendAddr::Srv { name } => Some(name.clone()),
        BackendAddr::Kubernetes(service) => Some(format!(
            "{}/{}:{}",
            service.namespace, service.service, service.port
        )),
    }
}

impl Discovered {
    /// `specs` with every source that answered replaced by one backend per address found. The
    /// URL of such a backend is its address (what it is known by in the API, logs and metrics);
    /// its `dns_name` says what it was found through. A DNS name not resolved yet stays one
    /// backend resolved on each connection; an SRV name or a Service not answered yet stands for
    /// no backend at all (there is nothing to connect to).
    pub fn expand(&self, specs: &[BackendSpec]) -> Vec<BackendSpec> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let record = source_key(&spec.addr)
                .and_then(|key| self.sources.get(&key))
                .filter(|r| !r.found.is_empty());
            let Some(record) = record else {
                if !spec.addr.is_found_only() && seen.insert(spec.url.clone()) {
                    out.push(spec.clone());
                }
                continue;
            };
            for found in &record.found {
                let backend = one_found(spec, found);
                if seen.insert(backend.url.clone()) {
                    out.push(backend);
                }
            }
        }
        out
    }

    /// Every source with its record, by key.
    pub fn records(&self) -> Vec<(String, SourceRecord)> {
        self.sources
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }
}

/// The backend `found` is, for the configured `spec` that found it.
fn one_found(spec: &BackendSpec, found: &Found) -> BackendSpec {
    let port = match (&spec.addr, found.port) {
        (BackendAddr::Name { port, .. }, _) => *port,
        (_, Some(port)) => port,
        (_, None) => 0,
    };
    let addr = SocketAddr::new(found.ip, port);
    // The scheme stays the source's: an https:// name's addresses speak TLS, an h2c:// name's
    // HTTP/2.
    let url = format!("{}://{addr}", spec.scheme());
    let authority = match (&spec.addr, &found.host) {
        // A DNS name's addresses keep its `name:port` as their Host.
        (BackendAddr::Name { .. }, _) => spec.authority.clone(),
        (_, Some(host)) => format!("{host}:{port}"),
        (_, None) => addr.to_string(),
    };
    // A target has its own name; its certificate must carry that one (unless the config
    // names the certificate's name for all).
    let tls = spec.tls.as_ref().map(|tls| match &found.host {
        Some(host) if tls.client.server_name.is_none() => BackendTls {
            client: tls.client.clone(),
            server_name: ServerName::try_from(host.clone())
                .unwrap_or_else(|_| tls.server_name.clone()),
        },
        _ => tls.clone(),
    });
    let dns_name = match &spec.addr {
        BackendAddr::Name { .. } => spec.authority.clone(),
        _ => spec.url.clone(),
    };
    BackendSpec {
        url,
        authority,
        addr: BackendAddr::Ip(addr),
        weight: found.weight.map_or(spec.weight, |w| w.clamp(1, MAX_WEIGHT)),
        dns_name: Some(dns_name),
        tls,
        zone: found.zone.clone().or_else(|| spec.zone.clone()),
        backup: spec.backup || found.backup,
        draining: found.draining,
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovered(key: &str, found: Vec<Found>) -> Discovered {
        let mut discovered = Discovered::default();
        discovered.sources.insert(
            key.into(),
            SourceRecord {
                found,
                ..SourceRecord::default()
            },
        );
        discovered
    }

    #[test]
    fn each_address_keeps_the_scheme_and_tls_of_its_name() {
        let discovered = discovered(
            "backend",
            vec![
                Found::address("10.0.0.1".parse().unwrap()),
                Found::address("10.0.0.2".parse().unwrap()),
            ],
        );
        let config = crate::Config::from_toml(
            "backends = [\"https://backend:8443\", \"http://backend:8080\"]\n",
            "test",
        )
        .unwrap();
        let urls: Vec<(String, bool)> = discovered
            .expand(&config.backends)
            .iter()
            .map(|b| (b.url.clone(), b.tls.is_some()))
            .collect();
        assert_eq!(
            urls,
            [
                ("https://10.0.0.1:8443".to_string(), true),
                ("https://10.0.0.2:8443".to_string(), true),
                ("http://10.0.0.1:8080".to_string(), false),
                ("http://10.0.0.2:8080".to_string(), false),
            ]
        );
    }

    #[test]
    fn an_srv_target_brings_its_port_weight_priority_and_name() {
        let config = crate::Config::from_toml(
            "backends = [\"srv+https://_web._tcp.example.internal\"]\n",
            "test",
        )
        .unwrap();
        // Before any answer, the SRV name stands for no backend.
        assert!(Discovered::default().expand(&config.backends).is_empty());
        let target = |ip: &str, port, weight, backup| Found {
            port: Some(port),
            host: Some(format!("node-{port}.example.internal")),
            weight: Some(weight),
            backup,
            ..Found::address(ip.parse().unwrap())
        };
        let found = discovered(
            "_web._tcp.example.internal",
            vec![
                target("10.0.0.1", 8001, 60, false),
                target("10.0.0.2", 8002, 0, false),
                target("10.0.0.3", 8003, 65_535, true),
            ],
        );
        let got: Vec<(String, String, u32, bool, String)> = found
            .expand(&config.backends)
            .into_iter()
            .map(|b| {
                let sni = format!("{:?}", b.tls.expect("tls").server_name);
                (b.url, b.authority, b.weight, b.backup, sni)
            })
            .collect();
        assert_eq!(got[0].0, "https://10.0.0.1:8001");
        assert_eq!(got[0].1, "node-8001.example.internal:8001");
        assert!(
            got[0].4.contains("node-8001.example.internal"),
            "{}",
            got[0].4
        );
        assert_eq!((got[0].2, got[0].3), (60, false));
        // Weight 0 is the least share, never none; weights past alb's bound are clamped.
        assert_eq!((got[1].2, got[2].2, got[2].3), (1, MAX_WEIGHT, true));
    }

    #[test]
    fn a_service_endpoint_brings_its_zone_and_terminating_state() {
        let config =
            crate::Config::from_toml("backends = [\"k8s://shop/web:http\"]\n", "test").unwrap();
        let endpoint = |ip: &str, zone: &str, draining| Found {
            port: Some(8080),
            zone: Some(zone.into()),
            draining,
            ..Found::address(ip.parse().unwrap())
        };
        let found = discovered(
            "shop/web:http",
            vec![
                endpoint("10.1.0.1", "a", false),
                endpoint("10.1.0.2", "b", true),
            ],
        );
        let got: Vec<(String, Option<String>, bool, Option<String>)> = found
            .expand(&config.backends)
            .into_iter()
            .map(|b| (b.url, b.zone, b.draining, b.dns_name))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "http://10.1.0.1:8080".to_string(),
                    Some("a".to_string()),
                    false,
                    Some("k8s://shop/web:http".to_string())
                ),
                (
                    "http://10.1.0.2:8080".to_string(),
                    Some("b".to_string()),
                    true,
                    Some("k8s://shop/web:http".to_string())
                ),
            ]
        );
    }
}
