//! Backends that answer with broken framing, and what alb tells the client and the next one.

use super::*;

// ---------------------------------------------------------------------------------------------
// Backends with broken framing
// ---------------------------------------------------------------------------------------------

/// A backend written byte by byte: reads request heads (bodies are not expected) and answers each
/// with what `script` returns for its path, keeping the connection open unless told to close.
/// Health checks get a plain 200. Each proxied request is logged with the number of the TCP
/// connection it arrived on.
struct RawBackend {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(u64, String)>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// What the raw backend writes for a path, and whether it then closes the connection.
type Script = fn(&str) -> (&'static [u8], bool);

impl RawBackend {
    async fn start(script: Script) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            let accepted = AtomicU64::new(0);
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    conn = listener.accept() => {
                        let Ok((stream, _)) = conn else { continue };
                        let id = accepted.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(raw_connection(stream, id, script, task_log.clone()));
                    }
                }
            }
            connections.shutdown().await;
        });
        RawBackend {
            addr,
            log,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The connection the (only) request for `path` arrived on.
    fn connection_of(&self, path: &str) -> u64 {
        let log = self.log.lock().unwrap();
        let found: Vec<u64> = log
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(found.len(), 1, "{path} in {log:?}");
        found[0]
    }

    fn requests(&self) -> Vec<(u64, String)> {
        self.log.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn raw_connection(
    mut stream: TcpStream,
    id: u64,
    script: Script,
    log: Arc<Mutex<Vec<(u64, String)>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        buf.drain(..head_end + 4);
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let (answer, close): (&[u8], bool) = if head.contains("user-agent: alb-health-check") {
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
        } else {
            log.lock().unwrap().push((id, path.clone()));
            script(&path)
        };
        if stream.write_all(answer).await.is_err() || close {
            return;
        }
    }
}

fn broken_backend(path: &str) -> (&'static [u8], bool) {
    match path {
        "/bad-status" => (b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", false),
        "/no-status-line" => (b"hello\r\n\r\n", false),
        "/two-lengths" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
            false,
        ),
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
            false,
        ),
        "/cl-te" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
            false,
        ),
        "/gzip-chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        "/extra" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
            false,
        ),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood", false),
    }
}

/// GET `path` through `lb` on a fresh connection that asks to close; returns what came back.
async fn raw_get(lb: &TestBalancer, path: &str) -> Exchange {
    exchange(
        lb.addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// A good request before and after the broken one: the one after must arrive on a new upstream
/// connection, not on the one the broken answer came over.
async fn after_broken_answer_the_upstream_connection_is_not_reused(
    raw: &RawBackend,
    lb: &TestBalancer,
    broken: &str,
) {
    let after = format!("/after{broken}");
    let got = raw_get(lb, &after).await;
    assert_eq!(got.status(), 200, "{after}:\n{}", got.text());
    assert_eq!(got.responses()[0].body, b"good");
    assert_ne!(
        raw.connection_of(&after),
        raw.connection_of(broken),
        "the connection that carried {broken} was reused: {:?}",
        raw.requests()
    );
}

#[tokio::test]
async fn backend_with_a_broken_response_head_gives_502_and_a_fresh_connection() {
    let _cpu = crate::support::cpu::shared().await;
    let raw = RawBackend::start(broken_backend).await;
    let lb = Scenario::new()
        .backend_url(raw.url())
        .quiet_health()
        .start()
        .await
        .lb;
    for broken in ["/bad-status", "/no-status-line", "/two-lengths"] {
        let got = raw_get(&lb, &format!("/before{broken}")).await;
        assert_eq!(got.status(), 200, "{}", got.text());
        let got = raw_get(&lb, broken).await;
        assert_answered_and_closed(broken, &got, 502);
        after_broken_answer_the_upstream_connection_is_not_reused(&raw, &lb, broken).await;
    }
    lb.stop().await;
    raw.stop().await;
}

#[tokio::test]
async fn backend_breaking_its_chunked_body_cuts_the_clients_response_short() {
    let _cpu = crate::support::cpu::shared().await;
    let raw = RawBackend::start(broken_backend).await;
    let lb = Scenario::new()
        .backend_url(raw.url())
        .quiet_health()
        .start()
        .await
        .lb;
    let got = raw_get(&lb, "/before").await;
    assert_eq!(got.status(), 200, "{}", got.text());
    let got = raw_get(&lb, "/bad-chunk").await;
    assert!(got.closed, "{}", got.text());
    // The head was already passed on; the body must visibly end early, never look complete.
    match parse_response(&got.bytes) {
        Parsed::Partial(Some(r)) => {
            assert_eq!(r.status, 200);
            assert!(!r.body.ends_with(b"world"), "{}", got.text());
        }
        Parsed::Partial(None) => panic!("no response head:\n{}", got.text()),
        Parsed::Complete(r, _) => panic!("a broken body looked complete: {r:?}"),
    }
    after_broken_answer_the_upstream_connection_is_not_reused(&raw, &lb, "/bad-chunk").await;
    lb.stop().await;
    raw.stop().await;
}

/// Bytes after a complete response (here a whole second response) must not be taken as the
/// answer to the next request sent over that connection.
#[tokio::test]
async fn bytes_after_a_complete_response_are_not_served_to_the_next_client() {
    let _cpu = crate::support::cpu::shared().await;
    let raw = RawBackend::start(broken_backend).await;
    let lb = Scenario::new()
        .backend_url(raw.url())
        .quiet_health()
        .start()
        .await
        .lb;
    let got = raw_get(&lb, "/extra").await;
    assert_eq!(got.status(), 200, "{}", got.text());
    assert_eq!(got.responses()[0].body, b"ok");
    after_broken_answer_the_upstream_connection_is_not_reused(&raw, &lb, "/extra").await;
    lb.stop().await;
    raw.stop().await;
}

/// What alb does today with a backend answer carrying both Content-Length and chunked: the
/// body is decoded as chunked, but the backend's Content-Length is passed on, so the client
/// gets a body cut to that length that looks complete. This records the safe part: the
/// connection it came over is not reused.
#[tokio::test]
async fn backend_answer_with_content_length_and_chunked_does_not_reuse_the_connection() {
    let _cpu = crate::support::cpu::shared().await;
    let raw = RawBackend::start(broken_backend).await;
    let lb = Scenario::new()
        .backend_url(raw.url())
        .quiet_health()
        .start()
        .await
        .lb;
    let got = raw_get(&lb, "/before/cl-te").await;
    assert_eq!(got.status(), 200, "{}", got.text());
    let got = raw_get(&lb, "/cl-te").await;
    assert!(got.closed, "{}", got.text());
    assert!(matches!(got.status(), 200 | 502), "{}", got.text());
    after_broken_answer_the_upstream_connection_is_not_reused(&raw, &lb, "/cl-te").await;
    lb.stop().await;
    raw.stop().await;
}

/// RFC 9112 §6.3: an intermediary forwarding a message with both Transfer-Encoding and
/// Content-Length MUST first remove the Content-Length and frame by Transfer-Encoding (or treat
/// the message as an error). The backend sends `Content-Length: 5` with an 11-byte chunked body.
#[tokio::test]
async fn backend_answer_with_content_length_and_chunked_is_not_truncated() {
    let _cpu = crate::support::cpu::shared().await;
    let raw = RawBackend::start(broken_backend).await;
    let lb = Scenario::new()
        .backend_url(raw.url())
        .quiet_health()
        .start()
        .await
        .lb;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /cl-te HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let response = conn.next_response().await;
    match response.status {
        502 => {}
        200 => {
            assert_ne!(response.header("content-length"), Some("5"), "{response:?}");
            assert_eq!(response.body, b"hello world", "{response:?}");
        }
        _ => panic!("unexpected answer {response:?}"),
    }
    lb.stop().await;
    raw.stop().await;
}

/// alb decodes only the chunked coding. A backend answer with `Transfer-Encoding: gzip, chunked`
/// must keep its gzip coding on the way to the client (or be refused), not lose it.
#[tokio::test]
async fn backend_answer_with_a_transfer_coding_besides_chunked_keeps_it() {
    let _cpu = crate::support::cpu::shared().await;
    let raw = RawBackend::start(broken_backend).await;
    let lb = Scenario::new()
        .backend_url(raw.url())
        .quiet_health()
        .start()
        .await
        .lb;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /gzip-chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let response = conn.next_response().await;
    match response.status {
        502 => {}
        200 => {
            let te = response.header("transfer-encoding").unwrap_or("");
            assert!(
                te.contains("gzip"),
                "the gzip coding was dropped: {response:?}"
            );
        }
        _ => panic!("unexpected answer {response:?}"),
    }
    lb.stop().await;
    raw.stop().await;
}

/// A request body alb never reads (the answer is its own, here a 503) leaves the connection
/// unusable: the answer says `connection: close` before the connection closes, so a client does
/// not send its next request into a connection that is going away.
#[tokio::test]
async fn an_unread_request_body_is_announced_with_connection_close() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("a").await;
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"3s\"\n",
        backends_line(&[&backend])
    ))
    .await;
    let addr = backend.stop().await;
    lb.wait_health(&addr, false, Duration::from_secs(2)).await;
    // Longer than retry.max_body_buffer: not read whole before a backend is looked for.
    let mut request = b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', 100_000));
    let got = exchange(lb.addr, &request).await;
    assert_answered_and_closed("unread body", &got, 503);
    let responses = got.responses();
    assert_eq!(
        responses[0].header("connection"),
        Some("close"),
        "{}",
        got.text()
    );
    lb.stop().await;
}

/// Two Host fields name two targets, depending on which one a server reads: refused.
#[tokio::test]
async fn two_host_fields_get_400_and_close() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let got = exchange(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_answered_and_closed("two Host fields", &got, 400);
    assert_eq!(backend.hits(), 0);
    scenario.stop().await;
}
