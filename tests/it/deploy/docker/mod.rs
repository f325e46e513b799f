//! alb's deployment on a real Docker engine: the image built with no registry, the project's
//! compose stack (alb and two `alb backend` containers on `lb_network`, only 8080 published) and
//! the DNS-discovery stack scaled up and down, under load, from the host through the published
//! port; the fleet stack (three replicas sharing their rate limits through Redis) in `fleet`.
//! Needs a Docker daemon and compose: without them the tests say SKIPPED and why, except under
//! CI, where they fail. Everything they make (images, containers, networks) they remove.

mod compose;
mod fleet;
mod load;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use compose::{Images, Stack, compose_command, container_ip, ok};
use load::Load;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alb_deploys_on_a_real_docker_engine() {
    let _cpu = crate::support::cpu::shared().await;
    let compose = match compose_command() {
        Ok(compose) => compose,
        Err(why) => {
            crate::support::prerequisite::missing("alb_deploys_on_a_real_docker_engine", &why);
            return;
        }
    };
    let id = std::process::id();
    let image = alb_image().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    compose_stack(&compose, &root.join("docker-compose.yml"), id, &image.name).await;
    discovery_stack(
        &compose,
        &root.join("deploy/discovery/docker-compose.yml"),
        id,
        &image.name,
    )
    .await;
}

/// alb's image, built once for the tests that run at the same time, removed (with its runtime
/// base) when the last of them drops it.
pub struct AlbImage {
    pub name: String,
    _images: Images,
}

static ALB_IMAGE: tokio::sync::Mutex<Weak<AlbImage>> = tokio::sync::Mutex::const_new(Weak::new());

/// The image of the binary under test: the one built already if a test still holds it, else a
/// new one (under a new tag: the last one's removal may still be under way).
pub async fn alb_image() -> Arc<AlbImage> {
    static BUILDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut slot = ALB_IMAGE.lock().await;
    if let Some(image) = slot.upgrade() {
        return image;
    }
    let id = std::process::id();
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("alb-test-{id}-{n}:latest");
    let base = format!("alb-runtime-test-{id}-{n}:local");
    let images = Images(vec![name.clone(), base.clone()]);
    build_image(&name, &base);
    let image = Arc::new(AlbImage {
        name,
        _images: images,
    });
    *slot = Arc::downgrade(&image);
    image
}

/// The image, by the script the README gives, from the binary under test.
fn build_image(image: &str, base: &str) {
    let started = Instant::now();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker/build-image.sh");
    ok(
        "bash",
        &[script, image],
        &[
            ("ALB_BIN", env!("CARGO_BIN_EXE_alb").to_string()),
            ("ALB_RUNTIME_IMAGE", base.to_string()),
        ],
        5 * MINUTE,
    );
    let inspect = |format: &str| {
        ok(
            "docker",
            &["image", "inspect", "-f", format, image],
            &[],
            MINUTE,
        )
        .trim()
        .to_string()
    };
    let size: u64 = inspect("{{.Size}}").parse().expect("image size");
    let user = inspect("{{.Config.User}}");
    println!(
        "image {image}: {:.1} MB, user {user}, built in {:?}",
        size as f64 / 1e6,
        started.elapsed()
    );
    assert_eq!(user, "nonroot:nonroot", "the image must not run as root");
    // The binary under test is a debug build; the release image is a third of this.
    assert!(size < 64 << 20, "image of {size} bytes");
    let version = ok("docker", &["run", "--rm", image, "--version"], &[], MINUTE);
    assert!(version.starts_with("alb "), "{version}");
}

/// GETs `url` one after another until every one of `names` has answered.
async fn wait_for_backends(url: &str, names: usize, within: Duration) -> BTreeSet<String> {
    let c = crate::support::client();
    let deadline = Instant::now() + within;
    let mut seen = BTreeSet::new();
    while seen.len() < names {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} answered within {within:?}"
        );
        let request = http::Request::get(url)
            .body(crate::support::full(bytes::Bytes::new()))
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), c.request(request)).await {
            Ok(Ok(r)) if r.status() == 200 => {
                seen.insert(crate::support::backend_of(r.headers()));
            }
            // The stack is still starting.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    seen
}

/// Polls `stack`'s logs of `service` until `found` holds for them.
async fn wait_for_log(
    stack: &Stack,
    service: &str,
    within: Duration,
    found: impl Fn(&str) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if found(&stack.logs(service)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not in the {service} logs within {within:?}:\n{}",
            stack.logs(service)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn down_lines(logs: &str, name: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("is DOWN") && l.contains(name))
        .count()
}

async fn compose_stack(compose: &[String], file: &Path, id: u32, image: &str) {
    let stack = Stack::new(compose, file, &format!("albtest{id}"), image);
    stack.compose(&["up", "-d", "--no-build"], 3 * MINUTE);
    let url = format!("http://{}/", stack.published());
    let seen = wait_for_backends(&url, 2, MINUTE).await;
    assert_eq!(
        seen,
        BTreeSet::from(["backend1".to_string(), "backend2".to_string()])
    );

    // The original's first test: 50 concurrent requests, all 200.
    let c = crate::support::client();
    let concurrent: Vec<_> = (0..50)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { crate::support::get(&c, &url).await.0 })
        })
        .collect();
    for request in concurrent {
        assert_eq!(request.await.unwrap(), 200);
    }

    // The original's second: one backend container stopped under steady load, then started.
    let load = Load::start(&url, 8, 1_000_000);
    load.progress(300, MINUTE).await;
    stack.compose(&["stop", "-t", "5", "backend1"], MINUTE);
    let detected = wait_for_log(&stack, "alb", MINUTE, |l| {
        down_lines(l, "backend1:8081") > 0
    })
    .await;
    load.progress(300, MINUTE).await;
    let before = load.by_backend().get("backend1").copied().unwrap_or(0);
    stack.compose(&["start", "backend1"], MINUTE);
    crate::support::wait_until(MINUTE, || {
        load.by_backend().get("backend1").copied().unwrap_or(0) > before + 50
    })
    .await
    .expect("backend1 back in rotation");
    let (sent, failures) = load.finish().await;
    let downs = down_lines(&stack.logs("alb"), "backend1:8081");
    println!(
        "stop backend1: {sent} requests, {} failed, DOWN logged {downs}x, {detected:?} after the stop returned",
        failures.len()
    );
    assert!(failures.is_empty(), "failed: {failures:?}");
    assert_eq!(downs, 1, "{}", stack.logs("alb"));

    // Cut off the network without a reset: packets to it vanish.
    let load = Load::start(&url, 8, 1_000_000);
    load.progress(300, MINUTE).await;
    let backend2 = stack.containers("backend2").remove(0);
    ok(
        "docker",
        &[
            "network",
            "disconnect",
            &stack.network("lb_network"),
            &backend2,
        ],
        &[],
        MINUTE,
    );
    let cut = Instant::now();
    let detected = wait_for_log(&stack, "alb", MINUTE, |l| {
        down_lines(l, "backend2:8082") > 0
    })
    .await;
    let ejected = stack
        .logs("alb")
        .lines()
        .any(|l| l.contains("backend2:8082") && l.contains("ejected"));
    load.progress(300, MINUTE).await;
    let (sent, failures) = load.finish().await;
    println!(
        "disconnect backend2: {sent} requests, {} failed, DOWN after {detected:?} (ejected by passive health: {ejected}), load ran {:?}",
        failures.len(),
        cut.elapsed()
    );
    assert!(failures.is_empty(), "failed: {failures:?}");

    // `compose stop alb` with requests in flight: they finish, alb exits 0.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let (c, url) = (c.clone(), format!("{url}slow?delay_ms=3000"));
            tokio::spawn(async move { crate::support::get(&c, &url).await.0 })
        })
        .collect();
    wait_for_log(&stack, "backend1", MINUTE, |l| {
        l.matches("holding GET /slow").count() >= 4
    })
    .await;
    let alb = stack.containers("alb").remove(0);
    stack.compose(&["stop", "alb"], MINUTE);
    for request in slow {
        assert_eq!(request.await.unwrap(), 200, "an in-flight request was cut");
    }
    let exit = ok(
        "docker",
        &["inspect", "-f", "{{.State.ExitCode}}", &alb],
        &[],
        MINUTE,
    );
    assert_eq!(exit.trim(), "0", "{}", stack.logs("alb"));
    assert!(stack.logs("alb").contains("drained"));
    println!("compose stop alb: 4 in-flight requests finished, exit code 0");

    stack.compose(&["down", "-v", "--remove-orphans"], 2 * MINUTE);
    assert_eq!(stack.leftovers(), "", "compose down left these behind");
}

async fn discovery_stack(compose: &[String], file: &Path, id: u32, image: &str) {
    let stack = Stack::new(compose, file, &format!("albdisc{id}"), image);
    stack.compose(
        &["up", "-d", "--no-build", "--scale", "backend=3"],
        3 * MINUTE,
    );
    let url = format!("http://{}/", stack.published());
    wait_for_backends(&url, 3, MINUTE).await;
    let load = Load::start(&url, 8, 1_000_000);
    load.progress(600, MINUTE).await;
    let spread = load.by_backend();
    assert_eq!(spread.len(), 3, "{spread:?}");

    stack.compose(
        &["up", "-d", "--no-build", "--scale", "backend=1"],
        3 * MINUTE,
    );
    let scaled = Instant::now();
    let left = stack.containers("backend");
    assert_eq!(left.len(), 1);
    // A backend answers with its host name: the first 12 characters of its container id.
    let kept = left[0][..12].to_string();
    // Settled once 500 requests in a row went to the one left.
    loop {
        assert!(
            scaled.elapsed() < MINUTE,
            "still spread: {:?}",
            load.by_backend()
        );
        let before = load.by_backend();
        load.progress(500, MINUTE).await;
        let after = load.by_backend();
        if after
            .iter()
            .all(|(name, n)| name == &kept || before.get(name) == Some(n))
        {
            break;
        }
    }
    let settled = scaled.elapsed();
    let (sent, failures) = load.finish().await;
    println!(
        "discovery: spread over 3 {spread:?}; scaled to 1 ({kept}, {}), settled {settled:?} after; {sent} requests, {} failed",
        container_ip(&left[0]),
        failures.len()
    );
    assert!(failures.is_empty(), "failed: {failures:?}");
    stack.compose(&["down", "-v", "--remove-orphans"], 2 * MINUTE);
    assert_eq!(stack.leftovers(), "", "compose down left these behind");
}
