//! The composition root: start-up and wind-down of the whole balancer. [`Server`] binds the
//! listeners (or takes them over from the process it replaces, [`handover`]), builds the proxy,
//! starts the control plane (discovery, health checks), the admin listener (with the demo's
//! knobs under `alb demo`), then hands the client listeners to [`crate::downstream`] until
//! shutdown or a binary upgrade ([`upgrade`]), and drains: no new connections, in-flight
//! requests given `timeouts.drain` to finish.

pub mod handover;
pub mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use handover::Inherited;
pub use upgrade::{Program, Upgrade, UpgradeError};

use crate::admin::{AdminServer, Lifecycle};
use crate::config::Config;
use crate::control::ControlPlane;
use crate::downstream::{Acceptor, listen, tls};
use crate::proxy::Proxy;

/// After a handover, how long a connection with no request under way may still bring one (see
/// [`Shutdown::start_with_last_call`]). Long enough for a client that just got its answer to
/// send the next request; the drain timeout still bounds the whole.
const LAST_CALL: Duration = Duration::from_secs(1);

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
    #[error("cannot offer the listeners for an upgrade: {0}")]
    Duplicate(#[source] std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// Why the accept loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or the like: this address stops being served.
    Shutdown,
    /// A new process serves the same listeners now.
    HandedOver,
}

/// A bound, not yet running balancer.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The `[tls]` listener and its address.
    tls: Option<(TcpListener, SocketAddr)>,
    proxy: Arc<Proxy>,
    /// What changes the proxy's snapshot: reloads, runtime changes, discovery, health checks.
    control: Arc<ControlPlane>,
    config: Config,
    admin_addr: Arc<std::sync::OnceLock<SocketAddr>>,
    /// Starting, serving or draining: what the admin listener's `/readyz` reports.
    lifecycle: Arc<Lifecycle>,
    /// What an upgrade hands over, and how it tells the loop to stop.
    upgrade: Arc<Upgrade>,
    /// Started by an upgrade: the rest of what the old process handed over.
    inherited: Option<Inherited>,
    /// `alb demo`'s backends, for the admin listener's `/api/demo/...`.
    demo: Option<Arc<crate::demo::DemoBackends>>,
}

impl Server {
    /// Binds `config.listen`.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = config.listen;
        let listener = listen(addr, config.limits.listen_backlog)
            .map_err(|source| ServerError::Bind { addr, source })?;
        Server::from_listener(listener, config)
    }

    /// Uses an already bound listener (tests bind port 0 and read the address back); binds
    /// `tls.listen` when configured. Called within the tokio runtime.
    pub fn from_listener(listener: TcpListener, config: Config) -> Result<Server, ServerError> {
        Server::with_listeners(listener, None, config)
    }

    /// `tls`: the TLS listener handed over by an upgrade, if any (otherwise bound here).
    fn with_listeners(
        listener: TcpListener,
        tls: Option<TcpListener>,
        config: Config,
    ) -> Result<Server, ServerError> {
        let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
        let tls = match (&config.tls, tls) {
            (None, _) => None,
            (Some(_), Some(inherited)) => Some(inherited),
            (Some(section), None) => {
                let addr = section.listen;
                Some(tls::listen(addr).map_err(|source| ServerError::Bind { addr, source })?)
            }
        };
        let tls = match tls {
            Some(listener) => {
                let addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
                Some((listener, addr))
            }
            None => None,
        };
        let proxy = Arc::new(Proxy::new(&config));
        Ok(Server {
            listener,
            local_addr,
            tls,
            control: Arc::new(ControlPlane::new(proxy.clone(), None)),
            proxy,
            config,
            admin_addr: Arc::default(),
            lifecycle: Arc::default(),
            upgrade: Arc::default(),
            inherited: None,
            demo: None,
        })
    }

    /// Takes over the listeners of the alb this one replaces: no bind, so the address is never
    /// unserved. A listener on another address than the config's is dropped and the configured
    /// address bound instead.
    pub async fn from_inherited(
        config: Config,
        mut inherited: Inherited,
    ) -> Result<Server, ServerError> {
        let tls = config
            .tls
            .as_ref()
            .and_then(|section| inherited.take_tls(section.listen));
        let listener = match inherited.take_client(config.listen) {
            Some(listener) => listener,
            None => {
                let addr = config.listen;
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?
            }
        };
        let mut server = Server::with_listeners(listener, tls, config)?;
        server.inherited = Some(inherited);
        Ok(server)
    }

    /// The upgrade handle: `start` it to hand this server's listeners to a new process.
    pub fn upgrade(&self) -> Arc<Upgrade> {
        self.upgrade.clone()
    }

    /// Gives the admin listener the demo backends' knobs (`/api/demo/...`, `alb demo` only).
    pub fn with_demo(mut self, demo: Arc<crate::demo::DemoBackends>) -> Server {
        self.demo = Some(demo);
        self
    }

    /// Remembers the file the config came from, so that a reload (SIGHUP, admin API) re-reads it.
    pub fn with_source(mut self, path: std::path::PathBuf) -> Server {
        self.control = Arc::new(ControlPlane::new(self.proxy.clone(), Some(path)));
        self
    }

    /// Starts the admin listener. A default address that is taken only costs a warning (another
    /// alb on this machine may hold it); an address written in the config must be bound.
    async fn start_admin(&mut self) -> Result<Option<AdminServer>, ServerError> {
        let admin = &self.config.admin;
        let inherited = self
            .inherited
            .as_mut()
            .and_then(|inherited| inherited.take_admin(admin.listen));
        let Some(listen) = admin.listen else {
            return Ok(None);
        };
        let (control, lifecycle, demo) = (
            self.control.clone(),
            self.lifecycle.clone(),
            self.demo.clone(),
        );
        let started = match inherited {
            Some(listener) => AdminServer::serve_on(listener, admin, control, lifecycle, demo),
            None => AdminServer::start(listen, admin, control, lifecycle, demo).await,
        };
        match started {
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

    /// The TLS listener's address, when `[tls]` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, addr)| *addr)
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Its control plane: reload, runtime changes.
    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }

    /// Serves until `shutdown` completes, then drains: no new connections, idle keep-alive
    /// connections closed, in-flight requests given `timeouts.drain` to finish. An upgrade
    /// ([`Server::upgrade`]) ends the loop the same way, except that connections between
    /// requests get a last call ([`LAST_CALL`]): the address is still served, by the new process.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        // Names are resolved before the health checks start, so that they check every address.
        let discovery = self.control.start_discovery().await;
        self.control.start_health();
        let admin = self.start_admin().await?;
        self.offer_listeners(admin.as_ref())?;
        let tls_addr = self.tls_addr();
        let mut acceptor = Acceptor::new(
            self.listener,
            self.tls.map(|(listener, _)| listener),
            self.proxy.clone(),
            self.config.limits.max_client_connections,
        )
        .map_err(ServerError::Tls)?;
        let upgrade = self.upgrade.clone();
        let mut stopping = pin!(async {
            tokio::select! {
                () = shutdown => Stop::Shutdown,
                () = upgrade.handed_over() => Stop::HandedOver,
            }
        });
        // Both listeners are bound now (the client one since `bind`): ready for traffic.
        self.lifecycle.serving();
        tracing::info!(
            addr = %self.local_addr,
            algorithm = self.config.algorithm.name(),
            backends = self.proxy.backends().len(),
            pid = std::process::id(),
            "alb listening on {}", self.local_addr
        );
        if let Some(addr) = tls_addr {
            tracing::info!(%addr, "alb listening for TLS on {addr}");
        }
        if let Some(inherited) = self.inherited.take() {
            let old = inherited.old_pid();
            match inherited.report_serving().await {
                Ok(()) => tracing::info!(
                    "upgrade: serving on the listeners of pid {old}; this is pid {}",
                    std::process::id()
                ),
                // It stops waiting and keeps serving; both serve until one is stopped.
                Err(e) => {
                    tracing::error!("upgrade: cannot tell pid {old} that this one serves: {e}")
                }
            }
        }
        let reason = acceptor.run_until(stopping.as_mut()).await;
        self.lifecycle.draining();
        // Accepting stopped above; only now is this process's hold on the socket let go.
        self.upgrade.withdraw();
        acceptor.close_listeners();
        let drain = self.proxy.snapshot().config().timeouts.drain;
        let mut admin = admin;
        let admin_gone = match reason {
            Stop::Shutdown => {
                tracing::info!(
                    "shutting down: no new connections, draining in-flight requests for up to {drain:?}"
                );
                acceptor.shutdown().start();
                None
            }
            Stop::HandedOver => {
                tracing::info!(
                    "upgrade: handed over, no new connections here; draining in-flight requests for up to {drain:?}"
                );
                acceptor.shutdown().start_with_last_call(LAST_CALL);
                // The new process answers on the admin address too: stop accepting there now.
                admin.take().map(|admin| tokio::spawn(admin.stop()))
            }
        };
        acceptor.drain(drain).await;
        drop(discovery);
        self.control.stop_health().await;
        if let Some(admin) = admin {
            admin.stop().await;
        }
        if let Some(stopping) = admin_gone {
            let _ = stopping.await;
        }
        Ok(())
    }

    /// Hands duplicates of the bound listeners to the upgrade handle.
    fn offer_listeners(&self, admin: Option<&AdminServer>) -> Result<(), ServerError> {
        let mut listeners = vec![(
            handover::Role::Client,
            self.listener
                .as_fd()
                .try_clone_to_owned()
                .map_err(ServerError::Duplicate)?,
        )];
        if let Some(admin) = admin {
            let fd = admin.listener_fd().map_err(ServerError::Duplicate)?;
            listeners.push((handover::Role::Admin, fd));
        }
        if let Some((listener, _)) = &self.tls {
            let fd = listener
                .as_fd()
                .try_clone_to_owned()
                .map_err(ServerError::Duplicate)?;
            listeners.push((handover::Role::Tls, fd));
        }
        self.upgrade.offer(listeners);
        Ok(())
    }
}
