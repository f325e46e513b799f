//! `Config::from_toml` on arbitrary UTF-8: no panic, an error always lists at least one problem
//! and displays, and an accepted config keeps the promises its validation makes.

#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use alb::Config;
use alb::config::MAX_WEIGHT;
use libfuzzer_sys::fuzz_target;

/// The longest duration validation lets through (`config::values::MAX_DURATION`).
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match Config::from_toml(text, "fuzz") {
        Err(error) => {
            assert!(!error.problems().is_empty(), "an error without problems: {error:?}");
            let shown = error.to_string();
            assert!(shown.starts_with("fuzz: "), "the origin is not named: {shown:?}");
        }
        Ok(config) => {
            assert!(!config.backends.is_empty(), "a config without backends");
            let mut urls = HashSet::new();
            for backend in &config.backends {
                assert!(urls.insert(&backend.url), "duplicate backend {}", backend.url);
                assert!((1..=MAX_WEIGHT).contains(&backend.weight), "weight {}", backend.weight);
                assert!(backend.url.starts_with("http://"), "url {:?}", backend.url);
                assert!(backend.max_connections != Some(0), "max_connections = 0");
            }
            let h = &config.health_check;
            assert!(h.path.starts_with('/'), "health path {:?}", h.path);
            for (what, d) in [("health_check.interval", h.interval), ("health_check.timeout", h.timeout)] {
                assert!(!d.is_zero() && d <= WEEK, "{what} = {d:?}");
            }
            let t = &config.timeouts;
            for (what, d) in [
                ("connect", t.connect),
                ("response", t.response),
                ("upstream_idle", t.upstream_idle),
                ("client_header", t.client_header),
                ("client_body_idle", t.client_body_idle),
                ("keepalive_idle", t.keepalive_idle),
            ] {
                assert!(!d.is_zero() && d <= WEEK, "timeouts.{what} = {d:?}");
            }
            assert!(t.request.is_none_or(|d| !d.is_zero() && d <= WEEK), "timeouts.request");
            assert!(t.drain <= WEEK, "timeouts.drain = {:?}", t.drain);
            assert!((1..=10).contains(&config.retry.attempts), "retry.attempts");
            assert!(config.retry.on_status.iter().all(|s| (500..600).contains(s)), "on_status");
            let p = &config.passive_health;
            assert!(p.max_ejection_time >= p.ejection_time, "max_ejection_time < ejection_time");
            assert!(config.limits.max_header_bytes >= 1024, "max_header_bytes");
            assert!(config.limits.max_uri_bytes >= 16, "max_uri_bytes");
            // The same text gives the same config.
            let again = Config::from_toml(text, "fuzz").expect("accepted once, refused the second time");
            assert_eq!(format!("{again:?}"), format!("{config:?}"), "parsing is not deterministic");
        }
    }
});
