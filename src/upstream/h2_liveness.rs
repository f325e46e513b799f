//! Whether a backend's HTTP/2 connection is still there. Every request to an HTTP/2 backend
//! shares its one connection, so a backend gone without a word (powered off, cut off by the
//! network: no FIN, no RST) would hold each new request until `timeouts.response`, and go on
//! doing so long after: the socket only fails once TCP gives up retransmitting, many minutes on.
//!
//! **A connection that has been silent for `timeouts.upstream_idle` is PINGed, and one still
//! silent another `upstream_idle` later is closed.** Silence is measured on the bytes read, not
//! on the PING's answer alone: a backend that is busy sending is alive even when its PONG is
//! slow, and one that answers nothing at all for twice the longest silence alb allows inside a
//! response body is not serving anyone. Its streams then fail as broken, and the next request
//! opens a new connection.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::InspectReader;

/// The backend's side of a connection, counting in `reads` the reads that brought bytes
/// (tokio-util's inspecting reader; writes pass through untouched).
pub fn heard<T: AsyncRead + AsyncWrite>(
    io: T,
    reads: Arc<AtomicU64>,
) -> InspectReader<T, impl FnMut(&[u8]) + Send + Unpin + 'static> {
    InspectReader::new(io, move |bytes: &[u8]| {
        if !bytes.is_empty() {
            reads.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Runs a backend's HTTP/2 connection until it ends or falls silent (see the module docs):
/// `silence` is the connection's opener's `timeouts.upstream_idle`.
pub async fn drive<T: AsyncRead + AsyncWrite + Unpin>(
    connection: h2::client::Connection<T, Bytes>,
    reads: Arc<AtomicU64>,
    url: String,
    silence: Duration,
) {
    let mut connection = pin!(connection);
    let mut ping = connection.as_mut().ping_pong();
    let mut seen = reads.load(Ordering::Relaxed);
    let ended = loop {
        tokio::select! {
            ended = &mut connection => break ended,
            () = tokio::time::sleep(silence) => {}
        }
        let now = reads.load(Ordering::Relaxed);
        if std::mem::replace(&mut seen, now) != now {
            continue; // heard from within the period: alive
        }
        let Some(pinger) = ping.as_mut() else {
            break connection.await;
        };
        // Only the bytes count; the PONG is the way to ask for some. A failed PING (one still
        // unanswered from before) asks nothing, and the silence decides.
        let asked = tokio::time::timeout(silence, pinger.ping(h2::Ping::opaque()));
        tokio::select! {
            ended = &mut connection => break ended,
            _ = asked => {}
        }
        let now = reads.load(Ordering::Relaxed);
        if std::mem::replace(&mut seen, now) == now {
            tracing::warn!(
                backend = url,
                silent = ?silence * 2,
                "HTTP/2 backend silent through a PING: connection closed"
            );
            return;
        }
    };
    if let Err(e) = ended {
        tracing::debug!(backend = url, error = %e, "HTTP/2 connection to a backend ended");
    }
}
