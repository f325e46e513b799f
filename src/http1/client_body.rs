//! A client's request body, read from the client's connection by its framing as the proxy asks
//! for it. The body borrows the connection's reading side (socket half and read buffer) for as
//! long as the request lives and hands it back when it ends or is dropped, so that the connection
//! can read the next request: bytes past the body's end stay in the buffer (pipelining).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::client_io::ClientReadHalf;
use super::poll_fill_from;
use super::{BodyDecoder, Decoded, WireError};

/// Smallest read from a client: a typical request head fits, and an idle keep-alive connection
/// keeps this much.
const CLIENT_READ: usize = 2 * 1024;

/// The reading side of a client connection.
#[derive(Debug)]
pub struct ReadSide {
    pub half: ClientReadHalf,
    /// Read from the client, not yet used.
    pub buf: BytesMut,
}

impl ReadSide {
    /// Reads what the client sent next, about `want` bytes at most (0: a default).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() == 0 {
            // No buffer until there is something to read into it.
            ready!(self.half.poll_read_ready(cx))?;
        }
        poll_fill_from(
            Pin::new(&mut self.half),
            &mut self.buf,
            cx,
            CLIENT_READ,
            want,
        )
    }
}

/// Where a body leaves the reading side when it is done with it, with its decoder (whether the
/// body was read to its end).
pub type ReadSlot = Arc<Mutex<Option<(ReadSide, BodyDecoder)>>>;

#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("client connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Framing(#[from] WireError),
    #[error("client closed the connection before the end of the body")]
    Cut,
}

#[derive(Debug)]
pub struct ClientBody {
    reader: Option<(ReadSide, BodyDecoder)>,
    slot: Option<ReadSlot>,
    /// Set on the first read when the client waits for `100 Continue`: the connection sends it.
    wants_continue: Option<Arc<AtomicBool>>,
}

impl ClientBody {
    /// A request without a body.
    pub fn empty() -> ClientBody {
        ClientBody {
            reader: None,
            slot: None,
            wants_continue: None,
        }
    }

    /// A body read from `side` by `decoder`; `side` goes back to `slot` when the body is done.
    pub fn new(
        side: ReadSide,
        decoder: BodyDecoder,
        slot: ReadSlot,
        wants_continue: Option<Arc<AtomicBool>>,
    ) -> ClientBody {
        ClientBody {
            reader: Some((side, decoder)),
            slot: Some(slot),
            wants_continue,
        }
    }

    fn give_back(&mut self) {
        if let (Some(reader), Some(slot)) = (self.reader.take(), self.slot.as_ref()) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(reader);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        if let Some(flag) = this.wants_continue.take() {
            flag.store(true, Ordering::Release);
        }
        let Some((side, decoder)) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match decoder.decode(&mut side.buf) {
                Ok(Decoded::Data(data)) => {
                    if decoder.is_done() {
                        this.give_back();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    this.give_back();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
            match ready!(side.poll_fill(cx, decoder.want())) {
                Ok(0) => return Poll::Ready(Some(Err(ClientBodyError::Cut))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.as_ref().is_none_or(|(_, d)| d.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        self.reader
            .as_ref()
            .map_or(SizeHint::with_exact(0), |(_, d)| d.size_hint())
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.give_back();
    }
}
