//! Streaming a client's request body to a backend, in step with whatever else the request's task
//! is doing: the upload goes on while the response head is awaited and, when the backend answers
//! early (an echo, a 413), while the response body streams back. HTTP/1.1 allows both directions at
//! once, and a proxy that stopped uploading when the answer began would deadlock an echo.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::request_body::{BodyError, Streamed};
use crate::http1::{CHUNK_END, LAST_CHUNK, put_chunk_head};
use crate::upstream::UpstreamConn;

/// Why an upload stopped short.
#[derive(Debug)]
pub enum UploadError {
    /// The client's body broke off, stalled or grew too large.
    Client(BodyError),
    /// The backend's side of the connection failed.
    Upstream(std::io::Error),
}

#[derive(Debug)]
pub struct Upload {
    body: Box<Streamed>,
    chunked: bool,
    /// Encoded bytes not yet written: a chunk's size line, its data, its CRLF.
    queue: VecDeque<Bytes>,
    /// The body has ended; what is queued is its last part.
    ended: bool,
    /// The request head waits in the queue for the body's first bytes: a body that breaks before
    /// its first byte leaves the backend untouched, and head and first chunk go in one write.
    holding_head: bool,
    /// `timeouts.write`, on the connection's deadline (free while the upload runs: the response
    /// timeout starts when it ends, and a response body's idle limit has its own).
    write_limit: Duration,
}

impl Upload {
    /// The upload of `head` and then `body`, each write within `write_limit` of the last
    /// progress.
    pub fn new(head: Bytes, body: Box<Streamed>, write_limit: Duration) -> Upload {
        let mut queue = VecDeque::with_capacity(4);
        queue.push_back(head);
        Upload {
            chunked: body.is_chunked(),
            body,
            queue,
            ended: false,
            holding_head: true,
            write_limit,
        }
    }

    /// Nothing of the request has been written yet.
    pub fn is_unsent(&self) -> bool {
        self.holding_head
    }

    /// The body back, if nothing of the request has left yet (the head still waits for the
    /// body's first bytes): the request may then go on another connection as if never tried.
    pub fn into_unsent(self) -> Option<Box<Streamed>> {
        self.holding_head.then_some(self.body)
    }

    /// Moves the body from the client to `conn` until one side has to wait. Ready(Ok) once all
    /// of it has been written.
    pub fn poll_send(
        &mut self,
        conn: &mut UpstreamConn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            if !self.queue.is_empty() && !self.holding_head {
                ready!(self.poll_flush(conn, cx)).map_err(UploadError::Upstream)?;
                continue;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let frame = ready!(self.body.poll_frame(cx));
            self.holding_head = false;
            match frame {
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.queue.push_back(Bytes::from_static(LAST_CHUNK));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(UploadError::Client(e))),
                Some(Ok(frame)) => {
                    // Trailers are not passed on.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.queue_data(data);
                    }
                }
            }
        }
    }

    fn queue_data(&mut self, data: Bytes) {
        if self.chunked {
            let mut head = BytesMut::with_capacity(18);
            put_chunk_head(&mut head, data.len());
            self.queue.push_back(head.freeze());
            self.queue.push_back(data);
            self.queue.push_back(Bytes::from_static(CHUNK_END));
        } else {
            self.queue.push_back(data);
        }
    }

    /// Writes what is queued, as much as the socket takes in one call.
    fn poll_flush(
        &mut self,
        conn: &mut UpstreamConn,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let slices: Vec<IoSlice<'_>> = self.queue.iter().map(|b| IoSlice::new(b)).collect();
        let mut written = ready!(conn.poll_write_within(cx, &slices, self.write_limit))?;
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                self.queue.pop_front();
            } else {
                let _ = front.split_to(written);
                written = 0;
            }
        }
        Poll::Ready(Ok(()))
    }
}
