//! gRPC through alb, with real tonic clients and servers on both sides: the four call shapes,
//! status and trailers relayed untouched, deadlines (`grpc-timeout`), a backend dying mid-call,
//! per-call balancing over one client connection, no backend up or no route (alb's own answers in
//! gRPC's terms), a large message, REFUSED_STREAM retried elsewhere.
//!
//! Backends are `h2c://` (HTTP/2 by prior knowledge, one multiplexed connection from alb per
//! backend); clients speak h2c to alb's plain listener (`[http2] cleartext = true`).
//! `RUST_LOG=alb=debug cargo test --test it grpc:: -- --nocapture` shows alb's log beside each
//! test.

mod calls;
mod failures;
mod peers;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::{ClosedPort, Scenario, TestBalancer};
use peers::*;
use tokio::net::TcpStream;
use tonic::{Code, Request};

/// Health checks on `/health` once a minute: quiet, backends start healthy.
const QUIET_HEALTH: &str = "[health_check]\npath = \"/health\"\ninterval = \"60s\"\n";

/// A config for `backends`: `top` holds top-level keys, `tables` more sections.
fn config(backends: &[&GrpcBackend], top: &str, tables: &str) -> String {
    let urls: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    format!(
        "backends = [{}]\n{top}\n[http2]\ncleartext = true\n{tables}",
        urls.join(", ")
    )
}

async fn balancer(backends: &[&GrpcBackend]) -> TestBalancer {
    Scenario::new()
        .backend_urls(backends.iter().map(|b| b.url()))
        .config("[http2]\ncleartext = true\n")
        .config(QUIET_HEALTH)
        .start()
        .await
        .lb
}

/// Awaits `future` for at most `limit`, failing the test with `what` past it.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
}

const CALL: Duration = Duration::from_secs(5);

fn echo(text: &str, n: u32) -> Echo {
    Echo {
        text: text.to_string(),
        n,
        ..Echo::default()
    }
}

fn assert_failure(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
    assert_eq!(status.message(), FAIL_MESSAGE, "{what}: {status:?}");
    assert_eq!(
        status
            .metadata()
            .get(FAIL_DETAIL_KEY)
            .map(|v| v.to_str().unwrap()),
        Some(FAIL_DETAIL),
        "{what}: the status' metadata came through: {status:?}"
    );
}

/// Waits for `rx` to reach `at_least`, within `limit`.
async fn reaches(
    rx: &mut tokio::sync::watch::Receiver<u64>,
    at_least: u64,
    limit: Duration,
    what: &str,
) {
    within(limit, what, rx.wait_for(|n| *n >= at_least))
        .await
        .expect("backend state");
}

/// A gRPC call on a raw h2 connection to `addr` (no timer of its own, no interpretation): the
/// response head, how long it took, and the connection (to close).
async fn raw_call(
    addr: std::net::SocketAddr,
    path: &str,
    grpc_timeout: Option<&str>,
    message: &Echo,
    with_length: bool,
) -> (
    http::Response<h2::RecvStream>,
    Duration,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .expect("h2c handshake with alb");
    let connection = tokio::spawn(connection);
    let mut client = within(CALL, "stream capacity", client.ready())
        .await
        .unwrap();
    let mut request = http::Request::post(format!("http://{AUTHORITY}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = grpc_timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let frame = grpc_frame(message);
    if with_length {
        request = request.header("content-length", frame.len());
    }
    let started = Instant::now();
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    send.send_data(frame, true).unwrap();
    let response = within(Duration::from_secs(2), "alb's answer", response)
        .await
        .expect("a response, not a reset");
    (response, started.elapsed(), connection)
}

fn field(response: &http::Response<h2::RecvStream>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// A balancer with three outcomes by path: `/test.Echo/` to a live backend, `/dead.Svc/` to a
/// pool whose backend is down, anything else unrouted (no default pool).
async fn routed_balancer() -> (TestBalancer, GrpcBackend, ClosedPort) {
    let backend = GrpcBackend::start("alpha").await;
    let dead = ClosedPort::new();
    let lb = TestBalancer::start(&format!(
        "[http2]\ncleartext = true\n{QUIET_HEALTH}\
         [pools.live]\nbackends = [\"{}\"]\n[pools.dead]\nbackends = [\"h2c://{}\"]\n\
         [[route]]\npath_prefix = \"/test.Echo/\"\npool = \"live\"\n\
         [[route]]\npath_prefix = \"/dead.Svc/\"\npool = \"dead\"\n",
        backend.url(),
        dead.addr()
    ))
    .await;
    (lb, backend, dead)
}

/// Addresses where connects are refused, held until dropped.
fn dead_addresses(n: usize) -> Vec<ClosedPort> {
    (0..n).map(|_| ClosedPort::new()).collect()
}
