//! `/healthz` and `/readyz` on the admin listener, as Kubernetes probes use them: reachable without
//! a token from a source that is not loopback, ready only with a backend to send to, not ready once
//! every backend is down or shutdown has begun.
//!
//! A non-loopback source without leaving loopback: the admin listener is bound to the IPv4-mapped
//! address `[::ffff:127.0.0.1]`, so a client connecting to 127.0.0.1 is seen as `::ffff:127.0.0.1`,
//! which the admin's loopback test (`IpAddr::is_loopback`) does not count as loopback. Each such
//! test first shows that an ordinary read is refused from there, so it cannot pass by accident if
//! that test changes.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use http::{Method, Request};

const TOKEN: &str = "probe-test-token-0123456789";

/// Health checks every 100 ms, one failure marks DOWN and one pass marks UP: the state changes
/// these tests wait for come within a second or so.
const FAST_CHECKS: &str =
    "[health_check]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n";

async fn balancer(backends: &[&TestBackend], admin: &str, extra: &str) -> TestBalancer {
    Scenario::new()
        .backend_urls(backends.iter().map(|b| b.url()))
        .config(&format!("[admin]\n{admin}\n{extra}"))
        .start()
        .await
        .lb
}

/// The admin listener's address, reached through 127.0.0.1 whatever it is bound to.
async fn admin_port(lb: &TestBalancer) -> u16 {
    let url = lb.admin_url("/").await;
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let addr: SocketAddr = authority.parse().expect("admin address");
    addr.port()
}

/// One admin request to 127.0.0.1:`port`, without a token; status and body.
async fn call(port: u16, method: Method, path: &str) -> (u16, String) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .body(full(""))
        .expect("request");
    let (status, _, body) = send(&client(), request).await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// Polls `path` until it answers `status`, for at most `within`; the last answer either way.
async fn poll_until(port: u16, path: &str, status: u16, within: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = call(port, Method::GET, path).await;
        if answer.0 == status || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn probes_answer_a_non_loopback_source_without_a_token() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    // With a token configured (reads from elsewhere need it) and without one (they are refused).
    for (admin, refusal) in [
        (
            format!("listen = \"[::ffff:127.0.0.1]:0\"\ntoken = \"{TOKEN}\""),
            401,
        ),
        ("listen = \"[::ffff:127.0.0.1]:0\"".to_string(), 403),
    ] {
        let lb = balancer(&[&a], &admin, "[health_check]\ninterval = \"60s\"\n").await;
        let port = admin_port(&lb).await;
        assert_eq!(
            call(port, Method::GET, "/api/backends").await.0,
            refusal,
            "this source must count as non-loopback for the test to mean anything"
        );
        assert_eq!(call(port, Method::GET, "/metrics").await.0, refusal);

        let (status, body) = call(port, Method::GET, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, body) = call(port, Method::GET, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ready: 1 of 1 backends available\n")
        );
        let (status, body) = call(port, Method::HEAD, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, ""));
        assert_eq!(call(port, Method::GET, "/readyz?verbose=1").await.0, 200);
        assert_eq!(call(port, Method::POST, "/readyz").await.0, 405);
        assert_eq!(call(port, Method::DELETE, "/healthz").await.0, 405);
        lb.stop().await;
    }
    a.stop().await;
}

#[tokio::test]
async fn readyz_fails_while_every_backend_is_down_and_recovers_with_one() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = balancer(&[&a, &b], "listen = \"127.0.0.1:0\"", FAST_CHECKS).await;
    let port = admin_port(&lb).await;
    let (status, body) = call(port, Method::GET, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ready: 2 of 2 backends available\n")
    );

    // One down: still ready.
    let a_addr = a.stop().await;
    let both_states = |body: &str| -> Vec<String> {
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        json["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| b["state"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let started = tokio::time::Instant::now();
    let within = Duration::from_secs(10);
    loop {
        let (_, body) = call(port, Method::GET, "/api/backends").await;
        if both_states(&body).iter().filter(|s| *s == "down").count() == 1 {
            break;
        }
        assert!(started.elapsed() < within, "a never went DOWN: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = call(port, Method::GET, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ready: 1 of 2 backends available\n")
    );

    // Both down: 503 with a one-line reason, once the API shows both DOWN.
    b.stop().await;
    let started = tokio::time::Instant::now();
    loop {
        let (_, body) = call(port, Method::GET, "/api/backends").await;
        if both_states(&body) == ["down", "down"] {
            break;
        }
        assert!(started.elapsed() < within, "not both DOWN: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = call(port, Method::GET, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        "no backend available: 0 of 2 (2 down, 0 ejected, 0 drained or disabled)\n"
    );
    assert_eq!(
        call(port, Method::GET, "/healthz").await,
        (200, "ok\n".to_string()),
        "alive all the same"
    );

    // One back on its old port: ready again once its check passes.
    let a = TestBackend::start_on(*a_addr, "a").await;
    let (status, body) = poll_until(port, "/readyz", 200, within).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ready: 1 of 2 backends available\n")
    );
    lb.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn readyz_fails_as_soon_as_shutdown_begins() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    a.set_delay(Duration::from_millis(1500));
    let lb = balancer(
        &[&a],
        "listen = \"127.0.0.1:0\"",
        "[health_check]\ninterval = \"60s\"\n",
    )
    .await;
    let port = admin_port(&lb).await;
    assert_eq!(call(port, Method::GET, "/readyz").await.0, 200);

    // A slow request holds the drain open while readiness is asked.
    let slow = {
        let url = lb.url("/");
        tokio::spawn(async move { get(&client(), &url).await.0 })
    };
    wait_until(Duration::from_secs(5), || a.hits() == 1)
        .await
        .expect("the slow request reached the backend");
    let stopping = tokio::spawn(lb.stop());
    let (status, body) = poll_until(port, "/readyz", 503, Duration::from_secs(5)).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "shutting down: draining in-flight requests\n")
    );
    assert_eq!(call(port, Method::GET, "/healthz").await.0, 200);
    assert_eq!(
        slow.await.expect("slow request").as_u16(),
        200,
        "drained, not cut"
    );
    stopping.await.expect("balancer stopped");
    a.stop().await;
}
