//! EndpointSlices as the API server sends them, and their merge into one endpoint list per
//! Service.
//!
//! A Service's endpoints are spread over several slices (100 endpoints each by default), so the
//! list alb balances over is the union of every slice, kept by name: replacing the whole list
//! with the last slice seen is the classic bug that leaves a pool with a fraction of its pods.
//! Only the fields alb reads are declared; the API server's others (managedFields, targetRef,
//! ownerReferences...) are skipped by serde without being kept.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::config::is_zone_name;
pub use crate::config::{PortRef, ServiceRef};

/// Most endpoints published for one Service: whoever writes its slices must not be able to grow
/// alb's pool (a backend and a health check each) without bound.
pub const MAX_ENDPOINTS: usize = 4096;
/// Most endpoints kept across a Service's slices before the merge: room for every endpoint to be
/// listed twice (while the controller moves endpoints between slices, both hold them) and more.
const MAX_STORED: usize = 4 * MAX_ENDPOINTS;
/// Most slices kept for one Service; ~41 hold [`MAX_ENDPOINTS`] at the controller's default of
/// 100 endpoints a slice.
const MAX_SLICES: usize = 1024;
/// Most zone hints kept per endpoint (Kubernetes writes one).
const MAX_HINTS: usize = 8;

/// Longest slice name kept: the API's limit for object names (a DNS subdomain).
const MAX_NAME: usize = 253;

/// One address of one endpoint, with what its slice said about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// In rotation: ready for new requests.
    pub ready: bool,
    /// Able to serve, even while terminating: the requests it already has can finish there.
    pub serving: bool,
    pub terminating: bool,
    pub zone: Option<String>,
    pub node: Option<String>,
    /// The zones this endpoint should serve (`hints.forZones`), as topology-aware routing set
    /// them.
    pub hints: Vec<String>,
}

/// The fields alb reads of every object it is sent: an EndpointSlice, or the Status an ERROR
/// event carries. One type for both, so that an event is parsed in one pass over its line: the
/// event's type says which fields mean anything. Every field may be absent or null (Kubernetes
/// writes an empty slice's `endpoints` and `ports` as null).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Object {
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    address_type: Option<String>,
    #[serde(default)]
    endpoints: Option<Vec<EndpointJson>>,
    #[serde(default)]
    ports: Option<Vec<PortJson>>,
    /// A Status's HTTP code (410 for an expired resourceVersion).
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Object {
    pub fn name(&self) -> Option<&str> {
        self.metadata.as_ref()?.name.as_deref()
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.metadata.as_ref()?.resource_version.as_deref()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Metadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

/// An EndpointSliceList.
#[derive(Debug, Deserialize)]
pub(super) struct List {
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub items: Option<Vec<Object>>,
}

impl List {
    pub fn resource_version(&self) -> Option<&str> {
        self.metadata.as_ref()?.resource_version.as_deref()
    }
}

/// One line of a watch: `{"type": "ADDED", "object": {...}}`.
#[derive(Debug, Deserialize)]
pub(super) struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub object: Object,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointJson {
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default)]
    conditions: Option<Conditions>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    hints: Option<Hints>,
}

#[derive(Debug, Default, Deserialize)]
struct Conditions {
    #[serde(default)]
    ready: Option<bool>,
    #[serde(default)]
    serving: Option<bool>,
    #[serde(default)]
    terminating: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hints {
    #[serde(default)]
    for_zones: Option<Vec<ForZone>>,
}

#[derive(Debug, Deserialize)]
struct ForZone {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PortJson {
    #[serde(default)]
    name: Option<String>,
    /// Wider than a port, so that a wrong number is skipped rather than failing the whole line.
    #[serde(default)]
    port: Option<i64>,
}

/// A Service's slices by name, each as the endpoints it contributes, and the warnings already
/// given (each once per watch, not once per event).
#[derive(Debug)]
pub(super) struct Slices {
    service: String,
    port: PortRef,
    by_name: BTreeMap<String, Vec<Endpoint>>,
    stored: usize,
    warned_type: bool,
    warned_address: bool,
    warned_port: bool,
    /// Whether the last merge or store was capped; warned when this turns true.
    capped: bool,
}

impl Slices {
    pub fn new(service: &ServiceRef) -> Slices {
        Slices {
            service: service.to_string(),
            port: service.port.clone(),
            by_name: BTreeMap::new(),
            stored: 0,
            warned_type: false,
            warned_address: false,
            warned_port: false,
            capped: false,
        }
    }

    /// After a list: the listed slices are all there are (those deleted while no watch was
    /// open go with the old map).
    pub fn replace_all(&mut self, items: Vec<Object>) {
        self.by_name.clear();
        self.stored = 0;
        for item in items {
            self.upsert(item);
        }
    }

    /// An added or modified slice replaces what its name held.
    pub fn upsert(&mut self, slice: Object) {
        let Some(name) = slice
            .name()
            .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
        else {
            return;
        };
        let name = name.to_string();
        let old = self.by_name.get(&name).map_or(0, Vec::len);
        if !self.by_name.contains_key(&name) && self.by_name.len() >= MAX_SLICES {
            self.cap(format_args!(
                "more than {MAX_SLICES} slices; {name} ignored"
            ));
            return;
        }
        let room = MAX_STORED - (self.stored - old);
        let endpoints = self.endpoints_of(&name, slice, room);
        self.stored = self.stored - old + endpoints.len();
        self.by_name.insert(name, endpoints);
    }

    pub fn remove(&mut self, name: &str) {
        if let Some(gone) = self.by_name.remove(name) {
            self.stored -= gone.len();
        }
    }

    /// Every slice's endpoints, sorted by address, one per address, at most [`MAX_ENDPOINTS`].
    /// An address in two slices (the controller moving it) keeps its most available entry.
    pub fn merged(&mut self) -> Vec<Endpoint> {
        let mut all: Vec<Endpoint> = self.by_name.values().flatten().cloned().collect();
        all.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(b.ready.cmp(&a.ready))
                .then(b.serving.cmp(&a.serving))
                .then(a.terminating.cmp(&b.terminating))
                .then(a.cmp(b))
        });
        all.dedup_by(|later, kept| later.addr == kept.addr);
        if all.len() > MAX_ENDPOINTS {
            let total = all.len();
            all.truncate(MAX_ENDPOINTS);
            self.cap(format_args!(
                "{total} endpoints, only the first {MAX_ENDPOINTS} by address are used"
            ));
        } else if self.stored < MAX_STORED && self.by_name.len() < MAX_SLICES {
            self.capped = false;
        }
        all
    }

    fn cap(&mut self, what: std::fmt::Arguments<'_>) {
        if !std::mem::replace(&mut self.capped, true) {
            tracing::warn!(service = %self.service, "kubernetes: {what}");
        }
    }

    /// The endpoints `slice` contributes on the watched port: none from a slice of FQDNs (alb
    /// would have to resolve them: a DNS backend does that) or without that port.
    fn endpoints_of(&mut self, name: &str, slice: Object, room: usize) -> Vec<Endpoint> {
        match slice.address_type.as_deref() {
            Some("IPv4" | "IPv6") => {}
            other => {
                if !std::mem::replace(&mut self.warned_type, true) {
                    tracing::warn!(
                        service = %self.service, slice = name, address_type = other.unwrap_or(""),
                        "kubernetes: a slice of addresses that are not IPs is skipped \
                         (use a DNS backend for FQDN endpoints)"
                    );
                }
                return Vec::new();
            }
        }
        let Some(port) = self.port_of(name, slice.ports.as_deref().unwrap_or_default()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for endpoint in slice.endpoints.unwrap_or_default() {
            let conditions = endpoint.conditions.unwrap_or_default();
            // The API's reading of absent conditions: unknown readiness is ready, serving
            // defers to ready, unknown termination is not terminating.
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            // Each address gets a copy of these: a zone that is not a zone's name, and more
            // hints than a cluster has zones, would multiply one event's bytes by the endpoints.
            let hints: Vec<String> = endpoint
                .hints
                .and_then(|h| h.for_zones)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|z| z.name.filter(|z| is_zone_name(z)))
                .take(MAX_HINTS)
                .collect();
            let zone = endpoint.zone.filter(|z| is_zone_name(z));
            let node = endpoint.node_name.filter(|n| n.len() <= MAX_NAME);
            for address in endpoint.addresses.unwrap_or_default() {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    if !std::mem::replace(&mut self.warned_address, true) {
                        tracing::warn!(
                            service = %self.service, slice = name, %address,
                            "kubernetes: an endpoint address that is not an IP is skipped"
                        );
                    }
                    continue;
                };
                if out.len() == room {
                    self.cap(format_args!(
                        "the slices hold more than {MAX_STORED} endpoints; the rest of {name} \
                         is ignored"
                    ));
                    return out;
                }
                out.push(Endpoint {
                    addr: SocketAddr::new(ip, port),
                    ready,
                    serving,
                    terminating,
                    zone: zone.clone(),
                    node: node.clone(),
                    hints: hints.clone(),
                });
            }
        }
        out
    }

    /// The number of the watched port in one slice. A slice without it contributes nothing; said
    /// once, as it usually means the port is misnamed in alb's config.
    fn port_of(&mut self, name: &str, ports: &[PortJson]) -> Option<u16> {
        let found = ports.iter().find(|p| match &self.port {
            PortRef::Name(wanted) => p.name.as_deref().unwrap_or("") == wanted,
            PortRef::Number(wanted) => p.port == Some(i64::from(*wanted)),
        });
        let number = found
            .and_then(|p| p.port)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0);
        if number.is_none() && !std::mem::replace(&mut self.warned_port, true) {
            let offered: Vec<String> = ports
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.name.as_deref().unwrap_or(""),
                        p.port.unwrap_or(0)
                    )
                })
                .collect();
            tracing::warn!(
                service = %self.service, slice = name, port = %self.port,
                offered = %offered.join(","),
                "kubernetes: a slice without the watched port is skipped"
            );
        }
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(port: PortRef) -> ServiceRef {
        ServiceRef {
            namespace: "shop".into(),
            service: "cart".into(),
            port,
        }
    }

    fn slice(json: &str) -> Object {
        serde_json::from_str(json).expect("slice JSON")
    }

    #[test]
    fn service_refs_parse_and_say_what_is_wrong() {
        let parsed: ServiceRef = "k8s://shop/cart:http".parse().unwrap();
        assert_eq!(parsed, service(PortRef::Name("http".into())));
        assert_eq!(parsed.to_string(), "k8s://shop/cart:http");
        let parsed: ServiceRef = "k8s://shop/cart:8080".parse().unwrap();
        assert_eq!(parsed.port, PortRef::Number(8080));
        for (text, complaint) in [
            ("http://shop/cart:80", "does not start with k8s://"),
            ("k8s://cart:80", "no namespace"),
            ("k8s://shop/cart", "no port"),
            ("k8s://Shop/cart:80", "namespace \"Shop\""),
            ("k8s://shop/9cart:80", "a letter first"),
            ("k8s://shop/cart-:80", "service \"cart-\""),
            ("k8s://shop/cart:0", "not in 1..=65535"),
            ("k8s://shop/cart:70000", "not in 1..=65535"),
            ("k8s://shop/cart:", "neither a number nor a port name"),
            ("k8s://shop/cart:http--alt", "neither a number"),
            ("k8s://shop/cart:a-very-long-port-name", "neither a number"),
            ("k8s://shop/a/cart:80", "service \"a/cart\""),
        ] {
            let error = text.parse::<ServiceRef>().unwrap_err();
            assert!(error.contains(complaint), "{text}: {error}");
        }
    }

    #[test]
    fn absent_conditions_read_as_the_api_says() {
        let mut slices = Slices::new(&service(PortRef::Name("http".into())));
        slices.upsert(slice(
            r#"{"metadata":{"name":"a"},"addressType":"IPv4","ports":[{"name":"http","port":80}],
               "endpoints":[
                 {"addresses":["10.0.0.1"]},
                 {"addresses":["10.0.0.2"],"conditions":{"ready":false}},
                 {"addresses":["10.0.0.3"],"conditions":{"ready":false,"serving":true,"terminating":true}}
               ]}"#,
        ));
        let flags: Vec<(bool, bool, bool)> = slices
            .merged()
            .iter()
            .map(|e| (e.ready, e.serving, e.terminating))
            .collect();
        assert_eq!(
            flags,
            [
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
    }

    #[test]
    fn null_lists_fqdn_slices_and_missing_ports_contribute_nothing() {
        let mut slices = Slices::new(&service(PortRef::Number(8080)));
        slices.upsert(slice(
            r#"{"metadata":{"name":"empty"},"addressType":"IPv4","endpoints":null,"ports":null}"#,
        ));
        slices.upsert(slice(
            r#"{"metadata":{"name":"names"},"addressType":"FQDN","ports":[{"port":8080}],
               "endpoints":[{"addresses":["db.example"]}]}"#,
        ));
        slices.upsert(slice(
            r#"{"metadata":{"name":"other-port"},"addressType":"IPv4","ports":[{"port":9090}],
               "endpoints":[{"addresses":["10.0.0.9"]}]}"#,
        ));
        slices.upsert(slice(
            r#"{"metadata":{"name":"v6"},"addressType":"IPv6","ports":[{"name":"","port":8080,"protocol":"TCP"}],
               "endpoints":[{"addresses":["fd00::1","not-an-ip"],"zone":"z1","nodeName":"n1",
                             "hints":{"forZones":[{"name":"z1"}]}}]}"#,
        ));
        assert_eq!(
            slices.merged(),
            [Endpoint {
                addr: "[fd00::1]:8080".parse().unwrap(),
                ready: true,
                serving: true,
                terminating: false,
                zone: Some("z1".into()),
                node: Some("n1".into()),
                hints: vec!["z1".into()],
            }]
        );
        assert!(slices.warned_type && slices.warned_port && slices.warned_address);
    }

    #[test]
    fn slices_merge_by_name_and_an_address_in_two_keeps_its_readiest_entry() {
        let mut slices = Slices::new(&service(PortRef::Name("http".into())));
        let make = |name: &str, addrs: &[&str], ready: bool| {
            let endpoints: Vec<String> = addrs
                .iter()
                .map(|a| format!(r#"{{"addresses":["{a}"],"conditions":{{"ready":{ready}}}}}"#))
                .collect();
            slice(&format!(
                r#"{{"metadata":{{"name":"{name}"}},"addressType":"IPv4",
                    "ports":[{{"name":"http","port":80}}],"endpoints":[{}]}}"#,
                endpoints.join(",")
            ))
        };
        slices.upsert(make("a", &["10.0.0.3", "10.0.0.1"], true));
        slices.upsert(make("b", &["10.0.0.2", "10.0.0.1"], false));
        let merged = slices.merged();
        let addrs: Vec<String> = merged.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        assert!(merged[0].ready, "10.0.0.1 is ready in slice a");
        slices.upsert(make("a", &["10.0.0.4"], true));
        assert_eq!(slices.merged().len(), 3, "a's old endpoints replaced");
        slices.remove("b");
        assert_eq!(slices.merged().len(), 1);
        assert_eq!(slices.stored, 1);
    }

    #[test]
    fn the_published_list_and_the_stored_slices_are_capped() {
        let mut slices = Slices::new(&service(PortRef::Number(80)));
        for s in 0..5u32 {
            let endpoints: Vec<String> = (0..1000u32)
                .map(|i| format!(r#"{{"addresses":["10.{s}.{}.{}"]}}"#, i / 256, i % 256))
                .collect();
            slices.upsert(slice(&format!(
                r#"{{"metadata":{{"name":"s{s}"}},"addressType":"IPv4","ports":[{{"port":80}}],
                    "endpoints":[{}]}}"#,
                endpoints.join(",")
            )));
        }
        assert_eq!(slices.merged().len(), MAX_ENDPOINTS);
        assert!(slices.capped);
        for s in 0..5u32 {
            slices.remove(&format!("s{s}"));
        }
        assert!(slices.merged().is_empty());
        assert!(!slices.capped, "the cap is warned again next time");
        assert_eq!(slices.stored, 0);
    }

    #[test]
    fn watch_events_and_statuses_parse_into_one_object() {
        let event: WatchEvent = serde_json::from_str(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},
                "status":"Failure","message":"too old resource version: 1 (5)",
                "reason":"Expired","code":410}}"#,
        )
        .unwrap();
        assert_eq!(
            (event.kind.as_str(), event.object.code),
            ("ERROR", Some(410))
        );
        let event: WatchEvent = serde_json::from_str(
            r#"{"type":"BOOKMARK","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1",
                "metadata":{"resourceVersion":"12","creationTimestamp":null},
                "addressType":"","endpoints":null,"ports":null}}"#,
        )
        .unwrap();
        assert_eq!(event.object.resource_version(), Some("12"));
    }

    #[test]
    fn one_watch_line_cannot_multiply_into_much_more_memory() {
        let mut slices = Slices::new(&service(PortRef::Number(80)));
        let zone = "z".repeat(16 * 1024);
        let addresses: Vec<String> = (0..2000u32)
            .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
            .collect();
        let line = format!(
            r#"{{"metadata":{{"name":"s"}},"addressType":"IPv4","ports":[{{"port":80}}],
               "endpoints":[{{"addresses":[{}],"zone":"{zone}","hints":{{"forZones":[{{"name":"{zone}"}}]}}}}]}}"#,
            addresses.join(",")
        );
        slices.upsert(slice(&line));
        let held: usize = slices
            .merged()
            .iter()
            .map(|e| {
                e.zone.as_ref().map_or(0, String::len)
                    + e.hints.iter().map(String::len).sum::<usize>()
            })
            .sum();
        assert!(
            held < 16 * line.len(),
            "a {} byte slice holds {held} bytes of zone names",
            line.len()
        );
    }
}
