//! `/api/demo/...`: the fault knobs of `alb demo`'s own backends. This section exists only when
//! alb runs as `alb demo`; otherwise the paths are unknown like any other.
//!
//! The knobs are as open as reads (loopback clients without a token, others with it): they change
//! nothing of the balancer, only the demo's in-process backends, and a newcomer trying the demo
//! has no token. The regular write API keeps needing the token. Since no token guards them, a
//! browser's cross-site request (a page elsewhere posting to `localhost:9090`) is refused by its
//! `Origin` header; curl sends none, and the dashboard's own page is same-origin.

use http::{Method, Request, StatusCode, header};

use super::api::{Answer, error, json};
use crate::demo::{DemoBackends, KnobError};

/// Handles `path` (after `/api/demo`) with the request's query string.
pub async fn handle(
    demo: &DemoBackends,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Answer {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["backends"]) => json(StatusCode::OK, &demo.views()),
        (&Method::GET, ["backends", n]) => match n.parse().ok().and_then(|n| demo.view(n)) {
            Some(view) => json(StatusCode::OK, &view),
            None => no_such(demo),
        },
        (&Method::POST, ["backends", n, action]) => {
            let Some((n, handle)) = n.parse().ok().and_then(|n| Some((n, demo.get(n)?))) else {
                return no_such(demo);
            };
            let knobs = &handle.knobs;
            let done = match *action {
                "kill" => knobs.kill().await,
                "revive" => knobs.revive(handle.addr).await,
                "latency" => {
                    let whole = |key| param(query, key).map(str::parse::<u64>);
                    match (whole("ms"), whole("jitter_ms").unwrap_or(Ok(0))) {
                        (Some(Ok(ms)), Ok(jitter)) => knobs.set_latency(ms, jitter),
                        _ => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "expected ?ms=N (and optionally &jitter_ms=N), whole milliseconds",
                            );
                        }
                    }
                }
                "errors" => match param(query, "rate").map(str::parse::<f64>) {
                    Some(Ok(rate)) => knobs.set_error_rate(rate),
                    _ => {
                        return error(StatusCode::BAD_REQUEST, "expected ?rate=R with R in 0..1");
                    }
                },
                _ => {
                    return error(
                        StatusCode::NOT_FOUND,
                        "demo actions are kill, revive, latency?ms=N and errors?rate=R",
                    );
                }
            };
            match done {
                Ok(()) => match demo.view(n) {
                    Some(view) => json(StatusCode::OK, &view),
                    None => no_such(demo),
                },
                Err(e @ (KnobError::Rate(_) | KnobError::Latency)) => {
                    error(StatusCode::BAD_REQUEST, &e.to_string())
                }
                Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such demo API call"),
    }
}

fn no_such(demo: &DemoBackends) -> Answer {
    let count = demo.views().len();
    error(
        StatusCode::NOT_FOUND,
        &format!("no such demo backend: they are numbered 1 to {count}"),
    )
}

/// The value of `key` in the query string, if given.
fn param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// Whether a request either carries no `Origin` (curl, scripts) or comes from a page served by
/// this admin listener (`Origin` is `http://` or `https://` (a TLS terminator in front) and its
/// `Host`). On its own, `Origin == Host` proves nothing under DNS rebinding (the rebound page's
/// origin is its Host): it holds because the Host was checked first (see `super::host`), so the
/// origin compared is one of this listener's own.
pub fn same_origin<B>(req: &Request<B>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req.headers().get(header::HOST).map(|h| h.as_bytes());
    let origin = origin.as_bytes();
    let origin = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    match (origin, host) {
        (Some(origin), Some(host)) => origin == host,
        _ => false,
    }
}
