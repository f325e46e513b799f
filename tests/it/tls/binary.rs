//! TLS with the real binary: `alb check` on certificates, SIGHUP re-reading them, a binary
//! upgrade handing the TLS listener over; and what the config says of a bad `[tls]`.

use std::time::{Duration, SystemTime};

use crate::support::binary::{LoggedProcess, Replacement};
use crate::support::pki::{Pki, curl, port_after, write_leaf};
use crate::support::{TempDir, TestBackend, backends_line};

/// `alb check` on a config whose `[tls] cert` is `leaf` (key `key`): exit code and output.
async fn check(dir: &TempDir, leaf: &str, key: &str) -> (bool, String, String) {
    dir.write("site.pem", leaf);
    dir.write("site.key", key);
    let config = dir.write(
        "alb.toml",
        "backends = [\"http://127.0.0.1:9\"]\n[tls]\ncert = \"site.pem\"\nkey = \"site.key\"\n",
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_alb"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .await
        .expect("alb runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn alb_check_lists_certificates_warns_near_expiry_and_refuses_expired_or_mismatched() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("check");
    let pki = Pki::new();
    let good = pki.leaf("site.test", &["site.test", "*.site.test"], None);
    let (ok, out, err) = check(&dir, &good.chain, &good.key).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("site.test, *.site.test"), "{out}");
    assert!(out.contains("expires") && !out.contains("warning"), "{out}");

    let soon = SystemTime::now() + Duration::from_secs(5 * 86_400 + 3600);
    let closing = pki.leaf("site.test", &["site.test"], Some(soon));
    let (ok, out, err) = check(&dir, &closing.chain, &closing.key).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("warning: tls:") && out.contains("expires in 5 days"),
        "{out}"
    );

    let past = SystemTime::now() - Duration::from_secs(86_400);
    let expired = pki.leaf("site.test", &["site.test"], Some(past));
    let (ok, out, err) = check(&dir, &expired.chain, &expired.key).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("tls.cert") && err.contains("site.pem") && err.contains("expired"),
        "{err}"
    );

    let (ok, out, err) = check(&dir, &good.chain, &closing.key).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("tls.key") && err.contains("site.key") && err.contains("does not match"),
        "{err}"
    );

    let (ok, _, err) = check(&dir, "garbage\n", &good.key).await;
    assert!(!ok);
    assert!(
        err.contains("tls.cert") && err.contains("holds no PEM CERTIFICATE"),
        "{err}"
    );
}

#[tokio::test]
async fn the_real_binary_serves_tls_and_reloads_certificates_on_sighup() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("binary");
    let pki = Pki::new();
    write_leaf(&dir, "site", &pki.leaf("site.test", &["site.test"], None));
    dir.write("ca.pem", &pki.ca_pem());
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{}[admin]\nlisten = \"off\"\n\
             [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"site.pem\"\nkey = \"site.key\"\n",
            backends_line(&[&backend])
        ),
    );
    let mut alb = LoggedProcess::alb(&config);
    let line = alb
        .wait_line("alb listening for TLS on ", 1, Duration::from_secs(10))
        .await;
    let port = port_after(&line, "alb listening for TLS on ");
    let ca = dir.0.join("ca.pem").display().to_string();
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("https://site.test:{port}/");
    let subject = |err: &str| {
        err.lines()
            .find(|l| l.contains("subject:"))
            .unwrap_or_default()
            .to_string()
    };
    let (ok, _, err) = curl(&["-v", "--cacert", &ca, "--resolve", &resolve, &url]).await;
    assert!(ok && subject(&err).contains("CN=site.test"), "{err}");
    write_leaf(&dir, "site", &pki.leaf("renewed", &["site.test"], None));
    LoggedProcess::signal(alb.pid, "-HUP");
    alb.wait_line("configuration applied", 1, Duration::from_secs(10))
        .await;
    let (ok, _, err) = curl(&["-v", "--cacert", &ca, "--resolve", &resolve, &url]).await;
    assert!(ok && subject(&err).contains("CN=renewed"), "{err}");
    alb.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_hands_the_tls_listener_over() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("tls-upgrade");
    let pki = Pki::new();
    write_leaf(&dir, "site", &pki.leaf("site.test", &["site.test"], None));
    dir.write("ca.pem", &pki.ca_pem());
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n{}[admin]\nlisten = \"off\"\n\
             [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"site.pem\"\nkey = \"site.key\"\n",
            backends_line(&[&backend])
        ),
    );
    let mut old = LoggedProcess::alb(&config);
    let wait = Duration::from_secs(40);
    let port = port_after(
        &old.wait_line("alb listening for TLS on ", 1, wait).await,
        "alb listening for TLS on ",
    );
    let ca = dir.0.join("ca.pem").display().to_string();
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("https://site.test:{port}/");
    let (ok, out, err) = curl(&["--cacert", &ca, "--resolve", &resolve, &url]).await;
    assert!(ok && out == "b1", "{out}{err}");
    LoggedProcess::signal(old.pid, "-USR2");
    let serving = old
        .wait_line("upgrade: serving on the listeners", 1, wait)
        .await;
    let new_pid = serving
        .split("this is pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {serving}"));
    let new = Replacement(new_pid);
    let exit = old.exit_status(wait).await;
    assert!(exit.success(), "old alb: {exit}\n{}", old.log());
    // Only the new process is left, on the same TLS port (it could not have bound it anew while
    // the old one listened).
    assert!(new.running());
    let (ok, out, err) = curl(&["--cacert", &ca, "--resolve", &resolve, &url]).await;
    assert!(ok && out == "b1", "{out}{err}");
    new.stop().await;
}

#[test]
fn config_problems_name_the_key_and_the_file() {
    let dir = TempDir::new("tls-config");
    let pki = Pki::new();
    write_leaf(&dir, "site", &pki.leaf("site.test", &["site.test"], None));
    // Relative paths are read next to the config file, wherever alb runs from.
    let good =
        "backends = [\"http://127.0.0.1:9\"]\n[tls]\ncert = \"site.pem\"\nkey = \"site.key\"\n";
    let path = dir.write("alb.toml", good);
    let config = alb::Config::load(&path).expect("valid");
    let tls = config.tls.expect("[tls]");
    assert_eq!(tls.listen.to_string(), "127.0.0.1:8443");
    assert!(!tls.redirect_http);

    let path = dir.write(
        "alb.toml",
        &format!("{good}[[tls.certificate]]\ncert = \"site.pem\"\nkey = \"missing.key\"\n[[tls.certificate]]\ncert = \"site.pem\"\n"),
    );
    let problems = alb::Config::load(&path).expect_err("invalid").to_string();
    assert!(
        problems.contains("tls.certificate[0].key: ")
            && problems.contains("missing.key: cannot read"),
        "{problems}"
    );
    assert!(
        problems.contains("tls.certificate[1]: needs both `cert`"),
        "{problems}"
    );

    let path = dir.write("alb.toml", &format!("{good}ciphers = \"RC4\"\n"));
    let problems = alb::Config::load(&path)
        .expect_err("unknown key")
        .to_string();
    assert!(problems.contains("ciphers"), "{problems}");
}
