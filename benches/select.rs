//! S6 of the benchmark suite (bench/README.md): the cost of picking one backend among 10, 1,000
//! and 10,000, for every algorithm, and for consistent hashing by request key (`select_hash`) and
//! finding a sticky-session cookie's backend (`select_sticky`). Run with `cargo bench --bench
//! select`; `bench/run.sh` reads the means from
//! `target/criterion/select_<algorithm>/<backends>/new/estimates.json`.
//!
//! Criterion's times are kept short (1 s per case) so that the whole bench takes well under a
//! minute; pass `-- --measurement-time 5` for steadier figures.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alb::balance::{ConsistentHash, DEFAULT_BALANCE, Exclude, Selector, key_hash, selector_for};
use alb::config::Algorithm;
use alb::proxy::{StickyCookies, process_secret};
use alb::upstream::Backend;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

const ALGORITHMS: [(&str, Algorithm); 5] = [
    ("least_conn", Algorithm::LeastConn),
    ("round_robin", Algorithm::RoundRobin),
    ("random", Algorithm::Random),
    ("p2c", Algorithm::P2c),
    ("least_time", Algorithm::LeastTime),
];

/// `n` healthy backends on distinct loopback ports, built the way alb builds them from its config.
fn backends(n: usize) -> Vec<Arc<Backend>> {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://127.0.0.1:{}", 20_000 + i))
        .collect();
    let listen = SocketAddr::from(([127, 0, 0, 1], 18_080));
    let config = alb::Config::with_backends(listen, &urls).expect("a valid config");
    // Like `Snapshot::new`: all backends built first, then put into their `Arc`s one after another.
    let built: Vec<Backend> = config.backends.iter().map(Backend::new).collect();
    built.into_iter().map(Arc::new).collect()
}

fn select(c: &mut Criterion) {
    for (name, algorithm) in ALGORITHMS {
        let mut group = c.benchmark_group(format!("select_{name}"));
        for n in SIZES {
            let pool = backends(n);
            let selector = selector_for(algorithm, &pool);
            let exclude = Exclude::default();
            group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
                b.iter(|| selector.select(black_box(pool), black_box(&exclude)))
            });
        }
        group.finish();
    }
}

/// Keys cycled through by the keyed benches: distinct clients, hashed outside the timed loop.
const KEYS: usize = 4096;

fn select_hash(c: &mut Criterion) {
    let keys: Vec<u64> = (0..KEYS)
        .map(|i| key_hash(format!("198.51.{}.{}", i / 256, i % 256).as_bytes()))
        .collect();
    let mut group = c.benchmark_group("select_hash");
    for n in SIZES {
        let pool = backends(n);
        let selector = ConsistentHash::new(&pool, DEFAULT_BALANCE);
        let exclude = Exclude::default();
        let mut next = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
            b.iter(|| {
                next = (next + 1) % KEYS;
                selector.select_keyed(black_box(pool), black_box(&exclude), keys[next])
            })
        });
    }
    group.finish();
}

/// The sticky pick: finding the pool's cookie among a browser's usual few and mapping it to its
/// backend.
fn select_sticky(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_sticky");
    for n in SIZES {
        let pool = backends(n);
        let urls: Vec<&str> = pool.iter().map(|b| b.url()).collect();
        let sticky = StickyCookies::new("alb_srv", None, &process_secret(), &urls)
            .expect("a valid cookie name");
        let requests: Vec<http::HeaderMap> = (0..KEYS.min(n * 4))
            .map(|i| {
                let set = sticky.set_cookie(i % n, false).expect("a backend");
                let pair = set.to_str().ok().and_then(|s| s.split(';').next());
                let field = format!("_ga=GA1.2.3; {}; theme=dark", pair.unwrap_or(""));
                let mut headers = http::HeaderMap::new();
                headers.insert(http::header::COOKIE, field.parse().expect("a cookie field"));
                headers
            })
            .collect();
        let mut next = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &requests, |b, requests| {
            b.iter(|| {
                next = (next + 1) % requests.len();
                sticky.backend_for(black_box(&requests[next]))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default; command-line options (`-- --measurement-time 5`) override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = select, select_hash, select_sticky
}
criterion_main!(benches);
