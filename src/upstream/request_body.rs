//! The request body on its way to a backend: streamed as it arrives (with a size limit and an idle
//! timeout enforced as it streams), or kept whole when it is small enough to be replayed on
//! another backend after a failure.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::http1::{ClientBody, ClientBodyError};
use crate::http2::RecvBody;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::deadline::Deadline;

/// Why a request body stopped short: the client's doing, answered as such (413, 408, 400) rather
/// than blamed on the backend.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("client sent no body data for {0:?}")]
    Idle(Duration),
    #[error("client body broke off: {0}")]
    Client(#[source] IncomingError),
}

/// A request body as the client's connection delivers it, whichever HTTP version it speaks:
/// the one seam where a client-side protocol plugs into the proxy's request path.
#[derive(Debug)]
pub enum IncomingBody {
    Http1(ClientBody),
    Http2(RecvBody),
}

#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("{0}")]
    Http1(#[from] ClientBodyError),
    #[error("HTTP/2 stream failed: {0}")]
    Http2(#[from] h2::Error),
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = IncomingError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, IncomingError>>> {
        match self.get_mut() {
            IncomingBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            IncomingBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            IncomingBody::Http1(body) => body.is_end_stream(),
            IncomingBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            IncomingBody::Http1(body) => body.size_hint(),
            IncomingBody::Http2(body) => body.size_hint(),
        }
    }
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
    /// Kept whole (small, for replay).
    Buffered(Bytes),
    /// No body: also what a replayed body-less request carries.
    Empty,
}

#[derive(Debug)]
pub struct Streamed {
    /// Read before the body was handed over (see `client_after`): sent first.
    start: Option<Bytes>,
    body: IncomingBody,
    limits: BodyLimits,
    received: u64,
    /// `client_body_idle`, counted from when alb began waiting for the next piece.
    idle: Deadline,
    /// Its length was not known upfront: it goes upstream chunked.
    chunked: bool,
    /// What was handed on so far, while it stays within a bound (see [`Streamed::keep_sent`]).
    sent: Option<(BytesMut, usize)>,
}

impl RequestBody {
    pub fn client(body: IncomingBody, limits: BodyLimits) -> RequestBody {
        let chunked = body.size_hint().exact().is_none();
        RequestBody::Client(Box::new(Streamed {
            start: None,
            body,
            chunked,
            limits,
            received: 0,
            idle: Deadline::default(),
            sent: None,
        }))
    }
}

/// As a body, for protocols that take one (HTTP/2 streams).
impl Body for Streamed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Streamed::poll_frame(self.get_mut(), cx)
    }

    fn is_end_stream(&self) -> bool {
        self.start.is_none() && self.body.is_end_stream()
    }
}

impl RequestBody {
    /// A streamed body of unknown length whose `start` was read already.
    pub fn client_after(start: Bytes, body: IncomingBody, limits: BodyLimits) -> RequestBody {
        let received = start.len() as u64;
        RequestBody::Client(Box::new(Streamed {
            start: Some(start),
            body,
            chunked: true,
            limits,
            received,
            idle: Deadline::default(),
            sent: None,
        }))
    }
}

impl Streamed {
    pub fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// Keeps a copy of what is handed on, up to `max` bytes, so that the body can be
    /// [rewound](Streamed::rewind) should the backend turn the request away unprocessed.
    pub fn keep_sent(&mut self, max: usize) {
        self.sent = Some((BytesMut::new(), max));
    }

    /// The body from its first byte again (what was handed on, then the rest), if all that was
    /// handed on was kept.
    pub fn rewind(mut self: Box<Self>) -> Option<Box<Self>> {
        let (mut sent, _) = self.sent.take()?;
        if let Some(start) = self.start.take() {
            sent.extend_from_slice(&start);
        }
        self.start = (!sent.is_empty()).then(|| sent.freeze());
        Some(self)
    }

    /// The next frame from the client, within the limits.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.poll_next(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Some((sent, max)) = self.sent.as_mut()
        {
            if sent.len() + data.len() <= *max {
                sent.extend_from_slice(data);
            } else {
                self.sent = None;
            }
        }
        polled
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(start) = self.start.take() {
            return match self.limits.max_bytes {
                Some(max) if self.received > max => {
                    Poll::Ready(Some(Err(BodyError::TooLarge(max))))
                }
                _ => Poll::Ready(Some(Ok(Frame::data(start)))),
            };
        }
        let polled = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => return self.poll_idle(cx),
            Poll::Ready(p) => p,
        };
        self.idle.progress();
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
        Poll::Ready(result)
    }

    /// The client has nothing for us now. The idle clock starts here, when alb is ready for
    /// more: while a backend was slow to take the last piece, the client was held back by alb.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let limit = self.limits.idle;
        if self.idle.waited_too_long(limit, cx) {
            Poll::Ready(Some(Err(BodyError::Idle(limit))))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{BodyDecoder, ClientStream, Framing, ReadSide, ReadSlot};
    use bytes::BytesMut;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn poll_once(body: &mut Streamed) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        poll_fn(|cx| Poll::Ready(body.poll_frame(cx))).await
    }

    /// While alb does not ask for the body (the backend is slow to take the last piece), the
    /// client is held back by alb, not idle. The limit counts from when alb asks again; it used
    /// to count from the last piece, so backpressure on one side cut a healthy body on the other.
    #[tokio::test]
    async fn the_idle_limit_counts_from_when_alb_asks_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (half, _write) = ClientStream::Plain(server).split();
        let side = ReadSide {
            half,
            buf: BytesMut::new(),
        };
        let decoder = BodyDecoder::new(Framing::Length(6));
        let body = IncomingBody::Http1(ClientBody::new(side, decoder, ReadSlot::default(), None));
        let limits = BodyLimits {
            max_bytes: None,
            idle: Duration::from_millis(300),
        };
        let RequestBody::Client(mut streamed) = RequestBody::client(body, limits) else {
            panic!("a streamed body");
        };
        assert!(poll_once(&mut streamed).await.is_pending());
        client.write_all(b"abc").await.unwrap();
        let first = poll_fn(|cx| streamed.poll_frame(cx)).await;
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "abc");
        // alb busy elsewhere for twice the idle limit (simulated backpressure, not a wait for
        // an event)
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            poll_once(&mut streamed).await.is_pending(),
            "cut for a wait that was alb's"
        );
        client.write_all(b"def").await.unwrap();
        let second = poll_fn(|cx| streamed.poll_frame(cx)).await;
        assert_eq!(second.unwrap().unwrap().into_data().unwrap(), "def");
    }
}
