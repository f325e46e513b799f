//! What every response body from a backend settles once it ends, whichever protocol carried it,
//! and how such a body can fail.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ProxyStats;
use super::access_log::{AccessRecord, Outcome};
use crate::health::OutlierDetector;
use crate::http1::UpstreamError;
use crate::trace::SpanRecord;
use crate::upstream::{InFlightGuard, Upload, UpstreamConn};

#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("backend broke off its response body: {0}")]
    Upstream(#[source] UpstreamError),
    #[error("backend sent no body data for {0:?}")]
    Idle(Duration),
    #[error("the request body, still being sent, failed on the client's side")]
    ClientBody,
    #[error("backend's HTTP/2 stream failed: {0}")]
    Stream(#[source] h2::Error),
}

/// What every response body from a backend settles once it ends, however it ends (to its end,
/// broken, cut by the client): statistics, passive health, the access-log line, and the
/// in-flight count. **The in-flight guard of a streamed response is released here and only
/// here**, so that least_conn counts a request until its body's last byte.
#[derive(Debug)]
pub(super) struct Settlement {
    guard: Option<InFlightGuard>,
    log: Option<Box<AccessRecord>>,
    outliers: Option<Arc<OutlierDetector>>,
    status: u16,
    started: Instant,
    stats: Arc<ProxyStats>,
    span: Option<Box<SpanRecord>>,
}

impl Settlement {
    pub(super) fn new(status: u16, parts: &mut UpstreamParts) -> Settlement {
        Settlement {
            guard: parts.guard.take(),
            log: parts.log.take(),
            outliers: Some(parts.outliers.clone()),
            status,
            started: parts.started,
            stats: parts.stats.clone(),
            span: parts.span.take(),
        }
    }

    /// Settles the response after `bytes` reached the client; runs once. The guard comes back
    /// for the caller to drop once it has put the connection back (if it may).
    pub(super) fn settle(&mut self, outcome: Outcome, bytes: u64) -> Option<InFlightGuard> {
        let guard = self.guard.take()?;
        let backend = guard.backend();
        self.stats.request_duration.observe(self.started.elapsed());
        self.stats
            .bytes_to_clients
            .fetch_add(bytes, Ordering::Relaxed);
        backend
            .stats()
            .bytes_sent
            .fetch_add(bytes, Ordering::Relaxed);
        if matches!(outcome, Outcome::UpstreamBroken | Outcome::UpstreamIdle)
            && let Some(outliers) = self.outliers.take()
        {
            outliers.record_failure(backend, outcome.as_str());
        }
        if let Some(log) = self.log.take() {
            log.finish(self.status, Some(backend.url()), bytes, outcome);
        }
        if let Some(span) = self.span.take() {
            span.finish(Some(self.status), outcome.as_str(), bytes);
        }
        Some(guard)
    }
}

/// What an [`UpstreamBody`] needs besides the body itself.
#[derive(Debug)]
pub struct UpstreamParts {
    pub conn: Option<UpstreamConn>,
    pub upload: Option<Upload>,
    /// Taken by the body's [`Settlement`].
    pub guard: Option<InFlightGuard>,
    pub log: Option<Box<AccessRecord>>,
    pub outliers: Arc<OutlierDetector>,
    pub idle_limit: Duration,
    /// Whether the connection may carry another request after this response.
    pub reusable: bool,
    /// When the request arrived.
    pub started: Instant,
    pub stats: Arc<ProxyStats>,
    /// The request's span when sampled: it ends with the response, like the access-log line.
    pub span: Option<Box<SpanRecord>>,
}
