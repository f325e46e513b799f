//! The response body on its way to the client: a backend's body streamed through, or a short
//! answer alb makes itself.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::access_log::{AccessRecord, Outcome};
use crate::health::OutlierDetector;
use crate::upstream::{InFlightGuard, UpstreamSender};

#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("backend broke off its response body: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("backend sent no body data for {0:?}")]
    Idle(Duration),
}

#[derive(Debug)]
pub enum ResponseBody {
    Upstream(UpstreamBody),
    /// A short answer alb makes itself (errors).
    Local(Full<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => body.poll(cx),
            ResponseBody::Local(body) => Pin::new(body).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(body) => body.inner.is_end_stream(),
            ResponseBody::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(body) => body.inner.size_hint(),
            ResponseBody::Local(body) => body.size_hint(),
        }
    }
}

/// A backend's response body, carrying what must outlive the response head: the in-flight guard
/// (so least-connections counts the request until its last byte), the connection (handed back to
/// the pool only after a clean end, since a half-read HTTP/1.1 connection cannot carry another
/// request) and the access-log record.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    sender: Option<UpstreamSender>,
    guard: Option<InFlightGuard>,
    log: Option<Box<AccessRecord>>,
    outliers: Option<std::sync::Arc<OutlierDetector>>,
    status: u16,
    bytes: u64,
    idle_limit: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    started: std::time::Instant,
    stats: std::sync::Arc<super::ProxyStats>,
}

/// What an [`UpstreamBody`] needs besides the body itself.
#[derive(Debug)]
pub struct UpstreamParts {
    pub sender: UpstreamSender,
    pub guard: InFlightGuard,
    pub log: Option<Box<AccessRecord>>,
    pub outliers: std::sync::Arc<OutlierDetector>,
    pub idle_limit: Duration,
    /// Whether the connection may carry another request after this response.
    pub reusable: bool,
    /// When the request arrived.
    pub started: std::time::Instant,
    pub stats: std::sync::Arc<super::ProxyStats>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, status: u16, parts: UpstreamParts) -> UpstreamBody {
        UpstreamBody {
            inner,
            sender: parts.reusable.then_some(parts.sender),
            guard: Some(parts.guard),
            log: parts.log,
            outliers: Some(parts.outliers),
            status,
            bytes: 0,
            idle_limit: parts.idle_limit,
            idle: None,
            started: parts.started,
            stats: parts.stats,
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return self.poll_idle(cx),
            Poll::Ready(p) => p,
        };
        if let Some(idle) = self.idle.as_mut() {
            idle.as_mut()
                .reset(tokio::time::Instant::now() + self.idle_limit);
        }
        match polled {
            Some(Ok(frame)) => {
                self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.inner.is_end_stream() {
                    self.finish(Outcome::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                self.finish(Outcome::Complete);
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "backend broke off a response body");
                self.finish(Outcome::UpstreamBroken);
                Poll::Ready(Some(Err(ResponseBodyError::Upstream(e))))
            }
        }
    }

    fn poll_idle(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let limit = self.idle_limit;
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match idle.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::warn!(timeout = ?limit, "backend went silent mid-body: response cut");
                self.finish(Outcome::UpstreamIdle);
                Poll::Ready(Some(Err(ResponseBodyError::Idle(limit))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Releases the in-flight count, returns the connection to the pool if it ended cleanly,
    /// reports broken bodies to passive health, and writes the access-log line. Runs once.
    fn finish(&mut self, outcome: Outcome) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let sender = self.sender.take();
        let backend = guard.backend();
        self.stats.request_duration.observe(self.started.elapsed());
        self.stats
            .bytes_to_clients
            .fetch_add(self.bytes, Ordering::Relaxed);
        backend
            .stats()
            .bytes_sent
            .fetch_add(self.bytes, Ordering::Relaxed);
        match (outcome, sender) {
            (Outcome::Complete, Some(sender)) => backend.pool().checkin(sender),
            (Outcome::UpstreamBroken | Outcome::UpstreamIdle, _) => {
                if let Some(outliers) = self.outliers.take() {
                    outliers.record_failure(backend, outcome.as_str());
                }
            }
            _ => {}
        }
        if let Some(log) = self.log.take() {
            log.finish(self.status, Some(backend.url()), self.bytes, outcome);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper drops a body it knows to be empty (HEAD, 204, 304, Content-Length: 0) without
        // polling it: that is a clean end, not an abort.
        if self.inner.is_end_stream() {
            self.finish(Outcome::Complete);
        } else {
            self.finish(Outcome::ClientAborted);
        }
    }
}
