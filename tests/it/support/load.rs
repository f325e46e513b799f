//! Steady GET load from concurrent keep-alive clients, bounded in count, counting what failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::{client, full, wait_until};

pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    workers: Vec<JoinHandle<()>>,
}

impl SteadyLoad {
    /// `workers` clients each sending GETs to `url` one after another, at most `per_worker` each.
    /// A request fails unless it gets a 200.
    pub fn start(url: &str, workers: usize, per_worker: u64) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let workers = (0..workers)
            .map(|_| {
                let (stop, sent, failed, url) =
                    (stop.clone(), sent.clone(), failed.clone(), url.to_string());
                tokio::spawn(async move {
                    let c = client();
                    for _ in 0..per_worker {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let request = http::Request::get(&url).body(full(Bytes::new())).unwrap();
                        let ok = matches!(c.request(request).await, Ok(r) if r.status() == 200);
                        sent.fetch_add(1, Ordering::SeqCst);
                        if !ok {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        SteadyLoad {
            stop,
            sent,
            failed,
            workers,
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have been sent.
    pub async fn progress(&self, n: u64) {
        let target = self.sent() + n;
        let before = self.sent();
        if wait_until(Duration::from_secs(20), || self.sent() >= target)
            .await
            .is_err()
        {
            panic!(
                "load stalled: {} of {n} more requests in 20 s ({} failed so far)",
                self.sent() - before,
                self.failed()
            );
        }
    }

    /// Stops the clients and waits for them; returns (sent, failed).
    pub async fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in std::mem::take(&mut self.workers) {
            worker.await.expect("load worker");
        }
        (self.sent(), self.failed())
    }
}
