//! The statuses alb makes itself: 503 no healthy or reachable backend, 502 upstream broken, 504
//! upstream slow.


use std::time::{Duration, Instant};

use bytes::Bytes;
use crate::support::*;
use http::Request;

#[tokio::test]
async fn all_backends_down_gives_503_with_retry_after() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"3s\"\n",
        backends_line(&[&a, &b])
    ))
    .await;
    let (a_addr, b_addr) = (a.stop().await, b.stop().await);
    lb.wait_health(&a_addr, false, Duration::from_secs(2)).await;
    lb.wait_health(&b_addr, false, Duration::from_secs(2)).await;
    let (status, headers, body) = get(&client(), &lb.url("/")).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        String::from_utf8_lossy(&body).contains("no healthy backend"),
        "{body:?}"
    );
    lb.stop().await;
}

/// Every backend refusing connections (they just died; the checks have not noticed yet) is the
/// service being unavailable, not a bad gateway: 503 with Retry-After, as HAProxy and Envoy
/// answer. Nothing reached a backend, so nothing counts as a backend's bad answer either.
#[tokio::test]
async fn unreachable_backends_give_503_with_retry_after() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&a, &b])
    ))
    .await;
    // Let the first probes pass, so the balancer still believes in the backends when they die.
    wait_until(Duration::from_secs(2), || {
        a.probes() >= 1 && b.probes() >= 1
    })
    .await
    .unwrap();
    lb.wait_health(&a.addr, true, Duration::from_secs(1)).await;
    lb.wait_health(&b.addr, true, Duration::from_secs(1)).await;
    let (a, b) = (a.stop().await, b.stop().await);
    let (status, headers, body) = get(&client(), &lb.url("/")).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "60");
    assert!(
        String::from_utf8_lossy(&body).contains("could be reached"),
        "{body:?}"
    );
    // The failed connects asked for early probes, which take the backends out without waiting
    // 60 s.
    lb.wait_health(&a, false, Duration::from_secs(2)).await;
    lb.wait_health(&b, false, Duration::from_secs(2)).await;
    lb.stop().await;
}

#[tokio::test]
async fn backend_closing_before_its_headers_gives_502() {
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    ))
    .await;
    b.set_mode(Mode::DropTraffic);
    let (status, _, body) = get(&client(), &lb.url("/")).await;
    assert_eq!(status, 502);
    assert!(
        String::from_utf8_lossy(&body).contains("failed to answer"),
        "{body:?}"
    );
    lb.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_idempotent_request_broken_off_is_retried_on_another_backend() {
    let good = TestBackend::start("good").await;
    let broken = TestBackend::start("broken").await;
    let lb = TestBalancer::start(&format!(
        "algorithm = \"round_robin\"\n{}[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&broken, &good])
    ))
    .await;
    broken.set_mode(Mode::DropTraffic);
    let c = client();
    for _ in 0..10 {
        let (status, headers, _) = get(&c, &lb.url("/")).await;
        assert_eq!(status, 200);
        assert_eq!(backend_of(&headers), "good");
    }
    assert!(
        broken.hits() >= 4,
        "round robin sent some first attempts to the broken backend"
    );
    lb.stop().await;
    good.stop().await;
    broken.stop().await;
}

#[tokio::test]
async fn a_post_with_a_body_that_was_sent_is_not_retried() {
    let good = TestBackend::start("good").await;
    let broken = TestBackend::start("broken").await;
    let lb = TestBalancer::start(&format!(
        "algorithm = \"round_robin\"\n{}[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&broken, &good])
    ))
    .await;
    broken.set_mode(Mode::DropTraffic);
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let request = Request::post(lb.url("/echo"))
            .body(full(Bytes::from_static(b"payload")))
            .unwrap();
        statuses.push(send(&c, request).await.0.as_u16());
    }
    assert!(
        statuses.contains(&502),
        "a POST reaching the broken backend fails: {statuses:?}"
    );
    assert_eq!(
        good.hits() + broken.hits(),
        4,
        "each POST was sent exactly once: {statuses:?}"
    );
    lb.stop().await;
    good.stop().await;
    broken.stop().await;
}

#[tokio::test]
async fn hung_backend_gives_504_within_the_response_timeout() {
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
