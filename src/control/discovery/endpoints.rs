//! The Kubernetes sources of discovery: one EndpointSlice watch per `k8s://` Service configured,
//! started and stopped as the config changes, each publishing into the same record as DNS does.
//!
//! What an endpoint becomes: a ready one is a backend in rotation; a terminating one stays in the
//! pool drained (its requests in flight finish, it gets no new ones) until its slice drops it;
//! one not ready yet is left out. When no endpoint is ready but some terminating ones still
//! serve, those take the traffic (as kube-proxy does during a rollout of a single pod): better
//! a pod finishing its grace period than a 503.

use std::collections::HashMap;
use std::sync::Arc;

use super::found::Found;
use crate::config::{BackendAddr, KubernetesApi};
use crate::control::ControlPlane;
use crate::control::kubernetes::{self, ApiServer, Endpoint, ServiceRef};

/// The watches running, by source key; each stops when dropped.
#[derive(Default)]
pub(super) struct Watches {
    /// The API server they use, and how it was configured (a change restarts them all).
    api: Option<(KubernetesApi, ApiServer)>,
    running: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Whether the last attempt to reach the API server failed (warned once).
    failing: bool,
}

impl Watches {
    pub(super) fn failing(&self) -> bool {
        self.failing
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}

/// The Service a `k8s://` backend reads.
fn service_of(addr: &BackendAddr) -> Option<ServiceRef> {
    match addr {
        BackendAddr::Kubernetes(service) => Some(service.clone()),
        _ => None,
    }
}

impl ControlPlane {
    /// Starts a watch for every `k8s://` source configured and not watched yet, and stops (and
    /// forgets) those no longer configured. Returns, for each watch started, a receiver told
    /// when its first list was applied.
    pub(super) fn sync_watches(
        self: &Arc<Self>,
        watches: &mut Watches,
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        let config = self.proxy.snapshot().config().clone();
        let mut wanted: Vec<(String, ServiceRef)> = config
            .all_pools()
            .iter()
            .flat_map(|pool| &pool.backends)
            .filter_map(|spec| {
                Some((
                    super::found::source_key(&spec.addr)?,
                    service_of(&spec.addr)?,
                ))
            })
            .collect();
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        wanted.dedup_by(|a, b| a.0 == b.0);
        let settings = &config.discovery.kubernetes;
        let changed_api = watches
            .api
            .as_ref()
            .is_some_and(|(given, _)| given != settings);
        let gone: Vec<String> = watches
            .running
            .keys()
            .filter(|key| changed_api || !wanted.iter().any(|(k, _)| k == *key))
            .cloned()
            .collect();
        if changed_api {
            watches.api = None;
        }
        for key in &gone {
            if let Some(task) = watches.running.remove(key) {
                task.abort();
            }
        }
        if !gone.is_empty() {
            let mut discovered = crate::control::lock(&self.discovered);
            for key in &gone {
                if !wanted.iter().any(|(k, _)| k == key) {
                    discovered.sources.remove(key);
                }
            }
        }
        if wanted.is_empty() {
            // Nothing to reach the API server for: no retry is due.
            watches.failing = false;
        }
        let mut first_lists = Vec::new();
        for (key, service) in wanted {
            if watches.running.contains_key(&key) {
                continue;
            }
            let Some(api) = self.api_server(watches, settings) else {
                break;
            };
            let (first, first_done) = tokio::sync::oneshot::channel();
            first_lists.push(first_done);
            let control = self.clone();
            let source = key.clone();
            let task = tokio::spawn(async move {
                let (mut endpoints, watch) = kubernetes::watch(api, service);
                // The watch ends with its receiver: aborting this task stops it.
                let _watch = AbortOnDrop(watch);
                let mut first = Some(first);
                while endpoints.changed().await.is_ok() {
                    let latest = endpoints.borrow_and_update().clone();
                    if let Some(latest) = latest {
                        control.record_endpoints(&source, &latest);
                        if let Some(first) = first.take() {
                            let _ = first.send(());
                        }
                    }
                }
            });
            watches.running.insert(key, task);
        }
        first_lists
    }

    /// The API server, built once from the config; none (warned once) when it cannot be.
    fn api_server(&self, watches: &mut Watches, settings: &KubernetesApi) -> Option<ApiServer> {
        if let Some((_, api)) = &watches.api {
            return Some(api.clone());
        }
        let built = match &settings.api_server {
            Some(url) => ApiServer::from_files(
                url,
                settings.token_file.as_deref(),
                settings.ca_file.as_deref(),
            ),
            None => ApiServer::in_cluster(),
        };
        match built {
            Ok(api) => {
                watches.failing = false;
                watches.api = Some((settings.clone(), api.clone()));
                Some(api)
            }
            Err(e) => {
                if !watches.failing {
                    tracing::warn!(
                        "k8s:// backends are not discovered: the Kubernetes API server cannot be reached ({e}); \
                         set [discovery.kubernetes] api_server outside a cluster"
                    );
                }
                watches.failing = true;
                None
            }
        }
    }

    /// Records what a Service's watch published, and applies it when it changed.
    fn record_endpoints(&self, key: &str, endpoints: &[Endpoint]) {
        let found = found_of(endpoints);
        let changed = {
            let mut discovered = crate::control::lock(&self.discovered);
            let record = discovered.sources.entry(key.to_string()).or_default();
            record.lookups_ok += 1;
            if record.found == found {
                false
            } else {
                let labels: Vec<String> = found.iter().map(Found::label).collect();
                tracing::info!(
                    service = key,
                    ?labels,
                    "Service {key} has {} endpoint(s)",
                    found.len()
                );
                record.found = found;
                true
            }
        };
        if changed {
            self.apply_discovered();
        }
    }
}

/// What each endpoint becomes (see the module docs), sorted.
fn found_of(endpoints: &[Endpoint]) -> Vec<Found> {
    let any_ready = endpoints.iter().any(|e| e.ready);
    let mut found: Vec<Found> = endpoints
        .iter()
        .filter_map(|e| {
            let in_rotation = if any_ready { e.ready } else { e.serving };
            let draining = !in_rotation && e.terminating;
            (in_rotation || draining).then(|| Found {
                port: Some(e.addr.port()),
                zone: e.zone.clone(),
                draining,
                ..Found::address(e.addr.ip())
            })
        })
        .collect();
    found.sort();
    found
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addr: format!("{ip}:8080").parse().unwrap(),
            ready,
            serving,
            terminating,
            zone: Some("z".into()),
            node: None,
            hints: Vec::new(),
        }
    }

    fn states(found: &[Found]) -> Vec<(String, bool)> {
        found
            .iter()
            .map(|f| (f.ip.to_string(), f.draining))
            .collect()
    }

    #[test]
    fn ready_in_rotation_terminating_drained_starting_left_out() {
        let found = found_of(&[
            endpoint("10.0.0.1", true, true, false),
            endpoint("10.0.0.2", false, true, true),
            endpoint("10.0.0.3", false, false, false),
        ]);
        assert_eq!(
            states(&found),
            [("10.0.0.1".into(), false), ("10.0.0.2".into(), true)]
        );
        assert_eq!(found[0].port, Some(8080));
        assert_eq!(found[0].zone.as_deref(), Some("z"));
    }

    #[test]
    fn with_none_ready_the_serving_terminating_ones_take_the_traffic() {
        let found = found_of(&[
            endpoint("10.0.0.1", false, true, true),
            endpoint("10.0.0.2", false, false, true),
        ]);
        assert_eq!(
            states(&found),
            [("10.0.0.1".into(), false), ("10.0.0.2".into(), true)]
        );
    }

    #[tokio::test]
    async fn a_terminating_endpoint_back_in_rotation_takes_requests_again() {
        let config =
            crate::Config::from_toml("backends = [\"k8s://shop/web:http\"]\n", "test").unwrap();
        let proxy = Arc::new(crate::proxy::Proxy::new(&config));
        let control = ControlPlane::new(proxy.clone(), None);
        let key = "shop/web:http";
        // Only a terminating pod still serving: it takes the traffic (found_of's fallback).
        control.record_endpoints(key, &[endpoint("10.0.0.1", false, true, true)]);
        assert!(proxy.backends()[0].is_available());
        // A new pod is ready: the old one drains.
        control.record_endpoints(
            key,
            &[
                endpoint("10.0.0.1", false, true, true),
                endpoint("10.0.0.2", true, true, false),
            ],
        );
        // The new pod fails its readiness probe: the terminating one is all there is again.
        control.record_endpoints(
            key,
            &[
                endpoint("10.0.0.1", false, true, true),
                endpoint("10.0.0.2", false, false, false),
            ],
        );
        let backends = proxy.backends();
        assert_eq!(backends.len(), 1);
        assert!(
            backends[0].is_available(),
            "10.0.0.1 is in rotation again but stays {:?}",
            backends[0].admin_state()
        );
    }

    #[tokio::test]
    async fn a_service_never_listed_stands_for_no_backend() {
        let config = crate::Config::from_toml(
            "backends = [\"k8s://shop/web:http\"]\n\
             [discovery.kubernetes]\napi_server = \"http://127.0.0.1:1\"\n",
            "test",
        )
        .unwrap();
        let proxy = Arc::new(crate::proxy::Proxy::new(&config));
        let control = Arc::new(ControlPlane::new(proxy.clone(), None));
        let _task = control.start_discovery().await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let urls: Vec<String> = proxy
            .backends()
            .iter()
            .map(|b| b.url().to_string())
            .collect();
        assert!(
            urls.is_empty(),
            "placeholder backends in the pool: {urls:?}"
        );
    }
}
