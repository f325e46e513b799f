//! SRV discovery against Debian's dnsmasq, a real DNS server: `srv+http://_web._tcp.alb.test`
//! stands for each target of the lowest priority at its own port and weight, the next priority
//! as backups taken only when the others are down, and follows the records when they change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{TestBackend, TestBalancer, answers_by_backend, client, get, wait_until};

const SERVICE: &str = "_web._tcp.alb.test";

/// dnsmasq answering for `alb.test` on a loopback port, with only the records it is given: no
/// upstream, no /etc/hosts, no config file. Stopped when dropped.
struct Dnsmasq {
    program: std::path::PathBuf,
    child: Child,
    addr: SocketAddr,
}

/// `(target, port, priority, weight)`: one SRV record of [`SERVICE`]; every target is 127.0.0.1.
type Srv = (&'static str, u16, u16, u16);

impl Dnsmasq {
    fn start(program: &std::path::Path, records: &[Srv]) -> Dnsmasq {
        for _ in 0..20 {
            // A free port, freed for dnsmasq to take (it cannot be told port 0); should another
            // process take it first, dnsmasq exits and another port is tried.
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free UDP port")
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Some(dns) = Dnsmasq::start_on(program, addr, records) {
                return dns;
            }
        }
        panic!("dnsmasq did not start on any port");
    }

    fn start_on(program: &std::path::Path, addr: SocketAddr, records: &[Srv]) -> Option<Dnsmasq> {
        let mut command = Command::new(program);
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--user=",
            // Records live 1 s: alb asks again every second.
            "--local-ttl=1",
            &format!("--port={}", addr.port()),
        ]);
        let mut targets: Vec<&str> = records.iter().map(|r| r.0).collect();
        targets.sort();
        targets.dedup();
        for target in targets {
            command.arg(format!("--host-record={target},127.0.0.1"));
        }
        for (target, port, priority, weight) in records {
            command.arg(format!(
                "--srv-host={SERVICE},{target},{port},{priority},{weight}"
            ));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq runs");
        // Listening once a TCP connect to its port succeeds (it serves DNS over TCP too).
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return Some(Dnsmasq {
                    program: program.to_path_buf(),
                    child,
                    addr,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        panic!("dnsmasq did not listen on {addr} within 2 s");
    }

    /// The same server with other records (dnsmasq reads `--srv-host` only at start).
    fn restart(mut self, records: &[Srv]) -> Dnsmasq {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let program = self.program.clone();
        (0..50)
            .find_map(|_| {
                let dns = Dnsmasq::start_on(&program, self.addr, records);
                if dns.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                dns
            })
            .expect("dnsmasq restarts on its port")
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many of `counts` the backend `name` answered.
fn count(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_bring_their_ports_weights_and_backups() {
    let test = "srv_targets_bring_their_ports_weights_and_backups";
    let Some(program) = crate::support::prerequisite::program(
        test,
        &["dnsmasq", "/usr/sbin/dnsmasq"],
        "needs Debian's dnsmasq (package dnsmasq-base) as the DNS server",
    ) else {
        return;
    };
    let _cpu = crate::support::cpu::shared().await;
    let (b1, b2, b3) = (
        TestBackend::start("b1").await,
        TestBackend::start("b2").await,
        TestBackend::start("b3").await,
    );
    let port = |b: &TestBackend| b.addr.port();
    let dns = Dnsmasq::start(
        &program,
        &[
            ("t1.alb.test", port(&b1), 10, 3),
            ("t2.alb.test", port(&b2), 10, 1),
            ("t3.alb.test", port(&b3), 20, 5),
        ],
    );
    let balancer = TestBalancer::start(&format!(
        "backends = [\"srv+http://{SERVICE}\"]\n\
         [health_check]\ninterval = \"200ms\"\n\
         [discovery]\nmin_interval = \"100ms\"\nmax_interval = \"10s\"\nnameservers = [\"{}\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        dns.addr
    ))
    .await;
    wait_until(Duration::from_secs(5), || {
        balancer.proxy.backends().len() == 3
    })
    .await
    .expect("three targets discovered");
    let mut seen: Vec<(String, u32, bool, Option<String>)> = balancer
        .proxy
        .backends()
        .iter()
        .map(|b| {
            let dns_name = b.dns_name().map(str::to_string);
            (b.url().to_string(), b.weight(), b.is_backup(), dns_name)
        })
        .collect();
    seen.sort();
    let expected = |b: &TestBackend, weight, backup| {
        let source = Some(format!("srv+http://{SERVICE}"));
        (format!("http://{}", b.addr), weight, backup, source)
    };
    let mut want = vec![
        expected(&b1, 3, false),
        expected(&b2, 1, false),
        expected(&b3, 5, true),
    ];
    want.sort();
    assert_eq!(seen, want);

    // The SRV weights share the traffic 3:1 between the first priority; the backup gets none.
    let names = answers_by_backend(&balancer.url("/"), 400).await;
    let (n1, n2, n3) = (
        count(&names, "b1"),
        count(&names, "b2"),
        count(&names, "b3"),
    );
    assert_eq!(n3, 0, "the backup took requests while the others were up");
    let ratio = n1 as f64 / n2.max(1) as f64;
    assert!((2.5..=3.5).contains(&ratio), "b1 {n1}, b2 {n2}");

    // The first priority gone: the backup takes everything, nothing fails.
    let (closed1, closed2) = (b1.stop().await, b2.stop().await);
    for closed in [&closed1, &closed2] {
        balancer
            .wait_health(&closed.addr(), false, Duration::from_secs(5))
            .await;
    }
    let names = answers_by_backend(&balancer.url("/"), 50).await;
    assert_eq!(count(&names, "b3"), 50, "{names:?}");

    // The records change: t3 alone, now of the first priority. alb follows within a TTL or two.
    let dns = dns.restart(&[("t3.alb.test", port(&b3), 10, 2)]);
    wait_until(Duration::from_secs(10), || {
        let backends = balancer.proxy.backends();
        backends.len() == 1 && !backends[0].is_backup() && backends[0].weight() == 2
    })
    .await
    .expect("the pool follows the changed records");

    let (_, _, metrics) = get(&client(), &balancer.admin_url("/metrics").await).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(&format!("alb_dns_addresses{{name=\"{SERVICE}\"}} 1")),
        "{metrics}"
    );
    drop(dns);
    balancer.stop().await;
    b3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srv_target_on_port_zero_is_no_backend() {
    let Some(program) = crate::support::prerequisite::program(
        "an_srv_target_on_port_zero_is_no_backend",
        &["dnsmasq", "/usr/sbin/dnsmasq"],
        "needs dnsmasq",
    ) else {
        return;
    };
    let _cpu = crate::support::cpu::shared().await;
    let b2 = TestBackend::start("b2").await;
    let dns = Dnsmasq::start(
        &program,
        &[
            ("t1.alb.test", 0, 10, 1),
            ("t2.alb.test", b2.addr.port(), 10, 1),
        ],
    );
    let balancer = TestBalancer::start(&format!(
        "backends = [\"srv+http://{SERVICE}\"]\n\
         [discovery]\nmin_interval = \"100ms\"\nnameservers = [\"{}\"]\n",
        dns.addr
    ))
    .await;
    let _ = wait_until(Duration::from_secs(5), || {
        balancer
            .proxy
            .backends()
            .iter()
            .any(|b| b.url().starts_with("http://"))
    })
    .await;
    let urls: Vec<String> = balancer
        .proxy
        .backends()
        .iter()
        .map(|b| b.url().to_string())
        .collect();
    let want = format!("http://{}", b2.addr);
    drop(dns);
    balancer.stop().await;
    b2.stop().await;
    assert_eq!(urls, [want]);
}
