//! One request, from the client's head to the backend's last byte: pick a backend, forward the
//! request over a pooled connection, stream the response back, and turn every failure into the
//! right status code (502 broken upstream, 503 no healthy backend, 504 upstream too slow).
//!
//! A failed attempt is retried on another backend only when that cannot duplicate the request:
//! the connection could not be opened, the request came back from hyper unsent, or the request is
//! idempotent and body-less so it can be sent again as it was.

mod access_log;
mod body;
mod error;
mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use hyper::body::Incoming;

pub use access_log::{AccessRecord, Outcome};
pub use body::{RequestBody, ResponseBody, UpstreamBody};
pub use error::ProxyError;
pub use headers::{append_forwarded, remove_hop_by_hop};

use crate::balance::{Exclude, Selector, selector_for};
use crate::config::{Config, Timeouts};
use crate::upstream::{Backend, InFlightGuard, UpstreamSender, connect};

/// Pooled connections tried per attempt before opening a new one: each may have been closed by the
/// backend while idle, which hyper reports by handing the unsent request back.
const STALE_CONNECTION_TRIES: usize = 3;

/// The client connection a request arrived on, computed once per connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    /// The client's IP as an X-Forwarded-For element.
    pub ip_header: HeaderValue,
}

impl ClientInfo {
    pub fn new(addr: SocketAddr) -> ClientInfo {
        let ip_header = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientInfo { addr, ip_header }
    }
}

/// The request-path state shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    backends: Vec<Arc<Backend>>,
    selector: Box<dyn Selector>,
    timeouts: Timeouts,
    attempts: u32,
    access_log: bool,
    retry_after: HeaderValue,
}

/// A failed attempt, with the request when it can still be sent elsewhere.
struct Failure {
    error: ProxyError,
    request: Option<Request<RequestBody>>,
}

impl Proxy {
    pub fn new(config: &Config) -> Proxy {
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|spec| Arc::new(Backend::new(spec)))
            .collect();
        let selector = selector_for(config.algorithm, &backends);
        let retry_after = config.health_check.interval.as_secs_f64().ceil().max(1.0) as u64;
        Proxy {
            backends,
            selector,
            timeouts: config.timeouts.clone(),
            attempts: config.retry.attempts.max(1),
            access_log: config.access_log,
            retry_after: HeaderValue::from(retry_after),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Proxies one request. Never fails: every error becomes a response.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<ResponseBody> {
        let log = self.access_log.then(|| {
            let path = req.uri().path();
            Box::new(AccessRecord::new(
                req.method(),
                path,
                client.addr,
                Instant::now(),
            ))
        });
        let outbound = match prepare(req, client) {
            Ok(outbound) => outbound,
            Err(error) => return self.local_response(&error, None, log),
        };
        self.dispatch(outbound, log).await
    }

    async fn dispatch(
        &self,
        outbound: Outbound,
        log: Option<Box<AccessRecord>>,
    ) -> Response<ResponseBody> {
        let Outbound {
            mut request,
            host_missing,
        } = outbound;
        let replay = (self.attempts > 1).then(|| Replay::of(&request)).flatten();
        let mut exclude = Exclude::default();
        let mut last: Option<(ProxyError, usize)> = None;
        for attempt in 1..=self.attempts {
            let Some(index) = self.selector.select(&self.backends, &exclude) else {
                break;
            };
            let backend = &self.backends[index];
            if host_missing {
                request
                    .headers_mut()
                    .insert(header::HOST, backend.host_header().clone());
            }
            let guard = InFlightGuard::new(backend.clone());
            let failure = match self.forward(backend, request).await {
                Ok((response, sender)) => return respond(response, sender, guard, log),
                Err(failure) => failure,
            };
            exclude.add(index);
            let retryable = matches!(
                failure.error,
                ProxyError::Connect(_) | ProxyError::Upstream(_)
            );
            let again = failure
                .request
                .or_else(|| replay.as_ref().map(Replay::rebuild));
            match again {
                Some(next) if retryable && attempt < self.attempts => {
                    tracing::info!(backend = backend.url(), attempt, error = %failure.error, "retrying on another backend");
                    request = next;
                    last = Some((failure.error, index));
                }
                _ => {
                    tracing::warn!(backend = backend.url(), attempt, error = %failure.error, "request failed");
                    return self.local_response(&failure.error, Some(backend), log);
                }
            }
        }
        match last {
            Some((error, index)) => {
                tracing::warn!(error = %error, "request failed: no other backend to retry on");
                self.local_response(&error, Some(&self.backends[index]), log)
            }
            None => self.local_response(&ProxyError::NoHealthyBackend, None, log),
        }
    }

    /// Sends `request` to `backend` and waits for the response head within `timeouts.response`.
    async fn forward(
        &self,
        backend: &Backend,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, UpstreamSender), Failure> {
        let mut stale_tries = 0;
        loop {
            let pooled = if stale_tries < STALE_CONNECTION_TRIES {
                backend.pool().checkout()
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => match connect(backend.addr(), self.timeouts.connect).await {
                    Ok(sender) => sender,
                    Err(e) => {
                        backend.request_recheck();
                        return Err(Failure {
                            error: e.into(),
                            request: Some(request),
                        });
                    }
                },
            };
            let uploaded = request.body_mut().watch_sent();
            let sent = within_response_timeout(
                sender.try_send_request(request),
                uploaded,
                self.timeouts.response,
            )
            .await;
            match sent {
                Ok(Ok(response)) => return Ok((response, sender)),
                Err(_elapsed) => {
                    return Err(Failure {
                        error: ProxyError::ResponseTimeout(self.timeouts.response),
                        request: None,
                    });
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) if reused => {
                        stale_tries += 1;
                        request = unsent;
                    }
                    unsent => {
                        return Err(Failure {
                            error: ProxyError::Upstream(e.into_error()),
                            request: unsent,
                        });
                    }
                },
            }
        }
    }

    fn local_response(
        &self,
        error: &ProxyError,
        backend: Option<&Backend>,
        log: Option<Box<AccessRecord>>,
    ) -> Response<ResponseBody> {
        let response = error.to_response(&self.retry_after);
        if let Some(log) = log {
            let bytes = http_body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0);
            log.finish(
                response.status().as_u16(),
                backend.map(Backend::url),
                bytes,
                Outcome::Complete,
            );
        }
        response
    }
}

/// Awaits the response head, allowing `limit` once the request body has been sent: the clock of
/// `timeouts.response` measures the backend's thinking time, not the client's upload speed. An
/// early answer (before the upload ends) is taken as it comes.
async fn within_response_timeout<T>(
    response: impl Future<Output = T>,
    uploaded: Option<tokio::sync::oneshot::Receiver<()>>,
    limit: std::time::Duration,
) -> Result<T, tokio::time::error::Elapsed> {
    let mut response = std::pin::pin!(response);
    if let Some(uploaded) = uploaded {
        tokio::select! {
            answer = &mut response => return Ok(answer),
            _ = uploaded => {}
        }
    }
    tokio::time::timeout(limit, response).await
}

/// A request ready to forward, and whether it came without a Host (HTTP/1.0), in which case each
/// attempt names its backend.
struct Outbound {
    request: Request<RequestBody>,
    host_missing: bool,
}

/// Rewrites the client's request for the upstream hop: origin-form target, HTTP/1.1, hop-by-hop
/// fields removed, X-Forwarded-* appended. The Host field is kept as the client sent it.
fn prepare(req: Request<Incoming>, client: &ClientInfo) -> Result<Outbound, ProxyError> {
    let (mut parts, body) = req.into_parts();
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(
            "CONNECT is not supported by this proxy",
        ));
    }
    if let Some(authority) = parts.uri.authority() {
        // Absolute-form target: its authority replaces any Host field (RFC 9112 §3.2.2).
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        parts.headers.insert(header::HOST, host);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = path
            .parse::<Uri>()
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    remove_hop_by_hop(&mut parts.headers);
    append_forwarded(&mut parts.headers, &client.ip_header);
    parts.version = Version::HTTP_11;
    let host_missing = !parts.headers.contains_key(header::HOST);
    let body = if http_body::Body::is_end_stream(&body) {
        RequestBody::Empty
    } else {
        RequestBody::client(body)
    };
    Ok(Outbound {
        request: Request::from_parts(parts, body),
        host_missing,
    })
}

/// Wraps the backend's response for the client: hop-by-hop fields removed, body streamed through
/// a wrapper that holds the in-flight guard and the connection until the body ends.
fn respond(
    response: Response<Incoming>,
    sender: UpstreamSender,
    guard: InFlightGuard,
    log: Option<Box<AccessRecord>>,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    let body = UpstreamBody::new(body, sender, guard, log, parts.status.as_u16());
    Response::from_parts(parts, ResponseBody::Upstream(body))
}

/// What is needed to send a body-less idempotent request again after it was sent once and the
/// connection broke before any response byte: only such a request can be repeated safely.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<RequestBody>) -> Option<Replay> {
        let idempotent = matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let bodyless = matches!(request.body(), RequestBody::Empty);
        (idempotent && bodyless).then(|| Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        })
    }

    fn rebuild(&self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::Empty);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}
