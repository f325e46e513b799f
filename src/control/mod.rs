//! The control plane: everything that replaces the data plane's [`Snapshot`] while requests run
//! on it. A reload (SIGHUP or the admin API) or a runtime change builds a new snapshot from a
//! config, carries over the backends that did not change (with their health, counters,
//! connections and running health checks), swaps it in whole, and starts the health checks of
//! what is new or re-configured; discovery does the same when a source's backends change. Nothing here is on a request's path: a request loads the
//! snapshot once and never waits on a change, and the [`Proxy`] it runs on holds none of the
//! state kept here.

mod discovery;
pub mod kubernetes;
mod live_check;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::health::HealthChecker;
use crate::proxy::{Proxy, Snapshot};
use crate::upstream::AdminState;

pub use discovery::{Discovered, DiscoveryTask, Found, MAX_ADDRESSES_PER_NAME, SourceRecord};
pub use live_check::{LiveResult, live_check, pools_without_healthy};

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("alb was not started from a config file, there is nothing to re-read")]
    NoSource,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("no backend {0}")]
    UnknownBackend(String),
    #[error("backend {0} exists already")]
    Duplicate(String),
    #[error("the last backend cannot be removed")]
    LastBackend,
}

/// What a reload or change did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChangeReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Settings that changed but only take effect after a restart.
    pub needs_restart: Vec<String>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The control plane of one proxy: the config's source, the health checks, discovery's view of
/// the names, and the lock that makes changes one at a time.
#[derive(Debug)]
pub struct ControlPlane {
    proxy: Arc<Proxy>,
    /// The config file, re-read on reload.
    source: Option<PathBuf>,
    health: Mutex<Option<HealthChecker>>,
    /// Serialises changes: each one builds on the snapshot it replaces.
    changes: Mutex<()>,
    /// `--no-access-log` given on the command line: wins over every config reloaded later.
    access_log_off: AtomicBool,
    /// What the backends' DNS names last resolved to (written by discovery, read by every
    /// change that builds a snapshot).
    discovered: Mutex<Discovered>,
    /// Woken when a change may have brought a name discovery has not resolved yet.
    rediscover: tokio::sync::Notify,
}

impl ControlPlane {
    /// The control plane of `proxy`, whose config (when it came from a file) is re-read from
    /// `source` on reload.
    pub fn new(proxy: Arc<Proxy>, source: Option<PathBuf>) -> ControlPlane {
        ControlPlane {
            proxy,
            source,
            health: Mutex::new(None),
            changes: Mutex::new(()),
            access_log_off: AtomicBool::new(false),
            discovered: Mutex::default(),
            rediscover: tokio::sync::Notify::new(),
        }
    }

    /// The data plane it changes.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Keeps the access log off whatever reloaded configs say (`--no-access-log`), from now on
    /// and for the running configuration.
    pub fn force_access_log_off(&self) {
        self.access_log_off.store(true, Ordering::Relaxed);
    }

    /// Starts (or restarts) the health checks of the current backends.
    pub fn start_health(&self) {
        let routing = self.proxy.snapshot.load();
        let mut running = lock(&self.health).take();
        let mut checker = HealthChecker::default();
        for (pool, config) in routing.pools().iter().zip(routing.config().all_pools()) {
            checker.spawn_or_keep(
                pool.backends(),
                &config.health_check,
                &config.passive_health,
                running.as_mut(),
            );
        }
        // The old checker's tasks not carried over (backends gone or re-configured) are aborted
        // as it drops.
        drop(running);
        *lock(&self.health) = Some(checker);
    }

    pub async fn stop_health(&self) {
        let checker = lock(&self.health).take();
        if let Some(checker) = checker {
            checker.stop().await;
        }
    }

    /// Swaps in a routing for `config`; in-flight requests finish on the old one.
    pub fn apply(&self, config: &Config) -> ChangeReport {
        let _serial = lock(&self.changes);
        self.apply_locked(config)
    }

    /// Rebuilds the snapshot after discovery saw a name's addresses change.
    fn apply_discovered(&self) {
        let _serial = lock(&self.changes);
        let config = self.proxy.snapshot.load().config().clone();
        self.apply_locked(&config);
    }

    fn apply_locked(&self, config: &Config) -> ChangeReport {
        let old = self.proxy.snapshot.load_full();
        let new = {
            let discovered = lock(&self.discovered);
            Snapshot::new(
                config,
                &|specs| discovered.expand(specs),
                self.proxy.stats.clone(),
                Some(&old),
            )
        };
        let report = diff(&old, &new);
        let new_backends = config.all_pools() != old.config().all_pools()
            || config.discovery != old.config().discovery;
        // A backend whose URL is gone from its pool is retired: its tunnels drain (a changed weight makes a
        // new `Backend` for the same URL, and is no reason to cut one).
        for pool in old.pools() {
            let stays = new.pool(pool.name()).map_or(&[][..], |p| p.backends());
            for gone in pool.backends() {
                if !stays.iter().any(|b| b.url() == gone.url()) {
                    gone.retire();
                }
            }
        }
        self.proxy.snapshot.store(Arc::new(new));
        if new_backends {
            // They may name hosts discovery has not resolved yet, or another API server.
            self.rediscover.notify_one();
        }
        let running = lock(&self.health).is_some();
        if running {
            self.start_health();
        }
        tracing::info!(
            added = ?report.added, removed = ?report.removed, kept = report.kept.len(),
            "configuration applied"
        );
        for setting in &report.needs_restart {
            tracing::warn!("{setting} changed: takes effect after a restart");
        }
        report
    }

    /// Re-reads the config file; an invalid one is refused and the running one kept.
    pub fn reload(&self) -> Result<ChangeReport, ChangeError> {
        let Some(path) = &self.source else {
            return Err(ChangeError::NoSource);
        };
        match Config::load(path) {
            Ok(mut config) => {
                if self.access_log_off.load(Ordering::Relaxed) {
                    config.access_log = false;
                }
                self.proxy.stats.reloads.fetch_add(1, Ordering::Relaxed);
                for warning in &config.warnings {
                    tracing::warn!("{}: {warning}", path.display());
                }
                Ok(self.apply(&config))
            }
            Err(e) => {
                self.proxy
                    .stats
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload refused, the running configuration stays: {e}");
                Err(e.into())
            }
        }
    }

    /// Adds a backend (validated like one in the config file) to the pool `default`.
    pub fn add_backend(&self, url: &str, weight: Option<u32>) -> Result<ChangeReport, ChangeError> {
        let _serial = lock(&self.changes);
        let mut config = self.proxy.snapshot.load().config().clone();
        let probe = Config::with_backends(config.listen, &[url.to_string()])?;
        let mut spec = probe.backends[0].clone();
        if let Some(weight) = weight {
            let checked = Config::from_toml(
                &format!("[[backend]]\nurl = {url:?}\nweight = {weight}\n"),
                "(api)",
            )?;
            spec.weight = checked.backends[0].weight;
        }
        let backends = default_backends(&mut config);
        if backends.iter().any(|b| b.url == spec.url) {
            return Err(ChangeError::Duplicate(spec.url));
        }
        backends.push(spec);
        Ok(self.apply_locked(&config))
    }

    /// Removes a backend from the pool `default`.
    pub fn remove_backend(&self, url: &str) -> Result<ChangeReport, ChangeError> {
        let _serial = lock(&self.changes);
        let mut config = self.proxy.snapshot.load().config().clone();
        let backends = default_backends(&mut config);
        let before = backends.len();
        backends.retain(|b| b.url != url);
        if backends.len() == before {
            return Err(ChangeError::UnknownBackend(url.to_string()));
        }
        if backends.is_empty() {
            return Err(ChangeError::LastBackend);
        }
        Ok(self.apply_locked(&config))
    }

    /// Drains, disables or enables the backend of that URL, in every pool it serves in.
    pub fn set_admin_state(&self, url: &str, state: AdminState) -> Result<(), ChangeError> {
        let snapshot = self.proxy.snapshot.load();
        let matching: Vec<_> = snapshot
            .backends()
            .iter()
            .filter(|b| b.url() == url)
            .collect();
        if matching.is_empty() {
            return Err(ChangeError::UnknownBackend(url.to_string()));
        }
        for backend in matching {
            backend.set_admin_state(state);
        }
        tracing::info!(
            backend = url,
            state = state.name(),
            "backend {url} is now {}",
            state.name()
        );
        Ok(())
    }
}

/// The backends of the pool `default`: the top-level ones, or a `[pools.default]` section's.
fn default_backends(config: &mut Config) -> &mut Vec<crate::config::BackendSpec> {
    let named = config
        .pools
        .iter()
        .position(|p| p.name == crate::config::DEFAULT_POOL);
    match named {
        Some(i) if config.backends.is_empty() => &mut config.pools[i].backends,
        _ => &mut config.backends,
    }
}

fn diff(old: &Snapshot, new: &Snapshot) -> ChangeReport {
    let urls = |r: &Snapshot| {
        r.backends()
            .iter()
            .map(|b| b.url().to_string())
            .collect::<Vec<_>>()
    };
    let (before, after) = (urls(old), urls(new));
    let (a, b) = (old.config(), new.config());
    let mut needs_restart = Vec::new();
    if a.listen != b.listen {
        needs_restart.push("listen".to_string());
    }
    if a.workers != b.workers {
        needs_restart.push("workers".to_string());
    }
    if a.limits.max_client_connections != b.limits.max_client_connections {
        needs_restart.push("limits.max_client_connections".to_string());
    }
    if a.limits.listen_backlog != b.limits.listen_backlog {
        needs_restart.push("limits.listen_backlog".to_string());
    }
    if a.admin != b.admin {
        needs_restart.push("admin".to_string());
    }
    // The certificates follow the snapshot; the listener is bound once.
    let tls_listen = |c: &Config| c.tls.as_ref().map(|tls| tls.listen);
    if tls_listen(a) != tls_listen(b) {
        needs_restart.push("tls.listen".to_string());
    }
    ChangeReport {
        added: after
            .iter()
            .filter(|u| !before.contains(u))
            .cloned()
            .collect(),
        removed: before
            .iter()
            .filter(|u| !after.contains(u))
            .cloned()
            .collect(),
        kept: after
            .iter()
            .filter(|u| before.contains(u))
            .cloned()
            .collect(),
        needs_restart,
    }
}
