//! One request, from the client's head to the backend's last byte: pick a backend, forward the
//! request over a pooled connection, stream the response back, and turn every failure into the
//! right status code (502 broken upstream, 503 no healthy backend, 504 upstream too slow, 4xx for
//! what the client did wrong). Retries follow [`retry`]; failures feed passive health.

mod access_log;
mod error;
mod headers;
mod request_body;
mod response_body;
mod retry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub use access_log::{AccessRecord, Outcome};
pub use error::ProxyError;
pub use headers::{append_forwarded, has_foreign_transfer_coding, remove_hop_by_hop};
pub use request_body::{BodyError, BodyLimits, RequestBody};
pub use response_body::{ResponseBody, ResponseBodyError, UpstreamBody, UpstreamParts};
pub use retry::{RetryBudget, RetryPolicy, is_idempotent};

use crate::balance::{Exclude, Selector, selector_for};
use crate::config::{Config, Limits, Timeouts};
use crate::health::OutlierDetector;
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
    limits: Limits,
    retry: RetryPolicy,
    outliers: Arc<OutlierDetector>,
    slow_start: Duration,
    access_log: bool,
    retry_after: HeaderValue,
    retries: AtomicU64,
}

/// A failed attempt, with the request when it provably was not sent.
struct Failure {
    error: ProxyError,
    request: Option<Request<RequestBody>>,
}

/// Why a request got no backend answer, and from which backend (for the access log).
struct Rejection {
    error: ProxyError,
    backend: Option<Arc<Backend>>,
}

impl Proxy {
    pub fn new(config: &Config) -> Proxy {
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|spec| Arc::new(Backend::with_queue(spec, config.limits.backend_queue)))
            .collect();
        let selector = selector_for(config.algorithm, &backends);
        let retry_after = config.health_check.interval.as_secs_f64().ceil().max(1.0) as u64;
        Proxy {
            outliers: Arc::new(OutlierDetector::new(&config.passive_health, &backends)),
            backends,
            selector,
            timeouts: config.timeouts.clone(),
            limits: config.limits.clone(),
            retry: RetryPolicy::new(&config.retry),
            slow_start: config.health_check.slow_start,
            access_log: config.access_log,
            retry_after: HeaderValue::from(retry_after),
            retries: AtomicU64::new(0),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn outliers(&self) -> &Arc<OutlierDetector> {
        &self.outliers
    }

    /// Attempts sent again to another backend since start.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Proxies one request. Never fails: every error becomes a response.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: &ClientInfo,
    ) -> Response<ResponseBody> {
        let mut log = self.access_log.then(|| {
            Box::new(AccessRecord::new(
                req.method(),
                req.uri().path(),
                client.addr,
                Instant::now(),
            ))
        });
        let outbound = match self.prepare(req, client).await {
            Ok(outbound) => outbound,
            Err(error) => return self.local_response(&error, None, log),
        };
        let result = match self.timeouts.request {
            Some(limit) => tokio::time::timeout(limit, self.dispatch(outbound, &mut log))
                .await
                .unwrap_or_else(|_| {
                    Err(Rejection {
                        error: ProxyError::Deadline(limit),
                        backend: None,
                    })
                }),
            None => self.dispatch(outbound, &mut log).await,
        };
        match result {
            Ok(response) => response,
            Err(rejection) => {
                self.local_response(&rejection.error, rejection.backend.as_deref(), log.take())
            }
        }
    }

    /// Tries backends until one answers, a failure may not be retried, or attempts run out.
    async fn dispatch(
        &self,
        outbound: Outbound,
        log: &mut Option<Box<AccessRecord>>,
    ) -> Result<Response<ResponseBody>, Rejection> {
        let Outbound {
            mut request,
            host_missing,
        } = outbound;
        self.retry.note_request();
        let replay = (self.retry.enabled() && is_idempotent(request.method()))
            .then(|| Replay::of(&request))
            .flatten();
        let mut exclude = Exclude::default();
        let mut last = None;
        for attempt in 1..=self.retry.attempts {
            let Some(index) = self.pick(&exclude) else {
                break;
            };
            exclude.add(index);
            let backend = &self.backends[index];
            if host_missing {
                request
                    .headers_mut()
                    .insert(header::HOST, backend.host_header().clone());
            }
            let mut guard = InFlightGuard::new(backend.clone());
            let sent = match guard.acquire_slot(self.limits.backend_queue_timeout).await {
                Err(e) => Err(Failure {
                    error: e.into(),
                    request: Some(request),
                }),
                Ok(()) => self.forward(backend, request).await,
            };
            let more = attempt < self.retry.attempts;
            let failure = match sent {
                Ok((response, sender)) => {
                    let status = response.status().as_u16();
                    if status >= 500 && self.outliers.counts_5xx() {
                        self.outliers.record_failure(backend, "5xx answer");
                    } else {
                        self.outliers.record_success(backend);
                    }
                    let retry_status = more
                        && self.retry.retries_status(status)
                        && self.has_other(&exclude)
                        && replay.is_some();
                    match replay.as_ref() {
                        Some(replay) if retry_status && self.retry.allow_retry() => {
                            tracing::info!(
                                backend = backend.url(),
                                attempt,
                                status,
                                "retrying a {status} answer on another backend"
                            );
                            self.retries.fetch_add(1, Ordering::Relaxed);
                            request = replay.rebuild();
                            last = Some(Rejection {
                                error: ProxyError::UpstreamStatus(status),
                                backend: Some(backend.clone()),
                            });
                            continue;
                        }
                        _ => {}
                    }
                    if let Some(log) = log.as_mut() {
                        log.set_attempts(attempt);
                    }
                    return Ok(self.respond(response, sender, guard, log.take()));
                }
                Err(failure) => failure,
            };
            if let Some(what) = failure.error.passive_failure() {
                self.outliers.record_failure(backend, what);
            }
            let again = match failure.error {
                ProxyError::Connect(_) | ProxyError::Queue(_) => failure.request,
                ProxyError::Upstream(_) => failure
                    .request
                    .or_else(|| replay.as_ref().map(Replay::rebuild)),
                ProxyError::ResponseTimeout(_) if self.retry.on_timeout => {
                    replay.as_ref().map(Replay::rebuild)
                }
                _ => None,
            };
            let rejection = Rejection {
                error: failure.error,
                backend: Some(backend.clone()),
            };
            match again {
                Some(next) if more && self.retry.allow_retry() => {
                    tracing::info!(backend = backend.url(), attempt, error = %rejection.error, "retrying on another backend");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    request = next;
                    last = Some(rejection);
                }
                _ => {
                    tracing::warn!(backend = backend.url(), attempt, error = %rejection.error, "request failed");
                    return Err(rejection);
                }
            }
        }
        Err(last.unwrap_or(Rejection {
            error: ProxyError::NoHealthyBackend,
            backend: None,
        }))
    }

    /// Picks a backend; during slow start a recovering backend is passed over in proportion to
    /// how far its ramp still has to go.
    fn pick(&self, exclude: &Exclude) -> Option<usize> {
        let index = self.selector.select(&self.backends, exclude)?;
        if self.slow_start.is_zero() {
            return Some(index);
        }
        let warmth = self.backends[index].warmth(self.slow_start);
        if warmth >= 1.0 || fastrand::f64() < warmth {
            return Some(index);
        }
        let mut others = exclude.clone();
        others.add(index);
        self.selector
            .select(&self.backends, &others)
            .or(Some(index))
    }

    /// Whether any backend besides the excluded ones could take a retry.
    fn has_other(&self, exclude: &Exclude) -> bool {
        self.backends
            .iter()
            .enumerate()
            .any(|(i, b)| b.is_available() && !exclude.contains(i))
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
                Ok(Ok(response)) => {
                    return match framing_problem(&response) {
                        None => Ok((response, sender)),
                        // Not retried: the backend did process the request.
                        Some(problem) => Err(Failure {
                            error: ProxyError::UpstreamFraming(problem),
                            request: None,
                        }),
                    };
                }
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
                            error: classify(e.into_error()),
                            request: unsent,
                        });
                    }
                },
            }
        }
    }

    /// Wraps the backend's response for the client: hop-by-hop fields removed, body streamed
    /// through a wrapper that holds the in-flight guard and the connection until the body ends.
    fn respond(
        &self,
        response: Response<Incoming>,
        sender: UpstreamSender,
        guard: InFlightGuard,
        log: Option<Box<AccessRecord>>,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = response.into_parts();
        // RFC 9112 §6.3: with Transfer-Encoding, a Content-Length is wrong and must not be
        // passed on (hyper decoded the chunked body; the length may not match it). Both at once
        // hint at response splitting: that connection is not trusted with another request.
        let mut reusable = true;
        if parts.headers.contains_key(header::TRANSFER_ENCODING)
            && parts.headers.remove(header::CONTENT_LENGTH).is_some()
        {
            reusable = false;
        }
        remove_hop_by_hop(&mut parts.headers);
        let upstream = UpstreamParts {
            sender,
            guard,
            log,
            outliers: self.outliers.clone(),
            idle_limit: self.timeouts.upstream_idle,
            reusable,
        };
        let body = UpstreamBody::new(body, parts.status.as_u16(), upstream);
        Response::from_parts(parts, ResponseBody::Upstream(body))
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

    /// Rewrites the client's request for the upstream hop: origin-form target, HTTP/1.1,
    /// hop-by-hop fields removed, X-Forwarded-* appended, limits checked, and a small body of an
    /// idempotent request read whole so that it can be replayed. Host is kept as the client sent it.
    async fn prepare(
        &self,
        req: Request<Incoming>,
        client: &ClientInfo,
    ) -> Result<Outbound, ProxyError> {
        let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
            + req.uri().authority().map_or(0, |a| a.as_str().len());
        if target_len > self.limits.max_uri_bytes {
            return Err(ProxyError::UriTooLong(self.limits.max_uri_bytes));
        }
        let (mut parts, body) = req.into_parts();
        let length = http_body::Body::size_hint(&body).exact();
        if let (Some(max), Some(length)) = (self.limits.max_body_bytes, length)
            && length > max
        {
            return Err(BodyError::TooLarge(max).into());
        }
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(
                "CONNECT is not supported by this proxy",
            ));
        }
        if has_foreign_transfer_coding(&parts.headers) {
            // RFC 9112 §6.1: a transfer coding the server does not understand gets 501.
            return Err(ProxyError::NotImplemented(
                "transfer codings other than chunked",
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
        let keep = self.retry.enabled()
            && is_idempotent(&parts.method)
            && length.is_some_and(|n| n <= self.retry.max_body_buffer);
        let body = if http_body::Body::is_end_stream(&body) {
            RequestBody::Empty
        } else if keep {
            RequestBody::Buffered(Some(self.read_whole(body).await?))
        } else {
            let limits = BodyLimits {
                max_bytes: self.limits.max_body_bytes,
                idle: self.timeouts.client_body_idle,
            };
            RequestBody::client(body, limits)
        };
        Ok(Outbound {
            request: Request::from_parts(parts, body),
            host_missing,
        })
    }

    /// Reads a small body (its length is known and under the replay cap) within the body idle
    /// timeout.
    async fn read_whole(&self, body: Incoming) -> Result<Bytes, ProxyError> {
        let limit = self.timeouts.client_body_idle;
        match tokio::time::timeout(limit, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(_)) => Err(ProxyError::BadRequest("the request body broke off")),
            Err(_) => Err(BodyError::Idle(limit).into()),
        }
    }
}

/// What makes a backend's response impossible to forward faithfully.
fn framing_problem(response: &Response<Incoming>) -> Option<&'static str> {
    has_foreign_transfer_coding(response.headers())
        .then_some("a transfer coding other than chunked")
}

/// The client's own body failing (too large, stalled, cut) shows up as hyper's send error; it is
/// the client's doing, not the backend's, and is answered as such.
fn classify(error: hyper::Error) -> ProxyError {
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(body) = cause.downcast_ref::<BodyError>() {
            return match body {
                BodyError::TooLarge(max) => BodyError::TooLarge(*max).into(),
                BodyError::Idle(limit) => BodyError::Idle(*limit).into(),
                BodyError::Client(_) => ProxyError::BadRequest("the request body broke off"),
            };
        }
        source = cause.source();
    }
    ProxyError::Upstream(error)
}

/// Awaits the response head, allowing `limit` once the request body has been sent: the clock of
/// `timeouts.response` measures the backend's thinking time, not the client's upload speed. An
/// early answer (before the upload ends) is taken as it comes.
async fn within_response_timeout<T>(
    response: impl Future<Output = T>,
    uploaded: Option<tokio::sync::oneshot::Receiver<()>>,
    limit: Duration,
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

/// What is needed to send an idempotent request again after it was sent once: its head and its
/// body, when that was empty or kept whole.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl Replay {
    fn of(request: &Request<RequestBody>) -> Option<Replay> {
        let body = request.body().replay_bytes()?;
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            body,
        })
    }

    fn rebuild(&self) -> Request<RequestBody> {
        let body = match &self.body {
            Some(bytes) => RequestBody::Buffered(Some(bytes.clone())),
            None => RequestBody::Empty,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}
