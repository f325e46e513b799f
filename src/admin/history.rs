//! The dashboard's memory: once a second a sampler reads the counters alb keeps anyway (per-backend
//! [`BackendStats`](crate::upstream::BackendStats), [`ProxyStats`](crate::proxy::ProxyStats), the
//! health and admin flags) and turns their differences into rates, which it keeps for 15 minutes in
//! fixed rings. Nothing is added to the request path: the cost is one pass over the backends a
//! second, off the data path, on the admin task's runtime.
//!
//! Memory is bounded: per series (the total, and each backend seen in the window) one ring of
//! [`WINDOW`] [`Sample`]s (44 bytes each, 39 KiB a ring) and at most [`WINDOW`] health spans (one
//! per change, reasons cut to [`MAX_REASON`] bytes). A steady backend costs about 40 KiB; one
//! flapping every second with long reasons at most about 230 KiB. A backend gone (removed, reload,
//! DNS) keeps its series until its last sample leaves the window. `/api/history` reports the
//! figure as `memory_bytes`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use crate::proxy::Proxy;
use crate::upstream::{AdminState, Backend, Histogram, LATENCY_BUCKETS, METHOD_CLASSES};

/// Samples kept: 15 minutes at one a second.
pub const WINDOW: usize = 900;
const PERIOD: Duration = Duration::from_secs(1);
/// Longest health reason kept, in bytes.
const MAX_REASON: usize = 160;
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// The last [`WINDOW`] values pushed, oldest overwritten first; addressed by sequence number
/// (the count of pushes before it), so rings filled in step share one time axis.
#[derive(Debug)]
pub struct Ring<T> {
    slots: Box<[T]>,
    pushed: u64,
}

impl<T: Copy + Default> Ring<T> {
    pub fn new(capacity: usize) -> Ring<T> {
        Ring::starting_at(capacity, 0)
    }

    /// A ring whose next value is number `seq`: the ones before read as `T::default()` while
    /// they would still be in the window, so a series made late lines up with older ones.
    pub fn starting_at(capacity: usize, seq: u64) -> Ring<T> {
        Ring {
            slots: vec![T::default(); capacity.max(1)].into_boxed_slice(),
            pushed: seq,
        }
    }

    pub fn push(&mut self, value: T) {
        let i = (self.pushed % self.slots.len() as u64) as usize;
        self.slots[i] = value;
        self.pushed += 1;
    }

    /// Sequence number of the oldest value still held.
    pub fn first(&self) -> u64 {
        self.pushed.saturating_sub(self.slots.len() as u64)
    }

    /// The value pushed as number `seq`, if still held.
    pub fn get(&self, seq: u64) -> Option<T> {
        (seq >= self.first() && seq < self.pushed)
            .then(|| self.slots[(seq % self.slots.len() as u64) as usize])
    }
}

/// The `q`-quantile (0..=1) in seconds of the observations counted per latency bucket in
/// `counts` (not cumulative), interpolating linearly inside the bucket as Prometheus'
/// `histogram_quantile` does; the +Inf bucket answers with the last finite bound. None with no
/// observations.
pub fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count == 0 || ((below + count) as f64) < rank {
            below += count;
            continue;
        }
        let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
        let Some(&upper) = LATENCY_BUCKETS.get(i) else {
            return Some(lower);
        };
        let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
        return Some(lower + (upper - lower) * within);
    }
    LATENCY_BUCKETS.last().copied()
}

/// Per-bucket counts (not cumulative) of a histogram now.
fn bucket_counts(h: &Histogram) -> [u64; BUCKETS] {
    let (_, _, cumulative) = h.snapshot();
    let mut counts = [0; BUCKETS];
    let mut before = 0;
    for (slot, (_, c)) in counts.iter_mut().zip(cumulative) {
        *slot = c.saturating_sub(before);
        before = c;
    }
    counts
}

/// One second of one series. Rates are per second; latencies in milliseconds, NaN when nothing
/// was answered in that second.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    present: bool,
    rps: f32,
    errors_4xx: f32,
    errors_5xx: f32,
    in_flight: u32,
    p50_ms: f32,
    p95_ms: f32,
    p99_ms: f32,
    retries: f32,
    budget_exhausted: f32,
    ejections: f32,
}

impl Default for Sample {
    /// The sample of a series that did not exist at that second.
    fn default() -> Sample {
        Sample {
            present: false,
            rps: 0.0,
            errors_4xx: 0.0,
            errors_5xx: 0.0,
            in_flight: 0,
            p50_ms: f32::NAN,
            p95_ms: f32::NAN,
            p99_ms: f32::NAN,
            retries: 0.0,
            budget_exhausted: 0.0,
            ejections: 0.0,
        }
    }
}

/// Counter readings at one sampling; rates are differences of two of them.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    responses: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    buckets: [u64; BUCKETS],
    retries: u64,
    budget_exhausted: u64,
    ejections: u64,
}

impl Counters {
    fn of(b: &Backend) -> Counters {
        let s = b.stats();
        let class = |c: usize| (0..METHOD_CLASSES.len()).map(|m| s.responses(m, c)).sum();
        Counters {
            responses: s.total_responses(),
            errors_4xx: class(3),
            errors_5xx: class(4),
            buckets: bucket_counts(&s.upstream_latency),
            retries: s.retries.load(std::sync::atomic::Ordering::Relaxed),
            ejections: s.ejections.load(std::sync::atomic::Ordering::Relaxed),
            budget_exhausted: 0,
        }
    }

    fn add(&mut self, o: &Counters) {
        self.responses += o.responses;
        self.errors_4xx += o.errors_4xx;
        self.errors_5xx += o.errors_5xx;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.retries += o.retries;
        self.budget_exhausted += o.budget_exhausted;
        self.ejections += o.ejections;
    }

    /// The sample from `before` to `self` over `secs`. A counter that went down (a backend
    /// replaced by a reload starts from zero) counts as no change rather than a negative rate.
    fn rates(&self, before: &Counters, secs: f64, in_flight: u64) -> Sample {
        let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs) as f32;
        let mut delta = [0u64; BUCKETS];
        for (d, (now, then)) in delta
            .iter_mut()
            .zip(self.buckets.iter().zip(before.buckets))
        {
            *d = now.saturating_sub(then);
        }
        let ms = |q| quantile(&delta, q).map_or(f32::NAN, |s| (s * 1000.0) as f32);
        Sample {
            present: true,
            rps: rate(self.responses, before.responses),
            errors_4xx: rate(self.errors_4xx, before.errors_4xx),
            errors_5xx: rate(self.errors_5xx, before.errors_5xx),
            in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            retries: rate(self.retries, before.retries),
            budget_exhausted: rate(self.budget_exhausted, before.budget_exhausted),
            ejections: rate(self.ejections, before.ejections),
        }
    }
}

/// A stretch of seconds `[from, to)` (sequence numbers) in one health state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Span {
    pub from: u64,
    pub to: u64,
    /// `up`, `down`, `ejected`, `draining` or `disabled`, as `/api/backends` says.
    pub state: &'static str,
    /// Why, where alb knows: the failing probe's detail, or who took it out.
    pub reason: String,
}

/// A backend's state and the reason for it, as the API's `state` field decides it.
fn health(b: &Backend) -> (&'static str, String) {
    match b.admin_state() {
        AdminState::Draining => ("draining", "drained through the admin API".into()),
        AdminState::Disabled => ("disabled", "disabled through the admin API".into()),
        AdminState::Enabled if !b.is_healthy() => {
            let reason = match b.last_probe() {
                Some((false, detail)) => format!("health check failed: {detail}"),
                _ => "health checks failing".into(),
            };
            ("down", reason)
        }
        AdminState::Enabled if b.is_ejected() => (
            "ejected",
            "ejected by passive health (failed requests)".into(),
        ),
        AdminState::Enabled => ("up", String::new()),
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.shrink_to_fit();
    }
    s
}

#[derive(Debug)]
struct BackendSeries {
    pool: String,
    url: String,
    samples: Ring<Sample>,
    spans: std::collections::VecDeque<Span>,
    last: Option<Counters>,
    /// Sequence number of the last second it was seen in a snapshot.
    seen: u64,
}

/// Everything the sampler keeps; one lock, taken for a pass a second and for each `/api/history`.
#[derive(Debug)]
pub struct History {
    /// Samples taken so far; the next one is number `seq`.
    seq: u64,
    times: Ring<u64>,
    total: Ring<Sample>,
    last_total: Option<Counters>,
    backends: Vec<BackendSeries>,
    index: HashMap<(String, String), usize>,
    last_at: Option<Instant>,
}

impl Default for History {
    fn default() -> History {
        History {
            seq: 0,
            times: Ring::new(WINDOW),
            total: Ring::new(WINDOW),
            last_total: None,
            backends: Vec::new(),
            index: HashMap::new(),
            last_at: None,
        }
    }
}

impl History {
    /// Reads every counter and, from the second reading on, records one sample per series.
    pub fn sample(&mut self, proxy: &Proxy, at: Instant, unix_ms: u64) {
        let secs = self
            .last_at
            .map(|t| at.saturating_duration_since(t).as_secs_f64())
            .filter(|s| *s > 0.0);
        self.last_at = Some(at);
        let seq = self.seq;
        let current = proxy.snapshot();
        let stats = proxy.stats();
        let mut total = Counters {
            retries: stats.retries(),
            budget_exhausted: stats
                .budget_exhausted
                .load(std::sync::atomic::Ordering::Relaxed),
            ..Counters::default()
        };
        // Answers alb made itself (503 with no backend up, 429, 404 without a route) count in
        // the totals: they are what clients saw.
        for m in 0..METHOD_CLASSES.len() {
            for c in 0..5 {
                let n = stats.local(m, c);
                total.responses += n;
                if c == 3 {
                    total.errors_4xx += n;
                } else if c == 4 {
                    total.errors_5xx += n;
                }
            }
        }
        let mut in_flight = 0;
        for pool in current.pools() {
            for b in pool.backends() {
                let counters = Counters::of(b);
                // Retries belong to the balancer-wide counters; a backend's are its own rate.
                total.add(&Counters {
                    retries: 0,
                    ..counters
                });
                in_flight += b.in_flight();
                let series = self.series(pool.name(), b.url());
                series.seen = seq;
                let before = series.last.replace(counters);
                if let (Some(secs), Some(before)) = (secs, before) {
                    series
                        .samples
                        .push(counters.rates(&before, secs, b.in_flight()));
                    let (state, reason) = health(b);
                    record_span(&mut series.spans, seq, state, cut(reason));
                }
            }
        }
        let before = self.last_total.replace(total);
        let (Some(secs), Some(before)) = (secs, before) else {
            return;
        };
        self.total.push(total.rates(&before, secs, in_flight));
        self.times.push(unix_ms);
        // Series of backends not in this snapshot get an empty second, so every ring stays in step.
        for series in &mut self.backends {
            if series.samples.pushed < seq + 1 {
                series.samples.push(Sample::default());
                // Seen for the first time now: its reading is the baseline of the next second.
                // Not seen: when it comes back, its counters may have restarted.
                if series.seen != seq {
                    series.last = None;
                }
            }
            while series
                .spans
                .front()
                .is_some_and(|s| s.to + WINDOW as u64 <= seq + 1)
            {
                series.spans.pop_front();
            }
        }
        self.seq += 1;
        self.forget_gone();
    }

    /// The series of `(pool, url)`, made with empty seconds up to now when it is new.
    fn series(&mut self, pool: &str, url: &str) -> &mut BackendSeries {
        let key = (pool.to_string(), url.to_string());
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.backends.push(BackendSeries {
                    pool: key.0.clone(),
                    url: key.1.clone(),
                    samples: Ring::starting_at(WINDOW, self.seq),
                    spans: Default::default(),
                    last: None,
                    seen: self.seq,
                });
                self.index.insert(key, self.backends.len() - 1);
                self.backends.len() - 1
            }
        };
        &mut self.backends[i]
    }

    /// Drops the series of backends unseen for a whole window.
    fn forget_gone(&mut self) {
        let seq = self.seq;
        let before = self.backends.len();
        self.backends.retain(|s| s.seen + WINDOW as u64 >= seq);
        if self.backends.len() != before {
            self.index = (self.backends.iter().enumerate())
                .map(|(i, s)| ((s.pool.clone(), s.url.clone()), i))
                .collect();
        }
    }

    /// What the rings and spans take, roughly: the figure the README's bound is checked against.
    pub fn memory_bytes(&self) -> usize {
        let ring = WINDOW * std::mem::size_of::<Sample>();
        let spans: usize = (self.backends.iter())
            .flat_map(|b| &b.spans)
            .map(|s| std::mem::size_of::<Span>() + s.reason.capacity())
            .sum();
        ring * (1 + self.backends.len()) + WINDOW * 8 + spans
    }
}

/// Extends the last span when nothing changed, else opens a new one.
fn record_span(
    spans: &mut std::collections::VecDeque<Span>,
    seq: u64,
    state: &'static str,
    reason: String,
) {
    if let Some(last) = spans.back_mut()
        && last.to == seq
        && last.state == state
        && last.reason == reason
    {
        last.to = seq + 1;
        return;
    }
    spans.push_back(Span {
        from: seq,
        to: seq + 1,
        state,
        reason,
    });
}

/// Samples once a second until the admin server stops (or its stop sender is gone).
pub async fn run(
    proxy: Arc<Proxy>,
    history: Arc<Mutex<History>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // The lock is held for this synchronous pass only.
        history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sample(&proxy, Instant::now(), unix_ms);
    }
}

mod view;

pub use view::answer;

#[cfg(test)]
mod tests;
