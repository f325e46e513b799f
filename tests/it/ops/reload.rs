//! Hot reload of the real binary under steady load: SIGHUP and the admin API re-read the config;
//! backends come and go, weights and the algorithm change, an invalid file is refused, and no
//! request fails.

use std::time::Duration;

use crate::support::binary::LoggedProcess;
use crate::support::*;
use bytes::Bytes;

const TOKEN: &str = "reload-token-0123456789";

fn address_after(line: &str, marker: &str) -> String {
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    rest.split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("http://")
        .to_string()
}

fn config(backends: &[(&TestBackend, u32)], algorithm: &str) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\nalgorithm = \"{algorithm}\"\naccess_log = false\n\
         [health_check]\ninterval = \"200ms\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    );
    for (b, weight) in backends {
        text.push_str(&format!(
            "[[backend]]\nurl = \"{}\"\nweight = {weight}\n",
            b.url()
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_request() {
    let _cpu = crate::support::cpu::shared().await;
    let (a, b, c) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    );
    let dir = TempDir::new("reload");
    let path = dir.0.join("alb.toml");
    std::fs::write(&path, config(&[(&a, 1), (&b, 1)], "least_conn")).unwrap();
    let alb = LoggedProcess::alb(&path);
    let addr = address_after(
        &alb.wait_line("alb listening on", 1, Duration::from_secs(10))
            .await,
        "alb listening on ",
    );
    let admin = address_after(
        &alb.wait_line("admin listening on", 1, Duration::from_secs(10))
            .await,
        "admin listening on ",
    );

    let load = SteadyLoad::start(&format!("http://{addr}/"), 8, 20_000);

    load.progress(1000).await;
    // 1. SIGHUP: add c.
    std::fs::write(&path, config(&[(&a, 1), (&b, 1), (&c, 1)], "least_conn")).unwrap();
    LoggedProcess::signal(alb.pid, "-HUP");
    alb.wait_line("configuration applied", 1, Duration::from_secs(10))
        .await;
    load.progress(1000).await;
    assert!(c.hits() > 0, "the added backend serves");

    // 2. Admin API: weights and algorithm change.
    std::fs::write(&path, config(&[(&a, 1), (&b, 3), (&c, 1)], "round_robin")).unwrap();
    let request = http::Request::post(format!("http://{admin}/api/reload"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(&client(), request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    alb.wait_line("configuration applied", 2, Duration::from_secs(10))
        .await;
    // The admin API shows the new weights...
    let request = http::Request::get(format!("http://{admin}/api/backends"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(&client(), request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let weights: Vec<(String, u64)> = listed["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of backends: {listed}"))
        .iter()
        .map(|b| {
            (
                b["url"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        vec![(a.url(), 1), (b.url(), 3), (c.url(), 1)],
        "{listed}"
    );
    // ...and the traffic follows them by round robin: 1:3:1, give or take the requests that were
    // in flight across the reload (8 clients).
    let before = [a.hits(), b.hits(), c.hits()];
    load.progress(1000).await;
    let after = [a.hits(), b.hits(), c.hits()];
    let delta: Vec<f64> = (0..3).map(|i| (after[i] - before[i]) as f64).collect();
    let total: f64 = delta.iter().sum();
    let shares: Vec<f64> = delta.iter().map(|d| d / total).collect();
    assert!(
        (shares[1] - 0.6).abs() < 0.05
            && (shares[0] - 0.2).abs() < 0.05
            && (shares[2] - 0.2).abs() < 0.05,
        "shares a, b, c {shares:?} after weights 1, 3, 1 under round robin"
    );

    // 3. An invalid file is refused and the running configuration keeps serving.
    std::fs::write(&path, "backends = []\nalgorithm = \"fastest\"\n").unwrap();
    LoggedProcess::signal(alb.pid, "-HUP");
    alb.wait_line("reload refused", 1, Duration::from_secs(10))
        .await;
    // The problems follow on their own lines, each naming its key.
    alb.wait_line("algorithm: unknown algorithm", 1, Duration::from_secs(10))
        .await;
    alb.wait_line("backends: no backends", 1, Duration::from_secs(10))
        .await;
    load.progress(1000).await;

    // 4. SIGHUP: remove a.
    std::fs::write(&path, config(&[(&b, 1), (&c, 1)], "round_robin")).unwrap();
    LoggedProcess::signal(alb.pid, "-HUP");
    alb.wait_line("configuration applied", 3, Duration::from_secs(10))
        .await;
    load.progress(100).await;
    let a_hits = a.hits();
    load.progress(500).await;
    let (sent, failed) = load.finish().await;
    println!(
        "reload: {sent} requests during 4 reloads (1 refused), {failed} failed; a={} b={} c={}",
        a.hits(),
        b.hits(),
        c.hits()
    );
    assert_eq!(failed, 0, "failed requests out of {sent}");
    assert_eq!(
        a.hits(),
        a_hits,
        "the removed backend got traffic after its removal"
    );
    LoggedProcess::signal(alb.pid, "-TERM");
    let mut alb = alb;
    let status = alb.exit_status(Duration::from_secs(10)).await;
    assert!(status.success());
    for backend in [a, b, c] {
        backend.stop().await;
    }
}
