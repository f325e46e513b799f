//! One request, from the client's head to the backend's last byte: pick a backend, forward the
//! request over a pooled connection, stream the response back, and turn every failure into the
//! right status code (502 broken upstream, 503 no healthy backend, 504 upstream too slow, 4xx for
//! what the client did wrong). Retries follow [`retry`]; failures feed passive health.

mod access_log;
mod affinity;
mod client;
mod edge;
mod error;
mod h1_body;
mod h2_body;
mod handle;
mod header_policy;
mod header_rules;
mod live;
mod path_reading;
mod pool;
mod prepare;
mod rate_limit;
mod redirect;
mod reply;
mod response_body;
mod retry;
mod route;
mod settlement;
mod snapshot;
mod stats;
mod sticky;
mod tunnel;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::{HeaderName, HeaderValue};

pub use access_log::{AccessRecord, Outcome};
pub use client::{ClientInfo, Scheme, TlsSession};
pub use error::ProxyError;
pub use h1_body::UpstreamBody;
pub use header_policy::{Hop, remove_hop_by_hop};
pub use live::Proxy;
pub use path_reading::AmbiguousPath;
pub use pool::BackendPool;
use prepare::Replay;
pub use prepare::outbound_for;
pub use rate_limit::{DEFAULT_MAX_KEYS, Decision, RateLimiter, RouteLimiter};
pub use reply::Reply;
pub use response_body::ResponseBody;
pub use retry::{AfterFailure, Reached, RetryBudget, RetryPolicy, is_idempotent};
pub use route::RouteTable;
pub use settlement::{ResponseBodyError, UpstreamParts};
use snapshot::Plan;
pub use snapshot::Snapshot;
pub use stats::{HeaderRefusal, ProxyStats, TlsFailure};
pub use sticky::{StickyCookies, StickyError, derive_secret, process_secret};
use tunnel::TunnelParts;
pub use tunnel::{HALF_CLOSED_IDLE, Tunnel};

use crate::balance::Exclude;
use crate::config::Timeouts;
use crate::http1::{BodyDecoder, ResponseHead};
use crate::trace::AttemptEnd::{Answered, Failed, RetriedStatus};
use crate::trace::{SpanRecord, Trace};
use crate::upstream::{
    self, Answer, Backend, InFlightGuard, Outbound, Progress, RequestBody, SessionRequest,
    Unanswered,
};

/// When a request arrived and its method class: what the dispatch keeps of it for statistics.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    started: Instant,
    method: usize,
}

static X_ALB_BACKEND: HeaderName = HeaderName::from_static("x-alb-backend");
static X_ALB_REASON: HeaderName = HeaderName::from_static("x-alb-reason");
static X_ALB_ROUTE: HeaderName = HeaderName::from_static("x-alb-route");

fn explain_headers(headers: &mut http::HeaderMap, backend: &str, reason: &str) {
    if let Ok(v) = HeaderValue::from_str(backend) {
        headers.insert(&X_ALB_BACKEND, v);
    }
    if let Ok(v) = HeaderValue::from_str(reason) {
        headers.insert(&X_ALB_REASON, v);
    }
}

/// Why a request got no backend answer, and from which backend (for the access log).
struct Rejection {
    error: ProxyError,
    backend: Option<Arc<Backend>>,
    /// The request never reached `backend` (its session reported it unsent).
    unsent: bool,
}

impl Rejection {
    /// A request alb refused before any backend was involved.
    fn refused(error: ProxyError) -> Rejection {
        Rejection {
            error,
            backend: None,
            unsent: true,
        }
    }

    /// What the client is told after several attempts: a backend that took the request and
    /// failed it (502, 504) says more than a later one that could not be reached (503).
    fn or_earlier(self, earlier: Option<Rejection>) -> Rejection {
        match earlier {
            Some(earlier) if self.unsent && !earlier.unsent => earlier,
            _ => self,
        }
    }
}

impl Snapshot {
    /// Tries backends until one answers, a failure may not be retried, or attempts run out.
    /// `retry.attempts` bounds the tries that reached a backend; a try that never left alb
    /// (connect refused, no route, queue full) is not one of them, so that two dead backends
    /// in a row do not fail a request a third could serve. Each backend is tried once at most,
    /// which bounds those too.
    async fn dispatch(
        &self,
        plan: &Plan<'_>,
        (outbound, mut body): (Box<Outbound>, RequestBody),
        log: &mut Option<Box<AccessRecord>>,
        arrival: Arrival,
        trace: &mut Trace,
    ) -> Result<Reply, Rejection> {
        let idempotent = outbound.idempotent;
        let Plan {
            pool,
            retry,
            timeouts,
            ..
        } = *plan;
        retry.note_request(arrival.started);
        let replay = (retry.enabled() && idempotent)
            .then(|| Replay::of(&body))
            .flatten();
        let mut exclude = Exclude::default();
        let mut last = None;
        // Every try (for logs) and the tries that count against `retry.attempts`.
        let (mut attempt, mut counted) = (0, 0);
        while counted < retry.attempts {
            // A sticky request goes back to its backend while that one takes requests; a retry
            // goes elsewhere like any other.
            let stuck = plan.sticky.filter(|&i| {
                attempt == 0 && pool.backends().get(i).is_some_and(|b| b.is_available())
            });
            let Some(index) = stuck.or_else(|| pool.pick(&exclude, plan.key)) else {
                break;
            };
            attempt += 1;
            exclude.add(index);
            let backend = &pool.backends()[index];
            let request = SessionRequest {
                outbound: &outbound,
                keep_body: retry.max_body_buffer,
            };
            let reason = self.explain.then(|| pool.explain_pick(index, attempt));
            let mut guard = InFlightGuard::new(backend.clone());
            let sent_at = Instant::now();
            let sent = match guard.acquire_slot(pool.queue_timeout).await {
                Err(e) => Err(Unanswered {
                    error: e.into(),
                    progress: Progress::Unsent(body),
                }),
                Ok(()) => upstream::exchange(backend, request, body, timeouts).await,
            };
            // Whether another try may follow this one once it counts.
            let more = counted + 1 < retry.attempts;
            let Unanswered { error, progress } = match sent {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    backend.record_response(arrival.method, status, sent_at.elapsed());
                    let outliers = pool.outliers();
                    if outliers.counts_status(status) {
                        outliers.record_failure(backend, "5xx answer");
                    } else {
                        outliers.record_success(backend);
                    }
                    let retry_status = retry::retries_answer(
                        status,
                        replay.is_some(),
                        more,
                        pool.has_other(&exclude),
                        retry,
                    );
                    match replay.as_ref() {
                        Some(replay) if retry_status && retry.allow_retry() => {
                            trace.attempt(backend.url(), attempt, sent_at, RetriedStatus(status));
                            tracing::info!(
                                backend = backend.url(),
                                attempt,
                                status,
                                "retrying a {status} answer on another backend"
                            );
                            self.count_retry(backend);
                            counted += 1;
                            body = replay.rebuild();
                            last = Some(Rejection {
                                error: ProxyError::UpstreamStatus(status),
                                backend: Some(backend.clone()),
                                unsent: false,
                            });
                            continue;
                        }
                        _ => {}
                    }
                    if let Some(log) = log.as_mut() {
                        log.set_attempts(attempt);
                    }
                    trace.attempt(backend.url(), attempt, sent_at, Answered(status));
                    let span = trace.take();
                    let mut reply = self.respond(plan, answer, guard, log.take(), span, arrival);
                    if plan.sticky != Some(index)
                        && let Some(cookie) = pool
                            .sticky
                            .as_ref()
                            .and_then(|sticky| sticky.set_cookie(index, plan.secure))
                    {
                        reply.headers.append(http::header::SET_COOKIE, cookie);
                    }
                    if let Some(reason) = reason {
                        explain_headers(&mut reply.headers, backend.url(), &reason);
                        Self::explain_route(plan, &mut reply.headers);
                    }
                    return Ok(reply);
                }
                Err(failed) => failed,
            };
            let error = ProxyError::from(error);
            trace.attempt(backend.url(), attempt, sent_at, Failed(&error));
            if let Some(what) = error.passive_failure() {
                pool.outliers().record_failure(backend, what);
            }
            // How far the request got decides (`retry::after_failure`), and nothing else.
            let (reached, unsent_body) = match progress {
                Progress::Unsent(body) => (Reached::Unsent, Some(body)),
                Progress::NoAnswer => (Reached::NoAnswer, None),
                Progress::NoAnswerInTime => (Reached::NoAnswerInTime, None),
                Progress::Final => (Reached::Final, None),
            };
            let free = reached == Reached::Unsent;
            let rejection = Rejection {
                error,
                backend: Some(backend.clone()),
                unsent: free,
            }
            .or_earlier(last.take());
            let next = match retry::after_failure(reached, replay.is_some(), more, retry) {
                AfterFailure::Resend => unsent_body,
                AfterFailure::Retry if retry.allow_retry() => match unsent_body {
                    Some(body) => Some(body),
                    None => replay.as_ref().map(Replay::rebuild),
                },
                AfterFailure::Retry | AfterFailure::Fail => None,
            };
            match next {
                Some(next) => {
                    tracing::info!(backend = backend.url(), attempt, error = %rejection.error, "retrying on another backend");
                    self.count_retry(backend);
                    counted += u32::from(!free);
                    body = next;
                    last = Some(rejection);
                }
                None => {
                    tracing::warn!(backend = backend.url(), attempt, error = %rejection.error, "request failed");
                    return Err(rejection);
                }
            }
        }
        Err(last.unwrap_or(Rejection {
            error: ProxyError::NoHealthyBackend,
            backend: None,
            unsent: true,
        }))
    }

    /// `x-alb-route`: the route that matched (`route[2]`, or `none` when the pool `default`
    /// took the request) and the pool it chose.
    fn explain_route(plan: &Plan<'_>, headers: &mut http::HeaderMap) {
        let route = plan
            .route
            .map_or("none".to_string(), |r| format!("route[{r}]"));
        if let Ok(value) = HeaderValue::from_str(&format!("{route} pool={}", plan.pool.name())) {
            headers.insert(&X_ALB_ROUTE, value);
        }
    }

    fn count_retry(&self, backend: &Backend) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        backend.stats().retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Wraps the backend's response for the client: its fields pass as parsed (hop-by-hop ones
    /// already left out), the body streams through a wrapper that holds the in-flight guard and
    /// the connection until it ends.
    fn respond(
        &self,
        plan: &Plan<'_>,
        answer: Answer,
        guard: InFlightGuard,
        log: Option<Box<AccessRecord>>,
        span: Option<Box<SpanRecord>>,
        arrival: Arrival,
    ) -> Reply {
        let (response, conn, upload) = match answer {
            Answer::Http1 {
                response,
                conn,
                upload,
            } => (response, conn, upload),
            Answer::Http2(answer) => {
                return self.respond_h2(plan, answer, guard, log, span, arrival);
            }
        };
        let ResponseHead {
            status,
            framing,
            reusable,
            fields,
            switched,
        } = response;
        if let Some(protocol) = switched {
            // A tunnel's span ends at its 101: the tunnel's life is the access log's to tell.
            if let Some(span) = span {
                span.finish(Some(101), "upgraded", 0);
            }
            return self.switch_protocols(plan.timeouts, conn, fields, protocol, guard, log);
        }
        let upstream = UpstreamParts {
            conn: Some(conn),
            upload,
            guard: Some(guard),
            log,
            outliers: plan.pool.outliers().clone(),
            idle_limit: plan.timeouts.upstream_idle,
            reusable,
            started: arrival.started,
            stats: self.stats.clone(),
            span,
        };
        let body = UpstreamBody::new(BodyDecoder::new(framing), status.as_u16(), upstream);
        let mut reply = Reply::new(status, ResponseBody::Upstream(Box::new(body)));
        reply.relayed = Some(Box::new(fields));
        reply
    }

    /// Wraps an HTTP/2 backend's response: its fields (connection-specific ones cannot be
    /// there: h2 refuses them) go on the head, its body streams with the guard.
    fn respond_h2(
        &self,
        plan: &Plan<'_>,
        response: http::Response<h2::RecvStream>,
        guard: InFlightGuard,
        log: Option<Box<AccessRecord>>,
        span: Option<Box<SpanRecord>>,
        arrival: Arrival,
    ) -> Reply {
        let (head, stream) = response.into_parts();
        let length = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let mut parts = UpstreamParts {
            conn: None,
            upload: None,
            guard: Some(guard),
            log,
            outliers: plan.pool.outliers().clone(),
            idle_limit: plan.timeouts.upstream_idle,
            reusable: false,
            started: arrival.started,
            stats: self.stats.clone(),
            span,
        };
        let settlement = settlement::Settlement::new(head.status.as_u16(), &mut parts);
        let body = h2_body::H2UpstreamBody::new(
            crate::http2::RecvBody::new(stream, length),
            settlement,
            plan.timeouts.upstream_idle,
        );
        let mut reply = Reply::new(head.status, ResponseBody::Http2(Box::new(body)));
        reply.headers = head.headers;
        reply
    }

    /// The `101` for the client, carrying the backend's side of the tunnel it opens.
    fn switch_protocols(
        &self,
        timeouts: &Timeouts,
        conn: upstream::UpstreamConn,
        fields: crate::http1::RawFields,
        protocol: bytes::Bytes,
        guard: InFlightGuard,
        log: Option<Box<AccessRecord>>,
    ) -> Reply {
        let tunnel = Tunnel::new(TunnelParts {
            conn,
            guard,
            log,
            stats: self.stats.clone(),
            idle_limit: timeouts.tunnel_idle,
            write_limit: timeouts.write,
            drain: timeouts.drain,
        });
        let mut reply = Reply::new(
            http::StatusCode::SWITCHING_PROTOCOLS,
            ResponseBody::Tunnel(Box::new(tunnel)),
        );
        // The `101`'s end-to-end fields (`Sec-WebSocket-Accept`, ...).
        reply.relayed = Some(Box::new(fields));
        // Checked against the request's offer by the parser: a token list, so a valid value.
        if let Ok(value) = HeaderValue::from_maybe_shared(protocol) {
            reply.headers.insert(http::header::UPGRADE, value);
        }
        reply
    }

    fn local_response(
        &self,
        error: &ProxyError,
        backend: Option<&Backend>,
        log: Option<Box<AccessRecord>>,
        method: usize,
        trace: &mut Trace,
    ) -> Reply {
        let mut reply = error.to_reply(&self.retry_after);
        trace.answered(reply.status.as_u16());
        self.stats.record_local(method, reply.status.as_u16());
        if self.explain {
            let url = backend.map_or("-", Backend::url);
            explain_headers(&mut reply.headers, url, &format!("alb answered: {error}"));
        }
        if let Some(log) = log {
            let bytes = http_body::Body::size_hint(&reply.body).exact().unwrap_or(0);
            log.finish(
                reply.status.as_u16(),
                backend.map(Backend::url),
                bytes,
                Outcome::Complete,
            );
        }
        reply
    }
}
