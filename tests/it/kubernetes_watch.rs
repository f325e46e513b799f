//! The Kubernetes EndpointSlice watch (`alb::control::kubernetes`) against the fake API server of
//! support/kube_api.rs (no cluster runs here): slices merged, changes followed, watches resumed
//! from their resourceVersion, lists repeated after a 410, bad credentials survived, ports,
//! zones and hints read. Every wait is on the watch's receiver or the server's request log,
//! under a timeout; none sleeps.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alb::control::kubernetes::{ApiServer, Endpoint, PortRef, ServiceRef, watch};
use tokio::sync::watch::Receiver;

use crate::support::kube_api::{Ep, KubeApi, NAMESPACE, Slice};
use crate::support::pki::Pki;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.c2VydmljZWFjY291bnQ.sig";
const WAIT: Duration = Duration::from_secs(10);

type Endpoints = Receiver<Option<Vec<Endpoint>>>;

fn service(port: &str) -> ServiceRef {
    format!("k8s://{NAMESPACE}/cart:{port}").parse().unwrap()
}

fn start(api: &KubeApi, port: &str) -> (Endpoints, tokio::task::JoinHandle<()>) {
    let client = ApiServer::new(api.url(), Some(TOKEN.to_string()), None).unwrap();
    watch(client, service(port))
}

/// Waits until the published list satisfies `ok`; returns it.
async fn until(rx: &mut Endpoints, ok: impl Fn(&[Endpoint]) -> bool) -> Vec<Endpoint> {
    let found = tokio::time::timeout(WAIT, rx.wait_for(|e| e.as_deref().is_some_and(&ok)))
        .await
        .map(|found| found.map(|f| f.clone()));
    match found {
        Ok(found) => found.expect("the watch task runs").expect("published"),
        Err(_) => panic!("not published within {WAIT:?}; last: {:#?}", rx.borrow()),
    }
}

fn addrs(endpoints: &[Endpoint]) -> Vec<String> {
    endpoints.iter().map(|e| e.addr.to_string()).collect()
}

fn ready(addresses: &[&str]) -> Vec<Ep> {
    addresses.iter().map(|a| Ep::ready(a)).collect()
}

#[tokio::test]
async fn every_slice_of_a_service_is_merged() {
    let _cpu = crate::support::cpu::shared().await;
    let api = KubeApi::start(TOKEN).await;
    api.apply(&Slice::new(
        "cart",
        "x7k2p",
        ready(&["10.1.0.3", "10.1.0.1", "10.1.0.2"]),
    ));
    api.apply(&Slice::new(
        "cart",
        "q9m4d",
        ready(&["10.1.1.2", "10.1.1.1"]),
    ));
    // Neither another Service's slice nor a namespace's namesake is the Service's.
    api.apply(&Slice::new("checkout", "a1b2c", ready(&["10.2.0.1"])));
    api.apply(&Slice::new("cart", "z0z0z", ready(&["10.3.0.1"])).in_namespace("staging"));
    let (mut rx, task) = start(&api, "http");

    let endpoints = until(&mut rx, |e| !e.is_empty()).await;
    assert_eq!(
        addrs(&endpoints),
        [
            "10.1.0.1:8080",
            "10.1.0.2:8080",
            "10.1.0.3:8080",
            "10.1.1.1:8080",
            "10.1.1.2:8080"
        ]
    );
    assert!(
        endpoints
            .iter()
            .all(|e| e.ready && e.serving && !e.terminating)
    );

    let seen = api.wait_requests(2).await;
    assert!(!seen[0].watch, "a list first");
    assert!(seen[1].watch && seen[1].allow_bookmarks, "{:?}", seen[1]);
    for request in &seen[..2] {
        assert_eq!(
            request.path,
            "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
        );
        assert_eq!(
            request.label_selector.as_deref(),
            Some("kubernetes.io/service-name=cart")
        );
        assert_eq!(request.status, 200);
    }
    assert_eq!(
        seen[1].resource_version.as_deref(),
        Some("4104"),
        "the list's"
    );
    let timeout = seen[1].timeout_seconds.expect("a watch asks for its end");
    assert!((300..=360).contains(&timeout), "{timeout}");

    // A third slice arriving by the watch joins the other two.
    api.apply(&Slice::new("cart", "m3n4p", ready(&["10.1.2.1"])));
    let endpoints = until(&mut rx, |e| e.len() == 6).await;
    assert!(addrs(&endpoints).contains(&"10.1.2.1:8080".to_string()));
    task.abort();
}

#[tokio::test]
async fn a_modified_slice_publishes_a_terminating_endpoint() {
    let _cpu = crate::support::cpu::shared().await;
    let api = KubeApi::start(TOKEN).await;
    let slice = Slice::new("cart", "x7k2p", ready(&["10.1.0.1", "10.1.0.2"]));
    api.apply(&slice);
    let (mut rx, task) = start(&api, "http");
    until(&mut rx, |e| e.len() == 2).await;

    let mut draining = slice.clone();
    draining.endpoints[1] = Ep::ready("10.1.0.2").terminating();
    api.apply(&draining);
    let endpoints = until(&mut rx, |e| e.iter().any(|e| e.terminating)).await;
    assert_eq!(addrs(&endpoints), ["10.1.0.1:8080", "10.1.0.2:8080"]);
    let (kept, going) = (&endpoints[0], &endpoints[1]);
    assert!(kept.ready && kept.serving && !kept.terminating);
    assert!(
        !going.ready && going.serving && going.terminating,
        "out of rotation, its requests finish: {going:?}"
    );
    // Conditions a controller left out read as the API says: ready, serving, not terminating.
    draining.endpoints[1] = Ep::ready("10.1.0.2").without_conditions();
    api.apply(&draining);
    let endpoints = until(&mut rx, |e| e.iter().all(|e| !e.terminating)).await;
    assert!(endpoints[1].ready && endpoints[1].serving);
    task.abort();
}

#[tokio::test]
async fn a_deleted_slice_takes_its_endpoints_and_only_its_own() {
    let _cpu = crate::support::cpu::shared().await;
    let api = KubeApi::start(TOKEN).await;
    let first = Slice::new(
        "cart",
        "x7k2p",
        ready(&["10.1.0.1", "10.1.0.2", "10.1.0.3"]),
    );
    let second = Slice::new("cart", "q9m4d", ready(&["10.1.1.1", "10.1.1.2"]));
    api.apply(&first);
    api.apply(&second);
    let (mut rx, task) = start(&api, "http");
    until(&mut rx, |e| e.len() == 5).await;

    api.delete(NAMESPACE, &first.name());
    let endpoints = until(&mut rx, |e| e.len() == 2).await;
    assert_eq!(addrs(&endpoints), ["10.1.1.1:8080", "10.1.1.2:8080"]);
    api.delete(NAMESPACE, &second.name());
    until(&mut rx, |e| e.is_empty()).await;
    task.abort();
}

#[tokio::test]
async fn a_watch_that_ends_or_drops_resumes_from_the_last_resource_version_without_a_list() {
    let _cpu = crate::support::cpu::shared().await;
    let api = KubeApi::start(TOKEN).await;
    let slice = Slice::new("cart", "x7k2p", ready(&["10.1.0.1"]));
    api.apply(&slice);
    let (mut rx, task) = start(&api, "http");
    until(&mut rx, |e| e.len() == 1).await;
    api.wait_requests(2).await;

    // An event, then a bookmark at a later resourceVersion, then the watch's clean end (its
    // timeoutSeconds): the next watch starts at the bookmark.
    api.apply(&Slice::new(
        "cart",
        "x7k2p",
        ready(&["10.1.0.1", "10.1.0.2"]),
    ));
    until(&mut rx, |e| e.len() == 2).await;
    let bookmark = api.bookmark();
    api.end_watches();
    let seen = api.wait_requests(3).await;
    assert!(seen[2].watch, "{:?}", seen[2]);
    assert_eq!(seen[2].resource_version, Some(bookmark.to_string()));

    // An event, then the connection dropped mid-response: the next watch starts at the event.
    let version = api.apply(&Slice::new("cart", "x7k2p", ready(&["10.1.0.3"])));
    until(&mut rx, |e| addrs(e) == ["10.1.0.3:8080"]).await;
    api.drop_watches();
    let seen = api.wait_requests(4).await;
    assert!(seen[3].watch, "{:?}", seen[3]);
    assert_eq!(seen[3].resource_version, Some(version.to_string()));
    assert_eq!(
        seen.iter().filter(|s| !s.watch).count(),
        1,
        "no second list"
    );

    // And the resumed watch carries on.
    api.apply(&Slice::new("cart", "q9m4d", ready(&["10.1.1.1"])));
    until(&mut rx, |e| e.len() == 2).await;
    task.abort();
}

#[tokio::test]
async fn an_expired_resource_version_lists_again() {
    let _cpu = crate::support::cpu::shared().await;
    // As the watch cache answers (a 200 whose first event is an ERROR with a 410 Status), and
    // as a plain 410 answer.
    for gone_as_status in [false, true] {
        let api = KubeApi::start(TOKEN).await;
        api.gone_as_status(gone_as_status);
        let first = Slice::new("cart", "x7k2p", ready(&["10.1.0.1"]));
        api.apply(&first);
        let (mut rx, task) = start(&api, "http");
        until(&mut rx, |e| e.len() == 1).await;
        let watched = api.wait_requests(2).await[1].resource_version.clone();

        // While alb is away, the first slice goes, another comes, and the history is compacted.
        api.while_disconnected(|store| {
            store.delete(NAMESPACE, &first.name());
            store.apply(&Slice::new(
                "cart",
                "q9m4d",
                ready(&["10.1.1.1", "10.1.1.2"]),
            ));
        });
        let endpoints = until(&mut rx, |e| e.len() == 2).await;
        assert_eq!(addrs(&endpoints), ["10.1.1.1:8080", "10.1.1.2:8080"]);

        let seen = api.wait_requests(5).await;
        let kinds: Vec<(bool, u16)> = seen.iter().map(|s| (s.watch, s.status)).collect();
        let expired = if gone_as_status { 410 } else { 200 };
        assert_eq!(
            kinds[..5],
            [
                (false, 200),
                (true, 200),
                (true, expired),
                (false, 200),
                (true, 200)
            ],
            "list, watch, expired watch, list, watch: {seen:#?}"
        );
        assert_eq!(seen[2].resource_version, watched, "resumed first");
        assert_eq!(
            seen[4].resource_version.as_deref(),
            Some("4103"),
            "from the new list"
        );
        task.abort();
    }
}

/// Log lines written while it is alive, from this thread (a current-thread test runtime runs
/// the watch task on it too).
struct Logs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    fn capture() -> Logs {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = SharedWriter(lines.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        Logs {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }
}

#[derive(Clone)]
struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wrong_token_publishes_nothing_is_warned_once_and_retried() {
    let _cpu = crate::support::cpu::shared().await;
    let logs = Logs::capture();
    let api = KubeApi::start(TOKEN).await;
    api.apply(&Slice::new("cart", "x7k2p", ready(&["10.1.0.1"])));
    let client = ApiServer::new(api.url(), Some("expired-token".to_string()), None).unwrap();
    let (rx, task) = watch(client, service("http"));

    let seen = api.wait_requests(3).await;
    assert!(
        seen.iter().all(|s| !s.watch && s.status == 401),
        "{seen:#?}"
    );
    assert!(rx.borrow().is_none(), "nothing published");
    assert!(!rx.has_changed().unwrap());
    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "warned once for the streak:\n{text}");
    assert!(
        warnings[0].contains("list failed") && warnings[0].contains("401"),
        "{text}"
    );
    assert!(
        warnings[0].contains("401 Unauthorized: Unauthorized"),
        "with the Status message: {text}"
    );
    assert!(!text.contains("expired-token"), "the token is never logged");
    task.abort();
}

#[tokio::test]
async fn named_and_numbered_ports_pick_the_port_of_each_slice() {
    let _cpu = crate::support::cpu::shared().await;
    let api = KubeApi::start(TOKEN).await;
    // Pods of two versions serve the port named http on different numbers: one slice each.
    api.apply(
        &Slice::new("cart", "x7k2p", ready(&["10.1.0.1"]))
            .ports(&[(Some("http"), 8080), (Some("metrics"), 9090)]),
    );
    api.apply(
        &Slice::new("cart", "q9m4d", ready(&["10.1.1.1"]))
            .ports(&[(Some("http"), 8081), (Some("metrics"), 9090)]),
    );
    // A slice of the Service's one unnamed port, and one of FQDNs (skipped).
    api.apply(&Slice::new("cart", "u1n2m", ready(&["10.1.2.1"])).ports(&[(None, 8081)]));
    api.apply(
        &Slice::new("cart", "f1q2d", ready(&["cart.example.com"]))
            .address_type("FQDN")
            .ports(&[(Some("http"), 8080), (None, 8081)]),
    );
    let mut published = Vec::new();
    for port in ["http", "metrics", "8081", "8080"] {
        let (mut rx, task) = start(&api, port);
        published.push((port, addrs(&until(&mut rx, |_| true).await)));
        task.abort();
    }
    assert_eq!(
        published,
        [
            ("http", vec!["10.1.0.1:8080".into(), "10.1.1.1:8081".into()]),
            (
                "metrics",
                vec!["10.1.0.1:9090".into(), "10.1.1.1:9090".into()]
            ),
            ("8081", vec!["10.1.1.1:8081".into(), "10.1.2.1:8081".into()]),
            ("8080", vec!["10.1.0.1:8080".into()]),
        ]
    );
    assert_eq!(service("8081").port, PortRef::Number(8081));
}

#[tokio::test]
async fn zones_nodes_and_hints_are_carried() {
    let _cpu = crate::support::cpu::shared().await;
    let api = KubeApi::start(TOKEN).await;
    api.apply(&Slice::new(
        "cart",
        "x7k2p",
        vec![
            Ep::ready("10.1.0.1")
                .on("node-a1", "eu-west-1a")
                .hints(&["eu-west-1a"]),
            Ep::ready("10.1.0.2")
                .on("node-b1", "eu-west-1b")
                .hints(&["eu-west-1b", "eu-west-1c"]),
        ],
    ));
    let mut v6 = Slice::new("cart", "v6v6v", ready(&["fd00:10:1::5"]));
    v6.address_type = "IPv6".into();
    v6.endpoints[0].zone = None;
    api.apply(&v6);
    let (mut rx, task) = start(&api, "http");
    let endpoints = until(&mut rx, |e| e.len() == 3).await;
    let expected = |addr: &str, zone: Option<&str>, node: &str, hints: &[&str]| Endpoint {
        addr: addr.parse().unwrap(),
        ready: true,
        serving: true,
        terminating: false,
        zone: zone.map(str::to_string),
        node: Some(node.to_string()),
        hints: hints.iter().map(|h| h.to_string()).collect(),
    };
    assert_eq!(
        endpoints,
        [
            expected(
                "10.1.0.1:8080",
                Some("eu-west-1a"),
                "node-a1",
                &["eu-west-1a"]
            ),
            expected(
                "10.1.0.2:8080",
                Some("eu-west-1b"),
                "node-b1",
                &["eu-west-1b", "eu-west-1c"]
            ),
            expected("[fd00:10:1::5]:8080", None, "node-a1", &[]),
        ]
    );
    task.abort();
}

#[tokio::test]
async fn the_api_server_is_reached_over_tls_trusting_the_given_ca_alone() {
    let _cpu = crate::support::cpu::shared().await;
    let pki = Pki::new();
    let api = KubeApi::start_tls(TOKEN, &pki).await;
    api.apply(&Slice::new("cart", "x7k2p", ready(&["10.1.0.1"])));
    let ca = pki.ca_pem().into_bytes();
    let client = ApiServer::new(api.url(), Some(TOKEN.to_string()), Some(ca)).unwrap();
    let (mut rx, task) = watch(client, service("http"));
    assert_eq!(
        addrs(&until(&mut rx, |e| e.len() == 1).await),
        ["10.1.0.1:8080"]
    );
    task.abort();

    // Another CA's certificate is refused: nothing published, nothing answered.
    let other = Pki::new().ca_pem().into_bytes();
    let client = ApiServer::new(api.url(), Some(TOKEN.to_string()), Some(other)).unwrap();
    let before = api.seen().len();
    let (rx, task) = watch(client, service("http"));
    api.wait_failed_handshakes(2).await;
    assert!(rx.borrow().is_none(), "nothing published");
    assert_eq!(api.seen().len(), before, "no request got through");
    task.abort();
}

#[tokio::test]
async fn dropping_the_receiver_ends_the_task_and_its_watch() {
    let _cpu = crate::support::cpu::shared().await;
    let api = KubeApi::start(TOKEN).await;
    api.apply(&Slice::new("cart", "x7k2p", ready(&["10.1.0.1"])));
    let (mut rx, task) = start(&api, "http");
    until(&mut rx, |e| e.len() == 1).await;
    api.wait_requests(2).await;
    api.wait_connections(1).await;
    drop(rx);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the task ends")
        .expect("without panicking");
    api.wait_connections(0).await;
}
