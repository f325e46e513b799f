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
