//! `alb run` and `alb demo` driven by signals: graceful shutdown, start-up edges, health
//! transitions in the log.

use super::*;

/// `curl -si URL`: status code, the x-backend header, the body.
async fn curl(url: &str) -> (u16, String, String) {
    let output = Command::new("/usr/bin/curl")
        .args(["-si", "--max-time", "5", url])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let backend = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("x-backend"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    (status, backend, body.to_string())
}

#[tokio::test]
async fn demo_balances_over_both_backends_and_exits_cleanly_on_sigterm() {
    let _cpu = crate::support::cpu::shared().await;
    let mut alb = Alb::spawn(&["demo", "--listen", "127.0.0.1:0"]);
    let mut stdout = BufReader::new(alb.stdout.take().unwrap()).lines();
    let mut backend_urls = Vec::new();
    let addr = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = stdout
                .next_line()
                .await
                .expect("read stdout")
                .expect("demo stdout ended early");
            if let Some(rest) = line.trim().strip_prefix("backend demo-") {
                backend_urls.push(rest.split_once(" at ").expect("backend line").1.to_string());
            }
            if line.contains("alb demo: balancer on http://") {
                return address_after(&line, "balancer on http://");
            }
        }
    })
    .await
    .expect("demo prints its address");
    assert_eq!(backend_urls.len(), 2, "two demo backends announced");
    assert_ne!(backend_urls[0], backend_urls[1]);
    assert!(
        !backend_urls
            .iter()
            .any(|u| u.ends_with(&format!(":{}", addr.port())))
    );

    let url = format!("http://{addr}/");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (status, backend, body) = curl(&url).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            backend == "demo-1" || backend == "demo-2",
            "x-backend: {backend:?}"
        );
        assert_eq!(body, format!("Hello from {backend}: GET /\n"));
        seen.push(backend);
    }
    seen.sort();
    assert_eq!(
        seen,
        ["demo-1", "demo-2"],
        "two consecutive requests reach both demo backends"
    );

    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0), "demo exits 0 on SIGTERM");
    assert_eq!(alb.count("received SIGTERM"), 1);
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_and_refuses_new_connections() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("slow").await;
    backend.set_delay(Duration::from_millis(1500));
    let dir = TempDir::new("graceful");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&[], &config).await;

    let url = format!("http://{addr}/slow");
    let request = tokio::spawn(async move {
        let client = client();
        let started = Instant::now();
        let (status, headers, body) = get(&client, &url).await;
        (status, backend_of(&headers), body, started.elapsed())
    });
    wait_until(PATIENCE, || backend.hits() == 1)
        .await
        .expect("the request reaches the backend");

    alb.sigterm();
    alb.wait_line(|l| l.contains("shutting down")).await;
    match TcpStream::connect(addr).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection was accepted after shutdown began"),
    }

    let (status, from, body, took) = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("the in-flight request completes")
        .expect("request task");
    assert_eq!(status, 200);
    assert_eq!(from, "slow");
    assert_eq!(&body[..], b"slow", "the full body arrives");
    assert!(
        took >= Duration::from_millis(1400),
        "it really waited for the slow backend: {took:?}"
    );

    let status = alb.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after a graceful shutdown"
    );
    alb.read_to_eof().await;
    assert_eq!(alb.count("drained: all connections closed"), 1);
    assert_eq!(alb.count("drain timeout passed"), 0);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn health_transitions_are_logged_once_each() {
    let _cpu = crate::support::cpu::shared().await;
    let steady = TestBackend::start("steady").await;
    let flaky = TestBackend::start("flaky").await;
    let dir = TempDir::new("health");
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{}\n[health_check]\ninterval = \"200ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n",
            backends_line(&[&steady, &flaky])
        ),
    );
    let (mut alb, _) = Alb::run(&[], &config).await;
    let url = flaky.url();
    let down = format!("backend {url} is DOWN: ");
    let up = format!("backend {url} is UP again");

    let addr = flaky.stop().await;
    let down_line = alb.wait_line(|l| l.contains(&down)).await;

    // Keep it down for a few more probes, counted: a listener on its address that hangs up on
    // every connection, so each probe fails (differently) and must not log DOWN again.
    let probes = Arc::new(AtomicU64::new(0));
    let listener = listen_on(*addr).await;
    let counter = probes.clone();
    let hang_up = tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }
    });
    let waited = wait_until(PATIENCE, || probes.load(Ordering::SeqCst) >= 3).await;
    hang_up.abort();
    let _ = hang_up.await; // the listener is closed once the task is gone
    waited.expect("three more failing probes");

    let flaky = TestBackend::start_on(*addr, "flaky").await;
    alb.wait_line(|l| l.contains(&up)).await;
    // Three more passing probes must not log UP again. Probes of one backend run one after the
    // other, so once the fourth has arrived the first three have been judged (and logged).
    wait_until(PATIENCE, || flaky.probes() >= 4)
        .await
        .expect("three more passing probes");

    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(alb.count(&down), 1, "one DOWN line for {url}");
    assert_eq!(alb.count(&up), 1, "one UP line for {url}");
    assert_eq!(
        alb.count(&format!("backend {} is", steady.url())),
        0,
        "the steady backend never changed"
    );

    // `backend http://127.0.0.1:PORT is DOWN: <reason>`, as a warning, with the reason also as a field.
    assert!(down_line.contains(" WARN "), "{down_line}");
    let reason = down_line.split_once(&down).unwrap().1;
    let reason = reason
        .split_once(" backend=")
        .map_or(reason, |(r, _)| r)
        .trim();
    assert!(!reason.is_empty(), "no reason in {down_line:?}");
    assert!(
        down_line.contains(&format!("reason={reason}")),
        "{down_line}"
    );
    let up_line = alb.log.iter().find(|l| l.contains(&up)).unwrap();
    assert!(up_line.contains(" INFO "), "{up_line}");
    drop(flaky);
}

/// A supervisor may send SIGTERM as soon as it sees the readiness line: the signal handlers must
/// already be installed then, so alb drains and exits 0 instead of dying by the signal. Before the
/// fix this failed in about 40 % of tries; ten tries make a miss unlikely.
#[tokio::test]
async fn sigterm_right_after_the_listening_line_is_graceful() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("one").await;
    let dir = TempDir::new("early-sigterm");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    for attempt in 1..=10 {
        let (mut alb, _) = Alb::run(&[], &config).await;
        let status = alb.stop().await;
        assert_eq!(status.code(), Some(0), "attempt {attempt}: {status}");
    }
}
