//! The ring, the percentile of a histogram's difference, and the sampler over a real `Proxy`.

use super::*;
use crate::config::Config;

#[test]
fn the_ring_keeps_the_last_values_by_sequence_number() {
    let mut ring = Ring::<u32>::new(3);
    assert_eq!(ring.get(0), None);
    for v in 10..15 {
        ring.push(v);
    }
    // Five pushed into three slots: numbers 2, 3 and 4 are held, in order.
    assert_eq!(ring.first(), 2);
    assert_eq!(ring.get(1), None);
    assert_eq!(
        (2..5).map(|s| ring.get(s)).collect::<Vec<_>>(),
        [Some(12), Some(13), Some(14)]
    );
    assert_eq!(ring.get(5), None);

    // A ring made late lines up: its first push is number 7, the seconds before read as default.
    let mut late = Ring::<u32>::starting_at(3, 7);
    late.push(1);
    assert_eq!(
        (5..9).map(|s| late.get(s)).collect::<Vec<_>>(),
        [Some(0), Some(0), Some(1), None]
    );
}

fn counts(pairs: &[(usize, u64)]) -> [u64; BUCKETS] {
    let mut c = [0; BUCKETS];
    for &(i, n) in pairs {
        c[i] = n;
    }
    c
}

#[test]
fn quantiles_interpolate_inside_the_bucket() {
    assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
    // 100 answers in (1 ms, 2.5 ms]: the median is half way through.
    let p50 = quantile(&counts(&[(2, 100)]), 0.5).unwrap();
    assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
    // 90 fast (≤ 0.5 ms) and 10 slow (50..100 ms): p50 is fast, p95 and p99 are in the slow bucket.
    let mixed = counts(&[(0, 90), (7, 10)]);
    let q = |x| quantile(&mixed, x).unwrap();
    assert!(q(0.5) <= 0.0005, "{}", q(0.5));
    assert!((q(0.95) - 0.075).abs() < 1e-9, "{}", q(0.95));
    assert!((q(0.99) - 0.095).abs() < 1e-9, "{}", q(0.99));
    // Above the last bound nothing is known but the bound.
    assert_eq!(quantile(&counts(&[(BUCKETS - 1, 5)]), 0.99), Some(2.5));
}

#[test]
fn latency_comes_from_the_difference_of_two_snapshots() {
    let h = Histogram::default();
    for _ in 0..1000 {
        h.observe(Duration::from_millis(200));
    }
    let before = Counters {
        buckets: bucket_counts(&h),
        responses: 1000,
        ..Counters::default()
    };
    for _ in 0..100 {
        h.observe(Duration::from_micros(800));
    }
    let after = Counters {
        buckets: bucket_counts(&h),
        responses: 1100,
        ..Counters::default()
    };
    let s = after.rates(&before, 2.0, 3);
    // Only the last 100 answers count: all in (0.5 ms, 1 ms], none of the slow ones before.
    assert!(s.p99_ms > 0.5 && s.p99_ms <= 1.0, "{s:?}");
    assert!(s.p50_ms > 0.5 && s.p50_ms <= 1.0, "{s:?}");
    assert_eq!((s.rps, s.in_flight), (50.0, 3));
    // A counter that went back (a backend replaced by a reload) is no change, not a wrap.
    let back = before.rates(&after, 1.0, 0);
    assert_eq!(back.rps, 0.0);
    assert!(back.p50_ms.is_nan());
}

fn proxy() -> Proxy {
    proxy_of("[\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]")
}

fn proxy_of(backends: &str) -> Proxy {
    let toml = format!("listen = \"127.0.0.1:0\"\nbackends = {backends}\n");
    Proxy::new(&Config::from_toml(&toml, "test.toml").expect("valid config"))
}

#[test]
fn a_backend_added_later_lines_up_and_one_removed_goes_blank() {
    let one = proxy_of("[\"http://127.0.0.1:1\"]");
    let two = proxy_of("[\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]");
    let mut history = History::default();
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    history.sample(&one, at(0), 0);
    history.sample(&one, at(1), 1_000);
    // The second backend appears (an API add, a reload, DNS): blank until it has a baseline.
    for s in 2..5 {
        two.backends()[1].record_response(0, 200, Duration::from_millis(1));
        history.sample(&two, at(s), s * 1000);
    }
    history.sample(&one, at(5), 5_000);
    let view = history.view(0);
    assert_eq!(view.seq, 5);
    let added = &view.backends[1].series.rps;
    assert_eq!(added, &[None, None, Some(1.0), Some(1.0), None]);
    assert_eq!(
        view.backends[1].states.last().map(|s| (s.from, s.to)),
        Some((2, 4))
    );
    assert_eq!(view.backends[0].series.rps.iter().flatten().count(), 5);
}

#[test]
fn the_sampler_turns_counters_into_rates_and_health_into_spans() {
    let proxy = proxy();
    let (a, b) = (proxy.backends()[0].clone(), proxy.backends()[1].clone());
    let mut history = History::default();
    let t0 = Instant::now();
    history.sample(&proxy, t0, 1_000);
    assert_eq!(
        history.view(0).seq,
        0,
        "the first reading is only a baseline"
    );

    for _ in 0..10 {
        a.record_response(0, 200, Duration::from_millis(3));
    }
    a.record_response(0, 503, Duration::from_millis(3));
    a.record_response(0, 404, Duration::from_millis(3));
    proxy
        .stats()
        .retries
        .fetch_add(4, std::sync::atomic::Ordering::Relaxed);
    history.sample(&proxy, t0 + Duration::from_secs(2), 3_000);

    b.record_probe(false, "connection refused".into());
    b.set_healthy(false);
    history.sample(&proxy, t0 + Duration::from_secs(3), 4_000);

    let view = history.view(0);
    assert_eq!(
        (view.from, view.seq, view.time_ms.clone()),
        (0, 2, vec![3_000, 4_000])
    );
    assert_eq!(view.total.rps, [Some(6.0), Some(0.0)]);
    assert_eq!(view.total.errors_5xx, [Some(0.5), Some(0.0)]);
    assert_eq!(view.total.errors_4xx, [Some(0.5), Some(0.0)]);
    assert_eq!(view.total.retries, [Some(2.0), Some(0.0)]);
    let p50 = view.total.p50_ms[0].unwrap();
    assert!((2.5..=5.0).contains(&p50), "{p50}");
    assert_eq!(view.total.p50_ms[1], None, "no answers, no latency");

    let a_view = &view.backends[0];
    assert_eq!(a_view.url, "http://127.0.0.1:1");
    assert_eq!(a_view.series.rps, [Some(6.0), Some(0.0)]);
    assert_eq!(
        a_view.states,
        [Span {
            from: 0,
            to: 2,
            state: "up",
            reason: String::new()
        }]
    );
    let b_states = &view.backends[1].states;
    assert_eq!(b_states.len(), 2, "{b_states:?}");
    assert_eq!(
        (b_states[1].from, b_states[1].to, b_states[1].state),
        (1, 2, "down")
    );
    assert_eq!(
        b_states[1].reason,
        "health check failed: connection refused"
    );

    // Asked since the last one it saw, a client gets only what is new.
    history.sample(&proxy, t0 + Duration::from_secs(4), 5_000);
    let newer = history.view(2);
    assert_eq!((newer.from, newer.seq, newer.total.rps.len()), (2, 3, 1));
}

#[test]
fn memory_stays_bounded_over_more_than_a_window() {
    let proxy = proxy();
    let b = proxy.backends()[1].clone();
    let mut history = History::default();
    let t0 = Instant::now();
    for s in 0..(WINDOW as u64 * 2) {
        // Flapping every second with a long reason: the worst case for spans.
        b.record_probe(false, "x".repeat(1000) + &s.to_string());
        b.set_healthy(s % 2 == 0);
        history.sample(&proxy, t0 + Duration::from_secs(s), s * 1000);
    }
    let view = history.view(0);
    assert_eq!(view.total.rps.len(), WINDOW);
    assert_eq!(view.from, WINDOW as u64 - 1);
    assert!(view.backends[1].states.len() <= WINDOW);
    assert!(
        view.backends[1]
            .states
            .iter()
            .all(|s| s.reason.len() <= MAX_REASON)
    );
    // The bound the module doc and README state: ~40 KiB a steady series, ≤ 230 KiB a flapping one.
    assert_eq!(std::mem::size_of::<Sample>(), 44);
    let bytes = history.memory_bytes();
    assert!(
        bytes < (40 + 40 + 230) * 1024,
        "{bytes} bytes for the total and two backends"
    );
}
