//! The request body on its way to a backend: streamed as it arrives (with a size limit and an idle
//! timeout enforced as it streams), or kept whole when it is small enough to be replayed on
//! another backend after a failure.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;

/// Why a request body stopped short. Travels through hyper's client error as its source, so the
/// proxy can answer the client (413, 408) rather than blame the backend.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("client sent no body data for {0:?}")]
    Idle(Duration),
    #[error("client body broke off: {0}")]
    Client(#[source] hyper::Error),
}

/// Limits a streamed request body is held to.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: Option<u64>,
    pub idle: Duration,
}

#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client as it arrives.
    Client(Box<Streamed>),
    /// Kept whole (small, for replay); `None` once sent.
    Buffered(Option<Bytes>),
    /// No body: also what a replayed body-less request carries.
    Empty,
}

#[derive(Debug)]
pub struct Streamed {
    body: Incoming,
    limits: BodyLimits,
    received: u64,
    idle: Option<Pin<Box<Sleep>>>,
    /// Fires once the body has been read to its end (see [`RequestBody::watch_sent`]).
    sent: Option<oneshot::Sender<()>>,
}

impl RequestBody {
    pub fn client(body: Incoming, limits: BodyLimits) -> RequestBody {
        RequestBody::Client(Box::new(Streamed {
            body,
            limits,
            received: 0,
            idle: None,
            sent: None,
        }))
    }

    /// A receiver that completes when the body has been read to its end (or was dropped unread),
    /// so the response timeout can start when the upload is done rather than when it started: a
    /// large upload must not turn into a 504. `None` when there is nothing to upload slowly.
    pub fn watch_sent(&mut self) -> Option<oneshot::Receiver<()>> {
        match self {
            RequestBody::Client(streamed) => {
                let (tx, rx) = oneshot::channel();
                streamed.sent = Some(tx);
                Some(rx)
            }
            RequestBody::Buffered(_) | RequestBody::Empty => None,
        }
    }

    /// The kept bytes of a replayable body.
    pub fn replay_bytes(&self) -> Option<Option<Bytes>> {
        match self {
            RequestBody::Buffered(bytes) => Some(bytes.clone()),
            RequestBody::Empty => Some(None),
            RequestBody::Client(_) => None,
        }
    }
}

impl Streamed {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => return self.poll_idle(cx),
            Poll::Ready(p) => p,
        };
        if let Some(idle) = self.idle.as_mut() {
            idle.as_mut()
                .reset(tokio::time::Instant::now() + self.limits.idle);
        }
        let result = match polled {
            None => None,
            Some(Err(e)) => Some(Err(BodyError::Client(e))),
            Some(Ok(frame)) => {
                self.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                match self.limits.max_bytes {
                    Some(max) if self.received > max => Some(Err(BodyError::TooLarge(max))),
                    _ => Some(Ok(frame)),
                }
            }
        };
        let ended = match &result {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => self.body.is_end_stream(),
        };
        if ended && let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
        Poll::Ready(result)
    }

    /// The client has nothing for us now: arm (once) the idle timer and see whether it ran out.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let limit = self.limits.idle;
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(limit)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Client(streamed) => streamed.poll(cx),
            RequestBody::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(streamed) => streamed.body.is_end_stream(),
            RequestBody::Buffered(bytes) => bytes.is_none(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(streamed) => streamed.body.size_hint(),
            RequestBody::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
