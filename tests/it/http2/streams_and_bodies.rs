//! One connection's streams picked one by one, request bodies, and request fields.

use super::*;

// ---------------------------------------------------------------------------------------------
// 3. One connection, many streams, a pick for each
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_one_connection_are_spread_over_the_backends() {
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
