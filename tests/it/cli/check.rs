//! `alb check`, and `alb run` on bad files.

use super::*;

const GOOD_CONFIG: &str = r#"
listen = "127.0.0.1:0"
algorithm = "round_robin"
backends = ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]

[health_check]
path = "/health"
interval = "2s"
"#;

/// Three problems: `algorithm`, `backends[0]`, `health_check.interval`; `listen` is fine.
pub(super) const BAD_CONFIG: &str = r#"
listen = "127.0.0.1:0"
algorithm = "fastest"
backends = ["ftp://127.0.0.1:8081"]

[health_check]
interval = "5"
"#;

const BAD_KEYS: [&str; 3] = ["algorithm", "backends[0]", "health_check.interval"];

#[tokio::test]
async fn check_accepts_a_valid_config() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("check-ok");
    let path = dir.write("good.toml", GOOD_CONFIG);
    let (status, stdout, stderr) = alb_output(&["check", "--config", path.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "{}: OK: 2 backend(s), round_robin",
            path.display()
        )),
        "{stdout}"
    );
    assert!(
        stderr.is_empty(),
        "nothing on stderr for a valid file: {stderr}"
    );
}

#[tokio::test]
async fn check_reports_every_problem_and_fails() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("check-bad");
    let path = dir.write("bad.toml", BAD_CONFIG);
    let (status, stdout, stderr) = alb_output(&["check", "--config", path.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    for key in BAD_KEYS {
        let named = stderr
            .lines()
            .any(|l| l.contains(&format!("{}: {key}: ", path.display())));
        assert!(named, "{key} not named on stderr:\n{stderr}");
    }
}

#[tokio::test]
async fn check_shows_the_proxy_protocol_sources_and_names_a_bad_one() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("check-pp");
    let section = "[proxy_protocol]\nenabled = true\n";
    let good = dir.write(
        "good.toml",
        &format!("{GOOD_CONFIG}{section}trusted = [\"10.0.0.0/8\", \"::1\"]\n"),
    );
    let (status, stdout, stderr) = alb_output(&["check", "--config", good.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains(", PROXY protocol required from 10.0.0.0/8, ::1/128"),
        "{stdout}"
    );
    let bad = dir.write(
        "bad.toml",
        &format!("{GOOD_CONFIG}{section}trusted = [\"10.0.0.1/8\"]\n"),
    );
    let (status, _, stderr) = alb_output(&["check", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: proxy_protocol.trusted[0]: \"10.0.0.1/8\": has bits set past the /8 prefix",
            bad.display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_names_a_missing_file() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("check-missing");
    let path = dir.0.join("does-not-exist.toml");
    let (status, stdout, stderr) = alb_output(&["check", "--config", path.to_str().unwrap()]).await;
    assert!(!status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

#[tokio::test]
async fn run_refuses_to_start_on_a_bad_config() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("run-bad");
    let path = dir.write("bad.toml", BAD_CONFIG);
    let (status, stdout, stderr) = alb_output(&["run", "--config", path.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        !stderr.contains("alb listening"),
        "it must not listen:\n{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    for key in BAD_KEYS {
        assert!(
            stderr.contains(&format!("{}: {key}: ", path.display())),
            "{key} not named:\n{stderr}"
        );
    }

    let missing = dir.0.join("missing.toml");
    let (status, _, stderr) = alb_output(&["run", "--config", missing.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(!stderr.contains("alb listening"), "{stderr}");
}

#[tokio::test]
async fn check_lists_pools_refuses_a_shadowed_route_and_warns_of_an_unused_pool() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("check-routes");
    let good = dir.write(
        "routes.toml",
        "backends = [\"http://127.0.0.1:8081\"]\n\
         [pools.api]\nbackends = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"]\n\
         algorithm = \"p2c\"\n\
         [pools.spare]\nbackends = [\"http://127.0.0.1:9101\"]\n\
         [[route]]\nhost = \"api.example.com\"\npool = \"api\"\n",
    );
    let (status, stdout, stderr) = alb_output(&["check", "--config", good.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("OK: 4 backend(s) in 3 pools, 1 route(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("pool api: 2 backend(s), p2c"), "{stdout}");
    assert!(
        stdout.contains("warning: pools.spare: no route sends requests to this pool"),
        "{stdout}"
    );
    let bad = dir.write(
        "shadowed.toml",
        "backends = [\"http://127.0.0.1:8081\"]\n\
         [pools.api]\nbackends = [\"http://127.0.0.1:9001\"]\n\
         [[route]]\npath_prefix = \"/api\"\npool = \"api\"\n\
         [[route]]\npath_prefix = \"/api/v2/\"\nmethods = [\"GET\"]\npool = \"api\"\n\
         [[route]]\npool = \"nope\"\n",
    );
    let (status, _, stderr) = alb_output(&["check", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("route[1]: can never match: route[0] comes first"),
        "{stderr}"
    );
    assert!(
        stderr.contains("route[2].pool: no pool \"nope\" (there are: api, default)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_live_probes_every_backend_and_fails_when_a_pool_has_no_healthy_one() {
    let _cpu = crate::support::cpu::shared().await;
    let up = TestBackend::start("up").await;
    let failing = TestBackend::start("failing").await;
    failing.set_mode(Mode::Fail);
    let gone = TestBackend::start("gone").await.stop().await;
    let dir = TempDir::new("check-live");
    let good = dir.write(
        "good.toml",
        &format!(
            "backends = [\"{}\", \"{}\"]\n[health_check]\npath = \"/health\"\n",
            up.url(),
            failing.url()
        ),
    );
    let (status, stdout, stderr) =
        alb_output(&["check", "--live", "--config", good.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let row = |url: &str| row_of(&stdout, url);
    let ok = row(&up.url());
    assert_eq!(ok[0], "default");
    assert_eq!((ok[3].as_str(), ok[4].as_str()), ("yes", "yes"), "{ok:?}");
    assert_eq!(ok.last().unwrap(), "200", "{ok:?}");
    let bad = row(&failing.url());
    assert_eq!((bad[3].as_str(), bad[4].as_str()), ("yes", "no"), "{bad:?}");
    assert!(stdout.contains("answered with status 500"), "{stdout}");
    assert!(
        stdout.contains("every pool has a healthy backend"),
        "{stdout}"
    );
    assert_eq!(up.probes(), 1, "one probe each");

    let broken = dir.write(
        "broken.toml",
        &format!(
            "backends = [\"{}\"]\n[pools.dead]\nbackends = [\"http://{gone}\"]\n\
             [[route]]\nhost = \"dead.example\"\npool = \"dead\"\n",
            up.url()
        ),
    );
    let (status, stdout, stderr) =
        alb_output(&["check", "--live", "--config", broken.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let dead = row_of(&stdout, &format!("http://{gone}"));
    assert_eq!(
        (dead[0].as_str(), dead[3].as_str()),
        ("dead", "no"),
        "{dead:?}"
    );
    assert!(stderr.contains("pool dead: no healthy backend"), "{stderr}");
    up.stop().await;
    failing.stop().await;
}

fn row_of(stdout: &str, url: &str) -> Vec<String> {
    stdout
        .lines()
        .find(|l| l.contains(url))
        .unwrap_or_else(|| panic!("no row for {url}:\n{stdout}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
