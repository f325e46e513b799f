//! Bodies as alb streams them: [`RequestBody`] towards a backend, [`ResponseBody`] towards the
//! client. Neither buffers: each frame is passed on as it arrives, so memory per request stays at
//! hyper's buffer sizes whatever the body's length.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::access_log::{AccessRecord, Outcome};
use crate::upstream::{InFlightGuard, UpstreamSender};

/// A request body on its way to a backend.
#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client as it arrives; `sent` fires once it has been read to its end.
    Client {
        body: Incoming,
        sent: Option<oneshot::Sender<()>>,
    },
    /// No body: also what a replayed body-less request carries.
    Empty,
}

impl RequestBody {
    pub fn client(body: Incoming) -> RequestBody {
        RequestBody::Client { body, sent: None }
    }

    /// A receiver that completes when the body has been read to its end (or was dropped unread),
    /// so the response timeout can start when the upload is done rather than when it started: a
    /// large upload must not turn into a 504. `None` for an empty body.
    pub fn watch_sent(&mut self) -> Option<oneshot::Receiver<()>> {
        match self {
            RequestBody::Client { sent, .. } => {
                let (tx, rx) = oneshot::channel();
                *sent = Some(tx);
                Some(rx)
            }
            RequestBody::Empty => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client { body, sent } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Pending => false,
                };
                if ended && let Some(tx) = sent.take() {
                    let _ = tx.send(());
                }
                polled
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client { body, .. } => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client { body, .. } => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ResponseBody {
    Upstream(UpstreamBody),
    /// A short answer alb makes itself (errors).
    Local(Full<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => Pin::new(body).poll_frame(cx),
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
    status: u16,
    bytes: u64,
}

impl UpstreamBody {
    pub fn new(
        inner: Incoming,
        sender: UpstreamSender,
        guard: InFlightGuard,
        log: Option<Box<AccessRecord>>,
        status: u16,
    ) -> UpstreamBody {
        UpstreamBody {
            inner,
            sender: Some(sender),
            guard: Some(guard),
            log,
            status,
            bytes: 0,
        }
    }

    /// Releases the in-flight count, returns the connection to the pool if it ended cleanly, and
    /// writes the access-log line. Runs once.
    fn finish(&mut self, outcome: Outcome) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let sender = self.sender.take();
        if let (Outcome::Complete, Some(sender)) = (outcome, sender) {
            guard.backend().pool().checkin(sender);
        }
        if let Some(log) = self.log.take() {
            log.finish(
                self.status,
                Some(guard.backend().url()),
                self.bytes,
                outcome,
            );
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(Outcome::Complete);
                }
            }
            Poll::Ready(None) => self.finish(Outcome::Complete),
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "backend broke off a response body");
                self.finish(Outcome::UpstreamBroken);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
