//! Turns [`RawConfig`] into a typed [`Config`], collecting every problem instead of stopping at the
//! first one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use rustls::pki_types::ServerName;

use super::backends::{algorithm, backend_list};
use super::pools::{self, DEFAULT_POOL};
use super::raw::{RawConfig, RawRetry};
use super::routes;
use super::sections;
use super::values::{Problems, count};
use super::{BackendAddr, BackendSpec, BackendTls, Config, Problem};
use crate::http1::Underscores;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(super) fn validate(mut raw: RawConfig, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    let listen = listen(raw.listen.as_deref(), &mut problems);
    let algorithm = algorithm("", raw.algorithm.as_deref(), &mut problems);
    let hash = pools::hash(
        "",
        algorithm,
        raw.hash_key.as_deref(),
        raw.hash_balance,
        &mut problems,
    );
    let sticky = raw
        .sticky
        .take()
        .map(|s| pools::sticky("", s, &mut problems));
    let top = pools::Inherited {
        health_check: raw.health_check.take().unwrap_or_default(),
        passive_health: raw.passive_health.take().unwrap_or_default(),
        retry: raw.retry.take().unwrap_or_default(),
        limits: raw.limits.take().unwrap_or_default(),
    };
    let top_timeouts = raw.timeouts.take().unwrap_or_default();
    let (limits, backend_max) = sections::limits(top.limits.clone(), &mut problems);
    let mut backends = backend_list("", &raw.backends, &raw.backend, backend_max, &mut problems);
    let raw_pools = raw.pools.take().unwrap_or_default();
    let written = |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| !l.is_empty());
    let top_written = written(&raw.backends) || raw.backend.as_ref().is_some_and(|b| !b.is_empty());
    if !top_written && raw_pools.is_empty() {
        problems.add(
            "backends",
            "no backends configured: give at least one, e.g. backends = [\"http://127.0.0.1:8081\"]",
        );
    }
    if top_written && raw_pools.contains_key(DEFAULT_POOL) {
        problems.add(
            "pools.default",
            "the top-level backends are the pool \"default\" already: move them here or rename it",
        );
    }
    // Each pool's retry as it resolves, for routes that give their own over it.
    let mut pool_retry: BTreeMap<String, RawRetry> = raw_pools
        .iter()
        .map(|(name, pool)| {
            let retry = pool.retry.clone().unwrap_or_default().over(&top.retry);
            (name.clone(), retry)
        })
        .collect();
    if top_written {
        pool_retry.insert(DEFAULT_POOL.to_string(), top.retry.clone());
    }
    let mut named = pools::named(raw_pools, &top, &mut problems);
    let any_https = backends
        .iter()
        .chain(named.iter().flat_map(|p| &p.backends))
        .any(|b| b.scheme() == "https");
    let upstream_tls =
        super::upstream_tls::upstream_tls(raw.upstream_tls.take(), any_https, base, &mut problems);
    if let Some(client) = &upstream_tls {
        attach_tls(&mut backends, client);
        for pool in &mut named {
            attach_tls(&mut pool.backends, client);
        }
    }
    let routes = routes::routes(
        raw.route.take().unwrap_or_default(),
        &pool_retry,
        &top_timeouts,
        &mut problems,
    );
    let mut warnings = routes::unused_pools(&routes, named.iter().map(|p| p.name.as_str()));
    let has_default = top_written || pool_retry.contains_key(DEFAULT_POOL);
    if !has_default && !routes.iter().any(routes::RouteConfig::is_catch_all) {
        warnings.push(Problem {
            key: "route".into(),
            reason: "no pool \"default\" and no route without conditions: requests no route \
                     matches get 404"
                .into(),
        });
    }
    let health_check = sections::health_check(top.health_check, &mut problems);
    let timeouts = sections::timeouts(top_timeouts, &mut problems);
    let retry = sections::retry(top.retry, &mut problems);
    let passive_health = sections::passive_health(top.passive_health, &mut problems);
    let workers = count("workers", raw.workers, 0, 0, 1024, &mut problems) as usize;
    let admin = sections::admin(raw.admin.take().unwrap_or_default(), &mut problems);
    let underscores_in_headers = underscores(raw.underscores_in_headers.as_deref(), &mut problems);
    let discovery = sections::discovery(
        raw.discovery.take().unwrap_or_default(),
        base,
        &mut problems,
    );
    let proxy_protocol =
        sections::proxy_protocol(raw.proxy_protocol.take().unwrap_or_default(), &mut problems);
    let forwarded = super::edge::forwarded(raw.forwarded.take().unwrap_or_default(), &mut problems);
    let request_id = super::edge::request_id(raw.request_id.take().unwrap_or_default());
    let request_headers = super::header_rules::header_rules(
        "request_headers",
        raw.request_headers.take(),
        &mut problems,
    );
    let response_headers = super::header_rules::header_rules(
        "response_headers",
        raw.response_headers.take(),
        &mut problems,
    );
    let http2 = super::http2::http2(raw.http2.take().unwrap_or_default(), &mut problems);
    let locality =
        super::locality::locality(raw.locality.take().unwrap_or_default(), &mut problems);
    let tracing = raw
        .tracing
        .take()
        .map(|section| super::tracing::tracing(section, &mut problems));
    let shared_state = raw
        .shared_state
        .take()
        .map(|section| super::shared_state::shared_state(section, &mut problems));
    let tls = raw
        .tls
        .take()
        .map(|section| super::tls::tls(section, base, &mut problems));
    if let Some(tls) = &tls
        && tls.redirect_http
        && tls.listen.port() == 0
    {
        problems.add(
            "tls.redirect_http",
            "needs a fixed tls.listen port: the redirect names it",
        );
    }
    // Port 0 (any free port) twice is two listeners.
    if let Some(tls) = &tls
        && tls.listen == listen
        && listen.port() != 0
    {
        problems.add(
            "tls.listen",
            format!("{} is the plain `listen` address", tls.listen),
        );
    }
    problems.into_result()?;
    Ok(Config {
        listen,
        algorithm,
        hash,
        sticky,
        backends,
        pools: named,
        routes,
        warnings,
        health_check,
        timeouts,
        retry,
        passive_health,
        limits,
        access_log: raw.access_log.unwrap_or(true),
        workers,
        explain: raw.explain.unwrap_or(false),
        underscores_in_headers,
        admin,
        discovery,
        proxy_protocol,
        forwarded,
        request_id,
        request_headers,
        response_headers,
        upstream_tls,
        tls,
        http2,
        tracing,
        locality,
        shared_state,
    })
}

/// Gives every `https://` backend the TLS client and the name its certificate must carry.
fn attach_tls(backends: &mut [BackendSpec], client: &std::sync::Arc<super::UpstreamTls>) {
    for spec in backends.iter_mut().filter(|b| b.scheme() == "https") {
        // A discovered backend's name until discovery answers: each target then gets its own
        // (an SRV target's host name; a Kubernetes Service's `service.namespace.svc`).
        let found_name = match &spec.addr {
            BackendAddr::Srv { name } => Some(name.clone()),
            BackendAddr::Kubernetes(service) => {
                Some(format!("{}.{}.svc", service.service, service.namespace))
            }
            _ => None,
        };
        let server_name = match (&client.server_name, &spec.addr) {
            (Some(name), _) => name.clone(),
            (None, BackendAddr::Ip(sa)) => ServerName::IpAddress(sa.ip().into()),
            (None, BackendAddr::Srv { .. } | BackendAddr::Kubernetes(_)) => {
                match found_name.and_then(|n| ServerName::try_from(n).ok()) {
                    Some(name) => name,
                    None => continue,
                }
            }
            (None, BackendAddr::Name { host, .. }) => match ServerName::try_from(host.clone()) {
                Ok(name) => name,
                // A host the URL parser took is a valid DNS name; should one not be, the
                // backend is reached without TLS rather than never: refuse it instead.
                Err(_) => continue,
            },
        };
        spec.tls = Some(BackendTls {
            client: client.clone(),
            server_name,
        });
        spec.http2 = client.http2;
    }
}

fn listen(value: Option<&str>, problems: &mut Problems) -> SocketAddr {
    let text = value.unwrap_or(DEFAULT_LISTEN);
    text.parse().unwrap_or_else(|_| {
        problems.add(
            "listen",
            format!("{text:?} is not an IP address with a port, like \"127.0.0.1:8080\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    })
}

fn underscores(value: Option<&str>, problems: &mut Problems) -> Underscores {
    match value {
        None | Some("drop") => Underscores::Drop,
        Some("refuse") => Underscores::Refuse,
        Some("allow") => Underscores::Allow,
        Some(other) => {
            problems.add(
                "underscores_in_headers",
                format!("{other:?} is not one of \"drop\", \"refuse\", \"allow\""),
            );
            Underscores::Drop
        }
    }
}
