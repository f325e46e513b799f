//! The listener side: accepting client connections (up to `limits.max_client_connections`),
//! serving HTTP/1.1 on each, and shutting down gracefully (stop accepting, let in-flight requests
//! finish within the drain timeout). With `proxy_protocol` on, only trusted sources are served,
//! and each must start with a PROXY protocol header ([`proxy_protocol`]).

mod conn;
pub mod proxy_protocol;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use conn::{ConnSettings, Seat, Shutdown, serve_connection};

use crate::admin::{AdminServer, Lifecycle};
use crate::config::Config;
use crate::http1::RequestRules;
use crate::proxy::{ClientInfo, HeaderRefusal, Proxy};

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// A bound, not yet running balancer.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    proxy: Arc<Proxy>,
    config: Config,
    admin_addr: Arc<std::sync::OnceLock<SocketAddr>>,
    /// Starting, serving or draining: what the admin listener's `/readyz` reports.
    lifecycle: Arc<Lifecycle>,
}

impl Server {
    /// Binds `config.listen`.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Server::from_listener(listener, config)
    }

    /// Uses an already bound listener (tests bind port 0 and read the address back).
    pub fn from_listener(listener: TcpListener, config: Config) -> Result<Server, ServerError> {
        let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
        Ok(Server {
            listener,
            local_addr,
            proxy: Arc::new(Proxy::with_source(&config, None)),
            config,
            admin_addr: Arc::default(),
            lifecycle: Arc::default(),
        })
    }

    /// Remembers the file the config came from, so that a reload (SIGHUP, admin API) re-reads it.
    pub fn with_source(mut self, path: std::path::PathBuf) -> Server {
        self.proxy = Arc::new(Proxy::with_source(&self.config, Some(path)));
        self
    }

    /// Starts the admin listener. A default address that is taken only costs a warning (another
    /// alb on this machine may hold it); an address written in the config must be bound.
    async fn start_admin(&self) -> Result<Option<AdminServer>, ServerError> {
        let admin = &self.config.admin;
        let Some(listen) = admin.listen else {
            return Ok(None);
        };
        let started = AdminServer::start(
            listen,
            admin.token.clone(),
            self.proxy.clone(),
            self.lifecycle.clone(),
        );
        match started.await {
            Ok(server) => {
                let _ = self.admin_addr.set(server.addr());
                Ok(Some(server))
            }
            Err(source) if admin.explicit => Err(ServerError::Bind {
                addr: listen,
                source,
            }),
            Err(e) => {
                tracing::warn!("admin listener not started: cannot listen on {listen}: {e}");
                Ok(None)
            }
        }
    }

    /// The admin listener's address once `run` has bound it.
    pub fn admin_addr(&self) -> Arc<std::sync::OnceLock<SocketAddr>> {
        self.admin_addr.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Serves until `shutdown` completes, then drains: no new connections, idle keep-alive
    /// connections closed, in-flight requests given `timeouts.drain` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        // Names are resolved before the health checks start, so that they check every address.
        let discovery = self.proxy.start_discovery().await;
        self.proxy.start_health();
        let admin = self.start_admin().await?;
        let slots = Arc::new(Semaphore::new(self.config.limits.max_client_connections));
        let stop = Arc::new(Shutdown::default());
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        // Both listeners are bound now (the client one since `bind`): ready for traffic.
        self.lifecycle.serving();
        tracing::info!(
            addr = %self.local_addr,
            algorithm = self.config.algorithm.name(),
            backends = self.proxy.backends().len(),
            "alb listening on {}", self.local_addr
        );
        loop {
            // At the connection limit, stop accepting (the kernel's backlog holds newcomers)
            // rather than accept and drop.
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        while connections.try_join_next().is_some() {}
                        // Settings as configured now: a reload applies to new connections.
                        let snapshot = self.proxy.snapshot();
                        let proxy_protocol = &snapshot.config().proxy_protocol;
                        if proxy_protocol.enabled && !proxy_protocol.trusts(peer.ip()) {
                            // Only a balancer may say who the client is; anyone else could
                            // choose the address alb logs and forwards.
                            self.proxy.stats().record_header_refused(HeaderRefusal::Untrusted);
                            tracing::debug!(%peer, "connection closed: not a trusted PROXY protocol source");
                            continue;
                        }
                        let timeouts = &snapshot.config().timeouts;
                        let settings = ConnSettings {
                            header_timeout: timeouts.client_header,
                            keepalive_timeout: timeouts.keepalive_idle,
                            write_timeout: timeouts.write,
                            rules: RequestRules {
                                max_head: snapshot.config().limits.max_header_bytes,
                                underscores: snapshot.config().underscores_in_headers,
                            },
                            proxy_header: proxy_protocol.enabled,
                        };
                        let seat = Seat::new(slot, self.proxy.stats().clone());
                        // Spawned as is: wrapped in another async block, the connection's state
                        // would be stored twice in its task.
                        connections.spawn(serve_connection(
                            stream,
                            self.proxy.clone(),
                            ClientInfo::new(peer),
                            settings,
                            stop.clone(),
                            seat,
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        }
        self.lifecycle.draining();
        drop(self.listener);
        let drain = self.proxy.snapshot().config().timeouts.drain;
        tracing::info!(
            "shutting down: no new connections, draining in-flight requests for up to {drain:?}"
        );
        stop.start();
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, drained).await.is_ok() {
            tracing::info!("drained: all connections closed");
        } else {
            tracing::warn!(
                open = connections.len(),
                "drain timeout passed: closing the remaining connections"
            );
        }
        connections.shutdown().await;
        drop(discovery);
        self.proxy.stop_health().await;
        if let Some(admin) = admin {
            admin.stop().await;
        }
        Ok(())
    }
}
