//! Hostile and unusual HTTP/1.1, written and read as raw bytes on loopback sockets: request
//! smuggling attempts and malformed messages from clients (RFC 9112 §6.3, §11), pipelining,
//! `Expect: 100-continue`, oversized heads, and backends that answer with broken framing.
//!
//! Every exchange reads with a deadline, so a balancer that keeps a connection open where it
//! should close it fails the test instead of hanging it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How long any raw read waits before the test gives up on the peer.
const READ_DEADLINE: Duration = Duration::from_secs(3);
/// A request a smuggling attempt tries to slip past the balancer.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Raw client side
// ---------------------------------------------------------------------------------------------

/// What a raw client saw on one connection.
#[derive(Debug)]
struct Exchange {
    bytes: Vec<u8>,
    /// The peer closed the connection (EOF or reset) before the deadline.
    closed: bool,
}

impl Exchange {
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        text.chars().take(600).collect()
    }

    /// The status of the first response, or 0 when there is none.
    fn status(&self) -> u16 {
        match parse_response(&self.bytes) {
            Parsed::Complete(r, _) | Parsed::Partial(Some(r)) => r.status,
            Parsed::Partial(None) => 0,
        }
    }

    /// Every complete response, in order.
    fn responses(&self) -> Vec<Response> {
        let mut out = Vec::new();
        let mut rest = &self.bytes[..];
        while let Parsed::Complete(r, used) = parse_response(rest) {
            out.push(r);
            rest = &rest[used..];
        }
        out
    }
}

/// Writes `request` on a fresh connection while reading the answer until the balancer closes the
/// connection (or the deadline passes). Writing and reading run together so a balancer that
/// answers and closes before the whole request is written does not stall the writer; write
/// errors are ignored for the same reason.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the balancer");
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = wr.write_all(request).await;
    };
    let ((), exchange) = tokio::join!(write, read_until_closed(&mut rd, Vec::new()));
    exchange
}

/// Reads until EOF, a reset, or the deadline; `bytes` holds what was read before.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), bytes: Vec<u8>) -> Exchange {
    let mut bytes = bytes;
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_elapsed) => {
                return Exchange {
                    bytes,
                    closed: false,
                };
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Exchange {
                    bytes,
                    closed: true,
                };
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw client connection that reads responses one at a time, keeping what it read past the
/// last one for the next.
struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    async fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr)
                .await
                .expect("connect to the balancer"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// The next complete response; panics on EOF or at the deadline.
    async fn next_response(&mut self) -> Response {
        let deadline = tokio::time::Instant::now() + READ_DEADLINE;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Parsed::Complete(response, used) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return response;
            }
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no complete response in time; got:\n{text}"));
            match read {
                Ok(0) | Err(_) => panic!("connection closed before a complete response:\n{text}"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// One parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Parsed {
    /// A whole response and the number of bytes it took.
    Complete(Response, usize),
    /// Not all of it yet: the head when it is complete (with the body so far), else nothing.
    Partial(Option<Response>),
}

/// Parses one response off the front of `buf`: framed by `Transfer-Encoding: chunked`, by
/// `Content-Length`, or (with neither) by the end of the connection, which never counts as
/// complete here.
fn parse_response(buf: &[u8]) -> Parsed {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Parsed::Partial(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let body = &buf[head_end + 4..];
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Parsed::Complete(response, head_end + 4);
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        let mut at = 0;
        loop {
            let Some(line_end) = find(&body[at..], b"\r\n") else {
                return Parsed::Partial(Some(response));
            };
            let size_text = String::from_utf8_lossy(&body[at..at + line_end]);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return Parsed::Partial(Some(response));
            };
            at += line_end + 2;
            if size == 0 {
                // No trailers from alb: the last chunk is followed by the final CRLF.
                if body.len() < at + 2 {
                    return Parsed::Partial(Some(response));
                }
                return Parsed::Complete(response, head_end + 4 + at + 2);
            }
            if body.len() < at + size + 2 {
                response
                    .body
                    .extend_from_slice(&body[at..body.len().min(at + size)]);
                return Parsed::Partial(Some(response));
            }
            response.body.extend_from_slice(&body[at..at + size]);
            at += size + 2;
        }
    }
    match response.header("content-length").map(str::parse::<usize>) {
        Some(Ok(len)) if body.len() >= len => {
            response.body = body[..len].to_vec();
            Parsed::Complete(response, head_end + 4 + len)
        }
        _ => {
            response.body = body.to_vec();
            Parsed::Partial(Some(response))
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Asserts the exchange got `status` and that alb closed the connection afterwards.
fn assert_answered_and_closed(case: &str, got: &Exchange, status: u16) {
    assert_eq!(got.status(), status, "{case}: answer was\n{}", got.text());
    assert!(
        got.closed,
        "{case}: alb kept the connection open after\n{}",
        got.text()
    );
}

/// Asserts that no request for `/smuggled` ever reached `backend`.
fn assert_not_smuggled(case: &str, backend: &TestBackend) {
    if let Some(seen) = backend.last_request() {
        assert!(
            !seen.uri.contains("smuggled"),
            "{case}: the smuggled request reached the backend: {seen:?}"
        );
    }
}

async fn healthy_get_succeeds(lb: &TestBalancer) {
    let got = exchange(
        lb.addr,
        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_answered_and_closed("healthy GET", &got, 200);
    assert_eq!(got.responses()[0].body, b"solo");
}

// ---------------------------------------------------------------------------------------------
// Malformed requests: 4xx and close, nothing forwarded
// ---------------------------------------------------------------------------------------------

/// Each of these is rejected by alb's HTTP parser before any backend is picked.
fn rejected_requests() -> Vec<(&'static str, Vec<u8>, &'static [u16])> {
    let post = |headers: &str, body: &str| {
        format!("POST /count HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
    };
    let get = |head: &str| head.as_bytes().to_vec();
    vec![
        (
            "two different Content-Length fields",
            post(
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                &format!("hello!{SMUGGLED}"),
            ),
            &[400],
        ),
        (
            "Content-Length: 5, 6",
            post("Content-Length: 5, 6\r\n", &format!("hello!{SMUGGLED}")),
            &[400],
        ),
        (
            "Content-Length: 5, 5 (a list, even of equal values)",
            post("Content-Length: 5, 5\r\n", "hello"),
            &[400],
        ),
        (
            "Content-Length: +5",
            post("Content-Length: +5\r\n", "hello"),
            &[400],
        ),
        (
            "Content-Length: -1",
            post("Content-Length: -1\r\n", "hello"),
            &[400],
        ),
        (
            "Transfer-Encoding: chunked, identity",
            post(
                "Transfer-Encoding: chunked, identity\r\n",
                &format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            &[400],
        ),
        (
            "Transfer-Encoding: xchunked",
            post(
                "Transfer-Encoding: xchunked\r\n",
                &format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            &[400],
        ),
        (
            "Transfer-Encoding: chunked then Transfer-Encoding: identity",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                &format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            &[400],
        ),
        (
            "Transfer-Encoding : chunked (space before the colon)",
            post(
                "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                &format!("hello{SMUGGLED}"),
            ),
            &[400],
        ),
        (
            "Transfer-Encoding in an HTTP/1.0 request",
            format!(
                "POST /count HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
            )
            .into_bytes(),
            &[400],
        ),
        (
            "obs-fold with a space",
            get("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
            &[400],
        ),
        (
            "obs-fold with a tab",
            get("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n"),
            &[400],
        ),
        (
            "NUL in a header value",
            get("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
            &[400],
        ),
        (
            "bare CR in a header value",
            get("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
            &[400],
        ),
        (
            "double spaces in the request line",
            get("GET  /  HTTP/1.1\r\nHost: x\r\n\r\n"),
            &[400],
        ),
        (
            "HTTP/9.9",
            get("GET / HTTP/9.9\r\nHost: x\r\n\r\n"),
            &[400],
        ),
        (
            "HTTP/2.0 in an HTTP/1 request line",
            get("GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
            &[400],
        ),
        (
            "request line without a version",
            get("GET /\r\nHost: x\r\n\r\n"),
            &[400],
        ),
        (
            "garbage bytes (a TLS ClientHello start)",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "space inside a header name",
            get("GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n"),
            &[400],
        ),
        (
            "space before the colon",
            get("GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
            &[400],
        ),
        (
            "more than 100 header fields",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..101).map(|i| format!("X-H{i}: a\r\n")).collect::<String>()
            )
            .into_bytes(),
            &[431],
        ),
        (
            "a URI of 70,000 bytes",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            // hyper's own URI limit is 414; a header-size limit below the URI's length answers
            // 431 first.
            &[414, 431],
        ),
        (
            "a 500 KiB header section (past hyper's read buffer)",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(500 * 1024)
            )
            .into_bytes(),
            &[431],
        ),
    ]
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_connection_closes_without_reaching_a_backend() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    for (case, request, statuses) in rejected_requests() {
        let got = exchange(lb.addr, &request).await;
        assert!(
            statuses.contains(&got.status()),
            "{case}: expected one of {statuses:?}, answer was\n{}",
            got.text()
        );
        assert!(
            got.closed,
            "{case}: alb kept the connection open after\n{}",
            got.text()
        );
        assert_eq!(backend.hits(), 0, "{case}: forwarded to the backend");
    }
    // A client on another connection is unaffected.
    healthy_get_succeeds(lb).await;
    assert_eq!(backend.hits(), 1);
    scenario.stop().await;
}

/// CL.TE: a front end framing by Content-Length sees one request; a back end framing by
/// Transfer-Encoding sees a second one, `GET /smuggled`, after the empty chunked body. RFC 9112
/// §6.3 lets a server either reject the message or frame it by Transfer-Encoding alone and close
/// the connection after answering. alb does the latter: the body ends at the last chunk, the
/// Content-Length is dropped, and the bytes after the body are never parsed as a request.
#[tokio::test]
async fn cl_te_smuggling_is_framed_by_chunked_and_the_connection_closes() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let request = format!(
        "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let got = exchange(lb.addr, request.as_bytes()).await;
    assert!(got.closed, "connection left open:\n{}", got.text());
    let responses = got.responses();
    assert_eq!(responses.len(), 1, "{}", got.text());
    match responses[0].status {
        400 => assert_eq!(backend.hits(), 0),
        200 => {
            // Framed by chunked: an empty body, and no Content-Length passed on.
            assert_eq!(responses[0].body, b"0");
            assert_eq!(backend.hits(), 1);
            let seen = backend.last_request().unwrap();
            assert_eq!(seen.uri, "/count");
            assert!(!seen.headers.contains_key("content-length"), "{seen:?}");
        }
        other => panic!("unexpected status {other}:\n{}", got.text()),
    }
    assert_not_smuggled("CL.TE", backend);
    healthy_get_succeeds(lb).await;
    assert_not_smuggled("CL.TE", backend);
    scenario.stop().await;
}

/// TE.CL: a back end framing by `Content-Length: 4` would read `23\r\n` as the body and the chunk
/// data, `GET /smuggled ...`, as its next request. alb frames by chunked, so the smuggled
/// request is only ever body bytes, forwarded without the conflicting Content-Length.
#[tokio::test]
async fn te_cl_smuggling_is_framed_by_chunked_and_the_connection_closes() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let request = format!(
        "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    );
    let got = exchange(lb.addr, request.as_bytes()).await;
    assert!(got.closed, "connection left open:\n{}", got.text());
    let responses = got.responses();
    assert_eq!(responses.len(), 1, "{}", got.text());
    match responses[0].status {
        400 => assert_eq!(backend.hits(), 0),
        200 => {
            // The backend counted the whole chunk as the body.
            assert_eq!(responses[0].body, SMUGGLED.len().to_string().as_bytes());
            assert_eq!(backend.hits(), 1);
            let seen = backend.last_request().unwrap();
            assert_eq!(seen.uri, "/count");
            assert!(!seen.headers.contains_key("content-length"), "{seen:?}");
        }
        other => panic!("unexpected status {other}:\n{}", got.text()),
    }
    assert_not_smuggled("TE.CL", backend);
    healthy_get_succeeds(lb).await;
    scenario.stop().await;
}

/// Chunked bodies whose framing breaks after the head was accepted.
fn bad_chunked_bodies() -> Vec<(&'static str, String)> {
    let head = "POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    vec![
        (
            "chunk size zz",
            format!("{head}zz\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "chunk size overflowing 64 bits",
            format!("{head}ffffffffffffffffff\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "chunk size line ended by a bare LF",
            format!("{head}5\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
    ]
}

/// A chunked body that breaks is the client's fault: 400 (not a 502 blaming the backend), the
/// connection closed, and nothing after the broken body taken as a request.
#[tokio::test]
async fn bad_chunk_sizes_get_400_close_the_connection_and_smuggle_nothing() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    for (case, request) in bad_chunked_bodies() {
        let got = exchange(lb.addr, request.as_bytes()).await;
        assert_answered_and_closed(case, &got, 400);
        // The head may have been forwarded before the body broke; nothing else may have been.
        assert!(backend.hits() <= 1, "{case}: {} hits", backend.hits());
        assert_not_smuggled(case, backend);
    }
    healthy_get_succeeds(lb).await;
    scenario.stop().await;
}

/// RFC 9112 §2.2 lets a recipient take a bare LF as a line terminator. Whatever alb does with
/// it, the backend must never receive a field value containing a line break.
#[tokio::test]
async fn bare_lf_in_a_header_line_is_a_line_end_or_rejected() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let got = exchange(
        lb.addr,
        b"GET /lf HTTP/1.1\r\nHost: x\r\nX-A: a\nX-Injected: yes\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.closed, "{}", got.text());
    match got.status() {
        400 => assert_eq!(backend.hits(), 0),
        200 => {
            let seen = backend.last_request().unwrap();
            assert_eq!(seen.headers["x-a"], "a");
            assert_eq!(seen.headers["x-injected"], "yes");
            for value in seen.headers.values() {
                assert!(!value.as_bytes().contains(&b'\n'), "{seen:?}");
            }
        }
        other => panic!("unexpected status {other}:\n{}", got.text()),
    }
    scenario.stop().await;
}

/// RFC 9112 §6.1: a server that receives a transfer coding it does not understand should answer
/// 501 (or 400) and close. alb cannot decode gzip, yet it accepts `gzip, chunked`, strips the
/// chunked framing and the Transfer-Encoding field, and hands the backend the still gzip-coded
/// bytes as a plain body.
#[tokio::test]
async fn unknown_transfer_coding_before_chunked_is_refused() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let got = exchange(
        lb.addr,
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        matches!(got.status(), 400 | 501),
        "answer was\n{}",
        got.text()
    );
    assert!(got.closed, "connection left open:\n{}", got.text());
    assert_eq!(backend.hits(), 0);
    scenario.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Head size limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_100_kib_header_section_gets_431_and_the_connection_closes() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let got = exchange(lb.addr, request.as_bytes()).await;
    assert_answered_and_closed("100 KiB head", &got, 431);
    assert_eq!(backend.hits(), 0);
    scenario.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Well-formed but unusual: pipelining, Expect: 100-continue
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    stream
        .write_all(
            b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /status/202 HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /status/203 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let got = read_until_closed(&mut stream, Vec::new()).await;
    assert!(got.closed, "{}", got.text());
    let responses = got.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 202, 203], "{}", got.text());
    for (r, code) in responses.iter().zip([201, 202, 203]) {
        assert_eq!(r.body, format!("status {code}").as_bytes());
    }
    assert_eq!(backend.hits(), 3);
    scenario.stop().await;
}

#[tokio::test]
async fn expect_100_continue_gets_100_then_the_echoed_body() {
    let scenario = Scenario::new().backend("solo").quiet_health().start().await;
    let (backend, lb) = (&scenario.backends[0], &scenario.lb);
    let mut conn = RawConn::connect(lb.addr).await;
    let body = b"hello, world";
    conn.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    // Nothing of the body has been sent: the interim answer must come first.
    let interim = conn.next_response().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send(body).await;
    let response = conn.next_response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, body);
    assert_eq!(backend.hits(), 1);
    // The connection stays usable.
    conn.send(b"GET /status/202 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let response = conn.next_response().await;
    assert_eq!(response.status, 202);
    assert_eq!(response.body, b"status 202");
    scenario.stop().await;
}

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
