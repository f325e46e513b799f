//! Timeouts and limits: each one firing gives the right status or closes the connection.

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn an_oversized_head_gets_431_and_a_long_uri_414() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[limits]\nmax_header_bytes = \"4KiB\"\nmax_uri_bytes = 1000")
        .start()
        .await;
    let (b, lb) = (&scenario.backends[0], &scenario.lb);
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let big = "a".repeat(6000);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(closed);

    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let long = "x".repeat(2000);
    s.write_all(format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer:?}");
    assert!(closed);
    assert_eq!(b.hits(), 0);
    scenario.stop().await;
}

#[tokio::test]
async fn an_oversized_body_gets_413_declared_or_streamed() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[limits]\nmax_body_bytes = 1000")
        .start()
        .await;
    let (b, lb) = (&scenario.backends[0], &scenario.lb);
    let c = client();
    let post = Request::post(lb.url("/count"))
        .body(full(vec![0u8; 2000]))
        .unwrap();
    assert_eq!(send(&c, post).await.0, 413);
    assert_eq!(
        b.hits(),
        0,
        "a declared length over the limit never reaches the backend"
    );
    // Chunked, no length: cut as it streams past the limit.
    let post = Request::post(lb.url("/count"))
        .body(pattern_body(50_000))
        .unwrap();
    assert_eq!(send(&c, post).await.0, 413);
    let ok = Request::post(lb.url("/count"))
        .body(full(vec![0u8; 1000]))
        .unwrap();
    assert_eq!(send(&c, ok).await.2, Bytes::from("1000"));
    scenario.stop().await;
}

#[tokio::test]
async fn at_max_client_connections_alb_stops_accepting_until_one_closes() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backend("b")
        .config("[limits]\nmax_client_connections = 2")
        .start()
        .await;
    let lb = &scenario.lb;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // The third connection sits in the kernel's backlog: no answer while the two are open.
    let mut third = TcpStream::connect(lb.addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served while at the limit");
    drop(held.pop());
    let (answer, _) = read_until_close(&mut third, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    scenario.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_max_connections_queues_then_refuses() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    b.set_delay(Duration::from_millis(500));
    let config = format!(
        "{}[limits]\nbackend_max_connections = 1\nbackend_queue = 1\nbackend_queue_timeout = \"5s\"\n",
        backends_line(&[&b])
    );
    let lb = TestBalancer::start(&config).await;
    let mut tasks = Vec::new();
    let backend = lb.proxy.backends()[0].clone();
    let limit = backend.limit().expect("a connection limit");
    for _ in 0..3 {
        let (c, url) = (client(), lb.url("/"));
        tasks.push(tokio::spawn(async move { get(&c, &url).await.0.as_u16() }));
        // Each request reaches its place (in flight, then queued) before the next is sent.
        if tasks.len() < 3 {
            let placed = tasks.len();
            wait_until(Duration::from_secs(2), || match placed {
                1 => backend.in_flight() >= 1,
                _ => limit.waiting() == 1,
            })
            .await
            .expect("the request took its place");
        }
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 503],
        "one in flight, one queued, one refused"
    );
    lb.stop().await;

    // A queue timeout gives 503 too.
    let config = format!(
        "{}[limits]\nbackend_max_connections = 1\nbackend_queue_timeout = \"200ms\"\n",
        backends_line(&[&b])
    );
    let lb = TestBalancer::start(&config).await;
    let first = {
        let (c, url) = (client(), lb.url("/"));
        tokio::spawn(async move { get(&c, &url).await.0.as_u16() })
    };
    wait_until(Duration::from_secs(2), || {
        lb.proxy.backends()[0].in_flight() == 1
    })
    .await
    .unwrap();
    let started = Instant::now();
    assert_eq!(get(&client(), &lb.url("/")).await.0, 503);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(first.await.unwrap(), 200);
    lb.stop().await;
    b.stop().await;
}

/// A request cancelled while it waits in a backend's queue (here by `timeouts.request`) gives its
/// place back. Two such cancellations with `backend_queue = 2` used to leave the queue counted
/// full for good: every later request that had to wait got an immediate 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cancelled_in_the_queue_give_their_place_back() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let config = format!(
        "{}[limits]\nbackend_max_connections = 1\nbackend_queue = 2\nbackend_queue_timeout = \"10s\"\n\
         [timeouts]\nrequest = \"300ms\"\n[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    );
    let lb = TestBalancer::start(&config).await;
    let backend = lb.proxy.backends()[0].clone();
    for round in 0..2 {
        // A client that asks for a large body and never reads it holds the only slot.
        let mut hog = TcpStream::connect(lb.addr).await.unwrap();
        hog.write_all(b"GET /bytes/100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        wait_until(Duration::from_secs(2), || backend.in_flight() == 1)
            .await
            .unwrap();
        // Two requests queue behind it and are cut by the request deadline.
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let (c, url) = (client(), lb.url("/"));
                tokio::spawn(async move { get(&c, &url).await.0.as_u16() })
            })
            .collect();
        for q in queued {
            assert_eq!(q.await.unwrap(), 504, "round {round}");
        }
        assert_eq!(
            backend.limit().unwrap().waiting(),
            0,
            "round {round}: places leaked"
        );
        drop(hog);
        wait_until(Duration::from_secs(5), || backend.in_flight() == 0)
            .await
            .unwrap();
    }
    assert_eq!(get(&client(), &lb.url("/")).await.0, 200);
    lb.stop().await;
    b.stop().await;
}

/// A reload applies `limits.max_header_bytes` to new connections (it used to keep the value alb
/// started with, without listing it under `needs_restart` either).
#[tokio::test]
async fn a_reload_applies_max_header_bytes() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[limits]\nmax_header_bytes = \"2KiB\"\n[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    ))
    .await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(3000)
    );
    let send = || async {
        let mut stream = TcpStream::connect(lb.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        read_until_close(&mut stream, Duration::from_secs(3))
            .await
            .0
    };
    assert!(send().await.starts_with("HTTP/1.1 431"));
    let mut config = lb.proxy.snapshot().config().clone();
    config.limits.max_header_bytes = 64 * 1024;
    let report = lb.control.apply(&config);
    assert!(report.needs_restart.is_empty(), "{report:?}");
    let answer = send().await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    lb.stop().await;
    b.stop().await;
}

/// The listening socket of the real binary queues `limits.listen_backlog` connections (as the
/// kernel reports it: `ss` shows a listener's backlog as its Send-Q), capped by somaxconn.
#[tokio::test]
async fn the_client_listener_has_the_configured_backlog() {
    let _cpu = crate::support::cpu::shared().await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096);
    let backend = TestBackend::start("b").await;
    let dir = TempDir::new("backlog");
    for (configured, expected) in [
        (None, 4096.min(somaxconn)),
        (Some(1000), 1000.min(somaxconn)),
    ] {
        let extra = configured.map_or(String::new(), |n| {
            format!("[limits]\nlisten_backlog = {n}\n")
        });
        let path = dir.write(
            "alb.toml",
            &format!(
                "listen = \"127.0.0.1:0\"\n{}{extra}[admin]\nlisten = \"off\"\n",
                backends_line(&[&backend])
            ),
        );
        let mut alb = binary::LoggedProcess::alb(&path);
        let line = alb
            .wait_line("alb listening on ", 1, Duration::from_secs(10))
            .await;
        let addr = line
            .split("alb listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the address")
            .to_string();
        let port = addr.rsplit(':').next().unwrap();
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("run ss (iproute2)");
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        // State, Recv-Q, Send-Q (the backlog), local address, peer.
        let backlog: u32 = table
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no listener on {port}: {table:?}"));
        assert_eq!(backlog, expected, "listen_backlog {configured:?}: {table}");
        alb.kill().await;
    }
    backend.stop().await;
}
