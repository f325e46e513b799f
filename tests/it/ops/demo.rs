//! The demo's fault knobs, through the real binary: `alb demo` with every listener on port 0, its
//! backends killed, revived, slowed and made to fail through `/api/demo/...` on the admin listener,
//! and what alb does about it read back from `/api/backends`; `alb backend` with the same faults
//! as flags.
//!
//! Each child is a `LoggedProcess` (SIGKILLed on drop); the normal path stops it with SIGTERM
//! and checks the exit status. Synchronisation is on the lines the child prints and on the
//! admin API's answers (polled with a deadline: a health state has no event to wait for from outside).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};

use crate::support::*;

const ALB: &str = env!("CARGO_BIN_EXE_alb");
/// Longest wait for a line or an exit; far above the usual.
const PATIENCE: Duration = Duration::from_secs(10);
/// Longest wait for a health state: the demo checks every second and needs two in a row; an ejection lasts 10 s.
const HEALTH_PATIENCE: Duration = Duration::from_secs(15);

/// Starts the real binary with `args`, its stdout and stderr collected (SIGKILLed on drop, its
/// output shown when the test fails).
fn spawn(args: &[&str]) -> binary::LoggedProcess {
    binary::LoggedProcess::spawn_with_stdout("alb", std::path::Path::new(ALB), args, "info")
}

/// The address right after `prefix` in the first line that holds it.
async fn address_after(process: &binary::LoggedProcess, prefix: &str) -> SocketAddr {
    let line = process.wait_line(prefix, 1, PATIENCE).await;
    let start = line.find(prefix).expect("the line holds the prefix") + prefix.len();
    let rest = &line[start..];
    let end = rest.find([' ', '"', '(', ',', '/']).unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

/// SIGTERM, then exit status 0.
async fn stop(process: &mut binary::LoggedProcess) {
    binary::LoggedProcess::signal(process.pid, "-TERM");
    let exit = process.exit_status(PATIENCE).await;
    assert_eq!(exit.code(), Some(0), "alb exits 0 on SIGTERM");
}

/// `alb demo` on port 0 everywhere, with the addresses it reports.
struct Demo {
    alb: binary::LoggedProcess,
    balancer: SocketAddr,
    admin: SocketAddr,
    /// demo-1's and demo-2's addresses.
    backends: [SocketAddr; 2],
}

impl Demo {
    async fn start() -> Demo {
        let alb = spawn(&["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
        let first = address_after(&alb, "backend demo-1 at http://").await;
        let second = address_after(&alb, "backend demo-2 at http://").await;
        let balancer = address_after(&alb, "balancer on http://").await;
        let admin = address_after(&alb, "admin listening on http://").await;
        let demo = Demo {
            alb,
            balancer,
            admin,
            backends: [first, second],
        };
        // A backend's first probe decides at once (later ones need `fall` in a row): start from
        // both probed, so that a fault turned now meets the usual rise/fall and passive health.
        for n in [1, 2] {
            demo.wait_state(n, &["up"]).await;
        }
        let deadline = Instant::now() + HEALTH_PATIENCE;
        while !demo.both_probed().await {
            assert!(
                Instant::now() < deadline,
                "no first probe within {HEALTH_PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        demo
    }

    /// Whether both backends have had a health check (`last_check` in `/api/backends`).
    async fn both_probed(&self) -> bool {
        let (_, _, body) = get(&client(), &format!("http://{}/api/backends", self.admin)).await;
        let snapshot: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        snapshot["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .all(|b| !b["last_check"].is_null())
    }

    /// `POST /api/demo/backends/{n}/{action}`: the backend's knobs as the answer lists them.
    async fn knob(&self, n: usize, action: &str) -> serde_json::Value {
        let url = format!("http://{}/api/demo/backends/{n}/{action}", self.admin);
        let (status, body) = post(&url).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// The balancer's view of backend `n` (1 or 2): its `state` in `/api/backends`.
    async fn state(&self, n: usize) -> String {
        let (status, _, body) =
            get(&client(), &format!("http://{}/api/backends", self.admin)).await;
        assert_eq!(status, StatusCode::OK);
        let snapshot: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let url = format!("http://{}", self.backends[n - 1]);
        snapshot["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .find(|b| b["url"] == url.as_str())
            .and_then(|b| b["state"].as_str())
            .expect("the backend listed")
            .to_string()
    }

    /// Polls `/api/backends` until backend `n`'s state is one of `states`.
    async fn wait_state(&self, n: usize, states: &[&str]) {
        let deadline = Instant::now() + HEALTH_PATIENCE;
        loop {
            let state = self.state(n).await;
            if states.contains(&state.as_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "demo-{n} still {state:?}, not {states:?}, after {HEALTH_PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `count` GETs through the balancer one after another: (status, backend) of each.
    async fn requests(&self, count: usize) -> Vec<(StatusCode, String)> {
        let client = client();
        let mut seen = Vec::with_capacity(count);
        for _ in 0..count {
            let (status, headers, _) = get(&client, &format!("http://{}/", self.balancer)).await;
            seen.push((status, backend_of(&headers)));
        }
        seen
    }
}

async fn post(url: &str) -> (StatusCode, String) {
    let request = Request::post(url).body(full(Bytes::new())).unwrap();
    let (status, _, body) = send(&client(), request).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn killed_backend_fails_over_with_no_failed_request_and_comes_back_on_revive() {
    let _cpu = crate::support::cpu::shared().await;
    let mut demo = Demo::start().await;
    assert_eq!(demo.state(1).await, "up");

    let knobs = demo.knob(1, "kill").await;
    assert_eq!(knobs["killed"], true);
    assert_eq!(knobs["name"], "demo-1");
    // Its port is closed: a connection is refused, not left waiting.
    assert!(
        tokio::net::TcpStream::connect(demo.backends[0])
            .await
            .is_err(),
        "a killed backend refuses connections"
    );
    // From the kill on, before and after alb notices, every request is answered by demo-2.
    let before = demo.requests(20).await;
    assert!(
        before
            .iter()
            .all(|(status, backend)| *status == StatusCode::OK && backend == "demo-2"),
        "{before:?}"
    );
    demo.wait_state(1, &["down"]).await;
    let after = demo.requests(20).await;
    assert!(
        after
            .iter()
            .all(|(status, backend)| *status == StatusCode::OK && backend == "demo-2"),
        "{after:?}"
    );

    let knobs = demo.knob(1, "revive").await;
    assert_eq!(knobs["killed"], false);
    demo.wait_state(1, &["up"]).await;
    let back = demo.requests(20).await;
    assert!(back.iter().all(|(status, _)| *status == StatusCode::OK));
    assert!(
        back.iter().any(|(_, backend)| backend == "demo-1"),
        "demo-1 back in rotation: {back:?}"
    );

    // The demo's knobs need no token on loopback; the regular write API still does.
    let (status, body) = post(&format!(
        "http://{}/api/backends/{}/drain",
        demo.admin, demo.backends[0]
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // No token guards the knobs, so a page from another site may not turn them.
    let request = Request::post(format!("http://{}/api/demo/backends/1/kill", demo.admin))
        .header("origin", "http://evil.example")
        .body(full(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(&client(), request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let listed = get(
        &client(),
        &format!("http://{}/api/demo/backends", demo.admin),
    )
    .await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.2).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(listed[1]["name"], "demo-2");
    assert_eq!(
        listed[0]["killed"], false,
        "the cross-site kill changed nothing"
    );

    stop(&mut demo.alb).await;
}

#[tokio::test]
async fn failing_backend_is_ejected_after_five_errors_then_traffic_goes_to_the_other() {
    let _cpu = crate::support::cpu::shared().await;
    let mut demo = Demo::start().await;
    let knobs = demo.knob(2, "errors?rate=1.0").await;
    assert_eq!(knobs["error_rate"], 1.0);

    // No retry on status by default: its 500s reach the client until passive health (5
    // consecutive failures) or the health checks (which meet the same errors) take it out.
    let seen = demo.requests(40).await;
    let failed: Vec<_> = seen
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
        .collect();
    assert!(
        failed.iter().all(
            |(status, backend)| *status == StatusCode::INTERNAL_SERVER_ERROR && backend == "demo-2"
        ),
        "{seen:?}"
    );
    assert!(
        (1..=5).contains(&failed.len()),
        "at most 5 failures before the ejection: {seen:?}"
    );
    assert!(
        seen[seen.len() - 20..]
            .iter()
            .all(|(status, backend)| *status == StatusCode::OK && backend == "demo-1"),
        "after the ejection every request goes to demo-1: {seen:?}"
    );
    let state = demo.state(2).await;
    assert!(state == "ejected" || state == "down", "{state}");

    // Healed, it returns once its health checks pass again.
    demo.knob(2, "errors?rate=0").await;
    demo.wait_state(2, &["up"]).await;

    // A rate out of range is refused and changes nothing.
    let (status, body) = post(&format!(
        "http://{}/api/demo/backends/2/errors?rate=1.5",
        demo.admin
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    stop(&mut demo.alb).await;
}

#[tokio::test]
async fn slow_backend_gets_a_smaller_share_under_concurrent_load() {
    let _cpu = crate::support::cpu::shared().await;
    let mut demo = Demo::start().await;
    let knobs = demo.knob(1, "latency?ms=200").await;
    assert_eq!(knobs["latency_ms"], 200);

    // The knob itself: a request straight to demo-1 takes at least 200 ms.
    let started = Instant::now();
    let (status, _, _) = get(&client(), &format!("http://{}/", demo.backends[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // 8 clients, 25 requests each: least_conn sees demo-1's requests pile up in flight.
    let url = format!("http://{}/", demo.balancer);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        clients.spawn(async move {
            let client = client();
            let mut seen = Vec::new();
            for _ in 0..25 {
                let (status, headers, _) = get(&client, &url).await;
                seen.push((status, backend_of(&headers)));
            }
            seen
        });
    }
    let mut share: HashMap<String, usize> = HashMap::new();
    while let Some(seen) = clients.join_next().await {
        for (status, backend) in seen.expect("client task") {
            assert_eq!(status, StatusCode::OK);
            *share.entry(backend).or_default() += 1;
        }
    }
    let slow = share.get("demo-1").copied().unwrap_or(0);
    let fast = share.get("demo-2").copied().unwrap_or(0);
    assert_eq!(slow + fast, 200, "{share:?}");
    // Typically 17 to 183 here: demo-1 holds its share of in-flight requests for 200 ms each,
    // demo-2 turns its share over in a millisecond or two. A third leaves room for a loaded CI.
    assert!(
        slow * 2 < fast,
        "the slow backend gets under a third of the requests: {share:?}"
    );
    stop(&mut demo.alb).await;
}

#[tokio::test]
async fn backend_flags_inject_errors_and_latency() {
    let _cpu = crate::support::cpu::shared().await;
    let mut backend = spawn(&[
        "backend",
        "--port",
        "0",
        "--name",
        "flaky",
        "--error-rate",
        "1",
        "--delay-ms",
        "100",
    ]);
    let addr = address_after(&backend, "demo backend flaky listening on ").await;
    let started = Instant::now();
    let (status, headers, body) = get(&client(), &format!("http://{addr}/")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(backend_of(&headers), "flaky");
    assert_eq!(body, "Hello from flaky: injected error\n");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "--delay-ms still works, as --latency-ms"
    );
    stop(&mut backend).await;

    let output = tokio::process::Command::new(ALB)
        .args(["backend", "--port", "0", "--error-rate", "1.5"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE, output)
        .await
        .expect("alb exits")
        .expect("run alb");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a number from 0 to 1"));
}
