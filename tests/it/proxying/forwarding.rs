//! Forwarding: methods, streamed bodies both ways, header hygiene, request targets, pooling.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn round_trip_returns_the_backends_answer() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let (status, headers, body) = get(&client(), &lb.url("/hello?x=1")).await;
    assert_eq!(status, 200);
    assert_eq!(backend_of(&headers), "solo");
    assert_eq!(&body[..], b"solo");
    assert_eq!(backend.last_request().unwrap().uri, "/hello?x=1");
    scenario.stop().await;
}

#[tokio::test]
async fn every_method_is_forwarded() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let c = client();
    for method in [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PURGE",
    ] {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(lb.url("/m"))
            .body(full(Bytes::new()))
            .unwrap();
        let (status, headers, body) = send(&c, request).await;
        assert_eq!(status, 200, "{method}");
        assert_eq!(backend_of(&headers), "solo", "{method}");
        assert_eq!(backend.last_request().unwrap().method, method);
        if method == "HEAD" {
            assert!(body.is_empty());
            assert_eq!(headers["content-length"], "4");
        } else {
            assert_eq!(&body[..], b"solo", "{method}");
        }
    }
    scenario.stop().await;
}

const BIG: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn streams_a_64_mib_download() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let lb = &scenario.lb;
    let response = client()
        .request(
            Request::get(lb.url(&format!("/bytes/{BIG}")))
                .body(full(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(read_pattern(response.into_body()).await, BIG);
    scenario.stop().await;
}

#[tokio::test]
async fn streams_a_64_mib_upload_and_its_echo() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let lb = &scenario.lb;
    let request = Request::post(lb.url("/echo"))
        .body(pattern_body(BIG))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(read_pattern(response.into_body()).await, BIG);
    scenario.stop().await;
}

#[tokio::test]
async fn hop_by_hop_request_fields_are_removed_and_forwarding_fields_appended() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let request = Request::get(lb.url("/h"))
        .header("host", "app.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "private")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-end-to-end", "kept")
        .body(full(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(&client(), request).await;
    assert_eq!(status, 200);
    let seen = backend.last_request().unwrap().headers;
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            !seen.contains_key(gone),
            "{gone} reached the backend: {seen:?}"
        );
    }
    // hyper's client pool adds its own keep-alive semantics; only the client's tokens must not pass.
    if let Some(connection) = seen.get("connection") {
        assert!(!connection.to_str().unwrap().contains("x-hop"));
    }
    assert_eq!(
        seen["host"], "app.example",
        "Host is kept as the client sent it"
    );
    assert_eq!(seen["x-end-to-end"], "kept");
    // The client is no trusted proxy: its X-Forwarded-For is replaced, not continued.
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "app.example");
    scenario.stop().await;
}

#[tokio::test]
async fn hop_by_hop_response_fields_are_removed() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let lb = &scenario.lb;
    let (status, headers, body) = get(&client(), &lb.url("/hop")).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"hop");
    assert_eq!(headers["x-public"], "ok");
    for gone in ["x-private", "keep-alive", "proxy-authenticate"] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the client: {headers:?}"
        );
    }
    scenario.stop().await;
}

#[tokio::test]
async fn backend_errors_pass_through_untouched() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let c = client();
    for code in [404u16, 429, 500, 503] {
        let (status, headers, body) = get(&c, &lb.url(&format!("/status/{code}"))).await;
        assert_eq!(status.as_u16(), code);
        assert_eq!(backend_of(&headers), "solo");
        assert_eq!(body, Bytes::from(format!("status {code}")));
    }
    assert_eq!(backend.hits(), 4, "backend errors are not retried");
    scenario.stop().await;
}

/// Writes raw bytes to the balancer and reads until the connection closes.
async fn raw_exchange(lb: &TestBalancer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("balancer closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn absolute_form_target_becomes_origin_form_with_its_host() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let answer = raw_exchange(
        lb,
        b"GET http://shop.example/abs?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.uri, "/abs?q=1");
    assert_eq!(seen.headers["host"], "shop.example");
    scenario.stop().await;
}

#[tokio::test]
async fn http_1_0_request_without_host_gets_the_backends_authority() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let answer = raw_exchange(lb, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(answer.ends_with("solo"), "{answer}");
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.headers["host"], backend.addr.to_string().as_str());
    scenario.stop().await;
}

#[tokio::test]
async fn connect_method_is_refused() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let answer = raw_exchange(
        lb,
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(backend.hits(), 0);
    scenario.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let c = client();
    for _ in 0..200 {
        let (status, _, _) = get(&c, &lb.url("/p")).await;
        assert_eq!(status, 200);
    }
    // One connection for the first health probe, one or two for traffic (a connection may still be
    // settling when the next request arrives).
    assert!(
        backend.connections() <= 4,
        "{} upstream connections for 200 sequential requests",
        backend.connections()
    );
    scenario.stop().await;
}

#[tokio::test]
async fn a_client_going_away_mid_body_releases_the_in_flight_count() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let lb = &scenario.lb;
    let response = client()
        .request(
            Request::get(lb.url("/bytes/104857600"))
                .body(full(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    assert_eq!(lb.proxy.backends()[0].in_flight(), 1);
    drop(body);
    wait_until(Duration::from_secs(5), || {
        lb.proxy.backends()[0].in_flight() == 0
    })
    .await
    .expect("in-flight count released after the client went away");
    // The balancer is still fine.
    let (status, _, _) = get(&client(), &lb.url("/after")).await;
    assert_eq!(status, 200);
    scenario.stop().await;
}
