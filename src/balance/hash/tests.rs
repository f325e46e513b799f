use std::collections::HashSet;
use std::net::SocketAddr;

use super::*;
use crate::config::{BackendAddr, BackendSpec};
use crate::upstream::InFlightGuard;

const KEYS: usize = 100_000;

fn backend(url: &str, weight: u32) -> Arc<Backend> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    Arc::new(Backend::new(&BackendSpec {
        url: url.to_owned(),
        authority: addr.to_string(),
        addr: BackendAddr::Ip(addr),
        weight,
        max_connections: None,
        dns_name: None,
        tls: None,
        http2: false,
        zone: None,
        backup: false,
        draining: false,
    }))
}

fn url(i: usize) -> String {
    format!("http://10.0.{}.{}:8080", i / 250, i % 250 + 1)
}

fn pool(weights: &[u32]) -> Vec<Arc<Backend>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| backend(&url(i), w))
        .collect()
}

fn key(i: usize) -> u64 {
    key_hash(format!("user-{i}").as_bytes())
}

fn pick(ring: &ConsistentHash, backends: &[Arc<Backend>], key: u64) -> usize {
    ring.select_keyed(backends, &Exclude::default(), key)
        .expect("a backend")
}

/// The URL each of the first `KEYS` keys goes to, with nothing in flight.
fn placement(backends: &[Arc<Backend>]) -> Vec<String> {
    let ring = ConsistentHash::new(backends, DEFAULT_BALANCE);
    (0..KEYS)
        .map(|i| backends[pick(&ring, backends, key(i))].url().to_owned())
        .collect()
}

fn shares(backends: &[Arc<Backend>]) -> Vec<f64> {
    let ring = ConsistentHash::new(backends, DEFAULT_BALANCE);
    let mut counts = vec![0usize; backends.len()];
    for i in 0..KEYS {
        counts[pick(&ring, backends, key(i))] += 1;
    }
    counts.iter().map(|&c| c as f64 / KEYS as f64).collect()
}

#[test]
fn key_hash_is_fnv1a_then_splitmix_and_never_changes() {
    // The published FNV-1a 64 vectors.
    assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    // Pinned: replicas of different versions must agree on where a key goes.
    assert_eq!(key_hash(b""), GOLDEN_EMPTY);
    assert_eq!(key_hash(b"203.0.113.7"), GOLDEN_ADDRESS);
    assert_eq!(
        ring_point(fnv1a(FNV_OFFSET, b"http://10.0.0.1:8080"), 7),
        GOLDEN_POINT
    );
}

// Computed once from the definition (FNV-1a 64, then splitmix64's finalizer) outside Rust.
const GOLDEN_EMPTY: u64 = 0xf52a_15e9_a9b5_e89b;
const GOLDEN_ADDRESS: u64 = 0x12ba_66e1_b50a_1879;
const GOLDEN_POINT: u64 = 0x8dee_e833_754b_fb1b;

#[test]
fn the_sliced_lookup_finds_what_a_binary_search_of_the_whole_ring_does() {
    for weights in [vec![1], vec![1; 3], vec![1, 2, 7], vec![3; 1_000]] {
        let ring = ConsistentHash::new(&pool(&weights), DEFAULT_BALANCE);
        let mut keys: Vec<u64> = (0..10_000).map(key).collect();
        keys.extend([0, 1, u64::MAX, u64::MAX - 1]);
        for &p in ring.points.iter().step_by(7) {
            keys.extend([p, p.wrapping_sub(1), p.wrapping_add(1)]);
        }
        for k in keys {
            let whole = ring.points.partition_point(|&point| point < k);
            assert_eq!(ring.first_at_or_after(k), whole, "{weights:?} key {k:#x}");
        }
    }
}

#[test]
fn a_key_always_goes_to_the_same_backend_on_every_replica() {
    let replica_a = pool(&[1; 10]);
    let replica_b = pool(&[1; 10]);
    let ring_a = ConsistentHash::new(&replica_a, DEFAULT_BALANCE);
    let ring_b = ConsistentHash::new(&replica_b, DEFAULT_BALANCE);
    for i in 0..1_000 {
        let first = pick(&ring_a, &replica_a, key(i));
        assert_eq!(pick(&ring_a, &replica_a, key(i)), first);
        assert_eq!(pick(&ring_b, &replica_b, key(i)), first, "key {i}");
    }
}

#[test]
fn keys_spread_evenly_over_equal_backends() {
    for (i, share) in shares(&pool(&[1; 10])).into_iter().enumerate() {
        assert!((0.085..=0.115).contains(&share), "backend {i}: {share}");
    }
}

#[test]
fn keys_spread_by_weight() {
    let got = shares(&pool(&[1, 2, 7]));
    for (i, expected) in [0.1, 0.2, 0.7].into_iter().enumerate() {
        assert!(
            (got[i] - expected).abs() < 0.015,
            "backend {i}: {} for {expected}",
            got[i]
        );
    }
}

#[test]
fn removing_one_of_ten_moves_only_its_own_keys() {
    let all = pool(&[1; 10]);
    let before = placement(&all);
    let gone = all[3].url().to_owned();
    let rest: Vec<Arc<Backend>> = all.iter().filter(|b| b.url() != gone).cloned().collect();
    let after = placement(&rest);
    let moved = (0..KEYS).filter(|&i| before[i] != after[i]).count();
    let were_on_gone = before.iter().filter(|u| **u == gone).count();
    let moved_from_others = (0..KEYS)
        .filter(|&i| before[i] != gone && before[i] != after[i])
        .count();
    let fraction = moved as f64 / KEYS as f64;
    eprintln!("removing 1 of 10 moved {fraction:.4} of the keys");
    assert!(fraction <= 1.3 / 10.0, "{fraction}");
    assert_eq!(moved, were_on_gone, "only the removed backend's keys move");
    assert_eq!(moved_from_others, 0);
}

#[test]
fn adding_one_to_ten_moves_keys_only_onto_it() {
    let ten = pool(&[1; 10]);
    let before = placement(&ten);
    let mut eleven = ten.clone();
    eleven.insert(4, backend("http://10.9.9.9:8080", 1));
    let after = placement(&eleven);
    let moved: Vec<usize> = (0..KEYS).filter(|&i| before[i] != after[i]).collect();
    let fraction = moved.len() as f64 / KEYS as f64;
    eprintln!("adding an 11th backend moved {fraction:.4} of the keys");
    assert!(fraction <= 1.3 / 11.0, "{fraction}");
    assert!(moved.iter().all(|&i| after[i] == "http://10.9.9.9:8080"));
}

#[test]
fn a_backend_at_its_cap_overflows_to_the_next_one_on_the_ring() {
    let backends = pool(&[1; 10]);
    let ring = ConsistentHash::new(&backends, DEFAULT_BALANCE);
    let home = pick(&ring, &backends, key(0));
    let homed: Vec<u64> = (0..KEYS)
        .map(key)
        .filter(|&k| pick(&ring, &backends, k) == home)
        .take(500)
        .collect();
    // Where each of those keys goes when its home cannot take it: the next backend clockwise.
    let mut without_home = Exclude::default();
    without_home.add(home);
    let next: Vec<usize> = homed
        .iter()
        .map(|&k| ring.select_keyed(&backends, &without_home, k).unwrap())
        .collect();
    // One request in flight on `home` and none elsewhere: its cap is ceil(1.25 × 2 / 10) = 1.
    let _busy = InFlightGuard::new(backends[home].clone());
    for (&k, &expected) in homed.iter().zip(&next) {
        assert_eq!(pick(&ring, &backends, k), expected);
    }
    // Its points are spread, so its overflow is too.
    let targets: HashSet<usize> = next.iter().copied().collect();
    assert!(targets.len() >= 5, "overflow went to {targets:?}");
    drop(_busy);
    assert_eq!(
        pick(&ring, &backends, homed[0]),
        home,
        "back home once it has room"
    );
}

#[test]
fn no_backend_goes_above_its_cap_even_when_most_keys_are_one_key() {
    for weights in [vec![1; 10], vec![1, 2, 3, 4, 5, 1, 2, 3, 4, 5]] {
        let backends = pool(&weights);
        let ring = ConsistentHash::new(&backends, DEFAULT_BALANCE);
        let total_weight: u32 = weights.iter().sum();
        let mut held = Vec::new();
        for i in 0..2_000 {
            // Half of the requests carry one hot key.
            let k = if i % 2 == 0 { key(0) } else { key(i) };
            let chosen = pick(&ring, &backends, k);
            held.push(InFlightGuard::new(backends[chosen].clone()));
            let average = held.len() as f64 / f64::from(total_weight);
            for (j, b) in backends.iter().enumerate() {
                let cap = (DEFAULT_BALANCE * average * f64::from(b.weight())).ceil();
                assert!(
                    b.in_flight() as f64 <= cap,
                    "{weights:?} after {}: backend {j} holds {} > {cap}",
                    held.len(),
                    b.in_flight()
                );
            }
        }
    }
}

#[test]
fn unavailable_and_excluded_backends_are_passed_over() {
    let backends = pool(&[1; 10]);
    let ring = ConsistentHash::new(&backends, DEFAULT_BALANCE);
    for i in 0..200 {
        let k = key(i);
        let home = pick(&ring, &backends, k);
        let mut exclude = Exclude::default();
        exclude.add(home);
        let next = ring.select_keyed(&backends, &exclude, k).unwrap();
        assert_ne!(next, home);
        backends[home].set_healthy(false);
        assert_eq!(pick(&ring, &backends, k), next, "down is like excluded");
        backends[home].set_healthy(true);
    }
    for b in &backends[1..] {
        b.set_healthy(false);
    }
    for i in 0..200 {
        assert_eq!(pick(&ring, &backends, key(i)), 0, "the only one left");
    }
    let mut exclude = Exclude::default();
    exclude.add(0);
    assert_eq!(ring.select_keyed(&backends, &exclude, key(1)), None);
}

#[test]
fn a_large_pool_with_one_backend_left_still_finds_it() {
    let backends = pool(&vec![1; 5_000]);
    let ring = ConsistentHash::new(&backends, DEFAULT_BALANCE);
    for b in &backends {
        b.set_healthy(false);
    }
    backends[4321].set_healthy(true);
    assert_eq!(pick(&ring, &backends, key(1)), 4321);
    backends[4321].set_healthy(false);
    assert_eq!(
        ring.select_keyed(&backends, &Exclude::default(), key(1)),
        None
    );
}

#[test]
fn without_a_key_it_is_least_connections() {
    let backends = pool(&[1, 1, 1]);
    let ring = ConsistentHash::new(&backends, DEFAULT_BALANCE);
    let _busy = [
        InFlightGuard::new(backends[0].clone()),
        InFlightGuard::new(backends[0].clone()),
        InFlightGuard::new(backends[2].clone()),
    ];
    assert_eq!(ring.select(&backends, &Exclude::default()), Some(1));
    // Through the trait's default, an algorithm without keys ignores one.
    let least = LeastConn::new();
    assert_eq!(
        least.select_keyed(&backends, &Exclude::default(), 42),
        Some(1)
    );
}

#[test]
fn a_different_backend_list_than_the_ring_was_built_for_falls_back() {
    let backends = pool(&[1; 4]);
    let ring = ConsistentHash::new(&backends, DEFAULT_BALANCE);
    let fewer = &backends[..2];
    for i in 0..100 {
        assert!(pick(&ring, fewer, key(i)) < 2);
    }
    let empty = ConsistentHash::new(&[], DEFAULT_BALANCE);
    assert_eq!(empty.select_keyed(&[], &Exclude::default(), 1), None);
}

#[test]
fn the_ring_stays_within_its_memory_budget() {
    let counted = |weights: &[u32]| {
        let ring = ConsistentHash::new(&pool(weights), DEFAULT_BALANCE);
        assert!(ring.points.windows(2).all(|w| w[0] <= w[1]), "sorted");
        assert_eq!(ring.points.len(), ring.owners.len());
        ring.points.len()
    };
    assert_eq!(counted(&[1; 10]), 2_560);
    assert_eq!(counted(&[1, 2, 7]), 2_560);
    let cap = (1 << 18) + 10_000;
    let large = counted(&vec![1; 10_000]);
    assert!(large <= cap, "{large}");
    let heavy = counted(&vec![10_000; 10_000]);
    assert!(heavy <= cap, "{heavy}");
    // 12 bytes a point, and the slices.
    let ring = ConsistentHash::new(&pool(&vec![10_000; 10_000]), DEFAULT_BALANCE);
    let bytes = ring.points.len() * 12 + ring.slices.len() * 4;
    assert!(bytes <= 4 << 20, "{bytes}");
    // A weight-1 backend among heavy ones still owns a point.
    let mut mixed = vec![10_000; 100];
    mixed.push(1);
    let ring = ConsistentHash::new(&pool(&mixed), DEFAULT_BALANCE);
    assert!(ring.owners.contains(&100));
}

#[test]
fn balance_below_one_or_nan_is_corrected() {
    let backends = pool(&[1; 3]);
    assert_eq!(ConsistentHash::new(&backends, 0.5).balance, 1.0);
    assert_eq!(
        ConsistentHash::new(&backends, f64::NAN).balance,
        DEFAULT_BALANCE
    );
}
