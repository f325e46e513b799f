//! One keep-alive TCP connection to a backend and the bytes read from it but not yet used.
//!
//! alb speaks HTTP/1.1 to its backends itself (see [`crate::http1`]) and drives the connection
//! from the task of the request that holds it: no connection task, no channel between the request
//! and its connection, no wake-up handed from one task to another. A request checks a connection
//! out of its backend's pool, writes its head, reads the answer and gives the connection back when
//! the response body has been read to its end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::UpstreamStream;
use crate::config::{BackendAddr, BackendTls};
use crate::deadline::Deadline;
use crate::http1::{PartialWrite, poll_fill, poll_write_within, write_all_within};

/// Buffer capacity an idle pooled connection may keep.
const IDLE_BUFFER: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed: a certificate not trusted or not for this name, no common
    /// protocol, a client certificate refused. The backend is up; its TLS is not what alb
    /// was told to expect.
    #[error("TLS handshake with the backend failed: {0}")]
    Handshake(io::Error),
    /// The HTTP/2 connection preface could not be exchanged.
    #[error("HTTP/2 handshake with the backend failed: {0}")]
    Http2(h2::Error),
}

#[derive(Debug)]
pub struct UpstreamConn {
    stream: UpstreamStream,
    /// Read from the backend, not yet consumed (a response head in progress, body bytes).
    pub buf: BytesMut,
    /// Requests sent on this connection so far.
    requests: u32,
    /// The one timer of this connection's waits: a write (`timeouts.write`), or the answer
    /// (`timeouts.response`), never both at once.
    pub deadline: Deadline,
}

impl UpstreamConn {
    /// Connects (and, for an `https://` backend, completes the TLS handshake) within `timeout`.
    pub async fn open(
        addr: &BackendAddr,
        tls: Option<&BackendTls>,
        timeout: Duration,
    ) -> Result<UpstreamConn, ConnectError> {
        let connecting = async {
            let tcp = tcp_connect(addr).await?;
            // Heads and bodies are written whole; Nagle would only add latency.
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else {
                return Ok(UpstreamStream::Plain(tcp));
            };
            let connector = TlsConnector::from(tls.client.client.clone());
            match connector.connect(tls.server_name.clone(), tcp).await {
                Ok(stream) => Ok(UpstreamStream::Tls(Box::new(stream))),
                Err(e) => Err(ConnectError::Handshake(e)),
            }
        };
        let stream = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| ConnectError::Timeout(timeout))??;
        Ok(UpstreamConn {
            stream,
            buf: BytesMut::new(),
            requests: 0,
            deadline: Deadline::default(),
        })
    }

    /// Whether this connection has carried a request before (a reused connection may have been
    /// closed by the backend just as it was picked).
    pub fn is_reused(&self) -> bool {
        self.requests > 0
    }

    /// Whether an idle connection can no longer carry a request: the backend closed it, or sent
    /// bytes nobody asked for. Costs no system call unless the reactor saw the socket become
    /// readable, which an idle healthy connection never does.
    pub fn is_stale(&mut self) -> bool {
        !self.buf.is_empty() || self.stream.is_stale(false)
    }

    /// [`Self::is_stale`], and then one non-blocking look at the socket: a close the backend
    /// sent an instant ago, that the reactor has not reported yet, is seen too. For requests that
    /// must not be sent twice, where a connection that turns out dead after the request was
    /// written means a failed request rather than a retry: one system call, for those only.
    pub fn is_closed_now(&mut self) -> bool {
        !self.buf.is_empty() || self.stream.is_stale(true)
    }

    /// Writes all of `parts` (a head and a kept body) with as few system calls as the kernel
    /// allows, each within `limit` of the last progress.
    pub async fn write_all(
        &mut self,
        parts: &mut [io::IoSlice<'_>],
        limit: Duration,
    ) -> Result<(), PartialWrite> {
        write_all_within(&mut self.stream, parts, &mut self.deadline, limit).await
    }

    /// Lets go of a buffer that a large body grew, before the connection waits in the pool.
    pub fn shed_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_BUFFER {
            self.buf = BytesMut::new();
        }
    }

    /// The socket and what was read from it but not used: for a connection that switched
    /// protocols, whose bytes are no longer HTTP's to parse.
    pub fn into_parts(self) -> (UpstreamStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Counts one more request sent on this connection.
    pub fn note_request(&mut self) {
        self.requests = self.requests.saturating_add(1);
    }

    /// Reads whatever the backend has sent next, at most about `want` bytes (0: a default), into
    /// [`Self::buf`]. `Ok(0)` is the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        poll_fill(Pin::new(&mut self.stream), &mut self.buf, cx, want)
    }

    /// One vectored write under the write deadline.
    pub fn poll_write_within(
        &mut self,
        cx: &mut Context<'_>,
        parts: &[io::IoSlice<'_>],
        limit: Duration,
    ) -> Poll<io::Result<usize>> {
        let stream = Pin::new(&mut self.stream);
        poll_write_within(stream, parts, &mut self.deadline, limit, cx)
    }

    /// [`Self::poll_fill`] as a future.
    pub async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, 0)).await
    }
}

async fn tcp_connect(addr: &BackendAddr) -> io::Result<TcpStream> {
    match addr {
        BackendAddr::Ip(sa) => TcpStream::connect(sa).await,
        BackendAddr::Name { host, port } => TcpStream::connect((host.as_str(), *port)).await,
        // Discovery replaces these with the addresses it found before any request sees them.
        BackendAddr::Srv { .. } | BackendAddr::Kubernetes(_) => Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address discovered yet",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A close the backend sent an instant ago is seen before the reactor has reported it.
    #[tokio::test]
    async fn a_fresh_close_is_seen_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = BackendAddr::Ip(listener.local_addr().unwrap());
        let mut conn = UpstreamConn::open(&addr, None, Duration::from_secs(1))
            .await
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(!conn.is_closed_now(), "an open connection");
        drop(server);
        // No await between the close and the look: the reactor has not run.
        let closed = (0..1000).any(|_| conn.is_closed_now());
        assert!(closed);
    }
}
