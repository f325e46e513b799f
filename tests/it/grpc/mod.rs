//! gRPC through alb, with real tonic clients and servers on both sides: the four call shapes,
//! status and trailers relayed untouched, deadlines (`grpc-timeout`), a backend dying mid-call,
//! per-call balancing over one client connection, no backend up or no route (alb's own answers in
//! gRPC's terms), a large message, REFUSED_STREAM retried elsewhere.
//!
//! Backends are `h2c://` (HTTP/2 by prior knowledge, one multiplexed connection from alb per
//! backend); clients speak h2c to alb's plain listener (`[http2] cleartext = true`).
//! `RUST_LOG=alb=debug cargo test --test grpc -- --nocapture` shows alb's log beside each test.

mod peers;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::{ClosedPort, Scenario, TestBalancer};
use peers::*;
use tokio::net::TcpStream;
use tonic::{Code, Request};

/// alb's log lines go to the test's output (shown when it fails).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("alb=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

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
    init_logs();
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

#[tokio::test]
async fn unary_call_arrives_with_authority_and_forwarded_for() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let mut request = Request::new(echo("hello", 7));
    request
        .metadata_mut()
        .insert("x-end-to-end", "kept".parse().unwrap());
    let started = Instant::now();
    let response = within(CALL, "unary call", client.unary(request))
        .await
        .unwrap_or_else(|s| panic!("unary call failed: {s:?}"));
    eprintln!("unary call: {:?}", started.elapsed());

    assert_eq!(
        response
            .metadata()
            .get("x-backend")
            .map(|v| v.to_str().unwrap()),
        Some("alpha"),
        "the backend's response metadata (headers) reached the client"
    );
    let reply = response.into_inner();
    assert_eq!(
        reply,
        Echo {
            backend: "alpha".into(),
            ..echo("hello", 7)
        }
    );

    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "one call reached the backend: {seen:?}");
    let call = &seen[0];
    assert_eq!(call.path, "/test.Echo/Unary");
    let host = call
        .headers
        .get("host")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        call.authority.as_deref().or(host.as_deref()),
        Some(AUTHORITY),
        ":authority as the client sent it (uri {:?}, host {host:?})",
        call.authority
    );
    if let Some(host) = &host {
        assert_eq!(
            host, AUTHORITY,
            "a Host field, if any, agrees with :authority"
        );
    }
    let header = |name: &str| {
        call.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} missing at the backend: {:?}", call.headers))
    };
    assert_eq!(header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(header("x-forwarded-proto"), "http");
    assert_eq!(header("content-type"), "application/grpc");
    assert_eq!(header("te"), "trailers", "gRPC servers need te: trailers");
    assert_eq!(header("x-end-to-end"), "kept", "request metadata passes");

    lb.stop().await;
}

#[tokio::test]
async fn server_streaming_delivers_100_messages_in_order_then_ok() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let started = Instant::now();
    let response = within(
        CALL,
        "server-streaming call",
        client.server_streaming("/test.Echo/Count", Request::new(echo("", 100))),
    )
    .await
    .unwrap_or_else(|s| panic!("server-streaming call failed: {s:?}"));
    let mut stream = response.into_inner();
    for i in 0..100 {
        let message = within(CALL, "next message", stream.message())
            .await
            .unwrap_or_else(|s| panic!("message {i}: {s:?}"))
            .unwrap_or_else(|| panic!("the stream ended after {i} messages"));
        assert_eq!(message.n, i, "messages in order");
        assert_eq!(message.text, format!("message {i}"));
        assert_eq!(message.backend, "alpha");
    }
    // tonic reports the end as Ok(None) only on trailers with grpc-status 0 (a stream ending
    // without grpc-status is an error for it).
    let end = within(CALL, "end of stream", stream.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "status OK after the 100th message: {end:?}"
    );
    let trailers = within(CALL, "trailers", stream.trailers())
        .await
        .expect("trailers")
        .expect("the call ended with trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "grpc-status 0 in trailers: {trailers:?}"
    );
    eprintln!(
        "100 streamed messages and trailers: {:?}",
        started.elapsed()
    );
    lb.stop().await;
}

#[tokio::test]
async fn client_streaming_sums_100_messages() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let messages = futures_util::stream::iter((1..=100).map(|n| echo("part", n)));
    let started = Instant::now();
    let total = within(
        CALL,
        "client-streaming call",
        client.sum(Request::new(messages)),
    )
    .await
    .unwrap_or_else(|s| panic!("client-streaming call failed: {s:?}"))
    .into_inner();
    eprintln!("100 messages summed: {:?}", started.elapsed());
    assert_eq!(total.count, 100);
    assert_eq!(total.sum, 5050);
    assert_eq!(
        total.order,
        (1..=100).collect::<Vec<u32>>(),
        "received in order"
    );
    assert_eq!(total.backend, "alpha");
    lb.stop().await;
}

/// Send one, receive its answer, only then send the next: the request stream is still open
/// while every answer but the last arrives, so both directions stream at once through alb.
#[tokio::test]
async fn bidirectional_ping_pong_of_50_messages() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let started = Instant::now();
    tx.send(echo("ping", 0)).await.unwrap();
    let response = within(
        CALL,
        "bidirectional call",
        client.chat(Request::new(receiver_stream(rx))),
    )
    .await
    .unwrap_or_else(|s| panic!("bidirectional call failed: {s:?}"));
    let mut replies = response.into_inner();
    for i in 0..50 {
        if i > 0 {
            tx.send(echo("ping", i)).await.expect("request stream open");
        }
        let reply = within(
            CALL,
            &format!("answer to ping {i} (request stream still open)"),
            replies.message(),
        )
        .await
        .unwrap_or_else(|s| panic!("answer {i}: {s:?}"))
        .unwrap_or_else(|| panic!("the answers ended after {i}"));
        assert_eq!(
            (reply.n, reply.text.as_str(), reply.backend.as_str()),
            (i, "ping", "alpha")
        );
    }
    drop(tx);
    let end = within(CALL, "end of the answers", replies.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "status OK once the client ended its stream: {end:?}"
    );
    eprintln!("50 ping-pongs: {:?}", started.elapsed());
    lb.stop().await;
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

/// A handler's own status reaches the client as it was: code, percent-encoded message and
/// metadata, whether sent trailers-only (in the head) or in trailers after messages.
#[tokio::test]
async fn handler_status_and_message_are_relayed_untouched() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let status = within(
        CALL,
        "failing unary call",
        client.call_unary("/test.Echo/Fail", Request::new(echo("", 0))),
    )
    .await
    .expect_err("the handler fails the call");
    assert_failure(&status, "trailers-only failure");

    let mut stream = within(
        CALL,
        "failing stream",
        client.server_streaming("/test.Echo/FailLate", Request::new(echo("", 0))),
    )
    .await
    .unwrap_or_else(|s| panic!("the stream starts: {s:?}"))
    .into_inner();
    for i in 0..2 {
        let message = within(CALL, "message before the failure", stream.message())
            .await
            .unwrap_or_else(|s| panic!("message {i}: {s:?}"))
            .expect("two messages before the failure");
        assert_eq!(message.n, i);
    }
    let status = within(CALL, "failure in trailers", stream.message())
        .await
        .expect_err("the stream ends with the handler's status");
    assert_failure(&status, "failure in trailers after two messages");
    assert_eq!(backend.calls(), 2);
    lb.stop().await;
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

/// A client with a 300 ms deadline on a 2 s handler gets DEADLINE_EXCEEDED in well under a
/// second, and the handler is cancelled at the backend (alb passed the cancellation on).
#[tokio::test]
async fn grpc_timeout_ends_a_slow_call_in_time() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;
    let mut cancelled = backend.cancelled();

    let mut request = Request::new(echo("slow", 2000));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = within(
        Duration::from_secs(3),
        "slow call",
        client.call_unary("/test.Echo/Slow", request),
    )
    .await
    .expect_err("the deadline ends the call");
    let elapsed = started.elapsed();
    eprintln!("slow call ended after {elapsed:?}: {status:?}");
    // DEADLINE_EXCEEDED is alb's answer (grpc-timeout bounds its wait); tonic's own timer, when
    // it fires first, reports CANCELLED "Timeout expired" (tonic's mapping of its local deadline).
    let by_alb = status.code() == Code::DeadlineExceeded;
    let by_tonic = status.code() == Code::Cancelled && status.message().contains("Timeout expired");
    assert!(by_alb || by_tonic, "deadline status, got {status:?}");
    assert!(elapsed < Duration::from_secs(1), "ended after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(290),
        "not before the deadline: {elapsed:?}"
    );
    reaches(
        &mut cancelled,
        1,
        Duration::from_secs(1),
        "the backend's handler cancelled",
    )
    .await;
    eprintln!(
        "backend handler cancelled {:?} after the call started",
        started.elapsed()
    );
    lb.stop().await;
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

/// alb's own answer to a `grpc-timeout` that passed: HTTP 200, trailers-only, grpc-status 4,
/// at the deadline and not before; read with a raw h2 client that has no timer of its own.
#[tokio::test]
async fn alb_answers_a_passed_grpc_timeout_with_deadline_exceeded() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut cancelled = backend.cancelled();

    let (response, elapsed, connection) = raw_call(
        lb.addr,
        "/test.Echo/Slow",
        Some("300m"),
        &echo("slow", 2000),
        false,
    )
    .await;
    eprintln!("alb answered after {elapsed:?}: {response:?}");
    assert!(
        elapsed >= Duration::from_millis(290),
        "not before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "at the deadline: {elapsed:?}"
    );
    assert_eq!(response.status(), 200, "gRPC answers are HTTP 200");
    assert_eq!(
        field(&response, "grpc-status").as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED in the head"
    );
    let message = field(&response, "grpc-message");
    assert!(
        message.as_deref().is_some_and(|m| m.starts_with("alb")),
        "{message:?}"
    );
    assert!(
        response.body().is_end_stream(),
        "trailers-only: the head ends the stream"
    );
    reaches(
        &mut cancelled,
        1,
        Duration::from_secs(1),
        "the backend's handler cancelled",
    )
    .await;
    connection.abort();
    lb.stop().await;
}

/// gRPC's Trailers-Only response is `:status content-type trailers` (PROTOCOL-HTTP2.md): a
/// client such as grpc-go reads a head without `content-type: application/grpc` as not gRPC
/// at all (UNKNOWN from HTTP 200), whatever its grpc-status says. Checked on alb's 504
/// (grpc-timeout, 4), 503 (no backend up, 14) and 404 (no route, 12).
#[tokio::test]
async fn alb_trailers_only_answers_are_content_type_application_grpc() {
    let (lb, backend, _dead) = routed_balancer().await;
    let mut cancelled = backend.cancelled();
    for (path, timeout, code) in [
        ("/test.Echo/Slow", Some("300m"), "4"),
        ("/dead.Svc/Call", None, "14"),
        ("/nowhere.Svc/Call", None, "12"),
    ] {
        let (response, elapsed, connection) =
            raw_call(lb.addr, path, timeout, &echo("slow", 2000), false).await;
        connection.abort();
        eprintln!("{path}: {elapsed:?} {response:?}");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            field(&response, "grpc-status").as_deref(),
            Some(code),
            "{path}"
        );
        assert!(response.body().is_end_stream(), "{path}: trailers-only");
        let content_type = field(&response, "content-type");
        assert!(
            content_type
                .as_deref()
                .is_some_and(|v| v.starts_with("application/grpc")),
            "{path}: content-type {content_type:?} in a gRPC answer"
        );
    }
    reaches(
        &mut cancelled,
        1,
        Duration::from_secs(1),
        "the slow call cancelled",
    )
    .await;
    lb.stop().await;
}

/// A balancer with three outcomes by path: `/test.Echo/` to a live backend, `/dead.Svc/` to a
/// pool whose backend is down, anything else unrouted (no default pool).
async fn routed_balancer() -> (TestBalancer, GrpcBackend, ClosedPort) {
    init_logs();
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

/// A call no route takes: alb's 404 reaches a tonic client as UNIMPLEMENTED (12), the code a
/// gRPC server gives for an unknown method.
#[tokio::test]
async fn unrouted_call_gets_unimplemented() {
    let (lb, backend, _dead) = routed_balancer().await;
    let mut client = EchoClient::connect(lb.addr).await;
    let routed = within(
        CALL,
        "routed call",
        client.unary(Request::new(echo("here", 1))),
    )
    .await
    .unwrap_or_else(|s| panic!("a routed call succeeds: {s:?}"));
    assert_eq!(routed.into_inner().backend, "alpha");
    let status = within(
        CALL,
        "unrouted call",
        client.call_unary("/nowhere.Svc/Call", Request::new(echo("there", 2))),
    )
    .await
    .expect_err("no route");
    eprintln!("unrouted call: {status:?}");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(
        status.message().starts_with("alb"),
        "alb's answer: {status:?}"
    );
    assert_eq!(backend.calls(), 1);
    lb.stop().await;
}

/// alb's own deadline (`timeouts.request`) as a tonic client reads it: DEADLINE_EXCEEDED with
/// alb's message, decoded from the trailers-only answer.
#[tokio::test]
async fn request_timeout_reaches_a_tonic_client_as_deadline_exceeded() {
    init_logs();
    let backend = GrpcBackend::start("alpha").await;
    let lb = TestBalancer::start(&config(
        &[&backend],
        "",
        &format!("{QUIET_HEALTH}[timeouts]\nrequest = \"300ms\"\n"),
    ))
    .await;
    let mut client = EchoClient::connect(lb.addr).await;

    let started = Instant::now();
    let status = within(
        Duration::from_secs(3),
        "slow call",
        client.call_unary("/test.Echo/Slow", Request::new(echo("slow", 2000))),
    )
    .await
    .expect_err("alb's deadline ends the call");
    let elapsed = started.elapsed();
    eprintln!("slow call ended after {elapsed:?}: {status:?}");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().starts_with("alb"),
        "alb's own answer: {status:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    lb.stop().await;
}

/// A backend dying in the middle of a server stream: the client's call ends with UNAVAILABLE
/// (retryable), not INTERNAL or UNKNOWN; the next call goes to the other backend.
#[tokio::test]
async fn backend_killed_mid_stream_gives_unavailable_then_the_other_backend_answers() {
    let mut alpha = GrpcBackend::start("alpha").await;
    let mut beta = GrpcBackend::start("beta").await;
    let lb = balancer(&[&alpha, &beta]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let mut stream = within(
        CALL,
        "stalling stream",
        client.server_streaming("/test.Echo/Stall", Request::new(echo("", 3))),
    )
    .await
    .unwrap_or_else(|s| panic!("the stream starts: {s:?}"))
    .into_inner();
    let mut serving = String::new();
    for i in 0..3 {
        let message = within(CALL, "message before the crash", stream.message())
            .await
            .unwrap_or_else(|s| panic!("message {i}: {s:?}"))
            .expect("three messages before the crash");
        assert_eq!(message.n, i);
        serving = message.backend;
    }
    let (dead, survivor) = if serving == "alpha" {
        (&mut alpha, &beta)
    } else {
        (&mut beta, &alpha)
    };
    let killed = Instant::now();
    dead.kill().await;
    let status = within(
        Duration::from_secs(2),
        "end of the broken stream",
        stream.message(),
    )
    .await
    .expect_err("the call fails when its backend dies");
    eprintln!(
        "broken stream ended {:?} after the kill: {status:?}",
        killed.elapsed()
    );
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "UNAVAILABLE, not {status:?}"
    );

    let reply = within(
        CALL,
        "call after the crash",
        client.unary(Request::new(echo("again", 1))),
    )
    .await
    .unwrap_or_else(|s| panic!("a new call succeeds on the surviving backend: {s:?}"))
    .into_inner();
    assert_eq!(reply.backend, survivor.name());
    eprintln!(
        "next call answered by {} {:?} after the kill",
        reply.backend,
        killed.elapsed()
    );
    lb.stop().await;
}

/// 200 calls on ONE client connection are spread over both backends: alb picks per call
/// (per stream), not per connection. alb also keeps to one connection per backend.
#[tokio::test]
async fn calls_on_one_connection_are_balanced_per_call() {
    let alpha = GrpcBackend::start("alpha").await;
    let beta = GrpcBackend::start("beta").await;
    let lb = balancer(&[&alpha, &beta]).await;
    let connections_before = lb
        .proxy
        .stats()
        .h2_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    let client = EchoClient::connect(lb.addr).await;

    const CALLS: u32 = 200;
    const IN_FLIGHT: u32 = 8;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT {
        let mut client = client.clone();
        workers.spawn(async move {
            let mut answered_by = Vec::new();
            for i in (w..CALLS).step_by(IN_FLIGHT as usize) {
                let reply = within(
                    CALL,
                    "unary call",
                    client.unary(Request::new(echo("spread", i))),
                )
                .await
                .unwrap_or_else(|s| panic!("call {i}: {s:?}"))
                .into_inner();
                assert_eq!(reply.n, i);
                answered_by.push(reply.backend);
            }
            answered_by
        });
    }
    let mut shares: HashMap<String, u32> = HashMap::new();
    while let Some(done) = workers.join_next().await {
        for name in done.expect("worker") {
            *shares.entry(name).or_default() += 1;
        }
    }
    eprintln!("{CALLS} calls in {:?}: {shares:?}", started.elapsed());
    let connections = lb
        .proxy
        .stats()
        .h2_connections
        .load(std::sync::atomic::Ordering::Relaxed)
        - connections_before;
    assert_eq!(
        connections, 1,
        "the client used one HTTP/2 connection to alb"
    );
    assert_eq!(shares.values().sum::<u32>(), CALLS);
    for backend in [&alpha, &beta] {
        let share = shares.get(backend.name()).copied().unwrap_or(0);
        assert!(
            share >= CALLS * 30 / 100,
            "{} got {share} of {CALLS}: {shares:?}",
            backend.name()
        );
        assert_eq!(u64::from(share), backend.calls());
    }
    let per_connection = (alpha.calls_per_connection(), beta.calls_per_connection());
    eprintln!(
        "calls per backend connection: alpha {:?}, beta {:?}",
        per_connection.0, per_connection.1
    );
    assert_eq!(
        (per_connection.0.len(), per_connection.1.len()),
        (1, 1),
        "one multiplexed connection from alb per backend: {per_connection:?}"
    );
    lb.stop().await;
}

/// Addresses where connects are refused, held until dropped.
fn dead_addresses(n: usize) -> Vec<ClosedPort> {
    (0..n).map(|_| ClosedPort::new()).collect()
}

/// No backend up: a call fails promptly with UNAVAILABLE carrying alb's message, both at once
/// after start (whatever alb knows by then: a refused connect or the first probes' verdict)
/// and once the health checks have marked every backend down.
#[tokio::test]
async fn no_backend_up_gives_unavailable_promptly() {
    init_logs();
    let dead = dead_addresses(2);
    let urls: Vec<String> = dead
        .iter()
        .map(|a| format!("\"h2c://{}\"", a.addr()))
        .collect();
    let lb = TestBalancer::start(&format!(
        "backends = [{}]\n[http2]\ncleartext = true\n[health_check]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 1\n",
        urls.join(", ")
    ))
    .await;
    let mut client = EchoClient::connect(lb.addr).await;

    let started = Instant::now();
    let status = within(
        Duration::from_secs(2),
        "call with no backend",
        client.unary(Request::new(echo("anyone?", 0))),
    )
    .await
    .expect_err("no backend can answer");
    let elapsed = started.elapsed();
    eprintln!("first call: {elapsed:?}, {status:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("alb"),
        "alb's answer, not the client's own: {status:?}"
    );
    assert!(elapsed < Duration::from_millis(500), "prompt: {elapsed:?}");

    let backends = lb.proxy.backends();
    crate::support::wait_until(Duration::from_secs(5), || {
        backends.iter().all(|b| !b.is_healthy())
    })
    .await
    .expect("health checks mark both backends down");
    let started = Instant::now();
    let status = within(
        Duration::from_secs(2),
        "call with no healthy backend",
        client.unary(Request::new(echo("anyone?", 1))),
    )
    .await
    .expect_err("no backend can answer");
    let elapsed = started.elapsed();
    eprintln!("call once marked down: {elapsed:?}, {status:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "alb: Service Unavailable",
        "alb's 503: {status:?}"
    );
    assert!(elapsed < Duration::from_millis(200), "prompt: {elapsed:?}");
    lb.stop().await;
}

/// A 4 MiB message each way (many DATA frames, flow control on both hops) comes back intact.
#[tokio::test]
async fn four_mib_message_is_echoed_intact() {
    let backend = GrpcBackend::start("alpha").await;
    let lb = balancer(&[&backend]).await;
    let mut client = EchoClient::connect(lb.addr).await;

    let blob: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let reply = within(
        Duration::from_secs(20),
        "4 MiB call",
        client.unary(Request::new(Echo {
            blob: blob.clone(),
            ..echo("big", 4)
        })),
    )
    .await
    .unwrap_or_else(|s| panic!("4 MiB call failed: {s:?}"))
    .into_inner();
    eprintln!("4 MiB echoed in {:?}", started.elapsed());
    assert_eq!(reply.blob.len(), blob.len());
    let differs = reply.blob.iter().zip(&blob).position(|(a, b)| a != b);
    assert_eq!(differs, None, "the echoed bytes differ from this offset");
    assert_eq!(reply.backend, "alpha");
    lb.stop().await;
}

/// A backend refusing streams (REFUSED_STREAM: not processed) beside a working one. A gRPC
/// request whose body alb kept (small, of declared length) goes to the working backend instead:
/// every call succeeds.
#[tokio::test]
async fn refused_stream_is_retried_on_the_other_backend_when_the_body_was_kept() {
    init_logs();
    let refuser = RefusingBackend::start().await;
    let good = GrpcBackend::start("good").await;
    let lb = TestBalancer::start(&format!(
        "backends = [\"{}\", \"{}\"]\n[http2]\ncleartext = true\n{QUIET_HEALTH}",
        refuser.url(),
        good.url()
    ))
    .await;
    let started = Instant::now();
    let mut calls = 0;
    while calls < 20 && (calls < 4 || refuser.refused() == 0) {
        // With content-length: alb reads the body whole first and can send it again.
        let (response, _, connection) = raw_call(
            lb.addr,
            "/test.Echo/Unary",
            None,
            &echo("kept", calls),
            true,
        )
        .await;
        assert_eq!(response.status(), 200, "call {calls}: {response:?}");
        let grpc_status = field(&response, "grpc-status");
        let (message, trailers) =
            within(CALL, "response body", read_grpc_body(response.into_body())).await;
        let trailer_status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            trailer_status.as_deref(),
            Some("0"),
            "call {calls}: OK in trailers (head grpc-status {grpc_status:?}, trailers {trailers:?})"
        );
        let message = message.expect("the echoed message");
        assert_eq!((message.n, message.backend.as_str()), (calls, "good"));
        connection.abort();
        calls += 1;
    }
    eprintln!(
        "{calls} calls in {:?}; the refusing backend refused {}",
        started.elapsed(),
        refuser.refused()
    );
    assert!(
        refuser.refused() >= 1,
        "the refusing backend was tried at least once"
    );
    assert_eq!(good.calls(), u64::from(calls));
    lb.stop().await;
}

/// The same with a real gRPC client, which never sends content-length: every call should still
/// succeed, a refused stream being one the backend guarantees it did not process.
#[tokio::test]
async fn refused_stream_is_retried_for_a_grpc_client() {
    init_logs();
    let refuser = RefusingBackend::start().await;
    let good = GrpcBackend::start("good").await;
    let lb = TestBalancer::start(&format!(
        "backends = [\"{}\", \"{}\"]\n[http2]\ncleartext = true\n{QUIET_HEALTH}",
        refuser.url(),
        good.url()
    ))
    .await;
    let mut client = EchoClient::connect(lb.addr).await;
    let mut failures = Vec::new();
    for i in 0..20 {
        match within(
            CALL,
            "unary call",
            client.unary(Request::new(echo("streamed", i))),
        )
        .await
        {
            Ok(reply) => assert_eq!(reply.into_inner().backend, "good"),
            Err(status) => failures.push((i, status.code(), status.message().to_string())),
        }
    }
    eprintln!("refused {}, failures {failures:?}", refuser.refused());
    assert!(
        refuser.refused() >= 1,
        "the refusing backend was tried at least once"
    );
    assert!(
        failures.is_empty(),
        "calls failed although their streams were refused: {failures:?}"
    );
    lb.stop().await;
}
