//! The admin listener's Host rule (the DNS-rebinding defence) and its Authorization scheme: reads
//! and the demo's knobs with a rebound Host refused, the listener's own address, `localhost` and
//! `admin.allowed_hosts` answered, a missing Host refused, `bearer` in lower case accepted.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

const TOKEN: &str = "test-token-0123456789";

/// A balancer with an admin listener (token [`TOKEN`]) and `extra` config; its admin address.
async fn start(backend: &TestBackend, extra: &str) -> (TestBalancer, SocketAddr) {
    let lb = Scenario::new()
        .backend_url(backend.url())
        .config(extra)
        .quiet_health()
        .admin(TOKEN)
        .start()
        .await
        .lb;
    let url = lb.admin_url("/").await;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("admin address");
    (lb, addr)
}

/// `method path` on `admin` with this Host (and `extra` headers); status and body.
async fn with_host(
    admin: SocketAddr,
    method: Method,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("host", host);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let (status, _, body) = send(&client(), request.body(full(Bytes::new())).unwrap()).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn admin_reads_refuse_a_rebound_host_and_answer_the_listeners_own() {
    let a = TestBackend::start("a").await;
    let (lb, admin) = start(&a, "").await;
    let port = admin.port();
    for path in ["/api/backends", "/metrics", "/api/history"] {
        for host in ["attacker.example", &format!("attacker.example:{port}")] {
            let (status, body) = with_host(admin, Method::GET, path, host, &[]).await;
            assert_eq!(
                status,
                StatusCode::MISDIRECTED_REQUEST,
                "{path} {host}: {body}"
            );
            assert!(
                !body.contains(&a.url()),
                "nothing of the config leaks: {body}"
            );
        }
        for host in [
            format!("127.0.0.1:{port}"),
            "127.0.0.1".to_string(),
            format!("localhost:{port}"),
            format!("dashboard.localhost:{port}"),
        ] {
            let (status, body) = with_host(admin, Method::GET, path, &host, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path} {host}: {body}");
        }
    }
    // A name the operator did not list is refused even with the token.
    let bearer = format!("Bearer {TOKEN}");
    let (status, _) = with_host(
        admin,
        Method::GET,
        "/api/backends",
        "ops.example.com",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // The probes stay open to any Host: orchestrators probe by the address they see.
    let (status, _) = with_host(admin, Method::GET, "/healthz", "pod.internal", &[]).await;
    assert_eq!(status, StatusCode::OK);
    lb.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn allowed_hosts_are_answered_and_a_bad_entry_is_refused_naming_its_key() {
    let a = TestBackend::start("a").await;
    let (lb, admin) = start_allowing(&a, r#"["ops.example.com", "192.0.2.7"]"#).await;
    for host in ["ops.example.com", "OPS.example.com:443", "192.0.2.7:9090"] {
        let (status, body) = with_host(admin, Method::GET, "/api/backends", host, &[]).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    let (status, _) = with_host(admin, Method::GET, "/metrics", "example.com", &[]).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    lb.stop().await;

    for bad in [
        r#"["ops.example.com:9090"]"#,
        r#"["http://ops.example.com"]"#,
        r#"["*.example.com"]"#,
        r#"[""]"#,
    ] {
        let toml = format!(
            "backends = [\"{}\"]\n[admin]\nallowed_hosts = {bad}\n",
            a.url()
        );
        let error = alb::Config::from_toml(&toml, "test.toml")
            .expect_err(bad)
            .to_string();
        assert!(error.contains("admin.allowed_hosts[0]"), "{bad}: {error}");
    }
    a.stop().await;
}

/// [`start`] with `admin.allowed_hosts` set to `list` (TOML).
async fn start_allowing(backend: &TestBackend, list: &str) -> (TestBalancer, SocketAddr) {
    let lb = TestBalancer::start(&format!(
        "backends = [\"{}\"]\n[health_check]\ninterval = \"60s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = {list}\n",
        backend.url()
    ))
    .await;
    let url = lb.admin_url("/").await;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("admin address");
    (lb, addr)
}

#[tokio::test]
async fn an_http_1_1_admin_request_without_host_gets_400() {
    let a = TestBackend::start("a").await;
    let (lb, admin) = start(&a, "").await;
    let mut stream = TcpStream::connect(admin).await.expect("connect");
    stream
        .write_all(b"GET /api/backends HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    lb.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn the_admin_token_is_accepted_with_the_scheme_in_any_case() {
    let a = TestBackend::start("a").await;
    let (lb, admin) = start(&a, "").await;
    let host = admin.to_string();
    let drain = format!("/api/backends/{}/drain", a.addr);
    for scheme in ["bearer", "BEARER", "Bearer "] {
        let credentials = format!("{scheme} {TOKEN}");
        let (status, body) = with_host(
            admin,
            Method::POST,
            &drain,
            &host,
            &[("authorization", &credentials)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{scheme:?}: {body}");
    }
    for wrong in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        TOKEN.to_string(),
    ] {
        let (status, _) = with_host(
            admin,
            Method::POST,
            &drain,
            &host,
            &[("authorization", &wrong)],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    lb.stop().await;
    a.stop().await;
}

/// `alb demo`, the real binary, on port 0: a page on another site rebound to the admin address
/// sends its own name as Host and as Origin, which used to pass the knobs' `Origin == Host`
/// check. Now the Host is refused first, and the backend stays alive.
#[tokio::test]
async fn a_rebound_page_cannot_turn_the_demo_knobs() {
    let alb = binary::LoggedProcess::spawn_with_stdout(
        "alb",
        std::path::Path::new(env!("CARGO_BIN_EXE_alb")),
        &["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        "info",
    );
    let line = alb
        .wait_line("admin listening on http://", 1, Duration::from_secs(10))
        .await;
    let admin: SocketAddr = line
        .split("admin listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("an address in {line}"));
    let rebound = format!("attacker.example:{}", admin.port());
    let origin = format!("http://{rebound}");
    let (status, body) = with_host(
        admin,
        Method::POST,
        "/api/demo/backends/1/kill",
        &rebound,
        &[("origin", &origin)],
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
    // The listener's own origin still turns them (the dashboard's buttons).
    let own = admin.to_string();
    let (status, body) = with_host(
        admin,
        Method::POST,
        "/api/demo/backends/1/latency?ms=0",
        &own,
        &[("origin", &format!("http://{own}"))],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = with_host(admin, Method::GET, "/api/demo/backends", &own, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let knobs: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        knobs[0]["killed"], false,
        "the rebound kill changed nothing: {body}"
    );
    let mut alb = alb;
    binary::LoggedProcess::signal(alb.pid, "-TERM");
    let exit = alb.exit_status(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "alb exits 0 on SIGTERM");
}
