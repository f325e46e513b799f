//! Zone-aware picks through the real proxy: with `[locality] zone = "a"`, zone a's backends take
//! every request while they are fit, and requests spill over to zone b when half of zone a is
//! down or every zone-a backend is at its in-flight bound, coming back when zone a recovers.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

fn only(counts: &HashMap<String, usize>, names: &[&str]) -> bool {
    counts.keys().all(|k| names.contains(&k.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_own_zone_takes_the_traffic_and_spills_over_when_short_or_full() {
    let _cpu = crate::support::cpu::shared().await;
    let a1 = TestBackend::start("a1").await;
    let a2 = TestBackend::start("a2").await;
    let b1 = TestBackend::start("b1").await;
    let b2 = TestBackend::start("b2").await;
    let table = |b: &TestBackend, zone: &str| {
        format!("[[backend]]\nurl = \"{}\"\nzone = \"{zone}\"\n", b.url())
    };
    let lb = TestBalancer::start(&format!(
        "{}{}{}{}\
         [health_check]\ninterval = \"100ms\"\n\
         [locality]\nzone = \"a\"\nmin_healthy = 0.5\nmax_in_flight = 2\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        table(&a1, "a"),
        table(&b1, "b"),
        table(&a2, "a"),
        table(&b2, "b"),
    ))
    .await;

    // Fit: zone a takes everything, shared between its two backends.
    let counts = answers_by_backend(&lb.url("/"), 100).await;
    assert!(only(&counts, &["a1", "a2"]), "{counts:?}");
    assert_eq!((counts["a1"], counts["a2"]), (50, 50), "{counts:?}");

    // Full: with both zone-a backends at 2 requests in flight, the next ones go to zone b.
    a1.set_delay(Duration::from_millis(1500));
    a2.set_delay(Duration::from_millis(1500));
    let url = lb.url("/");
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let (status, headers, _) = get(&client(), &url).await;
                assert_eq!(status, 200);
                backend_of(&headers)
            })
        })
        .collect();
    let mut spilled = HashMap::new();
    for task in slow {
        *spilled.entry(task.await.unwrap()).or_insert(0usize) += 1;
    }
    let in_a = spilled.get("a1").copied().unwrap_or(0) + spilled.get("a2").copied().unwrap_or(0);
    let in_b = spilled.get("b1").copied().unwrap_or(0) + spilled.get("b2").copied().unwrap_or(0);
    // 2 in flight on each zone-a backend, the rest spilled over. The bound is read at each pick,
    // as least_conn reads its counts: two picks at the same instant may both see the last place.
    assert!(
        (4..=6).contains(&in_a),
        "zone a filled to its bound: {spilled:?}"
    );
    assert_eq!(
        in_a + in_b,
        8,
        "the rest spilled over to zone b: {spilled:?}"
    );
    a1.set_delay(Duration::ZERO);
    a2.set_delay(Duration::ZERO);
    let counts = answers_by_backend(&lb.url("/"), 20).await;
    assert!(
        only(&counts, &["a1", "a2"]),
        "back once there is room: {counts:?}"
    );

    // Short: one of two down is half, still enough (min_healthy 0.5).
    let a1_port = a1.stop().await;
    lb.wait_health(&a1_port.addr(), false, Duration::from_secs(5))
        .await;
    let counts = answers_by_backend(&lb.url("/"), 20).await;
    assert_eq!(counts.get("a2"), Some(&20), "{counts:?}");
    // Both down: zone b takes everything, nothing fails.
    let a2_port = a2.stop().await;
    lb.wait_health(&a2_port.addr(), false, Duration::from_secs(5))
        .await;
    let counts = answers_by_backend(&lb.url("/"), 40).await;
    assert!(only(&counts, &["b1", "b2"]), "{counts:?}");
    assert_eq!((counts["b1"], counts["b2"]), (20, 20), "{counts:?}");

    // The API says where each backend runs.
    let (_, _, body) = get(&client(), &lb.admin_url("/api/backends").await).await;
    let api: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let zones: Vec<&str> = api["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["zone"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(zones, ["a", "b", "a", "b"]);
    lb.stop().await;
    b1.stop().await;
    b2.stop().await;
}
