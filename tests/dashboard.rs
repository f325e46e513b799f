//! The live dashboard in a real headless browser (Debian's chromium driven through chromedriver's
//! WebDriver API): loaded while traffic flows, its numbers must change; a screenshot is kept in
//! `target/test-artifacts/dashboard.png`.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the test says so
//! and passes, unless `CI` or `ALB_REQUIRE_BROWSER` is set, where it fails.

mod common;

use std::net::TcpListener as StdListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::*;
use http::Request;
use serde_json::{Value, json};
use tokio::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

async fn webdriver(method: &str, url: &str, body: Option<Value>) -> Value {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(full(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let (status, _, body) = send(&client(), request).await;
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert!(
        status.is_success(),
        "webdriver {method} {url}: {status} {value}"
    );
    value["value"].clone()
}

/// The numbers the page shows, per backend row: (requests, requests/s).
async fn page_numbers(session: &str) -> Vec<(String, u64, f64)> {
    let script = "return Array.from(document.querySelectorAll('#rows tr')).map(r => \
        [r.dataset.backend, r.querySelector('.requests').textContent, r.querySelector('.rps').textContent]);";
    let rows = webdriver(
        "POST",
        &format!("{session}/execute/sync"),
        Some(json!({"script": script, "args": []})),
    )
    .await;
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let text = |i: usize| r[i].as_str().unwrap_or_default().to_string();
                    (
                        text(0),
                        text(1).parse().unwrap_or(0),
                        text(2).parse().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_numbers() {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("ALB_REQUIRE_BROWSER").is_some();
        assert!(
            !required,
            "chromium and chromium-driver are needed for the dashboard test"
        );
        eprintln!(
            "SKIPPED: chromium/chromium-driver not installed (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        backends_line(&[&a, &b])
    ))
    .await;
    let dashboard = lb.admin_url("/").await;

    // Steady, bounded traffic while the page is open.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), lb.url("/"));
        tokio::spawn(async move {
            let c = client();
            for _ in 0..200_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let _ = c
                    .request(Request::get(&url).body(full(Bytes::new())).unwrap())
                    .await;
            }
        })
    };

    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        let probe = Request::get(format!("{base}/status"))
            .body(full(Bytes::new()))
            .unwrap();
        if let Ok(r) = client().request(probe).await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "chromedriver did not come up");
    let profile = std::env::temp_dir().join(format!("alb-chromium-{}", std::process::id()));
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1200,500",
                     format!("--user-data-dir={}", profile.display())]
        }
    }}});
    let created = webdriver("POST", &format!("{base}/session"), Some(capabilities)).await;
    let session = format!(
        "{base}/session/{}",
        created["sessionId"].as_str().expect("session id")
    );
    webdriver(
        "POST",
        &format!("{session}/url"),
        Some(json!({"url": dashboard})),
    )
    .await;

    // The page fills in from the event stream and its numbers move with the traffic.
    let mut first = Vec::new();
    for _ in 0..100 {
        first = page_numbers(&session).await;
        if first.len() == 2 && first.iter().any(|r| r.1 > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first.len(), 2, "two backend rows: {first:?}");
    let mut later = Vec::new();
    for _ in 0..100 {
        later = page_numbers(&session).await;
        let grew = later.iter().zip(&first).any(|(l, f)| l.1 > f.1);
        if grew && later.iter().any(|r| r.2 > 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        later.iter().zip(&first).any(|(l, f)| l.1 > f.1),
        "request counts did not change: {first:?} then {later:?}"
    );
    assert!(
        later.iter().any(|r| r.2 > 0.0),
        "no requests/s shown: {later:?}"
    );
    assert!(later.iter().any(|r| r.0 == a.url()) && later.iter().any(|r| r.0 == b.url()));

    let shot = webdriver("GET", &format!("{session}/screenshot"), None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.png"), &png).unwrap();

    webdriver("DELETE", &session, None).await;
    let _ = driver.kill().await;
    let _ = std::fs::remove_dir_all(&profile);
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    lb.stop().await;
    a.stop().await;
    b.stop().await;
}
