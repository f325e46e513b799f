//! The dashboard in a real headless browser (Debian's chromium driven through chromedriver's
//! WebDriver API), with traffic flowing over two backends: one is stopped and the page must show
//! it DOWN on its health timeline within 3 s while the charts go on moving; then its Drain button
//! (which asks for the admin token in a prompt) must drain it, as the API then reports. A
//! screenshot is kept in `target/test-artifacts/dashboard.png`, and also written to the path in
//! `ALB_SCREENSHOT` (relative to the crate) when set: `ALB_SCREENSHOT=docs/dashboard.png` makes
//! the README's, after a minute of traffic so the charts have a history to show.
//!
//! A second test runs the real `alb demo` and turns its backends' faults with the page's "Demo
//! faults" panel: Kill shows the backend DOWN on its timeline within 3 s, Revive UP again
//! (screenshots `dashboard-demo.png` and, 400 px wide, `dashboard-demo-narrow.png`).
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the tests say so
//! and pass, unless `CI` or `ALB_REQUIRE_BROWSER` is set, where they fail. They take the browser
//! one at a time.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine;
use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
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

/// Whether chromium and chromedriver are there; without them `test` says SKIPPED, except under
/// CI or with `ALB_REQUIRE_BROWSER` set, where it fails.
fn browser_installed(test: &str) -> bool {
    if std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    assert!(
        std::env::var_os("ALB_REQUIRE_BROWSER").is_none(),
        "chromium and chromium-driver are needed for the dashboard test"
    );
    crate::support::prerequisite::missing(
        test,
        "chromium/chromium-driver not installed (apt-get install chromium chromium-driver)",
    );
    false
}

/// One browser at a time: the tests time what the page shows, and two chromiums side by side
/// on a small machine would slow each other down.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A headless chromium driven through chromedriver, with its WebDriver session open.
struct Browser {
    driver: tokio::process::Child,
    /// The session's URL, to which WebDriver commands are relative.
    session: String,
    profile: std::path::PathBuf,
}

impl Browser {
    async fn start(name: &str) -> Browser {
        // chromedriver is told its port: one kept bound (not listening) until it listens there,
        // which it says on its standard output.
        let port = ReservedPort::new();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", port.port()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let started = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("started successfully") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(started, Ok(true), "chromedriver did not come up");
        // The rest of its output is read and dropped, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = format!("http://127.0.0.1:{}", port.port());
        drop(port);
        let status = webdriver("GET", &format!("{base}/status"), None).await;
        assert_eq!(status["ready"], true, "chromedriver is not ready: {status}");
        let profile =
            std::env::temp_dir().join(format!("alb-chromium-{}-{name}", std::process::id()));
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
        Browser {
            driver,
            session,
            profile,
        }
    }

    async fn open(&self, url: &str) {
        webdriver(
            "POST",
            &format!("{}/url", self.session),
            Some(json!({"url": url})),
        )
        .await;
    }

    /// Saves a screenshot as `target/test-artifacts/{file}` and returns the PNG.
    async fn screenshot(&self, file: &str) -> Vec<u8> {
        let shot = webdriver("GET", &format!("{}/screenshot", self.session), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), &png).unwrap();
        png
    }

    async fn stop(mut self) {
        webdriver("DELETE", &self.session, None).await;
        let _ = self.driver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_backend_going_down_and_drains_it() {
    let _cpu = crate::support::cpu::shared().await;
    if !browser_installed("the_dashboard_shows_a_backend_going_down_and_drains_it") {
        return;
    }
    let _one_browser = BROWSER.lock().await;
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

    let browser = Browser::start("drain").await;
    let session = browser.session.clone();
    browser.open(&dashboard).await;

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

    let png = browser.screenshot("dashboard.png").await;
    if let Some(path) = screenshot_to {
        std::fs::write(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
            &png,
        )
        .unwrap();
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

    browser.stop().await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    lb.stop().await;
    a.stop().await;
}

const ALB: &str = env!("CARGO_BIN_EXE_alb");

/// The address right after `prefix` in the first line of `process` that holds it.
async fn address_after(process: &binary::LoggedProcess, prefix: &str) -> std::net::SocketAddr {
    let line = process.wait_line(prefix, 1, Duration::from_secs(10)).await;
    let start = line.find(prefix).expect("the line holds the prefix") + prefix.len();
    let rest = &line[start..];
    let end = rest.find([' ', '"', '(', ',', '/']).unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

/// Backend `url`'s `state` in `/api/backends`.
async fn api_state(admin: &str, url: &str) -> String {
    let snapshot = admin_json(&format!("{admin}/api/backends")).await;
    snapshot["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["url"] == url)
        .and_then(|b| b["state"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// What the "Demo faults" panel shows of demo backend `n`: its row's `data-killed`,
/// `data-latency` and `data-error-rate`, and the menus' values (all empty without the panel).
async fn demo_row(session: &str, n: usize) -> [String; 5] {
    let v = script(
        session,
        &format!(
            "const panel = document.getElementById('demo');
             const row = panel && !panel.hidden && panel.querySelector('[data-demo=\"{n}\"]');
             if (!row) return ['', '', '', '', ''];
             return [row.dataset.killed, row.dataset.latency, row.dataset.errorRate,
                     row.querySelector('select[data-knob=\"latency\"]').value,
                     row.querySelector('select[data-knob=\"errors\"]').value];"
        ),
    )
    .await;
    std::array::from_fn(|i| v[i].as_str().unwrap_or_default().to_string())
}

/// Polls the panel until `done` holds for backend `n`'s row, or `within` passes.
async fn wait_demo_row(
    session: &str,
    n: usize,
    within: Duration,
    done: impl Fn(&[String; 5]) -> bool,
) -> [String; 5] {
    let deadline = Instant::now() + within;
    loop {
        let row = demo_row(session, n).await;
        if done(&row) || Instant::now() >= deadline {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /api/demo/backends` until `done` holds for backend `n` (1 or 2), or 3 s pass.
async fn wait_knobs(admin: &str, n: usize, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let listed = admin_json(&format!("{admin}/api/demo/backends")).await;
        let knobs = listed[n - 1].clone();
        if done(&knobs) || Instant::now() >= deadline {
            return knobs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real `alb demo`: its "Demo faults" panel kills demo-1 (the API says killed, the timeline
/// DOWN within 3 s of the click), revives it (UP again), and sets its latency and error rate;
/// the page fits a narrow screen. Without the demo (an in-process balancer) no panel shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_panel_kills_and_revives_a_demo_backend() {
    let _cpu = crate::support::cpu::shared().await;
    if !browser_installed("the_demo_panel_kills_and_revives_a_demo_backend") {
        return;
    }
    let _one_browser = BROWSER.lock().await;
    let mut alb = binary::LoggedProcess::spawn_with_stdout(
        "alb",
        std::path::Path::new(ALB),
        &["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        "info,alb::access=off",
    );
    let first = address_after(&alb, "backend demo-1 at http://").await;
    let balancer = address_after(&alb, "balancer on http://").await;
    let admin = format!(
        "http://{}",
        address_after(&alb, "admin listening on http://").await
    );
    let demo1 = format!("http://{first}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while api_state(&admin, &demo1).await != "up" {
        assert!(Instant::now() < deadline, "demo-1 never UP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Light traffic, ten requests a second, as a newcomer would send: a failed connect asks for
    // an early probe, so two failed probes confirm demo-1 DOWN well within a second of the kill,
    // before passive health could eject it (5 failures in a row; its 10 s would outlast the revive).
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), format!("http://{balancer}/"));
        tokio::spawn(async move {
            let c = client();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let _ = c
                    .request(Request::get(&url).body(full(Bytes::new())).unwrap())
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let browser = Browser::start("demo").await;
    let session = browser.session.clone();
    browser.open(&format!("{admin}/")).await;
    let row = wait_demo_row(&session, 1, Duration::from_secs(10), |r| r[0] == "false").await;
    assert_eq!(
        row,
        ["false", "0", "0", "0", "0"].map(String::from),
        "the panel shows demo-1 live, no latency, no errors"
    );
    let (up, ok) = wait_page(&session, &demo1, Duration::from_secs(10), |s| {
        s.latest_state == "up"
    })
    .await;
    assert!(ok, "demo-1 never UP on the page: {up:?}");

    // Kill: the API says killed at once, the page's timeline says DOWN within 3 s of the click.
    let clicked = Instant::now();
    click(
        &session,
        "#demo [data-demo=\"1\"] button[data-knob=\"kill\"]",
    )
    .await;
    let knobs = wait_knobs(&admin, 1, |k| k["killed"] == true).await;
    assert_eq!(knobs["killed"], true, "{knobs}");
    assert_eq!(knobs["name"], "demo-1", "{knobs}");
    let (down, ok) = wait_page(
        &session,
        &demo1,
        Duration::from_secs(3).saturating_sub(clicked.elapsed()),
        |s| s.latest_state == "down",
    )
    .await;
    let took = clicked.elapsed();
    assert!(
        ok,
        "demo-1 not DOWN on the page within 3 s of Kill: {down:?}"
    );
    eprintln!("demo-1 shown DOWN {took:?} after Kill was clicked");
    let row = wait_demo_row(&session, 1, Duration::from_secs(2), |r| r[0] == "true").await;
    assert_eq!(row[0], "true", "the panel shows demo-1 killed");
    browser.screenshot("dashboard-demo.png").await;

    // Revive: the API says live, the timeline UP again (two passing probes a second apart; if
    // passive health did eject demo-1 on a slow machine, once the 10 s ejection is over).
    let clicked = Instant::now();
    click(
        &session,
        "#demo [data-demo=\"1\"] button[data-knob=\"revive\"]",
    )
    .await;
    let knobs = wait_knobs(&admin, 1, |k| k["killed"] == false).await;
    assert_eq!(knobs["killed"], false, "{knobs}");
    let (up, ok) = wait_page(&session, &demo1, Duration::from_secs(12), |s| {
        s.latest_state == "up"
    })
    .await;
    assert!(
        ok,
        "demo-1 not UP again on the page within 12 s of Revive: {up:?}"
    );
    eprintln!(
        "demo-1 shown UP {:?} after Revive was clicked",
        clicked.elapsed()
    );
    let row = wait_demo_row(&session, 1, Duration::from_secs(2), |r| r[0] == "false").await;
    assert_eq!(row[0], "false", "the panel shows demo-1 live");

    // The menus: 200 ms of latency and 30 % errors, then both back to 0.
    for (option, field, value) in [
        ("latency\"] option[value=\"200\"]", "latency_ms", json!(200)),
        ("errors\"] option[value=\"0.3\"]", "error_rate", json!(0.3)),
        ("latency\"] option[value=\"0\"]", "latency_ms", json!(0)),
        ("errors\"] option[value=\"0\"]", "error_rate", json!(0.0)),
    ] {
        click(
            &session,
            &format!("#demo [data-demo=\"1\"] select[data-knob=\"{option}"),
        )
        .await;
        let knobs = wait_knobs(&admin, 1, |k| k[field] == value).await;
        assert_eq!(knobs[field], value, "{knobs}");
    }
    let row = wait_demo_row(&session, 1, Duration::from_secs(2), |r| {
        r[1] == "0" && r[2] == "0"
    })
    .await;
    assert_eq!(row, ["false", "0", "0", "0", "0"].map(String::from));

    // A narrow screen: nothing wider than the window.
    webdriver(
        "POST",
        &format!("{session}/window/rect"),
        Some(json!({"width": 400, "height": 1400})),
    )
    .await;
    // Laid out at the new width: the page sees it, and two frames have been drawn since.
    let resized = webdriver(
        "POST",
        &format!("{session}/execute/async"),
        Some(json!({"script": "const done = arguments[arguments.length - 1];\
            const drawn = () => requestAnimationFrame(() => requestAnimationFrame(() => done(true)));\
            if (window.innerWidth <= 400) { drawn(); } else {\
              window.addEventListener('resize', () => { if (window.innerWidth <= 400) drawn(); }); }",
            "args": []})),
    )
    .await;
    assert_eq!(resized, true, "the window did not narrow to 400 px");
    let widths = script(
        &session,
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
    )
    .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the page scrolls sideways at 400 px: {widths}"
    );
    script(
        &session,
        "document.getElementById('demo').scrollIntoView();",
    )
    .await;
    browser.screenshot("dashboard-demo-narrow.png").await;

    // Without `alb demo` the endpoint is a 404 and no panel shows.
    let a = TestBackend::start("a").await;
    let lb = TestBalancer::start(&format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        backends_line(&[&a])
    ))
    .await;
    let (status, _, _) = get(&client(), &lb.admin_url("/api/demo/backends").await).await;
    assert_eq!(status, 404);
    browser.open(&lb.admin_url("/").await).await;
    let (shown, ok) = wait_page(&session, &a.url(), Duration::from_secs(10), |s| {
        s.latest_state == "up"
    })
    .await;
    assert!(ok, "the plain page never showed a UP: {shown:?}");
    let hidden = script(
        &session,
        "const p = document.getElementById('demo');
         return [p.hidden, p.getBoundingClientRect().height, document.querySelectorAll('.demo').length];",
    )
    .await;
    assert_eq!(
        hidden,
        json!([true, 0, 0]),
        "no demo panel without the demo"
    );

    browser.stop().await;
    lb.stop().await;
    a.stop().await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    binary::LoggedProcess::signal(alb.pid, "-TERM");
    let exit = alb.exit_status(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "alb demo exits 0 on SIGTERM");
}
