//! Every wait on a peer has a deadline: clients that stop reading, backends that stop reading an
//! upload, and a backend's keep-alive close racing a request that was not sent yet.

use std::time::{Duration, Instant};

use crate::support::recorder::Recorder;
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `stream` until `what` is seen or `within` passes; returns what was read.
async fn read_until(stream: &mut TcpStream, what: &str, within: Duration) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !String::from_utf8_lossy(&bytes).contains(what) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Defect 6: two clients that never read a large answer used to hold both of a backend's
/// `max_connections` slots for as long as they liked, and a third client got 503. With
/// `timeouts.write` they lose their connections once a write made no progress for that long,
/// the slots come free, and the stalled clients count nothing against the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_lose_their_backend_slots() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[limits]\nbackend_max_connections = 2\nbackend_queue_timeout = \"10s\"\n\
         [timeouts]\nwrite = \"500ms\"\n[passive_health]\nconsecutive_failures = 1\n\
         [health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    ))
    .await;
    let backend = lb.proxy.backends()[0].clone();
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut hog = TcpStream::connect(lb.addr).await.unwrap();
        hog.write_all(b"GET /bytes/200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        hogs.push(hog);
    }
    wait_until(Duration::from_secs(2), || backend.in_flight() == 2)
        .await
        .unwrap();
    let started = Instant::now();
    let (status, _, body) = get(&client(), &lb.url("/")).await;
    assert_eq!(status, 200, "{body:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_until(Duration::from_secs(2), || backend.in_flight() == 0)
        .await
        .unwrap();
    assert!(
        !backend.is_ejected(),
        "a slow client counted against the backend"
    );
    drop(hogs);
    lb.stop().await;
    b.stop().await;
}

/// Defect 6: an upload to a backend that stopped reading used to stay in flight forever. The
/// write deadline ends it; the answer is a 502 (the backend failed to take the request) within
/// the write and response timeouts, and the backend's slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_backend_that_stopped_reading_ends() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    b.set_mode(Mode::HangTraffic);
    let lb = TestBalancer::start(&format!(
        "{}[timeouts]\nwrite = \"500ms\"\nresponse = \"500ms\"\n[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    ))
    .await;
    let backend = lb.proxy.backends()[0].clone();
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let uploader = tokio::spawn(async move {
        let size: u64 = 1 << 30;
        let head = format!("POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![7u8; 64 * 1024];
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(1), write.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    });
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(8), read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 502"),
        "{text:?} after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_until(Duration::from_secs(2), || backend.in_flight() == 0)
        .await
        .unwrap();
    uploader.abort();
    lb.stop().await;
    b.stop().await;
}

/// Defect 8: a streamed request whose head waits on a pooled connection for the client's first
/// body bytes, while the backend closes that connection (its keep-alive ran out). Nothing was
/// sent, so the request goes on a fresh connection; it used to be answered 502 and counted as
/// the backend's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_yet_sent_survives_the_backends_keepalive_close() {
    let _cpu = crate::support::cpu::shared().await;
    let recorder = Recorder::with_idle_limit(Duration::from_millis(300)).await;
    let lb = TestBalancer::start(&format!(
        "backends = [\"{}\"]\n[passive_health]\nconsecutive_failures = 1\n\
         [health_check]\ninterval = \"60s\"\n",
        recorder.url()
    ))
    .await;
    // One request leaves an idle pooled connection behind.
    let mut first = TcpStream::connect(lb.addr).await.unwrap();
    first
        .write_all(b"GET /first HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_until(&mut first, "/first", Duration::from_secs(3))
            .await
            .contains("200 OK")
    );
    // A POST's head only, with a body too large to be read whole first: alb takes the pooled
    // connection and waits for the body's first bytes.
    let body = vec![b'x'; 100_000];
    let mut late = TcpStream::connect(lb.addr).await.unwrap();
    let head = format!(
        "POST /late HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    late.write_all(head.as_bytes()).await.unwrap();
    wait_until(Duration::from_secs(3), || recorder.idle_closed() >= 1)
        .await
        .expect("the backend closes its idle connection");
    late.write_all(&body).await.unwrap();
    let answer = read_until(&mut late, "/late", Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(recorder.only("/late").body, body);
    assert!(
        !lb.proxy.backends()[0].is_ejected(),
        "counted as the backend's failure"
    );
    lb.stop().await;
    recorder.stop().await;
}

/// A client that stalls its upload while the backend already streams the answer (an echo): the
/// exchange cannot finish, and it is the client's doing. The response is cut as the client's
/// abort; it used to run into the backend's idle limit and eject the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_its_upload_does_not_eject_the_backend() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    // Two backends, so that the ejection cap (half the pool) would let one go.
    let lb = TestBalancer::start(&format!(
        "{}[timeouts]\nclient_body_idle = \"300ms\"\nupstream_idle = \"1s\"\n\
         [passive_health]\nconsecutive_failures = 1\n[health_check]\ninterval = \"60s\"\n",
        backends_line(&[&a, &b])
    ))
    .await;
    for _ in 0..2 {
        let mut stream = TcpStream::connect(lb.addr).await.unwrap();
        stream
            // Longer than max_body_buffer: streamed, not read whole before a backend is picked.
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nhello")
            .await
            .unwrap();
        let answer = read_until(&mut stream, "hello", Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        // The stall: nothing more is sent; alb cuts the exchange within client_body_idle.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection stays open");
        wait_until(Duration::from_secs(3), || {
            lb.proxy.backends().iter().all(|b| b.in_flight() == 0)
        })
        .await
        .unwrap();
    }
    assert_eq!(
        lb.proxy.outliers().ejections(),
        0,
        "a stalled upload counted against a backend"
    );
    lb.stop().await;
    a.stop().await;
    b.stop().await;
}

/// Clients trickling small request bodies (slow POST) do not hold a backend's connection slots:
/// a body of known length up to `retry.max_body_buffer` is read whole before a backend is picked.
/// With `backend_max_connections = 2`, two such clients used to leave a third with a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_small_uploads_hold_no_backend_slot() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[limits]\nbackend_max_connections = 2\nbackend_queue_timeout = \"1s\"\n\
         [health_check]\ninterval = \"60s\"\n",
        backends_line(&[&b])
    ))
    .await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(lb.addr).await.unwrap();
        stream
            .write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nh")
            .await
            .unwrap();
        slow.push(stream);
    }
    let backend = lb.proxy.backends()[0].clone();
    for _ in 0..3 {
        let (status, _, body) = get(&client(), &lb.url("/")).await;
        assert_eq!(status, 200, "{body:?}");
    }
    assert_eq!(backend.in_flight(), 0, "a slow upload holds a slot");
    drop(slow);
    lb.stop().await;
    b.stop().await;
}
