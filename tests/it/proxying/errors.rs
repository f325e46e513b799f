//! The statuses alb makes itself: 503 no healthy or reachable backend, 502 upstream broken, 504
//! upstream slow.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn all_backends_down_gives_503_with_retry_after() {
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
