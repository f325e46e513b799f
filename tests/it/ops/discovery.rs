//! DNS discovery against a real (tiny) DNS server on loopback: a backend name stands for every
//! address it resolves to, and follows the answers as they change, under load, losing nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::dns::TestDns;
use crate::support::{SteadyLoad, TestBackend, TestBalancer, wait_until};

const NAME: &str = "svc.alb.test";

/// Backends on 127.0.0.1..=127.0.0.n, all on one port (a name's addresses share the URL's port).
async fn backends_on_one_port(n: u8) -> Vec<TestBackend> {
    for _ in 0..20 {
        let first = TestBackend::start("b1").await;
        let port = first.addr.port();
        let mut all = vec![first];
        for i in 2..=n {
            let addr = SocketAddr::from(([127, 0, 0, i], port));
            // Another process may hold the port on that address: start over on a new one.
            if std::net::TcpListener::bind(addr).is_err() {
                break;
            }
            all.push(TestBackend::start_on(addr, &format!("b{i}")).await);
        }
        if all.len() == n as usize {
            return all;
        }
    }
    panic!("no port free on 127.0.0.1..{n}");
}

fn ips(n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
}

fn urls(balancer: &TestBalancer) -> Vec<String> {
    let mut urls: Vec<String> = balancer
        .proxy
        .backends()
        .iter()
        .map(|b| b.url().to_string())
        .collect();
    urls.sort();
    urls
}

async fn wait_backends(balancer: &TestBalancer, n: usize, within: Duration) {
    wait_until(within, || balancer.proxy.backends().len() == n)
        .await
        .unwrap_or_else(|_| panic!("not {n} backends within {within:?}: {:?}", urls(balancer)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_follows_its_addresses_under_load_without_failing_a_request() {
    let _cpu = crate::support::cpu::shared().await;
    let backends = backends_on_one_port(3).await;
    let port = backends[0].addr.port();
    let dns = TestDns::start().await;
    dns.set(NAME, &ips(2), 1);
    let balancer = TestBalancer::start(&format!(
        "backends = [\"http://{NAME}:{port}\"]\n\
         [health_check]\ninterval = \"200ms\"\n\
         [discovery]\nmin_interval = \"100ms\"\nmax_interval = \"10s\"\nnameservers = [\"{}\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        dns.addr
    ))
    .await;
    // Resolved before the first request: one backend per address, named by address.
    wait_backends(&balancer, 2, Duration::from_secs(5)).await;
    assert_eq!(
        urls(&balancer),
        vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.2:{port}")
        ]
    );
    let first = balancer.proxy.backends()[0].clone();
    assert_eq!(first.dns_name(), Some(format!("{NAME}:{port}").as_str()));
    let (resolved_queries, resolved_at) = (dns.queries(), Instant::now());

    let load = SteadyLoad::start(&balancer.url("/"), 4, 20_000);
    load.progress(200).await;
    assert!(backends[0].hits() > 0 && backends[1].hits() > 0);
    assert_eq!(backends[2].hits(), 0);

    // Scale up: the third address gets traffic; the first stays the same backend (same object,
    // so the same health, counters and pooled connections).
    dns.set(NAME, &ips(3), 1);
    let (changed_queries, changed_at) = (dns.queries(), Instant::now());
    wait_backends(&balancer, 3, Duration::from_secs(5)).await;
    let seen_after = changed_at.elapsed();
    // Seen by the lookup that the TTL brought next (or, on a slow machine, the one after).
    let lookups_to_see = dns.queries() - changed_queries;
    assert!(
        (1..=2).contains(&lookups_to_see),
        "the change was seen after {lookups_to_see} lookups"
    );
    wait_until(Duration::from_secs(5), || backends[2].hits() > 50)
        .await
        .expect("the new address takes traffic");
    let kept = balancer
        .proxy
        .backend(first.url())
        .expect("first address still a backend");
    assert!(Arc::ptr_eq(&kept, &first), "unchanged backend rebuilt");

    // Scale down to one: the others leave the pool; nothing fails.
    dns.set(NAME, &ips(1), 1);
    wait_backends(&balancer, 1, Duration::from_secs(5)).await;
    let (b2, b3) = (backends[1].hits(), backends[2].hits());
    load.progress(200).await;
    assert!(backends[1].hits() <= b2 + 4 && backends[2].hits() <= b3 + 4);

    // A 1 s TTL is honoured: asked about once a second (once when each TTL runs out), not once
    // every min_interval (100 ms).
    let queries = dns.queries();
    let elapsed = resolved_at.elapsed();
    assert!(
        queries - resolved_queries <= elapsed.as_secs() + 2,
        "{} lookups in {elapsed:?} with a 1 s TTL",
        queries - resolved_queries
    );
    // The name stops resolving: it keeps its last address, requests go on.
    dns.remove(NAME);
    wait_until(Duration::from_secs(10), || dns.queries() >= queries + 3)
        .await
        .expect("asked again after failures");
    assert_eq!(urls(&balancer), vec![format!("http://127.0.0.1:{port}")]);
    load.progress(100).await;

    // The metrics say what the name resolved to and that its lookups now fail.
    let (_, _, metrics) = crate::support::get(
        &crate::support::client(),
        &balancer.admin_url("/metrics").await,
    )
    .await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(&format!("alb_dns_addresses{{name=\"{NAME}\"}} 1")),
        "{metrics}"
    );
    let failed_lookups = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "alb_dns_lookups_total{{name=\"{NAME}\",result=\"failed\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("failed lookups counted");
    assert!(failed_lookups >= 3, "{failed_lookups}");

    let (sent, failed) = load.finish().await;
    println!(
        "discovery: {sent} requests, {failed} failed; scale-up seen after {seen_after:?}; {} DNS queries",
        dns.queries()
    );
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    // At least: the first lookup, the two changes, three failures (the README: 6 in all).
    assert!(dns.queries() >= 6, "{} DNS queries", dns.queries());
    balancer.stop().await;
    for b in backends {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_name_never_resolved_is_still_one_backend_resolved_per_connection() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let dns = TestDns::start().await;
    // No answer from this server for `localhost`-like names: the backend stays as written.
    let balancer = TestBalancer::start(&format!(
        "backends = [\"http://unknown.alb.test:{}\"]\n[discovery]\nnameservers = [\"{}\"]\n",
        backend.addr.port(),
        dns.addr
    ))
    .await;
    wait_until(Duration::from_secs(5), || dns.queries() >= 1)
        .await
        .expect("asked");
    assert_eq!(
        urls(&balancer),
        vec![format!("http://unknown.alb.test:{}", backend.addr.port())]
    );
    balancer.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_silent_name_does_not_hold_up_the_others() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let port = backend.addr.port();
    let dns = TestDns::start().await;
    // Sorted first, and never answered: each lookup waits out the resolver's timeout (2 s, twice).
    dns.silence("a-silent.alb.test");
    dns.set(NAME, &[Ipv4Addr::LOCALHOST], 30);
    let balancer = TestBalancer::start(&format!(
        "backends = [\"http://a-silent.alb.test:{port}\", \"http://{NAME}:{port}\"]\n\
         [discovery]\nnameservers = [\"{}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        dns.addr
    ))
    .await;
    let resolved = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(10), || {
        urls(&balancer).contains(&resolved)
    })
    .await
    .expect("the answered name is resolved");
    // Resolved while the silent name's first lookup still waits: none of its lookups has
    // failed yet (looked up one after the other, the answered name would come after that).
    let (_, _, metrics) = crate::support::get(
        &crate::support::client(),
        &balancer.admin_url("/metrics").await,
    )
    .await;
    let metrics = String::from_utf8_lossy(&metrics);
    let silent_failed = metrics
        .lines()
        .find(|l| {
            l.starts_with("alb_dns_lookups_total{name=\"a-silent.alb.test\",result=\"failed\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert_eq!(
        silent_failed, 0,
        "resolved only after the silent name failed:\n{metrics}"
    );
    // The silent one stays as written, resolved per connection.
    assert!(urls(&balancer).contains(&format!("http://a-silent.alb.test:{port}")));
    balancer.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_name_brings_at_most_256_backends() {
    let _cpu = crate::support::cpu::shared().await;
    let dns = TestDns::start().await;
    let many: Vec<Ipv4Addr> = (0..300u32)
        .map(|i| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
        .collect();
    dns.set(NAME, &many, 30);
    let balancer = TestBalancer::start(&format!(
        "backends = [\"http://{NAME}:9\"]\n[discovery]\nnameservers = [\"{}\"]\n",
        dns.addr
    ))
    .await;
    wait_until(Duration::from_secs(10), || {
        balancer.proxy.backends().len() > 1
    })
    .await
    .expect("resolved");
    assert_eq!(
        balancer.proxy.backends().len(),
        alb::control::MAX_ADDRESSES_PER_NAME
    );
    balancer.stop().await;
}

#[tokio::test]
async fn a_name_brought_by_a_change_is_resolved_at_once() {
    let _cpu = crate::support::cpu::shared().await;
    let backends = backends_on_one_port(2).await;
    let port = backends[0].addr.port();
    let dns = TestDns::start().await;
    dns.set(NAME, &ips(2), 3600);
    let text = |line: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n{line}\n[admin]\nlisten = \"off\"\n\
             [discovery]\nnameservers = [\"{}\"]\n",
            dns.addr
        )
    };
    let balancer =
        TestBalancer::start(&text(&format!("backends = [\"http://127.0.0.1:{port}\"]"))).await;
    // Serving, so discovery has done its first round and waits.
    let (status, _, _) = crate::support::get(&crate::support::client(), &balancer.url("/")).await;
    assert_eq!(status, 200);
    // A reload (here applied directly) that names a host nobody resolved yet.
    let config = alb::Config::from_toml(
        &text(&format!("backends = [\"http://{NAME}:{port}\"]")),
        "test.toml",
    )
    .unwrap();
    balancer.control.apply(&config);
    wait_backends(&balancer, 2, Duration::from_secs(3)).await;
    assert_eq!(
        urls(&balancer),
        vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.2:{port}")
        ]
    );
    balancer.stop().await;
    for b in backends {
        b.stop().await;
    }
}
