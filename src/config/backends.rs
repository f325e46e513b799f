//! A pool's backends and its algorithm, read from their keys: the one place a backend URL, a
//! weight and a connection limit are checked, for the top level and every `[pools.NAME]` alike.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::raw::RawBackend;
use super::values::{Problems, count};
use super::{Algorithm, BackendAddr, BackendSpec, MAX_WEIGHT, ServiceRef};

pub(super) fn algorithm(prefix: &str, value: Option<&str>, problems: &mut Problems) -> Algorithm {
    let Some(text) = value else {
        return Algorithm::default();
    };
    text.parse().unwrap_or_else(|()| {
        problems.add(
            format!("{prefix}algorithm"),
            format!(
                "unknown algorithm {text:?}, expected one of {}",
                Algorithm::NAMES
            ),
        );
        Algorithm::default()
    })
}

/// The backends of one pool (`prefix` "" for the top level, `pools.NAME.` for a named one),
/// given as `backends = [...]` or `[[backend]]` tables.
pub(super) fn backend_list(
    prefix: &str,
    urls: &Option<Vec<String>>,
    tables: &Option<Vec<RawBackend>>,
    default_max: Option<u32>,
    problems: &mut Problems,
) -> Vec<BackendSpec> {
    type Entry<'a> = (String, &'a str, Option<&'a RawBackend>);
    let entries: Vec<Entry> = match (urls, tables) {
        (Some(_), Some(_)) => {
            problems.add(
                format!("{prefix}backend"),
                "use either `backends = [...]` or `[[backend]]` tables, not both",
            );
            return Vec::new();
        }
        (Some(urls), None) => urls
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("{prefix}backends[{i}]"), url.as_str(), None))
            .collect(),
        (None, Some(tables)) => tables
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("{prefix}backend[{i}]"), b.url.as_str(), Some(b)))
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut seen = HashSet::new();
    let mut specs = Vec::with_capacity(entries.len());
    for (key, url, table) in entries {
        let weight = backend_weight(&key, table.and_then(|t| t.weight), problems);
        let max_connections = match table.and_then(|t| t.max_connections) {
            Some(n) => Some(count(
                &format!("{key}.max_connections"),
                Some(n),
                1,
                1,
                1_000_000,
                problems,
            )),
            None => default_max,
        };
        let Some(mut spec) = backend_url(&key, url, weight, problems) else {
            continue;
        };
        spec.max_connections = max_connections;
        if let Some(table) = table {
            if let Some(zone) = &table.zone {
                super::locality::zone_name(&format!("{key}.zone"), zone, problems);
                if spec.addr.is_found_only() {
                    problems.add(
                        format!("{key}.zone"),
                        "the zone of a discovered backend comes from discovery",
                    );
                }
            }
            spec.zone = table.zone.clone();
            spec.backup = table.backup.unwrap_or(false);
        }
        // One address is one backend, whatever the scheme: a port speaks TLS or it does not.
        if !seen.insert(spec.authority.clone()) {
            problems.add(key, format!("duplicate backend {}", spec.url));
            continue;
        }
        specs.push(spec);
    }
    specs
}

fn backend_weight(key: &str, weight: Option<i64>, problems: &mut Problems) -> u32 {
    match weight {
        None => 1,
        Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(&w) => w as u32,
        Some(w) => {
            problems.add(
                format!("{key}.weight"),
                format!("weight must be between 1 and {MAX_WEIGHT}, got {w}"),
            );
            1
        }
    }
}

/// Accepts `http://host[:port][/]`, `https://...` and `h2c://...` (HTTP/2 by prior knowledge),
/// and the discovered forms `srv+http://_service._tcp.name` and `k8s://namespace/service:port`
/// (each also `+https`, `+h2c`): no path prefix, query, user info or other scheme, since alb
/// would otherwise silently drop them.
fn backend_url(key: &str, url: &str, weight: u32, problems: &mut Problems) -> Option<BackendSpec> {
    let mut fail = |reason: String| {
        problems.add(key, format!("{url:?}: {reason}"));
        None
    };
    if url.contains('#') {
        return fail("a fragment is not supported, give only http://host:port".into());
    }
    if let Some((found, scheme, rest)) = discovered_form(url) {
        return match found_addr(found, rest) {
            Ok((addr, authority)) => {
                let url = match (&addr, scheme) {
                    (BackendAddr::Srv { name }, _) => format!("srv+{scheme}://{name}"),
                    (BackendAddr::Kubernetes { .. }, "http") => format!("k8s://{authority}"),
                    _ => format!("k8s+{scheme}://{authority}"),
                };
                Some(spec(url, authority, addr, weight, scheme))
            }
            Err(reason) => fail(reason),
        };
    }
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => return fail(format!("not a valid URL ({e})")),
    };
    let (scheme, default_port) = match uri.scheme_str() {
        Some("http") => ("http", 80),
        Some("https") => ("https", 443),
        Some("h2c") => ("h2c", 80),
        Some(other) => {
            return fail(format!(
                "scheme {other:?} is not supported, use http://, https:// or h2c://"
            ));
        }
        None => return fail("missing scheme, write it as http://host:port".into()),
    };
    let Some(authority) = uri.authority() else {
        return fail("missing host".into());
    };
    if authority.as_str().contains('@') {
        return fail("user info in backend URLs is not supported".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return fail("a path or query is not supported, give only http://host:port".into());
    }
    let host = authority.host();
    if host.is_empty() {
        return fail("missing host".into());
    }
    // Read the port text ourselves: `Authority::port` hides an out-of-range port as "no port".
    let port_text = authority.as_str()[host.len()..]
        .strip_prefix(':')
        .unwrap_or("");
    let port = match port_text {
        "" => default_port,
        text => match text.parse::<u16>() {
            Ok(0) | Err(_) => return fail(format!("port {text:?} is not between 1 and 65535")),
            Ok(port) => port,
        },
    };
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let (addr, authority) = match bare_host.parse::<IpAddr>() {
        // The canonical text of the address, so that two spellings of one IP are one backend.
        Ok(ip) => {
            let sa = SocketAddr::new(ip, port);
            (BackendAddr::Ip(sa), sa.to_string())
        }
        Err(_) => {
            let host = bare_host.to_ascii_lowercase();
            let authority = format!("{host}:{port}");
            (BackendAddr::Name { host, port }, authority)
        }
    };
    Some(spec(
        format!("{scheme}://{authority}"),
        authority,
        addr,
        weight,
        scheme,
    ))
}

/// A backend as its URL gives it: what the tables, TLS and discovery add is set later.
fn spec(
    url: String,
    authority: String,
    addr: BackendAddr,
    weight: u32,
    scheme: &str,
) -> BackendSpec {
    BackendSpec {
        url,
        authority,
        addr,
        weight,
        max_connections: None,
        dns_name: None,
        tls: None,
        http2: scheme == "h2c",
        zone: None,
        backup: false,
        draining: false,
    }
}

/// Backends only discovery knows the addresses of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    Srv,
    Kubernetes,
}

/// `srv+SCHEME://…` and `k8s[+SCHEME]://…`: which discovery, the backends' scheme (`http`
/// when not given) and what follows `://`.
fn discovered_form(url: &str) -> Option<(Found, &'static str, &str)> {
    let (head, rest) = url.split_once("://")?;
    let head = head.to_ascii_lowercase();
    let (kind, scheme) = match head.split_once('+') {
        Some((kind, scheme)) => (kind, Some(scheme)),
        None => (head.as_str(), None),
    };
    let found = match (kind, scheme) {
        ("srv", Some(_)) => Found::Srv,
        ("k8s", _) => Found::Kubernetes,
        _ => return None,
    };
    let scheme = match scheme.unwrap_or("http") {
        "http" => "http",
        "https" => "https",
        "h2c" => "h2c",
        _ => return None,
    };
    Some((found, scheme, rest))
}

/// The address of a discovered backend, and the authority it is known by until discovery
/// answers: `_service._proto.name` for SRV, `namespace/service:port` for Kubernetes.
fn found_addr(found: Found, rest: &str) -> Result<(BackendAddr, String), String> {
    let rest = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
    match found {
        Found::Srv => {
            let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
            let valid = labels.len() >= 3
                && labels[0].starts_with('_')
                && labels[1].starts_with('_')
                && labels
                    .iter()
                    .all(|l| is_dns_label(l.trim_start_matches('_')));
            if !valid {
                return Err(
                    "an SRV name is `_service._proto.domain`, as in srv+http://_http._tcp.example.com"
                        .into(),
                );
            }
            let name = rest.trim_end_matches('.').to_string();
            Ok((BackendAddr::Srv { name: name.clone() }, name))
        }
        Found::Kubernetes => {
            let service: ServiceRef = format!("k8s://{rest}").parse()?;
            let authority = format!("{}/{}:{}", service.namespace, service.service, service.port);
            Ok((BackendAddr::Kubernetes(service), authority))
        }
    }
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}
