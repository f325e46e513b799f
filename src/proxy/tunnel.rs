//! A connection that switched protocols (a WebSocket, after the backend's `101`): from then on
//! alb carries bytes both ways and reads none of them, until either side closes.
//!
//! A tunnel is a request in flight on its backend for as long as it is open (its
//! [`InFlightGuard`] lives here), so that least-connections counts long-lived WebSocket
//! connections, not only the handshakes. Its waits all have deadlines: `timeouts.tunnel_idle`
//! with no byte either way, `timeouts.write` for a write that makes no progress, and, once one
//! side has closed its half, [`HALF_CLOSED_IDLE`] for the other to finish. A tunnel to a backend
//! that left the configuration (a reload, discovery) is closed `timeouts.drain` later; on
//! shutdown the server's own drain bounds it.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ProxyStats;
use super::access_log::AccessRecord;
use crate::deadline::Deadline;
use crate::upstream::{InFlightGuard, UpstreamConn};

/// Buffer per direction: one read's worth is in flight at a time.
const TUNNEL_BUFFER: usize = 16 * 1024;
/// Once one side has closed, the longest the other may stay silent before the tunnel ends (a
/// WebSocket peer answers a close at once; one that never does would hold both connections).
pub const HALF_CLOSED_IDLE: Duration = Duration::from_secs(10);

/// What a tunnel needs from the request that opened it.
#[derive(Debug)]
pub struct TunnelParts {
    pub conn: UpstreamConn,
    pub guard: InFlightGuard,
    pub log: Option<Box<AccessRecord>>,
    pub stats: Arc<ProxyStats>,
    pub idle_limit: Duration,
    pub write_limit: Duration,
    pub drain: Duration,
}

/// An upgraded connection's backend side, waiting for the client side to be handed to
/// [`Tunnel::run`] once the `101` has been written.
#[derive(Debug)]
pub struct Tunnel {
    parts: TunnelParts,
    _open: OpenTunnel,
}

/// Counts a tunnel in `alb_tunnels_open` from the `101` until it is dropped, whatever way.
#[derive(Debug)]
struct OpenTunnel(Arc<ProxyStats>);

impl OpenTunnel {
    fn new(stats: Arc<ProxyStats>) -> OpenTunnel {
        stats.tunnels_open.fetch_add(1, Ordering::Relaxed);
        OpenTunnel(stats)
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.tunnels_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which end of the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

/// Why a tunnel ended, as the access log says it.
#[derive(Debug, Clone, Copy)]
enum TunnelEnd {
    /// Both sides closed; the one named closed first.
    Closed(Side),
    /// A read from or a write to this side failed.
    Failed(Side),
    /// A write to this side made no progress for `timeouts.write`.
    WriteStalled(Side),
    Idle,
    /// The backend left the configuration and `timeouts.drain` passed.
    Retired,
}

impl TunnelEnd {
    fn as_str(self) -> &'static str {
        match self {
            TunnelEnd::Closed(Side::Client) => "client_closed",
            TunnelEnd::Closed(Side::Backend) => "backend_closed",
            TunnelEnd::Failed(Side::Client) => "client_error",
            TunnelEnd::Failed(Side::Backend) => "backend_error",
            TunnelEnd::WriteStalled(Side::Client) => "client_write_timeout",
            TunnelEnd::WriteStalled(Side::Backend) => "backend_write_timeout",
            TunnelEnd::Idle => "idle_timeout",
            TunnelEnd::Retired => "backend_removed",
        }
    }
}

impl Tunnel {
    pub fn new(parts: TunnelParts) -> Tunnel {
        let open = OpenTunnel::new(parts.stats.clone());
        Tunnel { parts, _open: open }
    }

    /// Carries bytes between `client` (whose `pending` bytes, read past the request head, go
    /// first) and the backend until the tunnel ends, then closes both.
    pub async fn run<C>(self, mut client: C, pending: BytesMut)
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let Tunnel { parts, _open } = self;
        let started = Instant::now();
        let (mut backend, from_backend) = parts.conn.into_parts();
        let mut up = Flow::new(pending);
        let mut down = Flow::new(from_backend);
        let mut idle = Deadline::default();
        let mut first_closed = None;
        let stats = &parts.stats;
        let upstream = parts.guard.backend().clone();
        let drain = parts.drain;
        let mut retired = pin!(async {
            upstream.retired().await;
            tokio::time::sleep(drain).await;
        });
        let end = poll_fn(|cx| {
            let before = (up.moved, down.moved);
            let half_closed = first_closed.is_some();
            let up_state = up.poll(&mut client, &mut backend, parts.write_limit, cx);
            let down_state = down.poll(&mut backend, &mut client, parts.write_limit, cx);
            stats
                .tunnel_bytes_to_backends
                .fetch_add(up.moved - before.0, Ordering::Relaxed);
            stats
                .tunnel_bytes_to_clients
                .fetch_add(down.moved - before.1, Ordering::Relaxed);
            match (up_state, down_state) {
                (Poll::Ready(Err(failure)), _) => return Poll::Ready(failure.end(Side::Client)),
                (_, Poll::Ready(Err(failure))) => return Poll::Ready(failure.end(Side::Backend)),
                (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => {
                    return Poll::Ready(TunnelEnd::Closed(first_closed.unwrap_or(Side::Client)));
                }
                (Poll::Ready(Ok(())), _) => {
                    first_closed.get_or_insert(Side::Client);
                }
                (_, Poll::Ready(Ok(()))) => {
                    first_closed.get_or_insert(Side::Backend);
                }
                _ => {}
            }
            // A close starts the shorter clock afresh.
            if (up.moved, down.moved) != before || first_closed.is_some() != half_closed {
                idle.progress();
            }
            let limit = match first_closed {
                Some(_) => parts.idle_limit.min(HALF_CLOSED_IDLE),
                None => parts.idle_limit,
            };
            if idle.waited_too_long(limit, cx) {
                return Poll::Ready(TunnelEnd::Idle);
            }
            if retired.as_mut().poll(cx).is_ready() {
                return Poll::Ready(TunnelEnd::Retired);
            }
            Poll::Pending
        })
        .await;
        let backend_url = parts.guard.backend().url();
        tracing::debug!(backend = backend_url, end = end.as_str(), "tunnel closed");
        if let Some(log) = parts.log {
            log.finish_tunnel(
                backend_url,
                up.moved,
                down.moved,
                started.elapsed(),
                end.as_str(),
            );
        }
    }
}

/// Why one direction stopped.
enum FlowFailure {
    Read,
    Write,
    WriteStalled,
}

impl FlowFailure {
    /// The tunnel's end, for a direction that reads from `from`.
    fn end(self, from: Side) -> TunnelEnd {
        let to = match from {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        };
        match self {
            FlowFailure::Read => TunnelEnd::Failed(from),
            FlowFailure::Write => TunnelEnd::Failed(to),
            FlowFailure::WriteStalled => TunnelEnd::WriteStalled(to),
        }
    }
}

/// One direction of a tunnel: what was read from one side and not yet written to the other.
struct Flow {
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    /// The source closed its half; passed on once `buf` is written out.
    eof: bool,
    /// The close was passed on: this direction is over.
    done: bool,
    /// Written since the last flush (a TLS stream may hold back the tail of a write).
    unflushed: bool,
    moved: u64,
    /// `timeouts.write`, counted while a write waits.
    write_wait: Deadline,
}

impl Flow {
    /// A direction whose first bytes are `pending` (read before the switch).
    fn new(pending: BytesMut) -> Flow {
        let mut buf = vec![0u8; TUNNEL_BUFFER.max(pending.len())].into_boxed_slice();
        buf[..pending.len()].copy_from_slice(&pending);
        Flow {
            buf,
            pos: 0,
            len: pending.len(),
            eof: false,
            done: false,
            unflushed: false,
            moved: 0,
            write_wait: Deadline::default(),
        }
    }

    /// Moves what can be moved now. Ready(Ok): the source closed and that was passed on.
    fn poll<R, W>(
        &mut self,
        from: &mut R,
        to: &mut W,
        write_limit: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), FlowFailure>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos < self.len {
                match Pin::new(&mut *to).poll_write(cx, &self.buf[self.pos..self.len]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(FlowFailure::Write));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.pos += n;
                        self.moved += n as u64;
                        self.unflushed = true;
                        self.write_wait.progress();
                        continue;
                    }
                    Poll::Pending if self.write_wait.waited_too_long(write_limit, cx) => {
                        return Poll::Ready(Err(FlowFailure::WriteStalled));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            // All written: out of alb before waiting on the source again.
            if self.unflushed {
                match Pin::new(&mut *to).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(FlowFailure::Write)),
                    Poll::Pending if self.write_wait.waited_too_long(write_limit, cx) => {
                        return Poll::Ready(Err(FlowFailure::WriteStalled));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.eof {
                return match Pin::new(&mut *to).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(_)) => Poll::Ready(Err(FlowFailure::Write)),
                    Poll::Pending => Poll::Pending,
                };
            }
            (self.pos, self.len) = (0, 0);
            let mut read = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *from).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => self.eof = true,
                Poll::Ready(Ok(())) => self.len = read.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Err(FlowFailure::Read)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
