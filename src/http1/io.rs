//! Reading into a connection's buffer and writing whole messages, for both hops.
//!
//! **Every write to a peer has a deadline.** [`write_all_within`] is the one way alb writes to
//! a client or a backend: a write that makes no progress for `limit` fails with `TimedOut`, so
//! a peer that stops reading (a client that never reads its large answer, a backend that stopped
//! reading an upload) cannot hold a connection, a backend slot or memory for longer than that.
//! The clock starts when alb is ready to write and restarts with every byte taken: a slow but
//! moving peer is never cut.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::deadline::Deadline;

/// Smallest free room in the read buffer before a read: enough for a typical response head.
const READ_CHUNK: usize = 8 * 1024;
/// Largest read for a body: big bodies move in large reads (a fifth less CPU per MiB than 64 KiB
/// reads). Only a connection in the middle of a large body holds that much.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// A write that failed, and how many bytes had gone before it did: none means the peer got
/// nothing.
#[derive(Debug)]
pub struct PartialWrite {
    pub error: io::Error,
    pub written: usize,
}

impl From<PartialWrite> for io::Error {
    fn from(partial: PartialWrite) -> io::Error {
        partial.error
    }
}

/// Writes all of `parts`, as many at once as the socket takes, each write within `limit` of
/// the last progress (see the module docs), then flushes: a TLS stream may keep the tail of a
/// write when the socket is full, and after a whole message alb goes on to read, which would
/// leave that tail where it is. Returning means the bytes are the kernel's.
pub async fn write_all_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut parts: &mut [io::IoSlice<'_>],
    deadline: &mut Deadline,
    limit: Duration,
) -> Result<(), PartialWrite> {
    let mut written = 0;
    poll_fn(|cx| {
        while parts.iter().any(|p| !p.is_empty()) {
            match poll_write_within(Pin::new(&mut *writer), parts, deadline, limit, cx) {
                Poll::Ready(Ok(n)) => {
                    written += n;
                    io::IoSlice::advance_slices(&mut parts, n);
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(Err(PartialWrite { error, written }));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut *writer).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(PartialWrite { error, written })),
            Poll::Pending if deadline.waited_too_long(limit, cx) => {
                Poll::Ready(Err(PartialWrite {
                    error: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the peer took nothing for {limit:?}"),
                    ),
                    written,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// One vectored write under the write deadline: no progress for `limit` from when the write
/// first had to wait is `TimedOut` (the deadline's idle clock: a write the socket takes at once
/// costs no clock read).
pub fn poll_write_within<W: AsyncWrite>(
    writer: Pin<&mut W>,
    parts: &[io::IoSlice<'_>],
    deadline: &mut Deadline,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    match writer.poll_write_vectored(cx, parts) {
        Poll::Ready(result) => {
            deadline.progress();
            Poll::Ready(match result {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                other => other,
            })
        }
        Poll::Pending if deadline.waited_too_long(limit, cx) => {
            deadline.progress();
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took nothing for {limit:?}"),
            )))
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Reads what `reader` has next into `buf`, about `want` bytes at most (0: a default).
pub fn poll_fill<R: AsyncRead>(
    reader: Pin<&mut R>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    want: usize,
) -> Poll<io::Result<usize>> {
    poll_fill_from(reader, buf, cx, READ_CHUNK, want)
}

/// [`poll_fill`] with the smallest read chosen by the caller: a client connection reads heads
/// into a small buffer, since it keeps that buffer while idle.
pub fn poll_fill_from<R: AsyncRead>(
    reader: Pin<&mut R>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    min: usize,
    want: usize,
) -> Poll<io::Result<usize>> {
    let room = want.clamp(min, MAX_READ_CHUNK);
    if buf.capacity() - buf.len() < min.min(room) {
        buf.reserve(room);
    }
    tokio_util::io::poll_read_buf(reader, cx, buf)
}
