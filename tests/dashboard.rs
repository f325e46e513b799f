//! The dashboard in a real headless browser (Debian's chromium driven through chromedriver's
//! WebDriver API), with traffic flowing over two backends: one is stopped and the page must show
//! it DOWN on its health timeline within 3 s while the charts go on moving; then its Drain button
//! (which asks for the admin token in a prompt) must drain it, as the API then reports. A
//! screenshot is kept in `target/test-artifacts/dashboard.png`, and also written to the path in
//! `ALB_SCREENSHOT` (relative to the crate) when set: `ALB_SCREENSHOT=docs/dashboard.png` makes
//! the README's, after a minute of traffic so the charts have a history to show.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the test says so
//! and passes, unless `CI` or `ALB_REQUIRE_BROWSER` is set, where it fails.

mod common;

use std::net::TcpListener as StdListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::*;
use http::Request;
use serde_json::{Value, json};
use tokio::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TOKEN: &str = "dashboard-test-token-42";
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

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

/// Runs `script` in the page and returns its value.
async fn script(session: &str, script: &str) -> Value {
    webdriver(
        "POST",
        &format!("{session}/execute/sync"),
        Some(json!({"script": script, "args": []})),
    )
    .await
}

/// What the page shows of one backend and of the total requests/s chart.
#[derive(Debug, Default)]
struct Seen {
    /// `data-state` of the latest span on the backend's health timeline.
    latest_state: String,
    /// Its hover text.
    latest_title: String,
    badge: String,
    /// Points drawn on the total requests/s chart, its last value, and the history it shows.
    rps_points: u64,
    rps_last: f64,
    rps_seq: u64,
}

async fn seen(session: &str, backend: &str) -> Seen {
    let js = format!(
        "const card = document.querySelector('article.backend[data-backend=\"{backend}\"]');
         const span = card && card.querySelector('svg.timeline rect.latest');
         const rps = document.querySelector('#chart-total-rps svg');
         return [span ? span.getAttribute('data-state') : '',
                 span ? span.textContent : '',
                 card ? card.querySelector('.state').textContent : '',
                 rps ? rps.getAttribute('data-points') : '0',
                 rps ? rps.getAttribute('data-last') : '0',
                 rps ? rps.getAttribute('data-seq') : '0'];"
    );
    let v = script(session, &js).await;
    let text = |i: usize| v[i].as_str().unwrap_or_default().to_string();
    Seen {
        latest_state: text(0),
        latest_title: text(1),
        badge: text(2),
        rps_points: text(3).parse().unwrap_or(0),
        rps_last: text(4).parse().unwrap_or(0.0),
        rps_seq: text(5).parse().unwrap_or(0),
    }
}

/// Polls the page until `done` holds for what it shows of `backend`, or `within` passes.
async fn wait_page(
    session: &str,
    backend: &str,
    within: Duration,
    done: impl Fn(&Seen) -> bool,
) -> (Seen, bool) {
    let deadline = Instant::now() + within;
    loop {
        let now = seen(session, backend).await;
        if done(&now) {
            return (now, true);
        }
        if Instant::now() >= deadline {
            return (now, false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET` on the admin listener, as JSON.
async fn admin_json(url: &str) -> Value {
    let (status, _, body) = get(&client(), url).await;
    assert_eq!(status, 200, "{url}");
    serde_json::from_slice(&body).expect("JSON")
}

async fn click(session: &str, css: &str) {
    let found = webdriver(
        "POST",
        &format!("{session}/element"),
        Some(json!({"using": "css selector", "value": css})),
    )
    .await;
    let id = found[ELEMENT].as_str().expect("element reference");
    webdriver(
        "POST",
        &format!("{session}/element/{id}/click"),
        Some(json!({})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_backend_going_down_and_drains_it() {
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
    let screenshot_to = std::env::var_os("ALB_SCREENSHOT");
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"500ms\"\nfall = 1\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        backends_line(&[&a, &b])
    ))
    .await;
    let dashboard = lb.admin_url("/").await;
    let b_url = b.url();
    let b_api = lb.admin_url(&format!("/api/backends/{}", b.addr)).await;

    // Steady, bounded traffic while the page is open.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), lb.url("/"));
        tokio::spawn(async move {
            let c = client();
            for _ in 0..2_000_000 {
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
        "unhandledPromptBehavior": "ignore",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,1900",
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

    // The page fills in from the history: b UP on its timeline, requests/s drawn.
    let (before, ok) = wait_page(&session, &b_url, Duration::from_secs(10), |s| {
        s.latest_state == "up" && s.rps_points >= 2 && s.rps_last > 0.0
    })
    .await;
    assert!(ok, "the page never showed b UP with traffic: {before:?}");
    if screenshot_to.is_some() {
        // A minute of history before the failure, for the README's picture.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let before = seen(&session, &b_url).await;

    // Stop b like a crash: within 3 s the page shows it DOWN, with the probe's reason on hover.
    let stopped_at = Instant::now();
    b.stop().await;
    let (down, ok) = wait_page(&session, &b_url, Duration::from_secs(3), |s| {
        s.latest_state == "down"
    })
    .await;
    let took = stopped_at.elapsed();
    assert!(ok, "b not DOWN on the page within 3 s: {down:?}");
    assert!(
        down.latest_title.starts_with("DOWN") && down.latest_title.contains("health check failed"),
        "reason on hover: {:?}",
        down.latest_title
    );
    eprintln!("b shown DOWN {took:?} after it stopped");
    // The charts went on: newer samples, more points, and a's traffic still counted.
    assert!(down.rps_seq > before.rps_seq, "{before:?} then {down:?}");
    assert!(
        down.rps_points > before.rps_points,
        "{before:?} then {down:?}"
    );
    let (moving, ok) = wait_page(&session, &b_url, Duration::from_secs(3), |s| {
        s.rps_seq > down.rps_seq && s.rps_last > 0.0
    })
    .await;
    assert!(ok, "requests/s chart stopped moving: {moving:?}");

    // The history endpoint tells the same story.
    let history = admin_json(&lb.admin_url("/api/history").await).await;
    let b_history = history["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|h| h["url"] == b_url.as_str()))
        .expect("b in the history");
    let states = b_history["states"].as_array().expect("states");
    assert_eq!(states.first().map(|s| &s["state"]), Some(&json!("up")));
    assert_eq!(states.last().map(|s| &s["state"]), Some(&json!("down")));
    assert_eq!(
        history["total"]["rps"].as_array().map(Vec::len),
        history["time_ms"].as_array().map(Vec::len)
    );

    // Drain b with its button: the page asks for the token, and the API then says draining.
    click(
        &session,
        &format!("article.backend[data-backend=\"{b_url}\"] button[data-action=\"drain\"]"),
    )
    .await;
    webdriver(
        "POST",
        &format!("{session}/alert/text"),
        Some(json!({"text": TOKEN})),
    )
    .await;
    webdriver("POST", &format!("{session}/alert/accept"), Some(json!({}))).await;
    let mut state = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        state = admin_json(&b_api).await;
        if state["state"] == "draining" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "draining", "{state}");
    assert_eq!(state["admin"], "draining", "{state}");
    let (drained, ok) = wait_page(&session, &b_url, Duration::from_secs(3), |s| {
        s.badge == "draining" && s.latest_state == "draining"
    })
    .await;
    assert!(ok, "the page did not show b draining: {drained:?}");
    if screenshot_to.is_some() {
        tokio::time::sleep(Duration::from_secs(15)).await;
    }

    let shot = webdriver("GET", &format!("{session}/screenshot"), None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.png"), &png).unwrap();
    if let Some(path) = screenshot_to {
        std::fs::write(root.join(path), &png).unwrap();
    }

    // The token was kept for the session: Enable goes through without asking again (a prompt
    // left open would fail the next command).
    click(
        &session,
        &format!("article.backend[data-backend=\"{b_url}\"] button[data-action=\"enable\"]"),
    )
    .await;
    let mut state = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        state = admin_json(&b_api).await;
        if state["admin"] == "enabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["admin"], "enabled", "{state}");
    assert_eq!(state["state"], "down", "still dead, so DOWN: {state}");

    webdriver("DELETE", &session, None).await;
    let _ = driver.kill().await;
    let _ = std::fs::remove_dir_all(&profile);
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    lb.stop().await;
    a.stop().await;
}
