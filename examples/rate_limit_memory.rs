//! What a rate limiter tracking a million clients costs: memory (resident set from
//! /proc/self/status) and time per check. Run with `cargo run --release --example
//! rate_limit_memory`; it makes 4 million checks and ends in about a second.
//!
//! Four passes over one limiter of 1,000,000 keys: a million distinct new keys, the same million
//! again (known keys, the common case), a million more new ones (the table is full: each evicts
//! or reuses a slot) and one key over and over (one hot client).

use std::time::{Duration, Instant};

use alb::proxy::RateLimiter;

const KEYS: u64 = 1_000_000;

/// The resident set in KiB, if /proc says (Linux only).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn show_rss(when: &str) -> u64 {
    let rss = rss_kib().unwrap_or(0);
    println!("{when:<40} VmRSS {:>8} KiB", rss);
    rss
}

/// Checks of `keys` at one instant (as under a flood): their mean cost and how many passed.
fn pass(limiter: &RateLimiter, what: &str, keys: impl Iterator<Item = u64>, at: Instant) {
    let started = Instant::now();
    let (mut checks, mut passed) = (0u64, 0u64);
    for key in keys {
        checks += 1;
        passed += u64::from(limiter.check(&key.to_le_bytes(), at).is_ok());
    }
    let elapsed = started.elapsed();
    println!(
        "{what:<40} {checks} checks, {passed} passed, {:.0} ns per check",
        elapsed.as_nanos() as f64 / checks as f64
    );
}

fn main() {
    let before = show_rss("before the limiter");
    let limiter = RateLimiter::new(100.0, 200, KEYS as usize);
    show_rss("limiter built (pages not yet touched)");
    let at = Instant::now() + Duration::from_millis(1);

    pass(&limiter, "1,000,000 new keys", 0..KEYS, at);
    let full = show_rss("after 1,000,000 keys");
    let tracked = limiter.tracked_keys() as u64;
    println!(
        "tracked {tracked} of capacity {}, {} evicted; {:.1} bytes per tracked key",
        limiter.capacity(),
        limiter.evictions(),
        full.saturating_sub(before) as f64 * 1024.0 / tracked as f64
    );

    pass(&limiter, "the same 1,000,000 again", 0..KEYS, at);
    pass(&limiter, "1,000,000 more new keys", KEYS..2 * KEYS, at);
    show_rss("after 2,000,000 distinct keys");
    println!(
        "tracked {} of capacity {}, {} evicted",
        limiter.tracked_keys(),
        limiter.capacity(),
        limiter.evictions()
    );
    pass(
        &limiter,
        "one hot key 1,000,000 times",
        (0..KEYS).map(|_| 7),
        at,
    );
}
