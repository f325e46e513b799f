//! Tests that need a tool from outside the project (Docker, chromium, h2load, HAProxy, the
//! Kubernetes schema validator). Under CI (`CI` set; `.ci/run` installs every one of them) a
//! missing tool fails the test. Elsewhere the test returns early, and says SKIPPED on the real
//! standard error: libtest captures `eprintln!` (the line would show only if the test failed) but
//! not writes to `std::io::stderr()`, so the skip is seen on every run, beside the test's `ok`.

use std::io::Write;

/// Whether this run is CI's.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `test` cannot run here because of `why`: fails under CI, else prints SKIPPED (the caller
/// then returns).
#[track_caller]
pub fn missing(test: &str, why: &str) {
    assert!(!under_ci(), "CI is set, so {test} must run: {why}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The first of `candidates` that runs (`program -v` exits 0: nginx and HAProxy both answer
/// so), or None once [`missing`] said why `test` cannot run here.
#[track_caller]
pub fn program(test: &str, candidates: &[&str], why: &str) -> Option<std::path::PathBuf> {
    let found = candidates.iter().find(|p| {
        std::process::Command::new(p)
            .arg("-v")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        missing(test, why);
    }
    found.map(std::path::PathBuf::from)
}
