//! A fake Kubernetes API server for the EndpointSlice watch: no cluster runs here, so the tests
//! talk to this one, on 127.0.0.1 port 0 (plain HTTP, or TLS with a test CA).
//!
//! It serves what the watch uses, shaped as Kubernetes 1.30 serves it (written from the API
//! reference for discovery.k8s.io/v1 and the Go types' JSON tags, not generated from a client
//! library): LIST of EndpointSlices in a namespace under a `kubernetes.io/service-name` label
//! selector (an `EndpointSliceList`), and WATCH from a resourceVersion as newline-delimited
//! `{"type", "object"}` events: ADDED, MODIFIED, DELETED, BOOKMARK (when asked for), and ERROR
//! with a 410 Status for a resourceVersion older than its history. Objects carry what the
//! EndpointSlice controller writes: generateName, uid, labels (service-name, managed-by),
//! ownerReferences to the Service, managedFields, endpoints with conditions, nodeName, zone,
//! targetRef and hints, ports with name, protocol, port and appProtocol; empty lists are `null`
//! (the Go fields have no omitempty). Every request must carry the bearer token (401 Status
//! otherwise), and every request is recorded for the tests to check.
//!
//! The test drives it: add, modify and delete slices (each a new resourceVersion), send
//! bookmarks, end watches cleanly (as `timeoutSeconds` does) or drop their connections, forget
//! history (so that the next watch gets 410), or answer 410 as an HTTP status instead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::pki::Pki;

/// The namespace slices are in unless a test says otherwise.
pub const NAMESPACE: &str = "shop";

type Body = Either<Full<Bytes>, Channel<Bytes, std::io::Error>>;

/// One endpoint of a slice, with the conditions the controller writes for a ready pod.
#[derive(Debug, Clone)]
pub struct Ep {
    pub address: String,
    /// `(ready, serving, terminating)`; None leaves `conditions` empty (`{}`), as a third-party
    /// controller may.
    pub conditions: Option<(bool, bool, bool)>,
    pub node: String,
    pub zone: Option<String>,
    pub hints: Vec<String>,
}

impl Ep {
    pub fn ready(address: &str) -> Ep {
        Ep {
            address: address.to_string(),
            conditions: Some((true, true, false)),
            node: "node-a1".to_string(),
            zone: Some("zone-a".to_string()),
            hints: Vec::new(),
        }
    }

    /// A pod being deleted that still serves: what the controller writes after its
    /// deletionTimestamp is set.
    pub fn terminating(mut self) -> Ep {
        self.conditions = Some((false, true, true));
        self
    }

    pub fn without_conditions(mut self) -> Ep {
        self.conditions = None;
        self
    }

    pub fn on(mut self, node: &str, zone: &str) -> Ep {
        self.node = node.to_string();
        self.zone = Some(zone.to_string());
        self
    }

    pub fn hints(mut self, zones: &[&str]) -> Ep {
        self.hints = zones.iter().map(|z| z.to_string()).collect();
        self
    }
}

/// One EndpointSlice as a test describes it.
#[derive(Debug, Clone)]
pub struct Slice {
    pub namespace: String,
    pub service: String,
    /// The suffix the controller's generateName adds (`cart-` + `x7k2p`).
    pub suffix: String,
    pub address_type: String,
    pub endpoints: Vec<Ep>,
    /// `(name, port, appProtocol)`; a None name is the Service's one unnamed port (`""`).
    pub ports: Vec<(Option<String>, u16, Option<String>)>,
}

impl Slice {
    /// A slice of `service` in [`NAMESPACE`] with IPv4 endpoints and port `http` 8080.
    pub fn new(service: &str, suffix: &str, endpoints: Vec<Ep>) -> Slice {
        Slice {
            namespace: NAMESPACE.to_string(),
            service: service.to_string(),
            suffix: suffix.to_string(),
            address_type: "IPv4".to_string(),
            endpoints,
            ports: vec![(Some("http".to_string()), 8080, Some("http".to_string()))],
        }
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.service, self.suffix)
    }

    pub fn in_namespace(mut self, namespace: &str) -> Slice {
        self.namespace = namespace.to_string();
        self
    }

    pub fn ports(mut self, ports: &[(Option<&str>, u16)]) -> Slice {
        self.ports = ports
            .iter()
            .map(|(name, port)| (name.map(str::to_string), *port, None))
            .collect();
        self
    }

    pub fn address_type(mut self, address_type: &str) -> Slice {
        self.address_type = address_type.to_string();
        self
    }
}

/// A request the server answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub label_selector: Option<String>,
    pub allow_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub path: String,
    pub status: u16,
}

enum WatchMsg {
    Line(Bytes),
    /// Close the connection without ending the response (a crash, a reset).
    Drop,
}

struct OpenWatch {
    namespace: String,
    service: Option<String>,
    lines: mpsc::UnboundedSender<WatchMsg>,
}

struct Stored {
    slice: Slice,
    uid: String,
    generation: u64,
    version: u64,
}

/// The objects, their history, and the watches open on them.
pub struct Store {
    token: String,
    /// The last resourceVersion given out (etcd's revision).
    version: u64,
    slices: BTreeMap<(String, String), Stored>,
    /// Every change since `compacted`: (resourceVersion, namespace, service, event line).
    history: Vec<(u64, String, String, Bytes)>,
    /// Watches from a resourceVersion older than this get 410.
    compacted: u64,
    gone_as_status: bool,
    watches: Vec<OpenWatch>,
    seen: Vec<Seen>,
}

pub struct KubeApi {
    pub addr: SocketAddr,
    tls: bool,
    store: Arc<Mutex<Store>>,
    seen_count: watch::Receiver<usize>,
    connections: watch::Receiver<usize>,
    handshakes_failed: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl KubeApi {
    /// A plain-HTTP API server that accepts `token`.
    pub async fn start(token: &str) -> KubeApi {
        KubeApi::serve(token, None).await
    }

    /// An HTTPS API server with a certificate for 127.0.0.1 signed by `pki`'s CA.
    pub async fn start_tls(token: &str, pki: &Pki) -> KubeApi {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let leaf = pki.leaf("kube-apiserver", &["127.0.0.1"], None);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.chain.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        KubeApi::serve(
            token,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn serve(token: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(Store {
            token: token.to_string(),
            // A cluster that has been running a while.
            version: 4100,
            slices: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            gone_as_status: false,
            watches: Vec::new(),
            seen: Vec::new(),
        }));
        let (count_tx, seen_count) = watch::channel(0);
        let count_tx = Arc::new(count_tx);
        let (open_tx, connections) = watch::channel(0usize);
        let (failed_tx, handshakes_failed) = watch::channel(0usize);
        let failed_tx = Arc::new(failed_tx);
        let (tls_on, state) = (tls.is_some(), store.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (store, count_tx, tls) = (state.clone(), count_tx.clone(), tls.clone());
                open_tx.send_modify(|n| *n += 1);
                let open = OpenConnection(open_tx.clone());
                let failed_tx = failed_tx.clone();
                connections.spawn(async move {
                    let _open = open;
                    let service = service_fn(move |request| {
                        let response = answer(&store, &count_tx, request);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                let io = TokioIo::new(stream);
                                let _ = http1::Builder::new().serve_connection(io, service).await;
                            }
                            Err(_) => {
                                failed_tx.send_modify(|n| *n += 1);
                            }
                        },
                        None => {
                            let io = TokioIo::new(stream);
                            let _ = http1::Builder::new().serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        KubeApi {
            addr,
            tls: tls_on,
            store,
            seen_count,
            connections,
            handshakes_failed,
            task,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates or replaces a slice (ADDED or MODIFIED); returns its resourceVersion.
    pub fn apply(&self, slice: &Slice) -> u64 {
        self.store().apply(slice)
    }

    /// Deletes a slice by its name (DELETED); returns the deletion's resourceVersion.
    pub fn delete(&self, namespace: &str, name: &str) -> u64 {
        self.store().delete(namespace, name)
    }

    /// Sends a BOOKMARK to every open watch that asked for them, at a new resourceVersion (as
    /// if objects elsewhere had changed); returns it.
    pub fn bookmark(&self) -> u64 {
        let mut store = self.store();
        store.version += 1;
        let version = store.version;
        let line = line(&json!({
            "type": "BOOKMARK",
            "object": {
                "kind": "EndpointSlice",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": version.to_string(), "creationTimestamp": null},
                "addressType": "",
                "endpoints": null,
                "ports": null,
            }
        }));
        for watch in &store.watches {
            let _ = watch.lines.send(WatchMsg::Line(line.clone()));
        }
        version
    }

    /// Ends every open watch cleanly, after what was sent to it (as its timeoutSeconds would).
    pub fn end_watches(&self) {
        self.store().watches.clear();
    }

    /// Drops every open watch's connection mid-response.
    pub fn drop_watches(&self) {
        for watch in self.store().watches.drain(..) {
            let _ = watch.lines.send(WatchMsg::Drop);
        }
    }

    /// Drops every open watch and, before any can be opened again, runs `changes` and forgets
    /// the history (etcd compacted): the watches' next resourceVersion is too old (410).
    pub fn while_disconnected(&self, changes: impl FnOnce(&mut Store)) {
        let mut store = self.store();
        for watch in store.watches.drain(..) {
            let _ = watch.lines.send(WatchMsg::Drop);
        }
        changes(&mut store);
        store.compacted = store.version;
        store.history.clear();
    }

    /// Answers a watch from a too old resourceVersion with HTTP 410 rather than (as the watch
    /// cache does) a 200 whose first event is an ERROR with a 410 Status.
    pub fn gone_as_status(&self, on: bool) {
        self.store().gone_as_status = on;
    }

    /// Waits (10 s at most) until exactly `n` client connections are open.
    pub async fn wait_connections(&self, n: usize) {
        let mut open = self.connections.clone();
        tokio::time::timeout(Duration::from_secs(10), open.wait_for(|c| *c == n))
            .await
            .unwrap_or_else(|_| panic!("{n} connections open within 10 s"))
            .expect("the server runs");
    }

    /// Waits (10 s at most) until `n` TLS handshakes failed.
    pub async fn wait_failed_handshakes(&self, n: usize) {
        let mut failed = self.handshakes_failed.clone();
        tokio::time::timeout(Duration::from_secs(10), failed.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} failed TLS handshakes within 10 s"))
            .expect("the server runs");
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.store().seen.clone()
    }

    /// Waits (10 s at most) until `n` requests were answered; returns them all.
    pub async fn wait_requests(&self, n: usize) -> Vec<Seen> {
        let mut count = self.seen_count.clone();
        tokio::time::timeout(Duration::from_secs(10), count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} requests within 10 s; saw {:#?}", self.seen()))
            .expect("the server runs");
        self.seen()
    }
}

/// Counts a connection open until it is served to its end.
struct OpenConnection(watch::Sender<usize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_watches();
    }
}

impl Store {
    /// Creates or replaces a slice (ADDED or MODIFIED); returns its resourceVersion.
    pub fn apply(&mut self, slice: &Slice) -> u64 {
        self.version += 1;
        let key = (slice.namespace.clone(), slice.name());
        let (kind, uid, generation) = match self.slices.get(&key) {
            Some(old) => ("MODIFIED", old.uid.clone(), old.generation + 1),
            None => ("ADDED", uid(self.version), 1),
        };
        let stored = Stored {
            slice: slice.clone(),
            uid,
            generation,
            version: self.version,
        };
        let event = json!({"type": kind, "object": object(&stored)});
        self.slices.insert(key, stored);
        self.record(&slice.namespace, &slice.service, &event);
        self.version
    }

    pub fn delete(&mut self, namespace: &str, name: &str) -> u64 {
        self.version += 1;
        let mut stored = self
            .slices
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no slice {namespace}/{name}"));
        // A deleted object comes with the deletion's resourceVersion.
        stored.version = self.version;
        let event = json!({"type": "DELETED", "object": object(&stored)});
        let service = stored.slice.service.clone();
        self.record(namespace, &service, &event);
        self.version
    }

    fn record(&mut self, namespace: &str, service: &str, event: &Value) {
        let line = line(event);
        self.history.push((
            self.version,
            namespace.to_string(),
            service.to_string(),
            line.clone(),
        ));
        for watch in &self.watches {
            if watch.namespace == namespace && watch.service.as_deref().is_none_or(|s| s == service)
            {
                let _ = watch.lines.send(WatchMsg::Line(line.clone()));
            }
        }
    }
}

/// An event as one line of a watch.
fn line(event: &Value) -> Bytes {
    let mut text = serde_json::to_vec(event).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

/// A stable uid-shaped string.
fn uid(n: u64) -> String {
    format!("6f1c2d3e-{:04x}-4a5b-9c8d-{n:012x}", n % 0xffff)
}

/// An EndpointSlice object as the API server sends it.
fn object(stored: &Stored) -> Value {
    let slice = &stored.slice;
    let endpoints: Vec<Value> = slice
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let conditions = match ep.conditions {
                Some((ready, serving, terminating)) => {
                    json!({"ready": ready, "serving": serving, "terminating": terminating})
                }
                None => json!({}),
            };
            let mut endpoint = json!({
                "addresses": [ep.address],
                "conditions": conditions,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": slice.namespace,
                    "name": format!("{}-5d8f7c9b4-{i:05}", slice.service),
                    "uid": uid(1000 + i as u64),
                },
                "nodeName": ep.node,
            });
            if let Some(zone) = &ep.zone {
                endpoint["zone"] = json!(zone);
            }
            if !ep.hints.is_empty() {
                let zones: Vec<Value> = ep.hints.iter().map(|z| json!({"name": z})).collect();
                endpoint["hints"] = json!({"forZones": zones});
            }
            endpoint
        })
        .collect();
    let ports: Vec<Value> = slice
        .ports
        .iter()
        .map(|(name, port, app_protocol)| {
            let mut port = json!({
                "name": name.clone().unwrap_or_default(),
                "protocol": "TCP",
                "port": port,
            });
            if let Some(app_protocol) = app_protocol {
                port["appProtocol"] = json!(app_protocol);
            }
            port
        })
        .collect();
    let time = "2024-05-14T09:21:07Z";
    let service_uid = uid(7);
    json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": slice.name(),
            "generateName": format!("{}-", slice.service),
            "namespace": slice.namespace,
            "uid": stored.uid,
            "resourceVersion": stored.version.to_string(),
            "generation": stored.generation,
            "creationTimestamp": time,
            "labels": {
                "app.kubernetes.io/name": slice.service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": slice.service,
            },
            "annotations": {
                "endpoints.kubernetes.io/last-change-trigger-time": time,
            },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Service",
                "name": slice.service,
                "uid": service_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
            "managedFields": [{
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "discovery.k8s.io/v1",
                "time": time,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:addressType": {},
                    "f:endpoints": {},
                    "f:metadata": {
                        "f:annotations": {".": {}, "f:endpoints.kubernetes.io/last-change-trigger-time": {}},
                        "f:generateName": {},
                        "f:labels": {
                            ".": {},
                            "f:app.kubernetes.io/name": {},
                            "f:endpointslice.kubernetes.io/managed-by": {},
                            "f:kubernetes.io/service-name": {},
                        },
                        "f:ownerReferences": {".": {}, format!("k:{{\"uid\":\"{service_uid}\"}}"): {}},
                    },
                    "f:ports": {},
                },
            }],
        },
        "addressType": slice.address_type,
        // No omitempty on these two in the Go types: an empty list is null.
        "endpoints": if endpoints.is_empty() { Value::Null } else { json!(endpoints) },
        "ports": if ports.is_empty() { Value::Null } else { json!(ports) },
    })
}

/// A Status object, as every error answer carries.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn respond(status: StatusCode, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .header("audit-id", "0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f")
        .body(body)
        .unwrap()
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = Bytes::from(serde_json::to_vec(value).unwrap());
    respond(code, Either::Left(Full::new(body)))
}

/// `%XX` decoded (the selector's `/` and `=`).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(
    store: &Mutex<Store>,
    count: &watch::Sender<usize>,
    request: Request<Incoming>,
) -> Response<Body> {
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    let mut seen = Seen {
        watch: matches!(query.get("watch").map(String::as_str), Some("1" | "true")),
        resource_version: query.get("resourceVersion").cloned(),
        label_selector: query.get("labelSelector").cloned(),
        allow_bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true"),
        timeout_seconds: query.get("timeoutSeconds").and_then(|t| t.parse().ok()),
        path: request.uri().path().to_string(),
        status: 200,
    };
    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
    let response = route(&mut store, &request, &seen);
    seen.status = response.status().as_u16();
    store.seen.push(seen);
    count.send_replace(store.seen.len());
    response
}

fn route(store: &mut Store, request: &Request<Incoming>, seen: &Seen) -> Response<Body> {
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", store.token));
    if !authorized {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &status(401, "Unauthorized", "Unauthorized"),
        );
    }
    let namespace = seen
        .path
        .strip_prefix("/apis/discovery.k8s.io/v1/namespaces/")
        .and_then(|rest| rest.strip_suffix("/endpointslices"));
    let (Some(namespace), true) = (namespace, request.method() == http::Method::GET) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    let service = match seen.label_selector.as_deref() {
        None => None,
        Some(selector) => match selector.strip_prefix("kubernetes.io/service-name=") {
            Some(service) => Some(service.to_string()),
            None => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &status(400, "BadRequest", "unable to parse requirement"),
                );
            }
        },
    };
    let selected =
        |ns: &str, svc: &str| ns == namespace && service.as_deref().is_none_or(|s| s == svc);
    if !seen.watch {
        let items: Vec<Value> = store
            .slices
            .values()
            .filter(|s| selected(&s.slice.namespace, &s.slice.service))
            .map(object)
            .collect();
        return json_response(
            StatusCode::OK,
            &json!({
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": store.version.to_string()},
                "items": items,
            }),
        );
    }
    // What a watch starts with: the events after its resourceVersion, or (none given) the
    // objects as they are now, as ADDED events.
    let from = seen
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok());
    let mut first: Vec<Bytes> = Vec::new();
    match from {
        Some(from) if from > 0 && from < store.compacted => {
            let message = format!("too old resource version: {from} ({})", store.compacted);
            if store.gone_as_status {
                return json_response(StatusCode::GONE, &status(410, "Expired", &message));
            }
            first.push(line(
                &json!({"type": "ERROR", "object": status(410, "Expired", &message)}),
            ));
        }
        Some(from) if from > 0 => first.extend(
            store
                .history
                .iter()
                .filter(|(v, ns, svc, _)| *v > from && selected(ns, svc))
                .map(|(_, _, _, line)| line.clone()),
        ),
        _ => first.extend(
            store
                .slices
                .values()
                .filter(|s| selected(&s.slice.namespace, &s.slice.service))
                .map(|s| line(&json!({"type": "ADDED", "object": object(s)}))),
        ),
    }
    let (lines_tx, lines) = mpsc::unbounded_channel();
    for line in first {
        let _ = lines_tx.send(WatchMsg::Line(line));
    }
    // An expired watch ends after its ERROR; a live one stays registered for what comes.
    if from.is_none_or(|from| from == 0 || from >= store.compacted) {
        store.watches.push(OpenWatch {
            namespace: namespace.to_string(),
            service,
            lines: lines_tx,
        });
    }
    let (sender, body) = Channel::new(16);
    let timeout = Duration::from_secs(seen.timeout_seconds.unwrap_or(1800));
    tokio::spawn(stream(lines, sender, timeout));
    respond(StatusCode::OK, Either::Right(body))
}

/// Writes a watch's lines until it is ended (its sender dropped: a clean end), dropped, or its
/// timeoutSeconds pass.
async fn stream(
    mut lines: mpsc::UnboundedReceiver<WatchMsg>,
    mut body: Sender<Bytes, std::io::Error>,
    timeout: Duration,
) {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(until, lines.recv()).await {
            Ok(Some(WatchMsg::Line(line))) => {
                if body.send_data(line).await.is_err() {
                    return;
                }
            }
            Ok(Some(WatchMsg::Drop)) => {
                body.abort(std::io::Error::other("connection dropped by the test"));
                return;
            }
            Ok(None) | Err(_) => return,
        }
    }
}
