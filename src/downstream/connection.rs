//! What every client connection carries whichever protocol it speaks: its place under the
//! connection limit, the settings of the configuration it was accepted under, and its parts as
//! the detector hands them to a protocol's room.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::shutdown::Shutdown;
use crate::http1::{ClientWriteHalf, ReadSide, RequestRules};
use crate::proxy::{ClientInfo, Proxy, ProxyStats};

/// A client connection's place under `limits.max_client_connections`, counted in the metrics
/// for as long as the connection lives.
#[derive(Debug)]
pub struct Seat {
    _permit: OwnedSemaphorePermit,
    stats: Arc<ProxyStats>,
}

impl Seat {
    pub fn new(permit: OwnedSemaphorePermit, stats: Arc<ProxyStats>) -> Seat {
        stats.client_connections.fetch_add(1, Ordering::Relaxed);
        Seat {
            _permit: permit,
            stats,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.stats
            .client_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection needs to know besides its socket.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// `timeouts.write`: the longest a write to this client may make no progress.
    pub write_timeout: Duration,
    pub rules: RequestRules,
    /// A PROXY protocol header must come first (the source is a trusted balancer; see
    /// `proxy_protocol`), read within `header_timeout`.
    pub proxy_header: bool,
    pub http2: crate::config::Http2Config,
    /// `timeouts.drain`: how long a closing HTTP/2 connection's streams may take to finish.
    pub drain: Duration,
}

/// A client connection between the detector and the room that serves it.
pub(super) struct Connection {
    pub proxy: Arc<Proxy>,
    /// Boxed: a copy lives in every idle connection's task.
    pub client: Box<ClientInfo>,
    pub settings: Arc<ConnSettings>,
    pub shutdown: Arc<Shutdown>,
    pub seat: Seat,
    /// The read half with what was read of it so far; `None` once a body reader took it.
    pub side: Option<ReadSide>,
    pub write: ClientWriteHalf,
}

/// `Expect: 100-continue`: the client holds its body back until told to send it.
pub(super) fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::EXPECT).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    })
}
