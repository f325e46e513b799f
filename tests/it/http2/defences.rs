//! Defences against hostile clients: header lists too large, the HPACK bomb, CONTINUATION
//! floods and rapid reset.

use super::*;

// ---------------------------------------------------------------------------------------------
// 6. Header lists too large, and the HPACK bomb
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_header_list_over_max_header_bytes_gets_431_and_the_connection_goes_on() {
    let _cpu = crate::support::cpu::shared().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_without_growing_memory() {
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
