//! The cost of choosing a route with 1, 10, 100 and 1,000 routes configured: by host (one route
//! per host, the request's host the last one written) and by path (one `path_prefix` per route
//! under one host). `cargo bench --bench routes`.

use std::hint::black_box;
use std::time::Duration;

use alb::Config;
use alb::proxy::RouteTable;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SIZES: [usize; 4] = [1, 10, 100, 1_000];

/// A config with `n` routes, each `condition(i)`, all to the pool `default`.
fn table(n: usize, condition: impl Fn(usize) -> String) -> RouteTable {
    let mut text = String::from("backends = [\"http://127.0.0.1:8081\"]\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[route]]\n{}\npool = \"default\"\n",
            condition(i)
        ));
    }
    let config = Config::from_toml(&text, "bench").expect("a valid config");
    RouteTable::new(&config.routes)
}

fn request(host: &str, path: &str) -> http::Request<()> {
    http::Request::get(path)
        .header("host", host)
        .body(())
        .expect("a request")
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_by_host");
    for n in SIZES {
        let routes = table(n, |i| format!("host = \"service-{i}.example.com\""));
        let last = request(
            &format!("service-{}.example.com:8080", n - 1),
            "/api/v1/users",
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &last, |b, r| {
            b.iter(|| routes.route_of(black_box(r)).ok())
        });
    }
    group.finish();
    let mut group = c.benchmark_group("route_by_path");
    for n in SIZES {
        let routes = table(n, |i| {
            format!("host = \"www.example.com\"\npath_prefix = \"/section-{i}/\"")
        });
        let last = request("www.example.com", &format!("/section-{}/page", n - 1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &last, |b, r| {
            b.iter(|| routes.route_of(black_box(r)).ok())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = routes
}
criterion_main!(benches);
