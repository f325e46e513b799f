//! Health: concurrent traffic, a backend dying and coming back, active checks with rise/fall.

use std::time::Duration;

use crate::support::*;

const FAST_HEALTH: &str = "[health_check]\ninterval = \"100ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n\
    [passive_health]\nejection_time = \"200ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_all_succeed() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&backends_line(&[&a, &b])).await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, url) = (c.clone(), lb.url("/"));
        tasks.push(tokio::spawn(async move { get(&c, &url).await.0 }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(a.hits() + b.hits(), 50);
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "both backends served: {} / {}",
        a.hits(),
        b.hits()
    );
    lb.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stopped_midway_costs_nothing_and_comes_back() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = TestBalancer::start(&format!("{}{FAST_HEALTH}", backends_line(&[&a, &b]))).await;

    // Steady traffic from 8 workers while `a` is killed.
    // Bounded, with room for the whole test on a fast machine (see ops/chaos.rs).
    let load = SteadyLoad::start(&lb.url("/"), 8, 50_000);
    wait_until(Duration::from_secs(10), || a.hits() >= 100)
        .await
        .expect("traffic reaches a");
    let a_addr = a.stop().await;
    lb.wait_health(&a_addr, false, Duration::from_secs(3)).await;
    let b_before = b.hits();
    wait_until(Duration::from_secs(10), || b.hits() >= b_before + 200)
        .await
        .expect("traffic continues on b");

    // Back on its old port: health checks bring it back into rotation.
    let a = TestBackend::start_on(*a_addr, "a").await;
    lb.wait_health(&a_addr, true, Duration::from_secs(3)).await;
    wait_until(Duration::from_secs(10), || a.hits() >= 50)
        .await
        .expect("the revived backend serves again");
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    lb.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_failing_backend_gets_no_traffic_until_it_recovers() {
    let _cpu = crate::support::cpu::shared().await;
    let good = TestBackend::start("good").await;
    let sick = TestBackend::start("sick").await;
    let lb = TestBalancer::start(&format!("{}{FAST_HEALTH}", backends_line(&[&good, &sick]))).await;
    sick.set_mode(Mode::Fail);
    lb.wait_health(&sick.addr, false, Duration::from_secs(3))
        .await;
    let before = sick.hits();
    let c = client();
    for _ in 0..20 {
        let (status, headers, _) = get(&c, &lb.url("/")).await;
        assert_eq!(status, 200);
        assert_eq!(backend_of(&headers), "good");
    }
    assert_eq!(sick.hits(), before, "a DOWN backend gets no requests");
    sick.set_mode(Mode::Normal);
    lb.wait_health(&sick.addr, true, Duration::from_secs(3))
        .await;
    let mut reached_sick = false;
    for _ in 0..10 {
        reached_sick |= backend_of(&get(&c, &lb.url("/")).await.1) == "sick";
    }
    assert!(reached_sick, "a recovered backend gets traffic again");
    lb.stop().await;
    good.stop().await;
    sick.stop().await;
}

#[tokio::test]
async fn a_hanging_backend_is_marked_down_by_the_probe_timeout() {
    let _cpu = crate::support::cpu::shared().await;
    let good = TestBackend::start("good").await;
    let hung = TestBackend::start("hung").await;
    let lb = TestBalancer::start(&format!("{}{FAST_HEALTH}", backends_line(&[&good, &hung]))).await;
    lb.wait_health(&hung.addr, true, Duration::from_secs(1))
        .await;
    hung.set_mode(Mode::Hang);
    lb.wait_health(&hung.addr, false, Duration::from_secs(3))
        .await;
    lb.stop().await;
    good.stop().await;
    hung.stop().await;
}

#[tokio::test]
async fn a_backend_down_at_start_is_out_after_its_first_probe() {
    let _cpu = crate::support::cpu::shared().await;
    let good = TestBackend::start("good").await;
    let dead_addr = ClosedPort::new();
    // Long interval: only the immediate first probe can mark it DOWN in time.
    let config = format!(
        "backends = [\"{}\", \"http://{dead_addr}\"]\n[health_check]\ninterval = \"60s\"\nfall = 3\n",
        good.url()
    );
    let lb = TestBalancer::start(&config).await;
    lb.wait_health(&dead_addr, false, Duration::from_secs(2))
        .await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &lb.url("/")).await.0, 200);
    }
    assert_eq!(good.hits(), 10);
    lb.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn rise_needs_consecutive_successes() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    let config = format!(
        "{}[health_check]\ninterval = \"50ms\"\nrise = 3\nfall = 1\n",
        backends_line(&[&b])
    );
    let lb = TestBalancer::start(&config).await;
    b.set_mode(Mode::Fail);
    lb.wait_health(&b.addr, false, Duration::from_secs(2)).await;
    b.set_mode(Mode::Normal);
    let probes_at_recovery = b.probes();
    lb.wait_health(&b.addr, true, Duration::from_secs(2)).await;
    assert!(
        b.probes() >= probes_at_recovery + 3,
        "UP after {} passing probes, rise is 3",
        b.probes() - probes_at_recovery
    );
    lb.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn health_checks_use_the_configured_path() {
    let _cpu = crate::support::cpu::shared().await;
    let b = TestBackend::start("b").await;
    // /status/500 fails every probe; the backend itself is fine.
    let config = format!(
        "{}[health_check]\npath = \"/status/500\"\ninterval = \"60s\"\n",
        backends_line(&[&b])
    );
    let lb = TestBalancer::start(&config).await;
    lb.wait_health(&b.addr, false, Duration::from_secs(2)).await;
    lb.stop().await;
    b.stop().await;
}

/// A reload restarts the health checks. A backend they already know keeps its verdict until
/// `fall` probes in a row fail; it used to be marked DOWN by the first failed probe after the
/// restart, as if alb had never seen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_take_a_known_backend_out_on_one_failed_probe() {
    let _cpu = crate::support::cpu::shared().await;
    let a = TestBackend::start("a").await;
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"60s\"\nfall = 3\n",
        backends_line(&[&a])
    ))
    .await;
    wait_until(Duration::from_secs(2), || {
        lb.proxy.backends()[0].last_probe().is_some()
    })
    .await
    .unwrap();
    a.set_mode(Mode::Fail);
    let before = a.probes();
    // A reload that changes the checks restarts them (an unchanged check goes on at its pace).
    let mut config = lb.proxy.snapshot().config().clone();
    config.health_check.timeout += Duration::from_millis(1);
    lb.control.apply(&config);
    let backend = lb.proxy.backends()[0].clone();
    wait_until(Duration::from_secs(2), || {
        backend.last_probe().is_some_and(|(passed, _)| !passed)
    })
    .await
    .unwrap();
    assert_eq!(a.probes(), before + 1, "one probe since the reload");
    // The next probe comes about a second later (the state is changing): until then, and after
    // it, the backend stays in (fall = 3).
    let flipped = wait_until(Duration::from_millis(700), || !backend.is_healthy()).await;
    assert!(flipped.is_err(), "marked DOWN after one failed probe");
    lb.stop().await;
    a.stop().await;
}
