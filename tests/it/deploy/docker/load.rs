//! Steady GETs from the host through the published port, counting each answer by the backend
//! that gave it (`x-backend`) and keeping what failed, bounded in count and in time per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::support::{backend_of, client, full};

/// Longest a request may take before it counts as failed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    by_backend: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, workers: usize, per_worker: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let workers = (0..workers)
            .map(|_| {
                let (stop, tally, url) = (stop.clone(), tally.clone(), url.to_string());
                tokio::spawn(async move {
                    let c = client();
                    for _ in 0..per_worker {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let request = http::Request::get(&url)
                            .body(full(bytes::Bytes::new()))
                            .unwrap();
                        let outcome =
                            tokio::time::timeout(REQUEST_DEADLINE, c.request(request)).await;
                        tally.sent.fetch_add(1, Ordering::SeqCst);
                        match outcome {
                            Ok(Ok(r)) if r.status() == 200 => {
                                *tally
                                    .by_backend
                                    .lock()
                                    .unwrap()
                                    .entry(backend_of(r.headers()))
                                    .or_default() += 1;
                            }
                            Ok(Ok(r)) => tally
                                .failures
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status())),
                            Ok(Err(e)) => {
                                tally.failures.lock().unwrap().push(format!("error {e:?}"))
                            }
                            Err(_) => tally
                                .failures
                                .lock()
                                .unwrap()
                                .push("no answer in 30 s".into()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            workers,
        }
    }

    pub fn sent(&self) -> u64 {
        self.tally.sent.load(Ordering::SeqCst)
    }

    pub fn by_backend(&self) -> BTreeMap<String, u64> {
        self.tally.by_backend.lock().unwrap().clone()
    }

    /// Waits (at most `within`) until `n` more requests were answered.
    pub async fn progress(&self, n: u64, within: Duration) {
        let target = self.sent() + n;
        crate::support::wait_until(within, || self.sent() >= target)
            .await
            .unwrap_or_else(|_| panic!("load stalled below {target} requests"));
    }

    /// Stops the clients; returns (sent, the failures).
    pub async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in std::mem::take(&mut self.workers) {
            worker.await.expect("load worker");
        }
        (self.sent(), self.tally.failures.lock().unwrap().clone())
    }
}
