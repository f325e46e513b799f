//! The live proxy: the current [`Snapshot`] behind an atomic pointer, which each request loads
//! once and runs on to its end. Replacing it (reload, runtime changes, the health checks that go
//! with it) is control-plane work, in [`crate::control`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::upstream::IncomingBody;
use arc_swap::ArcSwap;
use http::Request;

use super::{ClientInfo, ProxyStats, Reply, Snapshot};
use crate::config::Config;
use crate::health::{HealthChecker, OutlierDetector};
use crate::upstream::Backend;

#[derive(Debug)]
pub struct Proxy {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) stats: Arc<ProxyStats>,
    /// The config file, re-read on reload.
    pub(crate) source: Option<PathBuf>,
    pub(crate) health: Mutex<Option<HealthChecker>>,
    /// Serialises changes: each one builds on the snapshot it replaces.
    pub(crate) changes: Mutex<()>,
    /// `--no-access-log` given on the command line: wins over every config reloaded later.
    pub(crate) access_log_off: std::sync::atomic::AtomicBool,
    /// What the backends' DNS names last resolved to (written by discovery, read by every
    /// change that builds a snapshot).
    pub(crate) discovered: Mutex<crate::control::Discovered>,
    /// Woken when a change may have brought a name discovery has not resolved yet.
    pub(crate) rediscover: tokio::sync::Notify,
}

impl Proxy {
    pub fn new(config: &Config) -> Proxy {
        Proxy::with_source(config, None)
    }

    /// A proxy that can re-read its config from `source` on reload.
    pub fn with_source(config: &Config, source: Option<PathBuf>) -> Proxy {
        let stats = Arc::new(ProxyStats::default());
        Proxy {
            snapshot: ArcSwap::from_pointee(Snapshot::new(
                config,
                &|specs| specs.to_vec(),
                stats.clone(),
                None,
            )),
            discovered: Mutex::default(),
            rediscover: tokio::sync::Notify::new(),
            stats,
            source,
            health: Mutex::new(None),
            changes: Mutex::new(()),
            access_log_off: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Keeps the access log off whatever reloaded configs say (`--no-access-log`).
    pub fn force_access_log_off(&self) {
        self.access_log_off
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.snapshot.load().backends().to_vec()
    }

    pub fn backend(&self, url: &str) -> Option<Arc<Backend>> {
        self.snapshot
            .load()
            .backends()
            .iter()
            .find(|b| b.url() == url)
            .cloned()
    }

    pub fn outliers(&self) -> Arc<OutlierDetector> {
        self.snapshot.load().outliers().clone()
    }

    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// Attempts sent again to another backend since start.
    pub fn retries(&self) -> u64 {
        self.stats.retries()
    }

    /// Proxies one request on the snapshot current when it arrived.
    pub fn handle<'c>(
        &self,
        req: Request<IncomingBody>,
        client: &'c ClientInfo,
    ) -> impl Future<Output = Reply> + Send + use<'c> {
        self.snapshot.load_full().handle(req, client)
    }
}
