//! The concurrent stream cap, a reader that opens no window, graceful shutdown, and load from
//! h2load.

use super::*;

// ---------------------------------------------------------------------------------------------
// 9. The concurrent stream cap
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_advertise_the_stream_cap_and_streams_over_it_are_refused() {
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
    let _cpu = crate::support::cpu::shared().await;
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
