//! The admin listener, off the data path: Prometheus `/metrics`, the JSON API under `/api`, and a
//! live dashboard at `/` fed by the last 15 minutes of samples (`/api/history`, kept by
//! [`history`]'s sampler, which runs as long as the admin server) and the current state
//! (`/api/backends`; also streamed as server-sent events on `/api/events`).
//!
//! Every request but the probes must name this listener in its Host (its own address,
//! `localhost`, or a name of `admin.allowed_hosts`; see [`host`]): the defence against DNS
//! rebinding, under which a remote page's requests arrive from loopback.
//!
//! Reads are open to loopback clients; from elsewhere they need the token like writes do. Writes
//! need `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1) (`admin.token` or `ALB_ADMIN_TOKEN`); with no token
//! configured they are refused. Under `alb demo`, `/api/demo/...` turns the demo backends' fault
//! knobs: those calls are as open as reads (see [`demo`]). The probes `/healthz` and `/readyz` are the exception: open to
//! every source, because orchestrators probe from outside the pod and without credentials.

mod api;
mod demo;
mod events;
mod history;
mod host;
mod metrics;
mod probes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use api::{BackendView, Snapshot, snapshot};
pub use events::EventsBody;
pub use probes::{Lifecycle, Phase, readiness};

use crate::config::AdminConfig;
use crate::control::ControlPlane;
use crate::demo::DemoBackends;
use crate::proxy::Proxy;

const DASHBOARD: &str = include_str!("dashboard.html");
/// Largest API request body read.
const MAX_BODY: usize = 64 * 1024;

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    /// A duplicate of the listening socket, for a binary upgrade to hand over.
    fd: std::os::fd::OwnedFd,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `listen` and serves; `lifecycle` is the server loop's phase, read by `/readyz`.
    /// `config` gives the token and the allowed Hosts, fixed for the listener's life.
    pub async fn start(
        listen: SocketAddr,
        config: &AdminConfig,
        control: Arc<ControlPlane>,
        lifecycle: Arc<Lifecycle>,
        demo: Option<Arc<DemoBackends>>,
    ) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(listen).await?;
        AdminServer::serve_on(listener, config, control, lifecycle, demo)
    }

    /// Serves on a listener bound already (one handed over by the alb this one replaces).
    /// `demo`: the demo backends whose knobs `/api/demo/...` turns (`alb demo` only).
    pub fn serve_on(
        listener: TcpListener,
        config: &AdminConfig,
        control: Arc<ControlPlane>,
        lifecycle: Arc<Lifecycle>,
        demo: Option<Arc<DemoBackends>>,
    ) -> std::io::Result<AdminServer> {
        let addr = listener.local_addr()?;
        let proxy = control.proxy().clone();
        let fd = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
        let (stop, stopped) = watch::channel(false);
        let history = Arc::new(std::sync::Mutex::new(history::History::default()));
        tokio::spawn(history::run(
            proxy.clone(),
            history.clone(),
            stopped.clone(),
        ));
        let admin = Arc::new(Admin {
            history,
            proxy,
            control,
            token: config.token.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            lifecycle,
            stopped: stopped.clone(),
            demo,
        });
        let task = tokio::spawn(serve(listener, admin, stopped));
        tracing::info!(
            "admin listening on http://{addr} (dashboard /, metrics /metrics, API /api)"
        );
        Ok(AdminServer {
            addr,
            fd,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Another descriptor of the listening socket (for [`crate::app::Upgrade`]).
    pub fn listener_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.fd.try_clone()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Debug)]
struct Admin {
    proxy: Arc<Proxy>,
    control: Arc<ControlPlane>,
    /// Filled by the sampler task; read by `/api/history`.
    history: Arc<std::sync::Mutex<history::History>>,
    token: Option<String>,
    /// `admin.allowed_hosts`: names a request's Host may give (see [`host`]).
    allowed_hosts: Vec<String>,
    lifecycle: Arc<Lifecycle>,
    stopped: watch::Receiver<bool>,
    demo: Option<Arc<DemoBackends>>,
}

async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                // The address the client reached: on a wildcard listener, the Host check's
                // "own address".
                let Ok(local) = stream.local_addr() else { continue };
                while connections.try_join_next().is_some() {}
                let admin = admin.clone();
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.route(req, peer, local).await) }
                });
                connections.spawn(async move {
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
    // Event streams end on `stopped`; give connections a moment to finish, then cut them.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.shutdown().await;
}

type AdminBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched without regard
/// to case (RFC 9110 §11.1: `bearer`, `BEARER` are the same scheme), and one or more spaces may
/// separate it from the token.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(b"bearer".len())?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Admin {
    /// The refusal for a request without the right token, if it has not.
    fn denial(&self, req: &Request<Incoming>) -> Option<Response<AdminBody>> {
        let Some(token) = &self.token else {
            return Some(respond(
                StatusCode::FORBIDDEN,
                "application/json",
                "{\"error\": \"writes are off: set admin.token or ALB_ADMIN_TOKEN\"}",
            ));
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_credentials(v.as_bytes()));
        match presented {
            Some(given) if same_secret(given, token.as_bytes()) => None,
            _ => {
                let mut response = respond(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    "{\"error\": \"missing or wrong bearer token\"}",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Some(response)
            }
        }
    }

    /// `/healthz` and `/readyz`, answered before any authorisation (see [`probes`]); None for
    /// every other path.
    fn probe(&self, req: &Request<Incoming>) -> Option<Response<AdminBody>> {
        let path = req.uri().path();
        if path != "/healthz" && path != "/readyz" {
            return None;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "probes answer GET and HEAD\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(response);
        }
        let plain = "text/plain; charset=utf-8";
        if path == "/healthz" {
            // Answered by the admin task on the shared runtime: a wedged runtime fails it.
            return Some(respond(StatusCode::OK, plain, "ok\n"));
        }
        let verdict = probes::readiness(self.lifecycle.phase(), self.proxy.snapshot().backends());
        Some(match verdict {
            Ok(line) => respond(StatusCode::OK, plain, format!("{line}\n")),
            Err(reason) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                plain,
                format!("{reason}\n"),
            ),
        })
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Response<AdminBody> {
        // Probes come first: orchestrators probe by whatever address they see, and the answers
        // ("ok", a readiness line) are nothing a rebinding page could use.
        if let Some(probe) = self.probe(&req) {
            return probe;
        }
        if let Err(refusal) = host::check(&req, local, &self.allowed_hosts) {
            return respond(refusal.status(), "application/json", refusal.message());
        }
        let path = req.uri().path().to_string();
        let demo = self
            .demo
            .as_ref()
            .and_then(|demo| Some((demo, path.strip_prefix("/api/demo/")?)));
        // The demo's knobs are as open as reads; every other write needs the token.
        let write = api::is_write(req.method()) && demo.is_none();
        if (write || !peer.ip().is_loopback())
            && let Some(denied) = self.denial(&req)
        {
            return denied;
        }
        if let Some((demo, rest)) = demo {
            if !demo::same_origin(&req) {
                return respond(
                    StatusCode::FORBIDDEN,
                    "application/json",
                    "{\"error\": \"demo knobs are not turned from another site's page\"}",
                );
            }
            let (status, json) = demo::handle(demo, req.method(), rest, req.uri().query()).await;
            return respond(status, "application/json", json);
        }
        match path.as_str() {
            "/" | "/dashboard" => respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(&self.control),
            ),
            "/api/events" => {
                let body = EventsBody::new(self.proxy.clone(), self.stopped.clone());
                let mut response = Response::new(body.boxed());
                let h = response.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            "/api/history" if req.method() == Method::GET => {
                let (status, json) = history::answer(&self.history, req.uri().query());
                respond(status, "application/json", json)
            }
            p if p.starts_with("/api/") => {
                let method = req.method().clone();
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => {
                        return respond(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "application/json",
                            "{\"error\": \"body too large\"}",
                        );
                    }
                };
                let (status, json) = api::handle(&self.control, &method, &p["/api".len()..], &body);
                respond(status, "application/json", json)
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n",
            ),
        }
    }
}
