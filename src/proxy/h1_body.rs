//! An HTTP/1.1 backend's response body, decoded from its connection by the framing of its head.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::access_log::Outcome;
use super::settlement::{ResponseBodyError, Settlement, UpstreamParts};
use crate::deadline::Deadline;
use crate::http1::{BodyDecoder, Decoded, UpstreamError};
use crate::upstream::{Upload, UploadError, UpstreamConn};

/// A backend's response body, decoded from the connection by its framing and carrying what must
/// outlive the response head: the in-flight guard (so least-connections counts the request until
/// its last byte), the connection (handed back to the pool only after a clean end, since a
/// half-read HTTP/1.1 connection cannot carry another request) and the access-log record.
#[derive(Debug)]
pub struct UpstreamBody {
    decoder: BodyDecoder,
    /// `None` once the body has ended (the connection is back in the pool or closed).
    conn: Option<UpstreamConn>,
    /// The rest of the request body, sent while the response streams back.
    upload: Option<Upload>,
    reusable: bool,
    /// A break found while data was still to be passed on: reported on the next poll.
    deferred: Option<UpstreamError>,
    break_deferred: bool,
    settlement: Settlement,
    bytes: u64,
    idle_limit: Duration,
    /// `upstream_idle`, counted from when alb began waiting for the next piece (see `poll`).
    idle: Deadline,
}

/// What one look at the connection gave.
enum Next {
    Frame(Bytes),
    End,
    Broken(UpstreamError),
    /// The client's body (still being uploaded beside the response) broke off or stalled: the
    /// exchange cannot finish, and it is the client's doing, not the backend's.
    ClientFailed,
    Pending,
}

impl UpstreamBody {
    pub fn new(decoder: BodyDecoder, status: u16, mut parts: UpstreamParts) -> UpstreamBody {
        let mut body = UpstreamBody {
            decoder,
            settlement: Settlement::new(status, &mut parts),
            conn: parts.conn,
            upload: parts.upload,
            reusable: parts.reusable,
            deferred: None,
            break_deferred: false,
            bytes: 0,
            idle_limit: parts.idle_limit,
            idle: Deadline::default(),
        };
        if body.decoder.is_done() {
            // No body at all (HEAD, 204, 304, a zero length): the connection is free already.
            body.finish(Outcome::Complete);
        }
        body
    }

    pub fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }

    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.next(cx) {
            Next::Pending => self.poll_idle(cx),
            Next::Frame(data) => {
                self.idle.progress();
                self.bytes += data.len() as u64;
                if self.decoder.is_done() {
                    self.finish(Outcome::Complete);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Next::End => {
                self.finish(Outcome::Complete);
                Poll::Ready(None)
            }
            Next::Broken(e) if self.bytes > 0 && !self.break_deferred => {
                // hyper drops what it has not yet written when a body fails: let it write out
                // the part that did arrive, then report the break.
                self.deferred = Some(e);
                self.break_deferred = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Next::ClientFailed => {
                self.finish(Outcome::ClientAborted);
                Poll::Ready(Some(Err(ResponseBodyError::ClientBody)))
            }
            Next::Broken(e) => {
                tracing::warn!(error = %e, "backend broke off a response body");
                self.finish(Outcome::UpstreamBroken);
                Poll::Ready(Some(Err(ResponseBodyError::Upstream(e))))
            }
        }
    }

    /// Decodes what was read, reading more when that is not enough.
    fn next(&mut self, cx: &mut Context<'_>) -> Next {
        if let Some(e) = self.deferred.take() {
            return Next::Broken(e);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Next::End;
        };
        if let Some(upload) = self.upload.as_mut() {
            match upload.poll_send(conn, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => self.upload = None,
                Poll::Ready(Err(UploadError::Client(e))) => {
                    tracing::debug!(error = %e, "the client's body failed while the response streamed");
                    self.upload = None;
                    self.reusable = false;
                    return Next::ClientFailed;
                }
                Poll::Ready(Err(UploadError::Upstream(e))) => {
                    // The answer goes on; the connection, with a request half sent, ends with it.
                    tracing::debug!(error = %e, "upload stopped while the response streamed");
                    self.upload = None;
                    self.reusable = false;
                }
            }
        }
        loop {
            match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => return Next::Frame(data),
                Ok(Decoded::Done) => return Next::End,
                Err(e) => return Next::Broken(e.into()),
                Ok(Decoded::NeedMore) => {}
            }
            match conn.poll_fill(cx, self.decoder.want()) {
                Poll::Pending => return Next::Pending,
                Poll::Ready(Ok(0)) => {
                    // The end of the connection ends a close-delimited body, and the connection.
                    self.reusable = false;
                    return match self.decoder.end_of_stream() {
                        Ok(()) => Next::End,
                        Err(e) => Next::Broken(e.into()),
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Next::Broken(e.into()),
            }
        }
    }

    /// The backend has nothing for us now. The idle clock starts here, when alb is ready for
    /// more, not at the last piece: while the client was slow to take that piece, the backend
    /// was held back by alb, and that wait must not be blamed on it.
    fn poll_idle(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let limit = self.idle_limit;
        if self.idle.waited_too_long(limit, cx) {
            tracing::warn!(timeout = ?limit, "backend went silent mid-body: response cut");
            self.finish(Outcome::UpstreamIdle);
            Poll::Ready(Some(Err(ResponseBodyError::Idle(limit))))
        } else {
            Poll::Pending
        }
    }

    /// Returns the connection to the pool if the body ended cleanly, and settles the response.
    fn finish(&mut self, outcome: Outcome) {
        let Some(guard) = self.settlement.settle(outcome, self.bytes) else {
            return;
        };
        let conn = self
            .conn
            .take()
            .filter(|c| self.reusable && self.upload.is_none() && c.buf.is_empty());
        if let (Outcome::Complete, Some(conn)) = (outcome, conn)
            && self.decoder.is_done()
        {
            guard.backend().pool().checkin(conn);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.decoder.is_done() {
            self.finish(Outcome::Complete);
        } else {
            self.finish(Outcome::ClientAborted);
        }
    }
}
