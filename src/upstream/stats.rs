//! Per-backend traffic statistics, kept as relaxed atomics so that counting a request costs a few
//! uncontended additions and never a lock; read (and turned into Prometheus metrics and the
//! dashboard) only when someone asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds (the last bucket is +Inf).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Status classes counted: 1xx..5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Method classes counted.
pub const METHOD_CLASSES: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "other"];

pub fn method_class(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        _ => 5,
    }
}

/// A histogram of durations with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&b| b < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// (sum in seconds, count, cumulative buckets) as Prometheus wants them.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, cumulative, buckets)
    }
}

#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests answered, by method class and status class.
    responses: [[AtomicU64; STATUS_CLASSES.len()]; METHOD_CLASSES.len()],
    /// Time from sending the request to the response headers.
    pub upstream_latency: Histogram,
    pub retries: AtomicU64,
    pub ejections: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl BackendStats {
    /// Counts one answer and its latency; [`Backend::record_response`](super::Backend::record_response)
    /// also keeps the recent latency, which selection reads.
    pub fn record_response(&self, method: usize, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[method.min(METHOD_CLASSES.len() - 1)][class].fetch_add(1, Ordering::Relaxed);
        self.upstream_latency.observe(latency);
    }

    pub fn responses(&self, method: usize, class: usize) -> u64 {
        self.responses[method][class].load(Ordering::Relaxed)
    }

    pub fn total_responses(&self) -> u64 {
        self.responses
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}
