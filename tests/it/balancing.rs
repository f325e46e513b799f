//! Distribution of requests over backends, per algorithm, through the real proxy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// Sends `total` GETs from `workers` concurrent clients; returns how many each backend answered.
async fn spread(lb: &TestBalancer, workers: usize, total: usize) -> HashMap<String, usize> {
    let url = Arc::new(lb.url("/"));
    let per_worker = total / workers;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut seen = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let (status, headers, _) = get(&c, &url).await;
                assert_eq!(status, 200);
                seen.push(backend_of(&headers));
            }
            seen
        }));
    }
    let mut counts = HashMap::new();
    for task in tasks {
        for name in task.await.unwrap() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 / total as f64
}

/// A fast and a slow backend (their delays in ms) behind `algorithm`.
async fn fast_and_slow(algorithm: &str, fast_ms: u64, slow_ms: u64) -> Running {
    let scenario = Scenario::new()
        .backends(["fast", "slow"])
        .algorithm(algorithm)
        .quiet_health()
        .start()
        .await;
    scenario
        .backend("fast")
        .set_delay(Duration::from_millis(fast_ms));
    scenario
        .backend("slow")
        .set_delay(Duration::from_millis(slow_ms));
    scenario
}

/// `heavy` (weight 3) and `light` (weight 1) behind `algorithm`.
async fn heavy_and_light(algorithm: &str) -> Running {
    Scenario::new()
        .backends(["heavy", "light"])
        .weights([3, 1])
        .algorithm(algorithm)
        .quiet_health()
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_prefers_the_fast_backend() {
    let _cpu = crate::support::cpu::alone().await;
    let scenario = fast_and_slow("least_conn", 1, 100).await;
    let counts = spread(&scenario.lb, 16, 1600).await;
    let fast_share = share(&counts, "fast");
    assert!(
        fast_share >= 0.8,
        "fast backend got {:.1} % ({counts:?})",
        fast_share * 100.0
    );
    assert!(
        counts.get("slow").copied().unwrap_or(0) > 0,
        "the slow backend still gets some: {counts:?}"
    );
    scenario.stop().await;
}

#[tokio::test]
async fn least_conn_rotates_ties() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backends(["a", "b"])
        .quiet_health()
        .start()
        .await;
    let counts = spread(&scenario.lb, 1, 100).await;
    assert_eq!(counts["a"], 50, "{counts:?}");
    assert_eq!(counts["b"], 50, "{counts:?}");
    scenario.stop().await;
}

#[tokio::test]
async fn round_robin_splits_evenly() {
    let _cpu = crate::support::cpu::shared().await;
    let scenario = Scenario::new()
        .backends(["a", "b", "c"])
        .algorithm("round_robin")
        .quiet_health()
        .start()
        .await;
    let counts = spread(&scenario.lb, 1, 300).await;
    for name in ["a", "b", "c"] {
        assert_eq!(counts[name], 100, "{counts:?}");
    }
    // Concurrent clients get an even split too.
    let counts = spread(&scenario.lb, 6, 600).await;
    for name in ["a", "b", "c"] {
        assert_eq!(counts[name], 200, "{counts:?}");
    }
    scenario.stop().await;
}

#[tokio::test]
async fn weights_are_honoured_by_every_algorithm() {
    let _cpu = crate::support::cpu::shared().await;
    // Sequential requests: exact shares for the deterministic algorithms.
    for (algorithm, total, tolerance) in [
        ("round_robin", 400, 0.0),
        ("least_conn", 400, 0.01),
        ("random", 2000, 0.05),
        ("p2c", 2000, 0.06),
    ] {
        let scenario = heavy_and_light(algorithm).await;
        let counts = spread(&scenario.lb, 1, total).await;
        let heavy_share = share(&counts, "heavy");
        assert!(
            (heavy_share - 0.75).abs() <= tolerance,
            "{algorithm}: heavy got {:.3} ({counts:?})",
            heavy_share
        );
        scenario.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_weights_hold_under_concurrency() {
    let _cpu = crate::support::cpu::alone().await;
    let scenario = heavy_and_light("least_conn").await;
    scenario
        .backend("heavy")
        .set_delay(Duration::from_millis(10));
    scenario
        .backend("light")
        .set_delay(Duration::from_millis(10));
    let counts = spread(&scenario.lb, 16, 800).await;
    let heavy_share = share(&counts, "heavy");
    assert!(
        (0.65..=0.85).contains(&heavy_share),
        "heavy got {heavy_share:.3} ({counts:?})"
    );
    scenario.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_prefers_the_fast_backend() {
    let _cpu = crate::support::cpu::alone().await;
    let scenario = fast_and_slow("p2c", 1, 50).await;
    let counts = spread(&scenario.lb, 16, 1600).await;
    assert!(share(&counts, "fast") >= 0.8, "{counts:?}");
    scenario.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_time_favours_the_faster_backend_more_than_least_conn() {
    let _cpu = crate::support::cpu::alone().await;
    let mut shares = Vec::new();
    for algorithm in ["least_conn", "least_time"] {
        let scenario = fast_and_slow(algorithm, 1, 20).await;
        let counts = spread(&scenario.lb, 32, 1600).await;
        shares.push(share(&counts, "fast"));
        scenario.stop().await;
    }
    println!(
        "fast backend's share: least_conn {:.3}, least_time {:.3}",
        shares[0], shares[1]
    );
    // A real margin, not any: on this 2-core machine least_time gave the fast backend 83-86 %
    // where least_conn gave 73-74 % alone, and 74 % against 69 % beside the rest of the suite
    // (the README quotes 94 % against 80-85 %, measured on a quiet machine).
    assert!(
        shares[1] >= shares[0] + 0.03,
        "least_time {:.3} against least_conn {:.3}: not 3 points more",
        shares[1],
        shares[0]
    );
}
