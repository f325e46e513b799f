//! The live proxy: the current [`Snapshot`] behind an atomic pointer, which each request loads
//! once and runs on to its end. Replacing it (reload, runtime changes, the health checks that go
//! with it) is control-plane work, in [`crate::control`].

use std::sync::Arc;

use crate::upstream::IncomingBody;
use arc_swap::ArcSwap;
use http::Request;

use super::{ClientInfo, ProxyStats, Reply, Snapshot};
use crate::config::Config;
use crate::health::OutlierDetector;
use crate::upstream::Backend;

/// The data plane: the snapshot requests run on, and the counters they share. What changes it
/// lives in [`crate::control::ControlPlane`].
#[derive(Debug)]
pub struct Proxy {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) stats: Arc<ProxyStats>,
}

impl Proxy {
    pub fn new(config: &Config) -> Proxy {
        let stats = Arc::new(ProxyStats::default());
        Proxy {
            snapshot: ArcSwap::from_pointee(Snapshot::new(
                config,
                // Until discovery answers, a name stands for itself and an SRV name or a
                // Service for nothing (see `control::Discovered::expand`).
                &|specs| {
                    specs
                        .iter()
                        .filter(|s| !s.addr.is_found_only())
                        .cloned()
                        .collect()
                },
                stats.clone(),
                None,
            )),
            stats,
        }
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
