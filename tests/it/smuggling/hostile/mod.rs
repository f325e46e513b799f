//! Hostile and unusual HTTP/1.1, written and read as raw bytes on loopback sockets: request
//! smuggling attempts and malformed messages from clients (RFC 9112 §6.3, §11), pipelining,
//! `Expect: 100-continue`, oversized heads, and backends that answer with broken framing.
//!
//! malformed_and_unusual.rs: what clients send; broken_backends.rs: what backends answer.
//!
//! Every exchange reads with a deadline, so a balancer that keeps a connection open where it
//! should close it fails the test instead of hanging it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

mod broken_backends;
mod malformed_and_unusual;
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
