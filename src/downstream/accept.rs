//! Accepting client connections: the listeners (plain and TLS), the cap on open connections, and
//! each new connection's settings under the configuration current when it arrived.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::connection::{ConnSettings, Seat};
use super::detect::serve_connection;
use super::shutdown::Shutdown;
use super::tls;
use crate::http1::{ClientStream, RequestRules};
use crate::proxy::{ClientInfo, HeaderRefusal, Proxy, Snapshot};

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A listening socket on `addr` with room for `backlog` connections the kernel has completed
/// and alb not yet accepted (tokio's `bind` leaves 1024 or less, and a burst of reconnecting
/// clients, WebSocket ones after a deploy, would then wait out SYN retransmissions).
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do on Unix: a restart is not refused by connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The client listeners and the connections accepted on them.
pub struct Acceptor {
    listener: Option<TcpListener>,
    tls: Option<(TcpListener, Arc<ServerConfig>)>,
    proxy: Arc<Proxy>,
    slots: Arc<Semaphore>,
    shutdown: Arc<Shutdown>,
    connections: JoinSet<()>,
    /// New connections' settings and the configuration they were made from.
    settings: Option<(Weak<Snapshot>, Arc<ConnSettings>)>,
}

impl Acceptor {
    /// Accepts on `listener`, and on `tls` with certificates chosen from the proxy's snapshot;
    /// at most `max_connections` open at once.
    pub fn new(
        listener: TcpListener,
        tls: Option<TcpListener>,
        proxy: Arc<Proxy>,
        max_connections: usize,
    ) -> Result<Acceptor, rustls::Error> {
        let tls = match tls {
            Some(listener) => Some((listener, tls::server_config(proxy.clone())?)),
            None => None,
        };
        Ok(Acceptor {
            listener: Some(listener),
            tls,
            proxy,
            slots: Arc::new(Semaphore::new(max_connections)),
            shutdown: Arc::new(Shutdown::default()),
            connections: JoinSet::new(),
            settings: None,
        })
    }

    /// Accepts connections until `stopping` completes, and gives its outcome.
    pub async fn run_until<R>(&mut self, mut stopping: Pin<&mut impl Future<Output = R>>) -> R {
        loop {
            // At the connection limit, stop accepting (the kernel's backlog holds newcomers)
            // rather than accept and drop.
            let slot = tokio::select! {
                reason = &mut stopping => return reason,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // The semaphore is never closed; should it be, wait for the stop.
                    Err(_) => return stopping.await,
                },
            };
            let (accepted, over_tls) = tokio::select! {
                reason = &mut stopping => return reason,
                accepted = accept_on(self.listener.as_ref()) => (accepted, false),
                accepted = accept_on(self.tls.as_ref().map(|(l, _)| l)) => (accepted, true),
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            while self.connections.try_join_next().is_some() {}
            let Some(settings) = self.settings_for(peer) else {
                continue;
            };
            self.spawn(
                stream,
                peer,
                over_tls,
                settings,
                Seat::new(slot, self.proxy.stats().clone()),
            );
        }
    }

    fn spawn(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        over_tls: bool,
        settings: Arc<ConnSettings>,
        seat: Seat,
    ) {
        let client = ClientInfo::new(peer);
        let (proxy, shutdown) = (self.proxy.clone(), self.shutdown.clone());
        // Spawned as is: wrapped in another async block, the connection's state would be
        // stored twice in its task.
        match (&self.tls, over_tls) {
            (Some((_, server)), true) => {
                let server = server.clone();
                self.connections.spawn(tls::serve_tls(
                    stream, server, proxy, client, settings, shutdown, seat,
                ));
            }
            _ => {
                self.connections.spawn(serve_connection(
                    ClientStream::Plain(stream),
                    proxy,
                    client,
                    settings,
                    shutdown,
                    seat,
                ));
            }
        }
    }

    /// Stops listening: the sockets are let go (after an upgrade, the new process holds them).
    pub fn close_listeners(&mut self) {
        self.listener = None;
        self.tls = None;
    }

    /// What the open connections watch to wind down.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Waits up to `limit` for the open connections to end, then ends the rest.
    pub async fn drain(mut self, limit: Duration) {
        let drained = async { while self.connections.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, drained).await.is_ok() {
            tracing::info!("drained: all connections closed");
        } else {
            tracing::warn!(
                open = self.connections.len(),
                "drain timeout passed: closing the remaining connections"
            );
        }
        self.connections.shutdown().await;
    }

    /// A new connection's settings as configured now (a reload applies to new connections), or
    /// none when it must be closed: PROXY protocol is on and `peer` is not a trusted source.
    /// Shared by the connections of one configuration, made again after a reload.
    fn settings_for(&mut self, peer: SocketAddr) -> Option<Arc<ConnSettings>> {
        let snapshot = self.proxy.snapshot();
        let config = snapshot.config();
        let proxy_protocol = &config.proxy_protocol;
        if proxy_protocol.enabled && !proxy_protocol.trusts(peer.ip()) {
            // Only a balancer may say who the client is; anyone else could choose the address
            // alb logs and forwards.
            self.proxy
                .stats()
                .record_header_refused(HeaderRefusal::Untrusted);
            tracing::debug!(%peer, "connection closed: not a trusted PROXY protocol source");
            return None;
        }
        if let Some((made_for, settings)) = &self.settings
            && Weak::ptr_eq(made_for, &Arc::downgrade(&snapshot))
        {
            return Some(settings.clone());
        }
        let timeouts = &config.timeouts;
        let settings = Arc::new(ConnSettings {
            header_timeout: timeouts.client_header,
            keepalive_timeout: timeouts.keepalive_idle,
            write_timeout: timeouts.write,
            rules: RequestRules {
                max_head: config.limits.max_header_bytes,
                underscores: config.underscores_in_headers,
            },
            proxy_header: proxy_protocol.enabled,
            http2: config.http2,
            drain: timeouts.drain,
        });
        self.settings = Some((Arc::downgrade(&snapshot), settings.clone()));
        Some(settings)
    }
}

/// The next connection on `listener`; never, without one.
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}
