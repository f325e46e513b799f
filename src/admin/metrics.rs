//! Prometheus metrics, rendered at scrape time from the atomics the request path already keeps:
//! counting a request never touches a metrics registry or a lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::control::ControlPlane;
use crate::proxy::{HeaderRefusal, TlsFailure};
use crate::shared_state::{Fallback, SharedStateStats};
use crate::upstream::{Histogram, METHOD_CLASSES, STATUS_CLASSES};

/// Renders every metric in the Prometheus text format.
pub fn render(control: &Arc<ControlPlane>) -> String {
    let mut registry = Registry::with_prefix("alb");
    registry.register_collector(Box::new(ProxyCollector(control.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct ProxyCollector(Arc<ControlPlane>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, String)>, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// `[shared_state]`: whether Redis answers, how often it was asked, and how often a rate-limit
/// decision was made locally without it (shown only when the section is configured).
fn shared_state(
    encoder: &mut DescriptorEncoder,
    stats: &SharedStateStats,
) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "shared_state_up",
        "1 while the [shared_state] Redis answers (rate limits shared), 0 while each replica \
         limits on its own share",
        &[(vec![], i64::from(stats.up.load(Ordering::Relaxed)))],
    )?;
    counter(
        encoder,
        "shared_state_round_trips",
        "Scripts run in the [shared_state] Redis: rate-limit decisions that found no lease",
        &[(vec![], stats.round_trips.load(Ordering::Relaxed))],
    )?;
    let fallbacks: Vec<_> = Fallback::ALL
        .iter()
        .map(|&why| {
            (
                vec![("reason", why.name().to_string())],
                stats.fallbacks(why),
            )
        })
        .collect();
    counter(
        encoder,
        "shared_state_fallbacks",
        "Rate-limit decisions made by the replica alone, at its share of the limit: Redis was \
         down (unavailable), did not answer within shared_state.timeout (timeout), or failed \
         (error)",
        &fallbacks,
    )
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, String)>, &Histogram)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        let (sum, count, buckets) = h.snapshot();
        metric
            .encode_family(labels)?
            .encode_histogram::<Vec<(&str, String)>>(sum, count, &buckets, None)?;
    }
    Ok(())
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let proxy = self.0.proxy();
        let snapshot = proxy.snapshot();
        // Each backend with its pool: one URL may serve in two pools, as two backends.
        let backends: Vec<(&str, &crate::upstream::Backend)> = snapshot
            .pools()
            .iter()
            .flat_map(|pool| pool.backends().iter().map(move |b| (pool.name(), &**b)))
            .collect();
        let stats = proxy.stats();
        let by =
            |pool: &str, url: &str| vec![("pool", pool.to_string()), ("backend", url.to_string())];

        let mut requests = Vec::new();
        for (pool, b) in &backends {
            for (m, method) in METHOD_CLASSES.iter().enumerate() {
                for (c, class) in STATUS_CLASSES.iter().enumerate() {
                    let n = b.stats().responses(m, c);
                    if n > 0 {
                        let labels = vec![
                            ("pool", pool.to_string()),
                            ("backend", b.url().to_string()),
                            ("method", method.to_string()),
                            ("status", class.to_string()),
                        ];
                        requests.push((labels, n));
                    }
                }
            }
        }
        for (m, method) in METHOD_CLASSES.iter().enumerate() {
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                let n = stats.local(m, c);
                if n > 0 {
                    let labels = vec![
                        ("backend", "none".to_string()),
                        ("method", method.to_string()),
                        ("status", class.to_string()),
                    ];
                    requests.push((labels, n));
                }
            }
        }
        counter(
            &mut encoder,
            "requests",
            "Responses by pool, backend (none: answered by alb itself), method and status class",
            &requests,
        )?;
        let routes: Vec<_> = snapshot
            .route_hits()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (vec![("route", i.to_string())], n))
            .collect();
        counter(
            &mut encoder,
            "route_requests",
            "Requests each route matched (by its place in the config, from 0), since the last reload",
            &routes,
        )?;
        counter(
            &mut encoder,
            "no_route_requests",
            "Requests no route matched with no pool \"default\" to take them (answered 404)",
            &[(vec![], stats.no_route.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "rate_limited_requests",
            "Requests refused with 429 by a route's rate limit",
            &[(vec![], stats.rate_limited.load(Ordering::Relaxed))],
        )?;
        if snapshot.config().shared_state.is_some() {
            shared_state(&mut encoder, &stats.shared_state)?;
        }
        let protocol = |name: &str| vec![("protocol", name.to_string())];
        counter(
            &mut encoder,
            "client_connections",
            "Client connections accepted, by the HTTP version they spoke.",
            &[
                (
                    protocol("http/1.1"),
                    stats.h1_connections.load(Ordering::Relaxed),
                ),
                (protocol("h2"), stats.h2_connections.load(Ordering::Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "client_requests",
            "Client requests (HTTP/2: streams) received, by the HTTP version they came in.",
            &[
                (
                    protocol("http/1.1"),
                    stats.h1_requests.load(Ordering::Relaxed),
                ),
                (protocol("h2"), stats.h2_requests.load(Ordering::Relaxed)),
            ],
        )?;
        counter(
            &mut encoder,
            "h2_reset_floods",
            "HTTP/2 connections closed with ENHANCE_YOUR_CALM for cancelling streams faster than \
             http2.max_resets_per_second.",
            &[(vec![], stats.h2_reset_floods.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "h2_abuse_closed",
            "HTTP/2 connections closed with ENHANCE_YOUR_CALM by the protocol's own guards: streams \
             reset before alb took them, header lists far over the limit, CONTINUATION floods.",
            &[(vec![], stats.h2_abuse_closed.load(Ordering::Relaxed))],
        )?;
        let result = |name: &str, n: &std::sync::atomic::AtomicU64| {
            (
                vec![("result", name.to_string())],
                n.load(Ordering::Relaxed),
            )
        };
        counter(
            &mut encoder,
            "trace_spans",
            "Spans of sampled requests: exported to the collector, dropped because the export \
             queue was full (tracing.queue_size), or lost in a failed export.",
            &[
                result("exported", &stats.trace.exported),
                result("dropped", &stats.trace.dropped),
                result("failed", &stats.trace.failed),
            ],
        )?;

        let upstream: Vec<_> = backends
            .iter()
            .map(|(pool, b)| (by(pool, b.url()), &b.stats().upstream_latency))
            .collect();
        histogram(
            &mut encoder,
            "upstream_latency_seconds",
            "Time from sending a request to a backend to its response headers",
            &upstream,
        )?;
        histogram(
            &mut encoder,
            "request_duration_seconds",
            "Time from a request's arrival to the end of its response",
            &[(vec![], &stats.request_duration)],
        )?;

        let per = |f: &dyn Fn(&crate::upstream::Backend) -> i64| -> Vec<_> {
            backends
                .iter()
                .map(|(pool, b)| (by(pool, b.url()), f(b)))
                .collect()
        };
        gauge(
            &mut encoder,
            "backend_in_flight",
            "Requests in flight to a backend",
            &per(&|b| b.in_flight() as i64),
        )?;
        gauge(
            &mut encoder,
            "backend_up",
            "1 when a backend takes new requests (healthy, not ejected, enabled)",
            &per(&|b| i64::from(b.is_available())),
        )?;
        gauge(
            &mut encoder,
            "backend_healthy",
            "Verdict of the active health checks",
            &per(&|b| i64::from(b.is_healthy())),
        )?;
        gauge(
            &mut encoder,
            "backend_ejected",
            "1 while passive health keeps a backend out",
            &per(&|b| i64::from(b.is_ejected())),
        )?;
        let load = |f: &dyn Fn(&crate::upstream::Backend) -> u64| -> Vec<_> {
            backends
                .iter()
                .map(|(pool, b)| (by(pool, b.url()), f(b)))
                .collect()
        };
        counter(
            &mut encoder,
            "backend_ejections",
            "Ejections by passive health",
            &load(&|b| b.stats().ejections.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut encoder,
            "backend_retries",
            "Attempts that failed on a backend and were sent to another",
            &load(&|b| b.stats().retries.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut encoder,
            "backend_bytes_sent",
            "Response body bytes streamed from a backend to clients",
            &load(&|b| b.stats().bytes_sent.load(Ordering::Relaxed)),
        )?;

        counter(
            &mut encoder,
            "retries",
            "Attempts sent again to another backend",
            &[(vec![], stats.retries())],
        )?;
        counter(
            &mut encoder,
            "retry_budget_exhausted",
            "Retries refused because the retry budget was spent",
            &[(vec![], stats.budget_exhausted.load(Ordering::Relaxed))],
        )?;
        gauge(
            &mut encoder,
            "client_connections",
            "Open client connections",
            &[(vec![], stats.client_connections.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "bytes_to_clients",
            "Response body bytes sent to clients",
            &[(vec![], stats.bytes_to_clients.load(Ordering::Relaxed))],
        )?;
        gauge(
            &mut encoder,
            "tunnels_open",
            "Upgraded connections (WebSocket) open",
            &[(vec![], stats.tunnels_open.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "tunnel_bytes",
            "Bytes carried by upgraded connections, by direction",
            &[
                (
                    vec![("direction", "to_backend".to_string())],
                    stats.tunnel_bytes_to_backends.load(Ordering::Relaxed),
                ),
                (
                    vec![("direction", "to_client".to_string())],
                    stats.tunnel_bytes_to_clients.load(Ordering::Relaxed),
                ),
            ],
        )?;
        counter(
            &mut encoder,
            "reloads",
            "Configuration reloads applied",
            &[(vec![], stats.reloads.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "reload_failures",
            "Configuration reloads refused",
            &[(vec![], stats.reload_failures.load(Ordering::Relaxed))],
        )?;
        let names = self.0.discovered_names();
        let lookups: Vec<_> = names
            .iter()
            .flat_map(|(name, r)| {
                [("ok", r.lookups_ok), ("failed", r.lookups_failed)].map(|(result, n)| {
                    (
                        vec![("name", name.clone()), ("result", result.to_string())],
                        n,
                    )
                })
            })
            .collect();
        counter(
            &mut encoder,
            "dns_lookups",
            "DNS lookups of backend names, by result (a failed one keeps the last addresses)",
            &lookups,
        )?;
        let addresses: Vec<_> = names
            .iter()
            .map(|(name, r)| (vec![("name", name.clone())], r.addrs.len() as i64))
            .collect();
        gauge(
            &mut encoder,
            "dns_addresses",
            "Addresses a backend name resolved to last (one backend each)",
            &addresses,
        )?;
        let refused: Vec<_> = HeaderRefusal::ALL
            .iter()
            .map(|&r| {
                (
                    vec![("reason", r.name().to_string())],
                    stats.header_refused(r),
                )
            })
            .collect();
        counter(
            &mut encoder,
            "proxy_protocol_rejected",
            "Client connections closed for want of a good PROXY protocol header, by reason",
            &refused,
        )?;
        let tls: Vec<_> = TlsFailure::ALL
            .iter()
            .map(|&r| {
                (
                    vec![("reason", r.name().to_string())],
                    stats.tls_failures(r),
                )
            })
            .collect();
        counter(
            &mut encoder,
            "tls_handshake_failures",
            "TLS handshakes that failed (the connection closed), by reason",
            &tls,
        )?;
        Ok(())
    }
}
