//! `[shared_state]`: route rate limits shared by several real alb processes through a real
//! `redis-server` on loopback. The fleet lets through the route's rate once, not once per
//! replica; Redis killed mid-run costs no request, each replica falls back to its share, and
//! the fleet shares again once Redis is back on its port. Each test starts its own Redis.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::binary::LoggedProcess;
use crate::support::redis::RedisServer;
use crate::support::*;

const PER_SECOND: f64 = 200.0;
const BURST: u32 = 10;

/// Replicas of alb in front of one backend, sharing one Redis, with one route limited to
/// 200/s (burst 10) per client address: every request of the test comes from 127.0.0.1, so
/// they all take from one bucket.
struct Fleet {
    replicas: Vec<Replica>,
    _dir: TempDir,
}

struct Replica {
    process: LoggedProcess,
    addr: String,
    admin: String,
}

fn address_after(line: &str, marker: &str) -> String {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    let address = rest.split_whitespace().next().expect("an address");
    address.trim_start_matches("http://").to_string()
}

impl Fleet {
    async fn start(
        redis: &RedisServer,
        backend: &TestBackend,
        count: usize,
        prefix: &str,
    ) -> Fleet {
        let dir = TempDir::new("shared-state");
        let text = format!(
            "listen = \"127.0.0.1:0\"\naccess_log = false\nbackends = [\"{}\"]\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [shared_state]\nredis = \"{}\"\nreplicas = {count}\nprefix = \"{prefix}\"\n\
             timeout = \"50ms\"\n\
             [[route]]\npath_prefix = \"/\"\npool = \"default\"\n\
             rate_limit = {{ per_second = {PER_SECOND}, burst = {BURST} }}\n",
            backend.url(),
            redis.url(),
        );
        let path = dir.write("alb.toml", &text);
        let mut replicas = Vec::new();
        for _ in 0..count {
            let process = LoggedProcess::alb(&path);
            let within = Duration::from_secs(10);
            let addr = address_after(
                &process.wait_line("alb listening on", 1, within).await,
                "alb listening on ",
            );
            let admin = address_after(
                &process.wait_line("admin listening on", 1, within).await,
                "admin listening on ",
            );
            replicas.push(Replica {
                process,
                addr,
                admin,
            });
        }
        Fleet {
            replicas,
            _dir: dir,
        }
    }

    /// Waits (at most 10 s) until every replica's metric `name` reads `value`.
    async fn wait_metric(&self, name: &str, value: f64) {
        for replica in &self.replicas {
            replica.wait_metric(name, value).await;
        }
    }

    fn addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.clone()).collect()
    }
}

impl Replica {
    /// The value of the metric line that starts with `name` (labels included), if any.
    async fn metric(&self, name: &str) -> Option<f64> {
        let (status, _, body) = get(&client(), &format!("http://{}/metrics", self.admin)).await;
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
    }

    async fn wait_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.metric(name).await == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never read {value} on {}:\n{}",
                self.admin,
                self.process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a load got back.
#[derive(Debug, Default)]
struct Tally {
    passed: u64,
    limited: u64,
    /// Anything but 200 and 429, transport errors included.
    other: u64,
    elapsed: Duration,
}

/// Four keep-alive clients per address, each sending GETs one after another for `duration`
/// (and at most 20,000 each).
async fn hammer(addrs: &[String], duration: Duration) -> Tally {
    let started = Instant::now();
    let deadline = started + duration;
    let clients: Vec<_> = addrs
        .iter()
        .flat_map(|addr| std::iter::repeat_n(addr.clone(), 4))
        .map(|addr| {
            tokio::spawn(async move {
                let c = client();
                let mut tally = Tally::default();
                for _ in 0..20_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let request = http::Request::get(format!("http://{addr}/"))
                        .body(full(bytes::Bytes::new()))
                        .expect("a request");
                    match c.request(request).await.map(|r| r.status().as_u16()) {
                        Ok(200) => tally.passed += 1,
                        Ok(429) => tally.limited += 1,
                        _ => tally.other += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for c in clients {
        let tally = c.await.expect("a client");
        total.passed += tally.passed;
        total.limited += tally.limited;
        total.other += tally.other;
    }
    total.elapsed = started.elapsed();
    total
}

/// Asserts that `tally` let through `per_second` over its time plus `burst`, within ±10 %.
#[track_caller]
fn assert_rate(tally: &Tally, per_second: f64, burst: f64, what: &str) {
    let expected = per_second * tally.elapsed.as_secs_f64() + burst;
    let ratio = tally.passed as f64 / expected;
    eprintln!("{what}: {tally:?}, expected {expected:.0}, ratio {ratio:.3}");
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{what}: {} passed, expected {expected:.0} ± 10 % ({tally:?})",
        tally.passed
    );
    assert!(tally.limited > 0, "{what}: the load was over the limit");
    assert_eq!(tally.other, 0, "{what}: every answer is 200 or 429");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_three_replicas_let_through_the_rate_once_not_per_replica() {
    let _cpu = crate::support::cpu::alone().await;
    let test = "two_and_three_replicas_let_through_the_rate_once_not_per_replica";
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let backend = TestBackend::start("a").await;
    for count in [2, 3] {
        let fleet = Fleet::start(&redis, &backend, count, &format!("fleet{count}")).await;
        fleet.wait_metric("alb_shared_state_up", 1.0).await;
        let tally = hammer(&fleet.addrs(), Duration::from_secs(3)).await;
        assert_rate(
            &tally,
            PER_SECOND,
            f64::from(BURST),
            &format!("{count} replicas"),
        );
        // Redis stayed up: no replica was told otherwise.
        for replica in &fleet.replicas {
            let warned = replica
                .process
                .lines_with("fall back to each replica's share");
            assert!(warned.is_empty(), "{}", replica.process.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_costs_no_request_and_the_fleet_shares_again_when_it_returns() {
    let _cpu = crate::support::cpu::alone().await;
    let test = "redis_killed_mid_run_costs_no_request_and_the_fleet_shares_again_when_it_returns";
    let Some(mut redis) = RedisServer::start(test).await else {
        return;
    };
    let backend = TestBackend::start("a").await;
    let fleet = Fleet::start(&redis, &backend, 2, "fallback").await;
    fleet.wait_metric("alb_shared_state_up", 1.0).await;
    let one = &fleet.addrs()[..1];
    let phase = Duration::from_secs(2);

    // Shared: one replica alone may use the whole rate.
    let shared = hammer(one, phase).await;
    assert_rate(&shared, PER_SECOND, f64::from(BURST), "shared, one replica");

    // Redis dies: each replica falls back to its half (100/s, burst 5), and nothing fails.
    redis.kill().await;
    let alone = hammer(one, phase).await;
    assert_rate(
        &alone,
        PER_SECOND / 2.0,
        f64::from(BURST / 2),
        "Redis down, one replica",
    );
    let both = hammer(&fleet.addrs(), phase).await;
    assert_eq!(
        both.other, 0,
        "no request fails while Redis is down: {both:?}"
    );
    fleet.wait_metric("alb_shared_state_up", 0.0).await;
    for replica in &fleet.replicas {
        let unavailable = r#"alb_shared_state_fallbacks_total{reason="unavailable"}"#;
        assert!(replica.metric(unavailable).await.unwrap_or(0.0) > 0.0);
        // Said once, however many requests fell back and reconnections failed.
        let warned = replica
            .process
            .lines_with("fall back to each replica's share")
            .len();
        assert_eq!(warned, 1, "{}", replica.process.log());
    }

    // Back on the same port: the replicas reconnect by themselves and share again.
    redis.restart().await;
    fleet.wait_metric("alb_shared_state_up", 1.0).await;
    let again = hammer(one, phase).await;
    assert_rate(
        &again,
        PER_SECOND,
        f64::from(BURST),
        "Redis back, one replica",
    );
    for replica in &fleet.replicas {
        // At start, and once more on recovery.
        let answered = replica
            .process
            .lines_with("answers; route rate limits are shared");
        assert_eq!(answered.len(), 2, "{}", replica.process.log());
    }
}

#[tokio::test]
async fn a_bad_shared_state_section_is_named_and_alb_refuses_to_start() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("shared-state-bad");
    for (section, key) in [
        ("redis = \"http://secret@redis:6379\"", "shared_state.redis"),
        ("redis = \"redis://redis:6379/db\"", "shared_state.redis"),
        (
            "redis = \"redis://r:6379\"\ntimeout = \"0ms\"",
            "shared_state.timeout",
        ),
        (
            "redis = \"redis://r:6379\"\nreplicas = -1",
            "shared_state.replicas",
        ),
        (
            "redis = \"redis://r:6379\"\nprefix = \"\"",
            "shared_state.prefix",
        ),
        ("timeout = \"5ms\"", "shared_state.redis"),
    ] {
        let path = dir.write(
            "bad.toml",
            &format!(
                "listen = \"127.0.0.1:0\"\nbackends = [\"http://127.0.0.1:9\"]\n\
                 [admin]\nlisten = \"off\"\n[shared_state]\n{section}\n"
            ),
        );
        for command in ["check", "run"] {
            let output = tokio::time::timeout(
                Duration::from_secs(20),
                tokio::process::Command::new(env!("CARGO_BIN_EXE_alb"))
                    .args([command, "--config", path.to_str().expect("utf-8")])
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("alb exits at once")
            .expect("run alb");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{command} {section}: {stderr}");
            assert!(
                stderr.contains(&format!("{key}: ")),
                "{command} {section}: {stderr}"
            );
            assert!(
                !stderr.contains("secret@"),
                "no credentials echoed: {stderr}"
            );
        }
    }
    // An unknown key is a syntax error that names it.
    let path = dir.write(
        "unknown.toml",
        "backends = [\"http://127.0.0.1:9\"]\n[shared_state]\nredis = \"redis://r\"\nhost = \"r\"\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_alb"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run alb check");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("host"));
}
