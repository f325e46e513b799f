//! Failures in gRPC's terms: handler statuses relayed, deadlines (the client's and alb's), alb's
//! own answers, a backend dying mid-stream, no backend at all, and refused streams retried.

use super::*;

/// A handler's own status reaches the client as it was: code, percent-encoded message and
/// metadata, whether sent trailers-only (in the head) or in trailers after messages.
#[tokio::test]
async fn handler_status_and_message_are_relayed_untouched() {
    let _cpu = crate::support::cpu::shared().await;
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

/// A client with a 300 ms deadline on a 2 s handler gets DEADLINE_EXCEEDED before the handler
/// answers, and the handler is cancelled at the backend (alb passed the cancellation on).
#[tokio::test]
async fn grpc_timeout_ends_a_slow_call_in_time() {
    let _cpu = crate::support::cpu::shared().await;
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
    assert!(
        elapsed < Duration::from_secs(2),
        "ended after {elapsed:?}, not before the handler's 2 s answer"
    );
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

/// alb's own answer to a `grpc-timeout` that passed: HTTP 200, trailers-only, grpc-status 4,
/// at the deadline and not before; read with a raw h2 client that has no timer of its own.
#[tokio::test]
async fn alb_answers_a_passed_grpc_timeout_with_deadline_exceeded() {
    let _cpu = crate::support::cpu::shared().await;
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
        elapsed < Duration::from_secs(2),
        "at the deadline, before the handler's 2 s answer: {elapsed:?}"
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
    let _cpu = crate::support::cpu::shared().await;
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

/// A call no route takes: alb's 404 reaches a tonic client as UNIMPLEMENTED (12), the code a
/// gRPC server gives for an unknown method.
#[tokio::test]
async fn unrouted_call_gets_unimplemented() {
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(2),
        "{elapsed:?}: not after the 300 ms deadline and before the handler's 2 s answer"
    );
    lb.stop().await;
}

/// A backend dying in the middle of a server stream: the client's call ends with UNAVAILABLE
/// (retryable), not INTERNAL or UNKNOWN; the next call goes to the other backend.
#[tokio::test]
async fn backend_killed_mid_stream_gives_unavailable_then_the_other_backend_answers() {
    let _cpu = crate::support::cpu::shared().await;
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

/// No backend up: a call fails promptly with UNAVAILABLE carrying alb's message, both at once
/// after start (whatever alb knows by then: a refused connect or the first probes' verdict)
/// and once the health checks have marked every backend down.
#[tokio::test]
async fn no_backend_up_gives_unavailable_promptly() {
    let _cpu = crate::support::cpu::shared().await;
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
        CALL,
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
    // Refused at once: not held for a connect timeout (2 s by default).
    assert!(elapsed < Duration::from_secs(2), "prompt: {elapsed:?}");

    let backends = lb.proxy.backends();
    crate::support::wait_until(Duration::from_secs(5), || {
        backends.iter().all(|b| !b.is_healthy())
    })
    .await
    .expect("health checks mark both backends down");
    let started = Instant::now();
    let status = within(
        CALL,
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
    // No backend was tried: the answer is alb's 503 (above) and came at once.
    assert!(elapsed < Duration::from_secs(2), "prompt: {elapsed:?}");
    lb.stop().await;
}

/// A backend refusing streams (REFUSED_STREAM: not processed) beside a working one. A gRPC
/// request whose body alb kept (small, of declared length) goes to the working backend instead:
/// every call succeeds.
#[tokio::test]
async fn refused_stream_is_retried_on_the_other_backend_when_the_body_was_kept() {
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
