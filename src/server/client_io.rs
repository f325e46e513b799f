//! The client socket as hyper sees it, with the two timeouts that hyper cannot tell apart: the
//! time a client may take to send a request head once it started one (slowloris guard: answered
//! with 408 and closed), and the time an idle keep-alive connection is kept open (closed quietly).
//!
//! The phase of the connection is learnt from the socket and from [`Activity`]: the service counts
//! requests started and responses finished. No timer runs while a request is being served, since
//! the request has timeouts of its own.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Requests started and finished on one connection.
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU32,
    finished: AtomicU32,
    /// The connection's task, woken when a request finishes so that its idle timer starts even
    /// if nothing else would poll the socket.
    waker: atomic_waker::AtomicWaker,
}

impl Activity {
    /// Marks a request as started; the returned guard marks it finished when dropped (with the
    /// response body, once it has been written out).
    pub fn start(self: &Arc<Self>) -> ActivityGuard {
        // Relaxed: both counters are only compared with each other by the same connection's task.
        self.started.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(self.clone())
    }

    /// Responses finished so far, and whether a request is being served now.
    fn state(&self) -> (u32, bool) {
        let finished = self.finished.load(Ordering::Relaxed);
        (finished, self.started.load(Ordering::Relaxed) != finished)
    }
}

#[derive(Debug)]
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
        self.0.waker.wake();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A request is being served.
    Busy,
    /// Between requests on a keep-alive connection.
    Idle,
}

#[derive(Debug)]
pub struct ClientIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    phase: Phase,
    /// Responses finished when last looked: a change means a request ended and idleness began.
    finished: u32,
    timer: Pin<Box<Sleep>>,
    /// When the current phase's timeout runs out; the timer may be armed earlier than this.
    deadline: Instant,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

impl ClientIo {
    /// A new connection starts waiting for its first head: a client that connects and sends
    /// nothing is cut after `header_timeout`.
    pub fn new(
        stream: TcpStream,
        activity: Arc<Activity>,
        header_timeout: Duration,
        keepalive_timeout: Duration,
    ) -> ClientIo {
        ClientIo {
            stream,
            activity,
            phase: Phase::Head,
            finished: 0,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            deadline: Instant::now() + header_timeout,
            header_timeout,
            keepalive_timeout,
        }
    }

    fn enter(&mut self, phase: Phase) {
        let limit = match phase {
            Phase::Head => self.header_timeout,
            Phase::Idle => self.keepalive_timeout,
            Phase::Busy => {
                self.phase = phase;
                return;
            }
        };
        self.phase = phase;
        // The timer is moved only when the new deadline is earlier than the armed one; a later
        // deadline is checked when the timer fires (see `poll_read`). On a busy keep-alive
        // connection that spares two timer-wheel updates per request.
        self.deadline = Instant::now() + limit;
        if self.deadline < self.timer.deadline() {
            self.timer.as_mut().reset(self.deadline);
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (finished, busy) = this.activity.state();
        if busy {
            this.phase = Phase::Busy;
        } else if finished != this.finished {
            this.finished = finished;
            this.enter(Phase::Idle);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase == Phase::Busy {
                    // Register first, then look again: a request finishing in between wakes us.
                    this.activity.waker.register(cx.waker());
                    let (finished, busy) = this.activity.state();
                    if busy {
                        return Poll::Pending;
                    }
                    this.finished = finished;
                    this.enter(Phase::Idle);
                }
                loop {
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() >= this.deadline {
                        break;
                    }
                    let deadline = this.deadline;
                    this.timer.as_mut().reset(deadline);
                }
                match this.phase {
                    Phase::Idle => Poll::Ready(Ok(())), // end of stream: hyper closes quietly
                    _ => {
                        tracing::info!(timeout = ?this.header_timeout, "client too slow to send a request head: 408");
                        // Best effort: the socket buffer takes these few bytes at once or not at all.
                        let _ = this.stream.try_write(REQUEST_TIMEOUT);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request head timeout",
                        )))
                    }
                }
            }
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
