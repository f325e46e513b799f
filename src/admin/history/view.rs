//! `/api/history`: the rings as JSON, one array per measure, from a sample number on.

use std::sync::Mutex;

use http::StatusCode;
use serde::Serialize;

use super::{History, PERIOD, Ring, Sample, Span, WINDOW};
use crate::admin::api::{Answer, error};

impl History {
    /// The samples from number `since` on (the whole window when older), as `/api/history` sends.
    pub fn view(&self, since: u64) -> HistoryView<'_> {
        let from = since.clamp(self.times.first(), self.seq);
        let column = |ring: &Ring<Sample>| SeriesView::of(ring, from, self.seq);
        HistoryView {
            interval_ms: PERIOD.as_millis() as u64,
            window: WINDOW,
            from,
            seq: self.seq,
            time_ms: (from..self.seq).filter_map(|s| self.times.get(s)).collect(),
            total: column(&self.total),
            backends: self
                .backends
                .iter()
                .map(|b| BackendHistory {
                    pool: &b.pool,
                    url: &b.url,
                    series: column(&b.samples),
                    states: b.spans.iter().cloned().collect(),
                })
                .collect(),
            memory_bytes: self.memory_bytes(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HistoryView<'a> {
    pub interval_ms: u64,
    pub window: usize,
    /// Sequence number of the first sample in the arrays.
    pub from: u64,
    /// Samples taken: ask again with `?since=` this to get only the newer ones.
    pub seq: u64,
    /// When each sample was taken (Unix milliseconds).
    pub time_ms: Vec<u64>,
    pub total: SeriesView,
    pub backends: Vec<BackendHistory<'a>>,
    pub memory_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct BackendHistory<'a> {
    pub pool: &'a str,
    pub url: &'a str,
    pub series: SeriesView,
    pub states: Vec<Span>,
}

/// One array per measure, a value per second; null where the series did not exist (or, for
/// latencies, where nothing was answered).
#[derive(Debug, Default, Serialize)]
pub struct SeriesView {
    pub rps: Vec<Option<f32>>,
    pub errors_4xx: Vec<Option<f32>>,
    pub errors_5xx: Vec<Option<f32>>,
    pub in_flight: Vec<Option<u32>>,
    pub p50_ms: Vec<Option<f32>>,
    pub p95_ms: Vec<Option<f32>>,
    pub p99_ms: Vec<Option<f32>>,
    pub retries: Vec<Option<f32>>,
    pub budget_exhausted: Vec<Option<f32>>,
    pub ejections: Vec<Option<f32>>,
}

impl SeriesView {
    fn of(ring: &Ring<Sample>, from: u64, to: u64) -> SeriesView {
        let mut v = SeriesView::default();
        let round = |x: f32, unit: f32| x.is_finite().then(|| (x / unit).round() * unit);
        for s in (from..to).map(|seq| ring.get(seq).unwrap_or_default()) {
            let on = |x: f32, unit: f32| if s.present { round(x, unit) } else { None };
            v.rps.push(on(s.rps, 0.1));
            v.errors_4xx.push(on(s.errors_4xx, 0.1));
            v.errors_5xx.push(on(s.errors_5xx, 0.1));
            v.in_flight.push(s.present.then_some(s.in_flight));
            v.p50_ms.push(on(s.p50_ms, 0.01));
            v.p95_ms.push(on(s.p95_ms, 0.01));
            v.p99_ms.push(on(s.p99_ms, 0.01));
            v.retries.push(on(s.retries, 0.1));
            v.budget_exhausted.push(on(s.budget_exhausted, 0.1));
            v.ejections.push(on(s.ejections, 0.1));
        }
        v
    }
}

/// `GET /api/history[?since=N]`.
pub fn answer(history: &Mutex<History>, query: Option<&str>) -> Answer {
    let since = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("since="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let history = history.lock().unwrap_or_else(|p| p.into_inner());
    // Compact, unlike the other answers: a full window is ~10 arrays of 900 numbers a series.
    match serde_json::to_string(&history.view(since)) {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
