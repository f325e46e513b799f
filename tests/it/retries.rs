//! Retries on another backend, and when they must not happen: idempotency, bodies kept or
//! streamed, connections the backend closed, and the retry budget.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use crate::support::*;

/// Round robin over `first` then `second`, probes rare, and `extra` config lines.
async fn pair(first: &TestBackend, second: &TestBackend, extra: &str) -> TestBalancer {
    Scenario::new()
        .backend_urls([first.url(), second.url()])
        .algorithm("round_robin")
        .config(extra)
        .quiet_health()
        .start()
        .await
        .lb
}

const NO_EJECTION: &str = "[passive_health]\nenabled = false\n";

#[tokio::test]
async fn an_idempotent_request_broken_off_is_retried_on_another_backend() {
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
async fn a_spent_retry_budget_turns_retries_into_failures() {
    let _cpu = crate::support::cpu::shared().await;
    let broken = TestBackend::start("broken").await;
    let good = TestBackend::start("good").await;
    broken.set_mode(Mode::DropTraffic);
    let c = client();

    let lb = pair(
        &broken,
        &good,
        &format!("{NO_EJECTION}[retry]\nbudget_percent = 0\nbudget_min_per_second = 0\n"),
    )
    .await;
    let mut failed = 0;
    for _ in 0..10 {
        if get(&c, &lb.url("/")).await.0 != 200 {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 5,
        "with no budget, every request landing on the broken backend fails"
    );
    assert_eq!(lb.proxy.retries(), 0);
    lb.stop().await;

    let lb = pair(&broken, &good, NO_EJECTION).await;
    for _ in 0..10 {
        assert_eq!(
            get(&c, &lb.url("/")).await.0,
            200,
            "the default budget (floor of 10/s) covers these"
        );
    }
    // Each request that met the broken backend was retried once on the good one.
    assert!(broken.hits() >= 5);
    assert_eq!(lb.proxy.retries(), broken.hits() - 5);
    lb.stop().await;
    broken.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn retry_on_status_is_opt_in_and_idempotent_only() {
    let _cpu = crate::support::cpu::shared().await;
    let failing = TestBackend::start("failing").await;
    let good = TestBackend::start("good").await;
    failing.set_mode(Mode::FailTraffic);
    let c = client();

    let lb = pair(
        &failing,
        &good,
        &format!("{NO_EJECTION}[retry]\non_status = [500, 503]\n"),
    )
    .await;
    for _ in 0..6 {
        let (status, headers, _) = get(&c, &lb.url("/")).await;
        assert_eq!(status, 200);
        assert_eq!(backend_of(&headers), "good");
    }
    assert_eq!(
        lb.proxy.retries(),
        failing.hits(),
        "each 500 was retried once"
    );
    // A POST answered 500 is passed through, not sent again.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let post = Request::post(lb.url("/count")).body(full("x")).unwrap();
        statuses.push(send(&c, post).await.0.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 500]);
    lb.stop().await;

    // Without on_status, the backend's 500 reaches the client.
    let lb = pair(&failing, &good, NO_EJECTION).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(get(&c, &lb.url("/")).await.0.as_u16());
    }
    seen.sort();
    assert_eq!(seen, [200, 500]);
    lb.stop().await;
    failing.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn a_small_put_body_is_kept_and_replayed_but_a_large_one_is_not() {
    let _cpu = crate::support::cpu::shared().await;
    let broken = TestBackend::start("broken").await;
    let good = TestBackend::start("good").await;
    broken.set_mode(Mode::DropTraffic);
    let c = client();
    let lb = pair(
        &broken,
        &good,
        &format!("{NO_EJECTION}[retry]\nmax_body_buffer = \"1KiB\"\n"),
    )
    .await;
    // Small: both PUTs succeed, the one first sent to the broken backend replayed with its body.
    for _ in 0..2 {
        let put = Request::put(lb.url("/count"))
            .body(full(vec![1u8; 1000]))
            .unwrap();
        let (status, headers, body) = send(&c, put).await;
        assert_eq!(status, 200);
        assert_eq!(backend_of(&headers), "good");
        assert_eq!(&body[..], b"1000");
    }
    // Over the cap: streamed, so the one that reaches the broken backend cannot be replayed.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let put = Request::put(lb.url("/count"))
            .body(full(vec![1u8; 5000]))
            .unwrap();
        statuses.push(send(&c, put).await.0.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    lb.stop().await;
    broken.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn a_post_is_retried_when_the_connection_could_not_be_made() {
    let _cpu = crate::support::cpu::shared().await;
    let dead = TestBackend::start("dead").await;
    let good = TestBackend::start("good").await;
    let lb = pair(&dead, &good, NO_EJECTION).await;
    // The first probe passes, then the backend dies: the balancer still believes in it.
    wait_until(Duration::from_secs(2), || dead.probes() >= 1)
        .await
        .unwrap();
    lb.wait_health(&dead.addr, true, Duration::from_secs(1))
        .await;
    dead.stop().await;
    let post = Request::post(lb.url("/count"))
        .body(full(vec![7u8; 3000]))
        .unwrap();
    let (status, headers, body) = send(&client(), post).await;
    assert_eq!(status, 200);
    assert_eq!(backend_of(&headers), "good");
    assert_eq!(
        &body[..],
        b"3000",
        "the body was not consumed by the failed attempt"
    );
    assert_eq!(lb.proxy.retries(), 1);
    lb.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn a_response_timeout_is_retried_for_get_but_not_for_post() {
    let _cpu = crate::support::cpu::shared().await;
    let hung = TestBackend::start("hung").await;
    let good = TestBackend::start("good").await;
    hung.set_mode(Mode::HangTraffic);
    let c = client();
    let lb = pair(
        &hung,
        &good,
        &format!("{NO_EJECTION}[timeouts]\nresponse = \"300ms\"\n"),
    )
    .await;
    let started = Instant::now();
    let (status, headers, _) = get(&c, &lb.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(backend_of(&headers), "good");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the first attempt waited for its timeout"
    );
    let post = Request::post(lb.url("/count")).body(full("x")).unwrap();
    // Round robin: the third request goes to the hung backend again.
    let _ = get(&c, &lb.url("/")).await;
    assert_eq!(send(&c, post).await.0, 504);
    lb.stop().await;
    hung.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn a_chunked_body_is_streamed_not_kept() {
    let _cpu = crate::support::cpu::shared().await;
    // Unknown length: streamed even for an idempotent method, and delivered whole.
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&backends_line(&[&b])).await;
    let put = Request::put(lb.url("/count"))
        .body(pattern_body(300_000))
        .unwrap();
    let (status, _, body) = send(&client(), put).await;
    assert_eq!(status, 200);
    assert_eq!(body, Bytes::from("300000"));
    lb.stop().await;
    b.stop().await;
}

/// Whether the peer of a socket whose write side this end shut down has acknowledged the FIN
/// (the socket left FIN_WAIT1, as `/proc/net/tcp` says), waited for up to 5 s.
async fn fin_acknowledged(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> bool {
    fn hex(addr: std::net::SocketAddr) -> String {
        let std::net::SocketAddr::V4(v4) = addr else {
            panic!("an IPv4 test socket")
        };
        format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        )
    }
    let (local, peer) = (hex(local), hex(peer));
    let state = || -> Option<String> {
        let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
        table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&peer.as_str()))
                .then(|| f.get(3).map(|s| s.to_string()))
                .flatten()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // 04 is FIN_WAIT1: the FIN is sent and not yet acknowledged.
        if state().is_some_and(|s| s != "04") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// A backend that closes every connection right after answering, without saying so: the
/// connection alb pooled is dead by the time the next request wants it. A POST (never sent
/// twice) must get a connection that is open and succeed, not be written into the closed one
/// and get 502.
///
/// Each POST is sent once the backend's close is in alb's kernel (its FIN acknowledged), not
/// merely once the answer arrived: a close that has not happened yet when alb writes the next
/// request cannot be told from a backend that read the request and died, and no balancer may
/// send such a request again. That race is the backend's (RFC 9112 §9.6 asks it to say
/// `connection: close`). A close in the kernel that the reactor has not reported yet is seen
/// by the peek before reuse; `upstream::conn`'s unit test catches that instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_never_takes_a_connection_the_backend_closed() {
    let _cpu = crate::support::cpu::shared().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // One request: its head, then its body by Content-Length (or none).
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Closed here, with no `connection: close` said; then wait for alb's kernel
                // to acknowledge the FIN, so that it is in alb's socket, whatever the scheduler
                // (under load the FIN may otherwise sit in a softirq queue for a while).
                let (local, peer) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
                let _ = stream.shutdown().await;
                let acked = fin_acknowledged(local, peer).await;
                drop(stream);
                // Health checks close their connections too; the test counts its POSTs'.
                if acked && buf.starts_with(b"POST ") {
                    let _ = closed_tx.send(());
                }
            });
        }
    });
    let lb = TestBalancer::start(&format!(
        "backends = [\"http://{addr}\"]\n[health_check]\ninterval = \"60s\"\n\
         [passive_health]\nenabled = false\n[retry]\nattempts = 1\n"
    ))
    .await;
    let c = client();
    for i in 0..30 {
        let post = Request::post(lb.url("/p"))
            .body(full(Bytes::from_static(b"payload")))
            .unwrap();
        let (status, _, body) = send(&c, post).await;
        assert_eq!(status, 200, "POST {i}: {body:?}");
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the backend closes after answering")
            .expect("the backend is running");
    }
    lb.stop().await;
    server.abort();
}
