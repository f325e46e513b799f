//! HTTP/2 from clients, seen from the wire: curl and h2load (nghttp2), the `h2` crate as a
//! well-formed client (its socket tapped, so the frames alb sent can be checked), and raw frames
//! written by hand for what no client library sends: reset storms, HPACK bombs, CONTINUATION
//! floods, connection-specific fields, more streams than allowed.
//!
//! Behind alb, the backends are the HTTP/1.1 test backends of `common`, which record what
//! reached them. The memory bounds are read from the real binary's /proc/PID/status, where no
//! other test shares the process.

use crate::support::h2raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Request, StatusCode};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::support::binary::LoggedProcess;
use crate::support::pki::{Pki, curl, port_after, write_leaf};
use crate::support::{
    ClosedPort, Scenario, TempDir, TestBackend, TestBalancer, backends_line, pattern_byte,
    wait_until,
};
use h2raw::{Block, Frame, Next, Tap, Tapped};

const QUIET_HEALTH: &str = "[health_check]\ninterval = \"60s\"\n";
/// What any single exchange may take before the test gives up on the balancer.
const DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A well-formed client: the h2 crate over a tapped socket
// ---------------------------------------------------------------------------------------------

struct H2 {
    send: SendRequest<Bytes>,
    /// What alb sent on the connection, frame by frame.
    tapped: Tapped,
    /// The connection task: ends when the connection does.
    conn: JoinHandle<Result<(), h2::Error>>,
}

async fn h2c(addr: SocketAddr) -> H2 {
    h2c_with(addr, &h2::client::Builder::new()).await
}

async fn h2c_with(addr: SocketAddr, builder: &h2::client::Builder) -> H2 {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the balancer");
    let (tap, tapped) = Tap::new(tcp);
    let (send, conn) = tokio::time::timeout(DEADLINE, builder.handshake::<_, Bytes>(tap))
        .await
        .expect("HTTP/2 handshake in time")
        .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    H2 { send, tapped, conn }
}

/// A whole response.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (with `body`, if any, as one piece) and reads the whole response.
async fn exchange(
    send: &SendRequest<Bytes>,
    request: Request<()>,
    body: Option<Bytes>,
) -> Result<Answer, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request, body.is_none())?;
    if let Some(body) = body {
        stream.send_data(body, true)?;
    }
    let response = response.await?;
    let (parts, recv) = response.into_parts();
    let (body, trailers) = read_all(recv).await?;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        trailers,
    })
}

async fn read_all(mut recv: h2::RecvStream) -> Result<(Bytes, Option<HeaderMap>), h2::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await?;
    Ok((body.freeze(), trailers))
}

async fn get(h2: &H2, addr: SocketAddr, path: &str) -> Answer {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    tokio::time::timeout(DEADLINE, exchange(&h2.send, request, None))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer in time\n{}", h2.tapped.transcript()))
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", h2.tapped.transcript()))
}

/// A balancer with h2c on its plain listener, and `extra` config lines (sections allowed).
async fn h2c_balancer(backends: &[&TestBackend], extra: &str) -> TestBalancer {
    let extra = if extra.contains("[http2]") {
        extra.replace("[http2]\n", "[http2]\ncleartext = true\n")
    } else {
        format!("{extra}\n[http2]\ncleartext = true\n")
    };
    Scenario::new()
        .backend_urls(backends.iter().map(|b| b.url()))
        .config(&extra)
        .quiet_health()
        .start()
        .await
        .lb
}

// ---------------------------------------------------------------------------------------------
// 1. h2c by prior knowledge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn curl_h2c_prior_knowledge_reaches_the_backend_with_host_and_forwarded_fields() {
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "").await;
    let port = lb.addr.port();
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("http://site.test:{port}/path?q=1");
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_code} %{http_version}",
        "--resolve",
        &resolve,
        &url,
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "b1\n200 2", "body, status and HTTP version");
    let seen = backend.last_request().expect("the backend got the request");
    assert_eq!(seen.uri, "/path?q=1");
    assert_eq!(
        seen.headers["host"],
        format!("site.test:{port}"),
        ":authority became Host"
    );
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("site.test:{port}")
    );
    assert_eq!(lb.proxy.stats().h2_connections.load(Ordering::Relaxed), 1);
    assert_eq!(lb.proxy.stats().h2_requests.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn without_cleartext_the_h2c_preface_is_refused_as_a_malformed_http1_request() {
    let backend = TestBackend::start("b1").await;
    let lb = TestBalancer::start(&format!("{}{QUIET_HEALTH}", backends_line(&[&backend]))).await;
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_code} %{http_version}",
        &lb.url("/"),
    ])
    .await;
    assert!(
        !ok,
        "curl got an answer over h2c from an HTTP/1.1-only listener: {out}"
    );
    assert!(!out.ends_with(" 2"), "{out}\n{err}");

    // What alb answers the preface, byte by byte: an HTTP/1.1 error, then it closes.
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let mut hello = h2raw::PREFACE.to_vec();
    hello.extend_from_slice(&h2raw::settings(&[]));
    let (answer, closed) = raw_exchange(&mut stream, &hello).await;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().to_string();
    assert!(
        status_line.starts_with("HTTP/1.1 400 "),
        "answer to the h2c preface: {text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\n400 Bad Request: malformed request head\n"),
        "{text:?}"
    );
    assert!(closed, "the connection stays open after {status_line:?}");
    assert_eq!(backend.hits(), 0, "the preface reached the backend");
    assert_eq!(lb.proxy.stats().h2_connections.load(Ordering::Relaxed), 0);
    eprintln!(
        "curl: {}; alb answered the preface with {text:?}",
        err.trim()
    );
}

/// Writes `bytes`, then reads until the peer closes or 3 s pass.
async fn raw_exchange(stream: &mut TcpStream, bytes: &[u8]) -> (Vec<u8>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(bytes).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. ALPN h2 on the TLS listener
// ---------------------------------------------------------------------------------------------

/// A balancer with a TLS listener (certificate for `site.test`), `http2` lines under `[http2]`.
async fn tls_balancer(dir: &TempDir, backend: &TestBackend, http2: &str) -> TestBalancer {
    let pki = Pki::new();
    write_leaf(dir, "site", &pki.leaf("site.test", &["site.test"], None));
    dir.write("ca.pem", &pki.ca_pem());
    let config = format!(
        "listen = \"127.0.0.1:0\"\n{}{QUIET_HEALTH}[admin]\nlisten = \"off\"\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"site.pem\"\nkey = \"site.key\"\n\
         [http2]\n{http2}",
        backends_line(&[backend])
    );
    TestBalancer::start_file(&dir.write("alb.toml", &config)).await
}

async fn curl_tls(dir: &TempDir, lb: &TestBalancer) -> (bool, String, String) {
    let port = lb.tls_addr.expect("TLS listener").port();
    let ca = dir.0.join("ca.pem").display().to_string();
    curl(&[
        "--http2",
        "-v",
        "-w",
        "\n%{http_code} %{http_version}",
        "--cacert",
        &ca,
        "--resolve",
        &format!("site.test:{port}:127.0.0.1"),
        &format!("https://site.test:{port}/tls"),
    ])
    .await
}

#[tokio::test]
async fn curl_over_tls_negotiates_h2_by_alpn_and_the_backend_sees_https() {
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("h2-alpn");
    let lb = tls_balancer(&dir, &backend, "").await;
    let (ok, out, err) = curl_tls(&dir, &lb).await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "b1\n200 2", "{err}");
    assert!(
        err.lines().any(|l| l.contains("ALPN") && l.contains("h2")),
        "no ALPN h2 in curl's account:\n{err}"
    );
    let seen = backend.last_request().expect("the backend got the request");
    assert_eq!(seen.uri, "/tls");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    let port = lb.tls_addr.unwrap().port();
    assert_eq!(seen.headers["host"], format!("site.test:{port}"));
}

#[tokio::test]
async fn with_http2_tls_off_curl_falls_back_to_http1_over_tls() {
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("h2-alpn-off");
    let lb = tls_balancer(&dir, &backend, "tls = false\n").await;
    let (ok, out, err) = curl_tls(&dir, &lb).await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "b1\n200 1.1", "{err}");
    assert_eq!(
        backend.last_request().unwrap().headers["x-forwarded-proto"],
        "https"
    );
    assert_eq!(lb.proxy.stats().h2_connections.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------------------------
// 3. One connection, many streams, a pick for each
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_one_connection_are_spread_over_the_backends() {
    let b1 = TestBackend::start("b1").await;
    let b2 = TestBackend::start("b2").await;
    // Slow enough that the streams overlap: least_conn then sees each pick's load.
    b1.set_delay(Duration::from_millis(20));
    b2.set_delay(Duration::from_millis(20));
    let lb = h2c_balancer(&[&b1, &b2], "").await;
    // h2's client assumes no stream limit until alb's SETTINGS are read: a burst sent before
    // then could open more than alb's 128 streams, and the extra ones would be refused
    // (REFUSED_STREAM, as they should). Start from RFC 9113's suggested minimum instead.
    let mut builder = h2::client::Builder::new();
    builder.initial_max_send_streams(100);
    let h2 = h2c_with(lb.addr, &builder).await;
    let mut requests = tokio::task::JoinSet::new();
    for k in 0..200 {
        let send = h2.send.clone();
        let request = Request::get(format!("http://{}/n{k}", lb.addr))
            .body(())
            .unwrap();
        requests.spawn(async move { exchange(&send, request, None).await });
    }
    let mut by_backend = std::collections::HashMap::<String, u32>::new();
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(done) = requests.join_next().await {
            let answer = done
                .unwrap()
                .unwrap_or_else(|e| panic!("a stream failed: {e:?}\n{}", h2.tapped.transcript()));
            assert_eq!(answer.status, 200);
            *by_backend.entry(answer.text()).or_default() += 1;
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "200 streams not answered in 20 s: {by_backend:?}"
    );
    let (n1, n2) = (by_backend["b1"], by_backend["b2"]);
    assert_eq!(n1 + n2, 200, "{by_backend:?}");
    assert!(
        n1 >= 40 && n2 >= 40,
        "one connection's streams went to one backend: {by_backend:?}"
    );
    assert_eq!((b1.hits(), b2.hits()), (u64::from(n1), u64::from(n2)));
    let stats = lb.proxy.stats();
    assert_eq!(
        stats.h2_connections.load(Ordering::Relaxed),
        1,
        "one connection"
    );
    assert_eq!(stats.h2_requests.load(Ordering::Relaxed), 200);
    eprintln!("200 streams on one connection: b1 {n1}, b2 {n2}");
}

// ---------------------------------------------------------------------------------------------
// 4. Request bodies
// ---------------------------------------------------------------------------------------------

/// Sends `total` pattern bytes on `stream` in 64 KiB pieces as the window allows.
async fn send_pattern(stream: &mut h2::SendStream<Bytes>, total: u64) -> Result<(), h2::Error> {
    const PIECE: u64 = 64 * 1024;
    let mut offset = 0;
    while offset < total {
        let len = PIECE.min(total - offset);
        let mut piece: Bytes = (offset..offset + len).map(pattern_byte).collect();
        while !piece.is_empty() {
            stream.reserve_capacity(piece.len());
            // None: the stream is closed (alb answered and reset it).
            let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                .await
                .unwrap_or(Err(h2::Error::from(h2::Reason::STREAM_CLOSED)))?;
            let chunk = piece.split_to(granted.min(piece.len()));
            let last = offset + len == total && piece.is_empty();
            stream.send_data(chunk, last)?;
        }
        offset += len;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_one_mib_request_body_reaches_the_backend_intact() {
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "").await;
    let h2 = h2c(lb.addr).await;
    const TOTAL: u64 = 1024 * 1024;
    let request = Request::post(format!("http://{}/echo", lb.addr))
        .header("content-length", TOTAL.to_string())
        .body(())
        .unwrap();
    let mut send = h2.send.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    // The echo answers while the body is still coming: send and read at once.
    let sending = send_pattern(&mut stream, TOTAL);
    let reading = async {
        let response = response.await?;
        let status = response.status();
        let (body, _) = read_all(response.into_body()).await?;
        Ok::<_, h2::Error>((status, body))
    };
    let (sent, read) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(sending, reading)
    })
    .await
    .expect("1 MiB echoed within 10 s");
    sent.expect("body sent");
    let (status, body) = read.expect("echo read");
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, TOTAL, "echoed length");
    let wrong = body
        .iter()
        .enumerate()
        .position(|(i, b)| *b != pattern_byte(i as u64));
    assert_eq!(wrong, None, "the echoed body differs from what was sent");
    let seen = backend.last_request().unwrap();
    assert_eq!(
        seen.headers["content-length"],
        TOTAL.to_string(),
        "{:?}",
        seen.headers
    );
    assert!(
        !seen.headers.contains_key("transfer-encoding"),
        "{:?}",
        seen.headers
    );

    // Without a Content-Length the backend gets it chunked, still whole.
    let request = Request::post(format!("http://{}/count", lb.addr))
        .body(())
        .unwrap();
    let mut send = h2.send.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    let (sent, answer) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(send_pattern(&mut stream, TOTAL), async {
            let response = response.await?;
            let status = response.status();
            let (body, _) = read_all(response.into_body()).await?;
            Ok::<_, h2::Error>((status, body))
        })
    })
    .await
    .expect("counted within 10 s");
    sent.expect("body sent");
    let (status, body) = answer.expect("count read");
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, TOTAL.to_string().as_bytes())
    );
    let seen = backend.last_request().unwrap();
    assert_eq!(
        seen.headers["transfer-encoding"], "chunked",
        "{:?}",
        seen.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_max_body_bytes_gets_413() {
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "[limits]\nmax_body_bytes = \"64KiB\"\n").await;
    let h2 = h2c(lb.addr).await;
    // Declared: refused before any backend is involved.
    let request = Request::post(format!("http://{}/count", lb.addr))
        .header("content-length", (1024 * 1024).to_string())
        .body(())
        .unwrap();
    let mut send = h2.send.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    let sending = tokio::spawn(async move { send_pattern(&mut stream, 1024 * 1024).await });
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("an answer in time")
        .expect("a response");
    assert_eq!(response.status(), 413);
    sending.abort();
    assert_eq!(
        backend.hits(),
        0,
        "a declared oversize body reached the backend"
    );

    // Undeclared: cut off when the limit is passed.
    let request = Request::post(format!("http://{}/count", lb.addr))
        .body(())
        .unwrap();
    let mut send = h2.send.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    let sending = tokio::spawn(async move { send_pattern(&mut stream, 1024 * 1024).await });
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("an answer in time")
        .unwrap_or_else(|e| panic!("no response: {e}\n{}", h2.tapped.transcript()));
    assert_eq!(response.status(), 413, "{}", h2.tapped.transcript());
    sending.abort();

    // The connection still serves.
    assert_eq!(get(&h2, lb.addr, "/").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// 5. Request fields
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn host_must_match_authority_cookies_are_joined_and_connection_fields_reset_the_stream() {
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "").await;
    let (mut reader, writer) = h2raw::connect(lb.addr, &[]).await;

    // Host naming another authority than :authority: 400 from alb.
    let block = Block::request("GET", "/", "a.test").literal("host", b"b.test");
    assert!(writer.send(&h2raw::headers(1, block.bytes(), true)).await);
    let answer = reader
        .until(DEADLINE, |f| {
            f.stream == 1 && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM)
        })
        .await
        .unwrap_or_else(|end| panic!("{end:?}\n{}", reader.transcript()));
    assert_eq!(answer.status(), Some(400), "{}", reader.transcript());

    // The same authority twice is fine.
    let block = Block::request("GET", "/", "a.test").literal("host", b"A.test");
    assert!(writer.send(&h2raw::headers(3, block.bytes(), true)).await);
    let answer = reader
        .until(DEADLINE, |f| {
            f.stream == 3 && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM)
        })
        .await
        .unwrap_or_else(|end| panic!("{end:?}\n{}", reader.transcript()));
    assert_eq!(answer.status(), Some(200), "{}", reader.transcript());
    assert_eq!(backend.hits(), 1);

    // `connection: close` in a request: malformed (RFC 9113 §8.2.2), the stream is reset...
    let block = Block::request("GET", "/", "a.test").literal("connection", b"close");
    assert!(writer.send(&h2raw::headers(5, block.bytes(), true)).await);
    let answer = reader
        .until(DEADLINE, |f| {
            f.stream == 5 && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM)
        })
        .await
        .unwrap_or_else(|end| panic!("{end:?}\n{}", reader.transcript()));
    assert_eq!(answer.kind, h2raw::RST_STREAM, "{}", reader.transcript());
    assert_eq!(answer.error_code(), Some(h2raw::PROTOCOL_ERROR));
    // ... and the connection serves the next stream.
    let block = Block::request("GET", "/", "a.test");
    assert!(writer.send(&h2raw::headers(7, block.bytes(), true)).await);
    let answer = reader
        .until(DEADLINE, |f| {
            f.stream == 7 && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM)
        })
        .await
        .unwrap_or_else(|end| panic!("{end:?}\n{}", reader.transcript()));
    assert_eq!(answer.status(), Some(200), "{}", reader.transcript());
    assert_eq!(
        backend.hits(),
        2,
        "the malformed request reached the backend"
    );
    assert!(
        !reader.seen.iter().any(|f| f.kind == h2raw::GOAWAY),
        "{}",
        reader.transcript()
    );

    // Cookie split over fields, as RFC 9113 §8.2.3 allows: one Cookie for the backend.
    let h2 = h2c(lb.addr).await;
    let request = Request::get(format!("http://{}/cookies", lb.addr))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(())
        .unwrap();
    let answer = exchange(&h2.send, request, None).await.unwrap();
    assert_eq!(answer.status, 200);
    let seen = backend.last_request().unwrap();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"], "{:?}", seen.headers);
}

// ---------------------------------------------------------------------------------------------
// 6. Header lists too large, and the HPACK bomb
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_header_list_over_max_header_bytes_gets_431_and_the_connection_goes_on() {
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "[limits]\nmax_header_bytes = \"8KiB\"\n").await;
    let h2 = h2c(lb.addr).await;
    let request = Request::get(format!("http://{}/big", lb.addr))
        .header("x-big", "v".repeat(10 * 1024))
        .body(())
        .unwrap();
    let answer = tokio::time::timeout(DEADLINE, exchange(&h2.send, request, None))
        .await
        .expect("an answer in time");
    match answer {
        Ok(answer) => assert_eq!(answer.status, 431, "{}", h2.tapped.transcript()),
        Err(e) => panic!("no 431 but {e}\n{}", h2.tapped.transcript()),
    }
    assert_eq!(backend.hits(), 0);
    // Just under the limit passes.
    let request = Request::get(format!("http://{}/fits", lb.addr))
        .header("x-big", "v".repeat(7 * 1024))
        .body(())
        .unwrap();
    let answer = exchange(&h2.send, request, None).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(backend.hits(), 1);
}

/// The real binary with h2c on, its config in `dir`; returns it and its plain port.
async fn h2c_binary(dir: &TempDir, backend: &TestBackend) -> (LoggedProcess, SocketAddr) {
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{}{QUIET_HEALTH}[admin]\nlisten = \"off\"\n\
             [http2]\ncleartext = true\n",
            backends_line(&[backend])
        ),
    );
    let alb = LoggedProcess::alb(&config);
    let line = alb
        .wait_line("alb listening on ", 1, Duration::from_secs(20))
        .await;
    let port = port_after(&line, "alb listening on ");
    (alb, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Asserts a fresh connection to `addr` gets 200 at once.
async fn assert_others_served(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    let h2 = h2c(addr).await;
    let answer = get(&h2, addr, "/").await;
    assert_eq!(answer.status, 200, "another client during {what}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another client waited {:?} during {what}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_without_growing_memory() {
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("h2-hpack-bomb");
    let (mut alb, addr) = h2c_binary(&dir, &backend).await;
    // Warm up: one HTTP/2 connection served, so the baseline has its allocations.
    assert_others_served(addr, "warm-up").await;
    let (_, peak_before) = h2raw::memory_kib(alb.pid);

    // One 4,000-byte field enters the dynamic table; then 12,000 one-byte references to it in
    // the same block: 16 KB on the wire, 48 MB decoded.
    let mut block =
        Block::request("GET", "/", "bomb.test").literal_indexed("x-bomb", &[b'a'; 4000]);
    for _ in 0..12_000 {
        block = block.indexed(62);
    }
    assert!(
        block.bytes().len() <= 16_384,
        "{} bytes",
        block.bytes().len()
    );
    let headers = h2raw::headers(1, block.bytes(), true);
    let mut outcomes = Vec::new();
    let mut bombs = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let headers = headers.clone();
        bombs.spawn(async move {
            let (mut reader, writer) = h2raw::connect(addr, &[]).await;
            let _ = writer.send(&headers).await;
            let refused = reader
                .until(DEADLINE, |f| {
                    f.kind == h2raw::GOAWAY
                        || (f.stream == 1 && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM))
                })
                .await;
            let goaway = matches!(&refused, Ok(f) if f.kind == h2raw::GOAWAY);
            let closed = goaway && reader.until_closed(DEADLINE).await;
            (refused, closed, reader.transcript())
        });
    }
    while let Some(done) = bombs.join_next().await {
        outcomes.push(done.unwrap());
    }
    for (refused, _, transcript) in &outcomes {
        let frame = refused
            .as_ref()
            .unwrap_or_else(|end| panic!("the bomb was not refused: {end:?}\n{transcript}"));
        let ok = match frame.kind {
            h2raw::GOAWAY => true,
            h2raw::RST_STREAM => true,
            _ => frame.status() == Some(431),
        };
        assert!(ok, "answer to the bomb: {frame:?}\n{transcript}");
    }
    assert_eq!(
        backend.hits(),
        1,
        "a bomb reached the backend (1 is the warm-up)"
    );

    // A smaller one: 20 references, 80 KB decoded, over the 32 KiB list limit but not far:
    // 431 for the stream, and the connection (its HPACK state intact) serves the next.
    let (mut reader, writer) = h2raw::connect(addr, &[]).await;
    let mut block =
        Block::request("GET", "/", "bomb.test").literal_indexed("x-bomb", &[b'a'; 4000]);
    for _ in 0..20 {
        block = block.indexed(62);
    }
    assert!(writer.send(&h2raw::headers(1, block.bytes(), true)).await);
    let answer = reader
        .until(DEADLINE, |f| {
            f.kind == h2raw::GOAWAY
                || (f.stream == 1 && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM))
        })
        .await
        .unwrap_or_else(|end| panic!("{end:?}\n{}", reader.transcript()));
    assert_eq!(answer.status(), Some(431), "{}", reader.transcript());
    // The next request refers to the same dynamic table entry, within the limit this time.
    let block = Block::request("GET", "/", "bomb.test").indexed(62);
    assert!(writer.send(&h2raw::headers(3, block.bytes(), true)).await);
    let answer = reader
        .until(DEADLINE, |f| {
            f.kind == h2raw::GOAWAY
                || (f.stream == 3 && matches!(f.kind, h2raw::HEADERS | h2raw::RST_STREAM))
        })
        .await
        .unwrap_or_else(|end| panic!("{end:?}\n{}", reader.transcript()));
    assert_eq!(answer.status(), Some(200), "{}", reader.transcript());
    assert_eq!(backend.hits(), 2);
    let seen = backend.last_request().unwrap();
    assert_eq!(
        seen.headers["x-bomb"].len(),
        4000,
        "the indexed field reached the backend"
    );
    eprintln!(
        "80 KB header list: {}",
        reader.transcript().replace('\n', "; ")
    );
    assert_others_served(addr, "the bombs").await;
    let (rss, peak_after) = h2raw::memory_kib(alb.pid);
    let grown = peak_after.saturating_sub(peak_before);
    eprintln!(
        "hpack bomb x8: {:?}; closed: {:?}; peak RSS {peak_before} -> {peak_after} KiB (now {rss})",
        outcomes[0].0.as_ref().map(Frame::describe),
        outcomes.iter().map(|o| o.1).collect::<Vec<_>>()
    );
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
    alb.assert_running();
    alb.kill().await;
}

// ---------------------------------------------------------------------------------------------
// 7. CONTINUATION floods
// ---------------------------------------------------------------------------------------------

/// HEADERS without END_HEADERS on stream 1, then up to `frames` CONTINUATION frames (none
/// with END_HEADERS), each a fragment made by `piece`, written while the answer is read.
/// Returns the frame that ended it (GOAWAY) or what happened, whether the connection closed,
/// how many CONTINUATION frames were written before the end was seen, and the transcript.
async fn continuation_flood(
    addr: SocketAddr,
    frames: usize,
    piece: Vec<u8>,
) -> (Result<Frame, Next>, bool, usize, Duration, String) {
    let (mut reader, writer) = h2raw::connect(addr, &[]).await;
    // The server's SETTINGS first: their ACK (written as they are read) must not fall between
    // HEADERS and its CONTINUATION frames, which would be a protocol error of ours.
    reader
        .until(DEADLINE, |f| {
            f.kind == h2raw::SETTINGS && f.flags & h2raw::ACK == 0
        })
        .await
        .expect("SETTINGS from alb");
    let first = Block::request("GET", "/", "flood.test");
    assert!(
        writer
            .send(&h2raw::frame(
                h2raw::HEADERS,
                h2raw::END_STREAM,
                1,
                first.bytes()
            ))
            .await
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flood = {
        let stop = stop.clone();
        let writer = writer.clone();
        tokio::spawn(async move {
            let one = h2raw::frame(h2raw::CONTINUATION, 0, 1, &piece);
            let batch: Vec<u8> = one.repeat(16);
            let mut written = 0;
            while written < frames && !stop.load(Ordering::SeqCst) {
                if !writer.send_within(&batch, Duration::from_secs(2)).await {
                    break;
                }
                written += 16;
            }
            written
        })
    };
    let ended = reader.until(DEADLINE, |f| f.kind == h2raw::GOAWAY).await;
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let closed = matches!(ended, Err(Next::Closed)) || reader.until_closed(DEADLINE).await;
    let written = flood.await.unwrap();
    (ended, closed, written, took, reader.transcript())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_closes_the_connection_with_memory_bounded() {
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("h2-continuation");
    let (mut alb, addr) = h2c_binary(&dir, &backend).await;
    assert_others_served(addr, "warm-up").await;
    let (_, peak_before) = h2raw::memory_kib(alb.pid);

    // Thousands of small frames, each one more field.
    let small = Block::new().literal("x-c", b"v").0;
    let (ended, closed, written, took, transcript) = continuation_flood(addr, 10_000, small).await;
    let goaway = ended.unwrap_or_else(|end| panic!("no GOAWAY but {end:?}\n{transcript}"));
    assert_eq!(
        goaway.error_code(),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{transcript}"
    );
    assert!(closed, "the connection stayed open after {goaway:?}");
    assert!(took < Duration::from_secs(2), "GOAWAY after {took:?}");
    eprintln!("small CONTINUATION flood: {goaway:?} after {took:?}, {written} frames written");

    // Frames of 16 KB fields: 16 MB of header block if it were all kept.
    let big = Block::new().literal("x-pad", &[b'p'; 16_000]).0;
    let others = tokio::spawn(assert_others_served(addr, "a CONTINUATION flood"));
    let (ended, closed, written, took, transcript) = continuation_flood(addr, 1_000, big).await;
    let goaway = ended.unwrap_or_else(|end| panic!("no GOAWAY but {end:?}\n{transcript}"));
    assert!(
        matches!(
            goaway.error_code(),
            Some(h2raw::ENHANCE_YOUR_CALM) | Some(0x9)
        ),
        "{transcript}"
    );
    assert!(closed, "the connection stayed open after {goaway:?}");
    others.await.unwrap();
    eprintln!("16 KB CONTINUATION flood: {goaway:?} after {took:?}, {written} frames written");

    assert_eq!(
        backend.hits(),
        2,
        "a flooded request reached the backend (2 are clean)"
    );
    let (rss, peak_after) = h2raw::memory_kib(alb.pid);
    let grown = peak_after.saturating_sub(peak_before);
    eprintln!("peak RSS {peak_before} -> {peak_after} KiB (now {rss})");
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
    alb.assert_running();
    alb.kill().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Rapid reset
// ---------------------------------------------------------------------------------------------

/// Reads every frame of `reader` into a channel, until the connection closes or 20 s pass.
fn frames_to_channel(
    mut reader: h2raw::RawReader,
) -> (mpsc::UnboundedReceiver<Frame>, JoinHandle<bool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match reader.next(left).await {
                Next::Frame(frame) => {
                    if tx.send(frame).is_err() {
                        return false;
                    }
                }
                Next::Closed => return true,
                Next::Timeout => return false,
            }
        }
    });
    (rx, task)
}

/// Waits for a GOAWAY among the frames coming on `rx`; returns it and every frame before it.
async fn goaway_from(
    rx: &mut mpsc::UnboundedReceiver<Frame>,
    within: Duration,
) -> (Option<Frame>, Vec<Frame>) {
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(frame)) if frame.kind == h2raw::GOAWAY => return (Some(frame), before),
            Ok(Some(frame)) => before.push(frame),
            Ok(None) | Err(_) => return (None, before),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_and_reset_at_once_get_goaway_enhance_your_calm() {
    let backend = TestBackend::start("b1").await;
    backend.set_delay(Duration::from_secs(2));
    let lb = h2c_balancer(&[&backend], "").await;
    let (reader, writer) = h2raw::connect(lb.addr, &[]).await;
    let (mut rx, reading) = frames_to_channel(reader);
    let started = Instant::now();
    let attack = tokio::spawn(async move {
        let mut id = 1u32;
        let mut sent = 0;
        while sent < 1_000 {
            let mut batch = Vec::new();
            for _ in 0..50 {
                let block = Block::request("GET", "/", "reset.test");
                batch.extend_from_slice(&h2raw::headers(id, block.bytes(), true));
                batch.extend_from_slice(&h2raw::rst_stream(id, h2raw::CANCEL));
                id += 2;
            }
            if !writer.send_within(&batch, Duration::from_secs(2)).await {
                break;
            }
            sent += 50;
        }
        sent
    });
    let (goaway, _) = goaway_from(&mut rx, DEADLINE).await;
    let took = started.elapsed();
    let sent = attack.await.unwrap();
    let closed = tokio::time::timeout(DEADLINE, reading)
        .await
        .expect("closed in time")
        .unwrap();
    let goaway = goaway.expect("no GOAWAY for 1,000 streams reset at once");
    let floods = lb.proxy.stats().h2_reset_floods.load(Ordering::Relaxed);
    eprintln!(
        "rapid reset: {goaway:?} after {took:?}; {sent} streams written; {} reached the backend; \
         h2_reset_floods {floods}",
        backend.hits()
    );
    assert_eq!(
        goaway.error_code(),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{goaway:?}"
    );
    assert!(closed, "the connection stayed open after {goaway:?}");
    assert!(took < Duration::from_secs(3), "GOAWAY after {took:?}");
    // h2's guard (streams reset before alb took them) closed it, and the metrics say so.
    let stats = lb.proxy.stats().clone();
    crate::support::wait_until(DEADLINE, || {
        stats.h2_abuse_closed.load(Ordering::Relaxed) == 1
    })
    .await
    .expect("alb_h2_abuse_closed_total counts the connection");
    assert!(
        backend.hits() <= 300,
        "{} requests reached the backend",
        backend.hits()
    );
    backend.set_delay(Duration::ZERO);
    assert_others_served(lb.addr, "a reset storm").await;
}

/// Opens `batch` streams at a time (GET, each on the backend before it is cancelled), resets
/// them all, up to `total` streams or a GOAWAY; returns the GOAWAY, how many streams were reset,
/// and the connection's reader (still open when no GOAWAY came).
async fn reset_in_flight(
    lb: &TestBalancer,
    backend: &TestBackend,
    total: u32,
    batch: u32,
) -> (
    Option<Frame>,
    u32,
    h2raw::RawWriter,
    mpsc::UnboundedReceiver<Frame>,
) {
    let (reader, writer) = h2raw::connect(lb.addr, &[]).await;
    let (mut rx, _reading) = frames_to_channel(reader);
    let start_hits = backend.hits();
    let mut reset = 0u32;
    let mut frames = Vec::new();
    while reset < total {
        let first = 2 * reset + 1;
        let mut opens = Vec::new();
        let mut resets = Vec::new();
        for k in 0..batch {
            let id = first + 2 * k;
            let block = Block::request("GET", "/", "reset.test");
            opens.extend_from_slice(&h2raw::headers(id, block.bytes(), true));
            resets.extend_from_slice(&h2raw::rst_stream(id, h2raw::CANCEL));
        }
        assert!(writer.send(&opens).await, "HEADERS written");
        let want = start_hits + u64::from(reset + batch);
        // Until every stream of the batch is on the backend, or the connection is cut.
        let on_backend = wait_until(DEADLINE, || {
            while let Ok(frame) = rx.try_recv() {
                frames.push(frame);
            }
            backend.hits() >= want || frames.iter().any(|f| f.kind == h2raw::GOAWAY)
        })
        .await;
        if let Some(goaway) = frames.iter().find(|f| f.kind == h2raw::GOAWAY) {
            return (Some(goaway.clone()), reset, writer, rx);
        }
        assert!(
            on_backend.is_ok(),
            "{} of {want} requests on the backend; frames: {frames:?}",
            backend.hits()
        );
        assert!(writer.send(&resets).await, "RST_STREAM written");
        reset += batch;
    }
    let (goaway, _) = goaway_from(&mut rx, Duration::from_millis(300)).await;
    (goaway, reset, writer, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_of_streams_in_flight_over_the_cap_close_the_connection_and_under_it_do_not() {
    let backend = TestBackend::start("b1").await;
    backend.set_delay(Duration::from_secs(5));
    let lb = h2c_balancer(&[&backend], "[admin]\nlisten = \"127.0.0.1:0\"\n").await;
    let started = Instant::now();
    let (goaway, reset, _, _) = reset_in_flight(&lb, &backend, 1_080, 120).await;
    let floods = lb.proxy.stats().h2_reset_floods.load(Ordering::Relaxed);
    eprintln!(
        "cap 200/s: {goaway:?} after {reset} streams reset in {:?}; h2_reset_floods {floods}",
        started.elapsed()
    );
    let goaway = goaway.expect("no GOAWAY after resetting 1,080 streams in flight, cap 200/s");
    assert_eq!(
        goaway.error_code(),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{goaway:?}"
    );
    assert!(
        reset <= 360,
        "cut only after {reset} resets with a cap of 200 per second"
    );
    assert_eq!(floods, 1, "h2_reset_floods");
    let metrics = lb.admin_url("/metrics").await;
    let (_, _, text) = crate::support::get(&crate::support::client(), &metrics).await;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.lines().any(|l| l == "alb_h2_reset_floods_total 1"),
        "{}",
        text.lines()
            .filter(|l| l.contains("h2"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(lb);

    // The same load with the cap raised: the connection lives on and serves.
    let backend = TestBackend::start("b2").await;
    backend.set_delay(Duration::from_secs(5));
    let lb = h2c_balancer(&[&backend], "[http2]\nmax_resets_per_second = 1000000\n").await;
    let started = Instant::now();
    let (goaway, reset, writer, mut rx) = reset_in_flight(&lb, &backend, 1_080, 120).await;
    eprintln!(
        "cap 1,000,000/s: {reset} streams reset in {:?}",
        started.elapsed()
    );
    assert!(goaway.is_none(), "cut with the cap raised: {goaway:?}");
    assert_eq!(reset, 1_080);
    assert_eq!(
        backend.hits(),
        1_080,
        "every stream reached the backend before its reset"
    );
    backend.set_delay(Duration::ZERO);
    let id = 2 * reset + 1;
    let block = Block::request("GET", "/", "reset.test");
    assert!(writer.send(&h2raw::headers(id, block.bytes(), true)).await);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let answer = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(f)) if f.stream == id || f.kind == h2raw::GOAWAY => break f,
            Ok(Some(_)) => {}
            other => panic!("no answer on stream {id}: {other:?}"),
        }
    };
    assert_eq!(answer.status(), Some(200), "{answer:?}");
    assert_eq!(lb.proxy.stats().h2_reset_floods.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------------------------
// 9. The concurrent stream cap
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_advertise_the_stream_cap_and_streams_over_it_are_refused() {
    let backend = TestBackend::start("b1").await;
    backend.set_delay(Duration::from_millis(300));
    let lb = h2c_balancer(
        &[&backend],
        "[http2]\nmax_concurrent_streams = 4\nstream_window = \"100000\"\n",
    )
    .await;
    let (mut reader, writer) = h2raw::connect(lb.addr, &[]).await;
    let settings = reader
        .until(DEADLINE, |f| {
            f.kind == h2raw::SETTINGS && f.flags & h2raw::ACK == 0
        })
        .await
        .unwrap_or_else(|end| panic!("no SETTINGS: {end:?}"));
    let values = settings.settings();
    assert!(
        values.contains(&(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS, 4)),
        "{settings:?}"
    );
    assert!(
        values.contains(&(h2raw::SETTINGS_INITIAL_WINDOW_SIZE, 100_000)),
        "{settings:?}"
    );
    // (Our ACK went out as the SETTINGS were read: the cap applies from here.)
    let mut opens = Vec::new();
    for id in [1, 3, 5, 7, 9, 11] {
        let block = Block::request("GET", "/", "cap.test");
        opens.extend_from_slice(&h2raw::headers(id, block.bytes(), true));
    }
    assert!(writer.send(&opens).await);
    let mut outcome = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while outcome.len() < 6 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match reader.next(left).await {
            Next::Frame(f) if f.kind == h2raw::HEADERS => {
                outcome.insert(f.stream, format!("status {:?}", f.status()));
            }
            Next::Frame(f) if f.kind == h2raw::RST_STREAM => {
                outcome.insert(f.stream, format!("reset {:#x}", f.error_code().unwrap()));
            }
            Next::Frame(f) if f.kind == h2raw::GOAWAY => panic!("{f:?}\n{}", reader.transcript()),
            Next::Frame(_) => {}
            end => panic!("{end:?}: {outcome:?}\n{}", reader.transcript()),
        }
    }
    let expected: std::collections::BTreeMap<u32, String> = [
        (1, "status Some(200)"),
        (3, "status Some(200)"),
        (5, "status Some(200)"),
        (7, "status Some(200)"),
        (9, "reset 0x7"),
        (11, "reset 0x7"),
    ]
    .into_iter()
    .map(|(id, s)| (id, s.to_string()))
    .collect();
    assert_eq!(outcome, expected, "{}", reader.transcript());
    assert_eq!(backend.hits(), 4, "refused streams reached the backend");
}

// ---------------------------------------------------------------------------------------------
// 10. A reader that opens no window
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_opens_no_window_is_reset_after_the_write_timeout() {
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "[timeouts]\nwrite = \"500ms\"\n").await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let stalled = h2c_with(lb.addr, &builder).await;
    let request = Request::get(format!("http://{}/bytes/1048576", lb.addr))
        .body(())
        .unwrap();
    let mut send = stalled.send.clone().ready().await.unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("headers in time")
        .expect("headers");
    assert_eq!(response.status(), 200);
    let headed = Instant::now();
    let mut body = response.into_body();

    // Meanwhile another connection is served at once.
    assert_others_served(lb.addr, "a stalled stream").await;

    let ended = tokio::time::timeout(DEADLINE, body.data())
        .await
        .expect("the stalled stream ended within 5 s");
    let took = headed.elapsed();
    let error = match ended {
        Some(Err(e)) => e,
        other => panic!("not reset but {other:?}\n{}", stalled.tapped.transcript()),
    };
    assert_eq!(error.reason(), Some(h2::Reason::CANCEL), "{error}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "reset after {took:?}"
    );
    let frames = stalled.tapped.frames();
    assert!(
        frames.iter().any(|f| f.kind == h2raw::RST_STREAM
            && f.stream == 1
            && f.error_code() == Some(h2raw::CANCEL)),
        "{}",
        stalled.tapped.transcript()
    );
    assert!(
        !frames.iter().any(|f| f.kind == h2raw::DATA),
        "data beyond a zero window"
    );
    // The same connection still serves a stream that needs no window.
    let head = Request::head(format!("http://{}/", lb.addr))
        .body(())
        .unwrap();
    let answer = tokio::time::timeout(DEADLINE, exchange(&stalled.send, head, None))
        .await
        .expect("HEAD in time")
        .expect("HEAD answered");
    assert_eq!(answer.status, 200);
    eprintln!("zero-window stream reset (CANCEL) {took:?} after its headers");
}

// ---------------------------------------------------------------------------------------------
// 11. Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_the_stream_in_flight_completes() {
    let backend = TestBackend::start("b1").await;
    backend.set_delay(Duration::from_secs(1));
    let lb = h2c_balancer(&[&backend], "[timeouts]\ndrain = \"5s\"\n").await;
    let addr = lb.addr;
    let h2 = h2c(addr).await;
    let request = Request::get(format!("http://{addr}/slow"))
        .body(())
        .unwrap();
    let send = h2.send.clone();
    let slow = tokio::spawn(async move { exchange(&send, request, None).await });
    wait_until(DEADLINE, || backend.hits() == 1)
        .await
        .expect("the slow request reached the backend");
    let stopping = Instant::now();
    let stop = tokio::spawn(lb.stop());
    // GOAWAY comes while the stream is still under way.
    let tapped = h2.tapped.clone();
    wait_until(DEADLINE, || {
        tapped.frames().iter().any(|f| f.kind == h2raw::GOAWAY)
    })
    .await
    .unwrap_or_else(|_| panic!("no GOAWAY on shutdown:\n{}", tapped.transcript()));
    let answer = tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("the stream finished in time")
        .unwrap()
        .unwrap_or_else(|e| panic!("the stream in flight failed: {e}\n{}", tapped.transcript()));
    assert_eq!(
        (answer.status.as_u16(), answer.text().as_str()),
        (200, "b1")
    );
    let frames = tapped.frames();
    let goaway = frames.iter().position(|f| f.kind == h2raw::GOAWAY).unwrap();
    let response = frames
        .iter()
        .position(|f| f.kind == h2raw::HEADERS && f.stream == 1)
        .expect("response HEADERS");
    assert!(
        goaway < response,
        "GOAWAY came after the response:\n{}",
        tapped.transcript()
    );
    assert_eq!(
        frames[goaway].error_code(),
        Some(h2raw::NO_ERROR),
        "{:?}",
        frames[goaway]
    );
    // No new stream is taken once shutdown has begun.
    let late = Request::get(format!("http://{addr}/late"))
        .body(())
        .unwrap();
    let refused = tokio::time::timeout(DEADLINE, exchange(&h2.send, late, None))
        .await
        .expect("refused in time");
    assert!(
        refused.is_err(),
        "a stream opened after GOAWAY was served: {refused:?}"
    );
    tokio::time::timeout(DEADLINE, stop)
        .await
        .expect("the balancer stopped once the stream was done")
        .unwrap();
    assert_eq!(backend.hits(), 1);
    eprintln!(
        "shutdown: GOAWAYs {:?}; stopped {:?} after it began",
        frames
            .iter()
            .filter(|f| f.kind == h2raw::GOAWAY)
            .collect::<Vec<_>>(),
        stopping.elapsed()
    );
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_after_keepalive_idle() {
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "[timeouts]\nkeepalive_idle = \"300ms\"\n").await;
    let h2 = h2c(lb.addr).await;
    assert_eq!(get(&h2, lb.addr, "/").await.status, 200);
    let idle = Instant::now();
    let H2 { send, tapped, conn } = h2;
    let ended = tokio::time::timeout(DEADLINE, conn).await;
    let took = idle.elapsed();
    assert!(
        ended.is_ok(),
        "the idle connection is still open:\n{}",
        tapped.transcript()
    );
    let goaway = tapped
        .frames()
        .into_iter()
        .find(|f| f.kind == h2raw::GOAWAY)
        .unwrap_or_else(|| panic!("closed without GOAWAY:\n{}", tapped.transcript()));
    assert_eq!(goaway.error_code(), Some(h2raw::NO_ERROR));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed {took:?} after the last stream"
    );
    drop(send);
}

// ---------------------------------------------------------------------------------------------
// gRPC: alb's own failures in gRPC's terms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_grpc_call_gets_alb_made_failures_as_grpc_status() {
    // A backend address nobody listens on: 502 from alb.
    let closed = ClosedPort::new();
    let dead = closed.addr();
    let lb = TestBalancer::start(&format!(
        "backends = [\"http://{dead}\"]\n{QUIET_HEALTH}[passive_health]\nenabled = false\n\
         [http2]\ncleartext = true\n"
    ))
    .await;
    let h2 = h2c(lb.addr).await;
    let call = Request::post(format!("http://{}/pkg.Service/Method", lb.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let message = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let answer = tokio::time::timeout(DEADLINE, exchange(&h2.send, call, Some(message)))
        .await
        .expect("an answer in time")
        .expect("a response");
    assert_eq!(
        answer.status, 200,
        "trailers-only answers are HTTP 200: {answer:?}"
    );
    assert_eq!(
        answer.headers["grpc-status"], "14",
        "UNAVAILABLE: {answer:?}"
    );
    // A gRPC client reads grpc-status only from a response that is gRPC's.
    let types: Vec<_> = answer.headers.get_all("content-type").iter().collect();
    assert_eq!(types, ["application/grpc"], "{answer:?}");
    assert!(
        answer.body.is_empty() && answer.trailers.is_none(),
        "{answer:?}"
    );
    // The same failure for a plain request is the HTTP status.
    let plain = get(&h2, lb.addr, "/").await;
    assert!(matches!(plain.status.as_u16(), 502 | 503), "{plain:?}");
}

// ---------------------------------------------------------------------------------------------
// 12. Load: h2load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_2000_requests_over_4_connections_all_succeed() {
    let Some(h2load) = which("h2load") else {
        crate::support::prerequisite::missing(
            "h2load_2000_requests_over_4_connections_all_succeed",
            "h2load not installed (apt-get install nghttp2-client)",
        );
        return;
    };
    let b1 = TestBackend::start("b1").await;
    let b2 = TestBackend::start("b2").await;
    let lb = h2c_balancer(&[&b1, &b2], "").await;
    let run = tokio::process::Command::new(h2load)
        .args(["-n", "2000", "-c", "4", "-m", "20", &lb.url("/")])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("h2load finished within 60 s")
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{text}"))
            .to_string()
    };
    let requests = line("requests:");
    let statuses = line("status codes:");
    assert!(
        requests.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{requests}\n{text}"
    );
    assert!(
        statuses.starts_with("status codes: 2000 2xx,"),
        "{statuses}\n{text}"
    );
    assert!(text.contains("Application protocol: h2c"), "{text}");
    assert_eq!(b1.hits() + b2.hits(), 2000);
    assert!(
        b1.hits() > 0 && b2.hits() > 0,
        "{} / {}",
        b1.hits(),
        b2.hits()
    );
    let finished = line("finished in");
    eprintln!(
        "h2load: {finished}; {requests}; b1 {} b2 {}",
        b1.hits(),
        b2.hits()
    );
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
