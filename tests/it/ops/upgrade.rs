//! Binary upgrade of the real binary under load: SIGUSR2 makes alb start itself anew, hand its
//! listening sockets to the new process and drain. Keep-alive clients and clients opening a new
//! connection per request run throughout: no request fails and no connection is refused. A new
//! process whose config is invalid exits non-zero and the old one keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::binary::{LoggedProcess, Replacement};
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Every wait on the processes is bounded by this.
const WAIT: Duration = Duration::from_secs(40);

/// The word after `marker` in `line`, without a URL scheme.
fn word_after(line: &str, marker: &str) -> String {
    let start = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in {line:?}"))
        + marker.len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("http://")
        .trim_end_matches(';')
        .to_string()
}

fn config(backend: &TestBackend) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\naccess_log = false\nbackends = [\"{}\"]\n\
         [timeouts]\ndrain = \"10s\"\n[health_check]\ninterval = \"200ms\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        backend.url()
    )
}

/// Clients that open a new connection for every request (`connection: close`), so that a
/// moment with nobody accepting, or a listener closed too early, shows as a refused connect.
struct FreshConnections {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    workers: Vec<JoinHandle<()>>,
}

impl FreshConnections {
    fn start(addr: &str, workers: usize, per_worker: u64) -> FreshConnections {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let workers = (0..workers)
            .map(|_| {
                let (stop, addr) = (stop.clone(), addr.to_string());
                let (sent, failed, refused) =
                    (counters.0.clone(), counters.1.clone(), counters.2.clone());
                tokio::spawn(async move {
                    for _ in 0..per_worker {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let outcome = tokio::time::timeout(WAIT, one_request(&addr)).await;
                        sent.fetch_add(1, Ordering::SeqCst);
                        match outcome {
                            Ok(Ok(true)) => {}
                            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        FreshConnections {
            stop,
            sent: counters.0,
            failed: counters.1,
            refused: counters.2,
            workers,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops the clients; returns (sent, failed, refused).
    async fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in std::mem::take(&mut self.workers) {
            worker.await.expect("fresh-connection worker");
        }
        let get = |n: &AtomicU64| n.load(Ordering::SeqCst);
        (get(&self.sent), get(&self.failed), get(&self.refused))
    }
}

/// One GET on a new connection; whether it got a whole 200 answer.
async fn one_request(addr: &str) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: alb\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer.starts_with(b"HTTP/1.1 200"))
}

/// Both kinds of load, reported together.
struct Load {
    kept: SteadyLoad,
    fresh: FreshConnections,
}

impl Load {
    fn start(addr: &str) -> Load {
        Load {
            kept: SteadyLoad::start(&format!("http://{addr}/"), 6, 50_000),
            fresh: FreshConnections::start(addr, 3, 50_000),
        }
    }

    /// Waits for `n` more requests of each kind.
    async fn progress(&self, n: u64) {
        let fresh = self.fresh.sent() + n;
        self.kept.progress(n).await;
        wait_until(WAIT, || self.fresh.sent() >= fresh)
            .await
            .expect("fresh connections keep flowing");
    }

    /// (keep-alive sent, failed; fresh sent, failed, refused)
    async fn finish(self) -> (u64, u64, u64, u64, u64) {
        let (kept_sent, kept_failed) = self.kept.finish().await;
        let (sent, failed, refused) = self.fresh.finish().await;
        (kept_sent, kept_failed, sent, failed, refused)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_the_listeners_over_without_a_refused_connection() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let dir = TempDir::new("upgrade");
    let path = dir.write("alb.toml", &config(&backend));
    let mut old = LoggedProcess::alb(&path);
    let addr = word_after(
        &old.wait_line("alb listening on", 1, WAIT).await,
        "alb listening on ",
    );
    let admin = word_after(
        &old.wait_line("admin listening on", 1, WAIT).await,
        "admin listening on ",
    );

    let load = Load::start(&addr);
    load.progress(1000).await;
    LoggedProcess::signal(old.pid, "-USR2");
    let serving = old
        .wait_line("upgrade: serving on the listeners", 1, WAIT)
        .await;
    let new = Replacement(word_after(&serving, "this is pid ").parse().expect("a pid"));
    assert_ne!(new.0, old.pid, "{serving}");
    let old_exit = old.exit_status(WAIT).await;
    assert!(old_exit.success(), "old alb: {old_exit}\n{}", old.log());
    assert!(new.running(), "the new alb runs on");
    // Only the new process is left: whatever is answered now, it answered.
    let hits_after_exit = backend.hits();
    load.progress(1000).await;
    let (kept_sent, kept_failed, fresh_sent, fresh_failed, refused) = load.finish().await;
    assert!(backend.hits() > hits_after_exit);
    let (status, _, _) = get(&client(), &format!("http://{admin}/healthz")).await;
    assert_eq!(status, 200, "the admin listener was handed over too");
    println!(
        "upgrade: old pid {} -> new pid {}; keep-alive: {kept_sent} requests, {kept_failed} failed; \
         new connection per request: {fresh_sent} requests, {fresh_failed} failed, {refused} refused; \
         old exit code {:?}",
        old.pid,
        new.0,
        old_exit.code()
    );
    assert_eq!(
        kept_failed, 0,
        "keep-alive requests failed out of {kept_sent}"
    );
    assert_eq!(fresh_failed, 0, "requests failed out of {fresh_sent}");
    assert_eq!(refused, 0, "connections refused out of {fresh_sent}");
    assert_eq!(old.lines_with("upgrade failed").len(), 0, "{}", old.log());
    new.stop().await;
    backend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_with_an_invalid_config_leaves_the_old_one_serving() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b").await;
    let dir = TempDir::new("upgrade-invalid");
    let path = dir.write("alb.toml", &config(&backend));
    let mut old = LoggedProcess::alb(&path);
    let addr = word_after(
        &old.wait_line("alb listening on", 1, WAIT).await,
        "alb listening on ",
    );

    let load = Load::start(&addr);
    load.progress(200).await;
    dir.write("alb.toml", "backends = []\nalgorithm = \"fastest\"\n");
    LoggedProcess::signal(old.pid, "-USR2");
    let failed = old.wait_line("upgrade failed", 1, WAIT).await;
    assert!(
        failed.contains("exited before taking the listeners") && failed.contains("exit status: 1"),
        "{failed}"
    );
    // The new process said why, in the same log.
    old.wait_line("algorithm: unknown algorithm", 1, WAIT).await;
    load.progress(1000).await;
    assert!(
        old.child.try_wait().expect("try_wait").is_none(),
        "the old alb serves on"
    );
    let (kept_sent, kept_failed, fresh_sent, fresh_failed, refused) = load.finish().await;
    println!(
        "failed upgrade: keep-alive {kept_sent} requests, {kept_failed} failed; \
         new connection per request: {fresh_sent} requests, {fresh_failed} failed, {refused} refused"
    );
    assert_eq!(kept_failed + fresh_failed + refused, 0);
    LoggedProcess::signal(old.pid, "-TERM");
    let status = old.exit_status(WAIT).await;
    assert!(status.success(), "old alb: {status}");
    backend.stop().await;
}
