//! Malformed requests and smuggling attempts (4xx and close, nothing forwarded), head size
//! limits, pipelining and `Expect: 100-continue`.

use super::*;

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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
