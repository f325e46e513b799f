//! The JSON admin API: backends with their live state, and the operator's levers (drain, disable,
//! enable, add, remove, reload). Writes need the bearer token; without one configured they are off.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::control::ChangeError;
use crate::control::ControlPlane;
use crate::proxy::Proxy;
use crate::upstream::{AdminState, Backend};

#[derive(Debug, Serialize)]
pub struct BackendView {
    /// The pool it serves in (`default` for the top-level backends).
    pub pool: String,
    pub url: String,
    /// `name:port` for an address found by DNS discovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// The zone it runs in, when known (`zone = "…"`, or its EndpointSlice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Picked only when nothing else in its pool is left.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
    /// `up`, `down` (active checks), `ejected` (passive health), `draining` or `disabled`.
    pub state: &'static str,
    pub healthy: bool,
    pub ejected: bool,
    pub admin: &'static str,
    pub weight: u32,
    pub in_flight: u64,
    pub requests: u64,
    pub recent_latency_ms: f64,
    pub last_check: Option<CheckView>,
}

#[derive(Debug, Serialize)]
pub struct CheckView {
    pub passed: bool,
    pub detail: String,
}

pub fn view(pool: &str, b: &Backend) -> BackendView {
    let admin = b.admin_state();
    let state = match admin {
        AdminState::Draining => "draining",
        AdminState::Disabled => "disabled",
        AdminState::Enabled if !b.is_healthy() => "down",
        AdminState::Enabled if b.is_ejected() => "ejected",
        AdminState::Enabled => "up",
    };
    BackendView {
        pool: pool.to_string(),
        url: b.url().to_string(),
        dns_name: b.dns_name().map(str::to_string),
        zone: b.zone().map(str::to_string),
        backup: b.is_backup(),
        state,
        healthy: b.is_healthy(),
        ejected: b.is_ejected(),
        admin: admin.name(),
        weight: b.weight(),
        in_flight: b.in_flight(),
        requests: b.stats().total_responses(),
        recent_latency_ms: b.recent_latency().as_secs_f64() * 1000.0,
        last_check: b
            .last_probe()
            .map(|(passed, detail)| CheckView { passed, detail }),
    }
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Pool after pool.
    pub backends: Vec<BackendView>,
    pub routes: Vec<RouteView>,
    pub client_connections: i64,
    pub retries: u64,
}

/// A route as the config gives it, and the requests it took since the last reload.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// Its conditions in a line (`host=api.example.com path_prefix=/v1/`); `*` for none.
    pub matches: String,
    /// The pools it sends to, with their weights when it splits.
    pub pools: Vec<(String, u32)>,
    pub hits: u64,
}

fn route_view(route: &crate::config::RouteConfig, hits: u64) -> RouteView {
    use crate::config::{HeaderTest, HostPattern};
    let mut matches = Vec::new();
    match &route.host {
        Some(HostPattern::Exact(name)) => matches.push(format!("host={name}")),
        Some(HostPattern::Suffix(suffix)) => matches.push(format!("host=*{suffix}")),
        None => {}
    }
    if let Some(prefix) = &route.path_prefix {
        matches.push(format!("path_prefix={prefix}"));
    }
    if let Some(path) = &route.path {
        matches.push(format!("path={path}"));
    }
    if !route.methods.is_empty() {
        let methods: Vec<&str> = route.methods.iter().map(http::Method::as_str).collect();
        matches.push(format!("methods={}", methods.join(",")));
    }
    for h in &route.headers {
        matches.push(match &h.test {
            HeaderTest::Equals(v) => format!("{}={v}", h.name),
            HeaderTest::Present => format!("{} present", h.name),
            HeaderTest::Absent => format!("{} absent", h.name),
        });
    }
    RouteView {
        matches: if matches.is_empty() {
            "*".into()
        } else {
            matches.join(" ")
        },
        pools: route
            .targets
            .iter()
            .map(|t| (t.pool.clone(), t.weight))
            .collect(),
        hits,
    }
}

pub fn snapshot(proxy: &Proxy) -> Snapshot {
    let current = proxy.snapshot();
    let hits = current.route_hits();
    Snapshot {
        backends: current
            .pools()
            .iter()
            .flat_map(|pool| pool.backends().iter().map(|b| view(pool.name(), b)))
            .collect(),
        routes: current
            .config()
            .routes
            .iter()
            .zip(hits)
            .map(|(route, hits)| route_view(route, hits))
            .collect(),
        client_connections: proxy
            .stats()
            .client_connections
            .load(std::sync::atomic::Ordering::Relaxed),
        retries: proxy.retries(),
    }
}

#[derive(Debug, Deserialize)]
struct NewBackend {
    url: String,
    weight: Option<u32>,
}

/// An API answer: status and JSON body.
pub type Answer = (StatusCode, String);

pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    (
        status,
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
}

pub(super) fn error(status: StatusCode, message: &str) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

fn change_error(e: &ChangeError) -> Answer {
    let status = match e {
        ChangeError::UnknownBackend(_) => StatusCode::NOT_FOUND,
        ChangeError::Duplicate(_) | ChangeError::LastBackend => StatusCode::CONFLICT,
        ChangeError::NoSource => StatusCode::CONFLICT,
        ChangeError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, &e.to_string())
}

/// The backend of that URL (in its first pool, when it serves in several).
fn find(proxy: &Proxy, url: &str) -> Option<BackendView> {
    let current = proxy.snapshot();
    current.pools().iter().find_map(|pool| {
        pool.backends()
            .iter()
            .find(|b| b.url() == url)
            .map(|b| view(pool.name(), b))
    })
}

/// Handles `/api/...` once authorisation is settled. `path` is without the `/api` prefix.
pub fn handle(control: &ControlPlane, method: &Method, path: &str, body: &Bytes) -> Answer {
    let proxy = control.proxy();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["backends"]) => json(StatusCode::OK, &snapshot(proxy)),
        (&Method::GET, ["backends", id]) => match find(proxy, &format!("http://{id}")) {
            Some(found) => json(StatusCode::OK, &found),
            None => error(StatusCode::NOT_FOUND, "no such backend"),
        },
        (&Method::POST, ["backends"]) => match serde_json::from_slice::<NewBackend>(body) {
            Ok(new) => match control.add_backend(&new.url, new.weight) {
                Ok(report) => json(StatusCode::CREATED, &report),
                Err(e) => change_error(&e),
            },
            Err(e) => error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"url\": ..., \"weight\": ...}}: {e}"),
            ),
        },
        (&Method::DELETE, ["backends", id]) => {
            match control.remove_backend(&format!("http://{id}")) {
                Ok(report) => json(StatusCode::OK, &report),
                Err(e) => change_error(&e),
            }
        }
        (&Method::POST, ["backends", id, action]) => {
            let state = match *action {
                "drain" => AdminState::Draining,
                "disable" => AdminState::Disabled,
                "enable" => AdminState::Enabled,
                _ => {
                    return error(
                        StatusCode::NOT_FOUND,
                        "actions are drain, disable and enable",
                    );
                }
            };
            let url = format!("http://{id}");
            match control.set_admin_state(&url, state) {
                Ok(()) => match find(proxy, &url) {
                    Some(found) => json(StatusCode::OK, &found),
                    None => error(StatusCode::NOT_FOUND, "no such backend"),
                },
                Err(e) => change_error(&e),
            }
        }
        (&Method::POST, ["reload"]) => match control.reload() {
            Ok(report) => json(StatusCode::OK, &report),
            Err(e) => change_error(&e),
        },
        _ => error(StatusCode::NOT_FOUND, "no such API call"),
    }
}

/// Whether a call changes anything (and so needs the token).
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}
