//! Timeouts: each one firing gives the right status or closes the connection, and none fires
//! early.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn a_client_slow_to_send_its_head_gets_408_and_is_closed() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[timeouts]\nclient_header = \"300ms\"")
        .start()
        .await;
    let (b, lb) = (&scenario.backends[0], &scenario.lb);
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "connection closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "cut after {:?}",
        started.elapsed()
    );
    assert_eq!(b.hits(), 0);
    scenario.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_quietly() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[timeouts]\nkeepalive_idle = \"300ms\"\nclient_header = \"10s\"")
        .start()
        .await;
    let lb = &scenario.lb;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "idle connection closed after keepalive_idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        !answer.contains("408"),
        "no 408 for an idle connection: {answer:?}"
    );
    scenario.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[timeouts]\nclient_body_idle = \"300ms\"")
        .start()
        .await;
    let lb = &scenario.lb;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (answer, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    scenario.stop().await;
}

#[tokio::test]
async fn a_backend_silent_mid_body_has_its_response_cut() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[timeouts]\nupstream_idle = \"300ms\"")
        .start()
        .await;
    let lb = &scenario.lb;
    let response = client()
        .request(
            Request::get(lb.url("/stall"))
                .body(full(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect()).await;
    let body = result.expect("cut well before the test's own limit");
    assert!(
        body.is_err(),
        "the client sees a broken body, not a clean end"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(lb.proxy.backends()[0].in_flight(), 0);
    scenario.stop().await;
}

#[tokio::test]
async fn the_overall_request_deadline_gives_504() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[timeouts]\nrequest = \"300ms\"\nresponse = \"10s\"")
        .start()
        .await;
    let (b, lb) = (&scenario.backends[0], &scenario.lb);
    b.set_delay(Duration::from_secs(2));
    let started = Instant::now();
    let (status, _, _) = get(&client(), &lb.url("/")).await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() >= Duration::from_millis(300)
            && started.elapsed() < Duration::from_secs(2),
        "{:?}: not at the 300 ms deadline, before the backend's 2 s answer",
        started.elapsed()
    );
    scenario.stop().await;
}

#[tokio::test]
async fn hung_backend_gives_504_within_the_response_timeout() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[timeouts]\nresponse = \"300ms\"\n[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    ))
    .await;
    b.set_mode(Mode::HangTraffic);
    let started = Instant::now();
    let (status, _, body) = get(&client(), &lb.url("/")).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 504);
    assert!(
        String::from_utf8_lossy(&body).contains("did not answer in time"),
        "{body:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
    assert_eq!(b.hits(), 1, "a timed-out request is not retried");
    lb.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_response_timeout() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[timeouts]\nresponse = \"300ms\"\n[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    ))
    .await;
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
    let request = Request::post(lb.url("/count"))
        .body(http_body_util::BodyExt::boxed(body))
        .unwrap();
    let c = client();
    let upload = tokio::spawn(async move {
        // 8 chunks, 100 ms apart: the upload takes longer than the response timeout.
        for _ in 0..8 {
            if let Err(e) = tx.send_data(Bytes::from_static(&[7u8; 1000])).await {
                eprintln!("send failed: {e:?}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (status, _, body) = send(&c, request).await;
    upload.await.unwrap();
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(&body[..], b"8000");
    lb.stop().await;
    b.stop().await;
}
