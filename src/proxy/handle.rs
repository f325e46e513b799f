//! One request from arrival to answer, the protocol-neutral part: who the client is and its id
//! ([`edge`]), the route and what its policy says (who may enter, a redirect, the rate limit,
//! the path rewritten, header rules), then [`Snapshot::dispatch`] to a backend, and the rules on
//! the way back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::Request;

use super::edge::{self, RequestId};
use super::header_rules::{self, RequestVars};
use super::{
    AccessRecord, Arrival, BackendPool, ClientInfo, Hop, Outcome, ProxyError, Rejection, Reply,
    Scheme, Snapshot, redirect,
};
use super::{path_reading, route};
use crate::config::{HeaderRules, RouteConfig};
use crate::trace::Trace;
use crate::upstream::method_class;

impl Snapshot {
    /// Proxies one request. Never fails: every error becomes a response.
    ///
    /// A plain function around an `async move` block on an owned snapshot: an `async fn` would
    /// keep the request twice in its state, and a future that borrowed the snapshot would need
    /// a layer of its own to hold it; each is a copy made per request.
    #[allow(clippy::manual_async_fn)] // see above: the state's size
    pub fn handle(
        self: Arc<Self>,
        req: Request<crate::upstream::IncomingBody>,
        client: &ClientInfo,
    ) -> impl Future<Output = Reply> + Send + '_ {
        async move {
            let started = Instant::now();
            let method = method_class(req.method());
            let peer = client;
            let edge::Seen {
                client,
                trusted_peer,
            } = edge::seen(&self.config.forwarded, peer, req.headers());
            let client = &*client;
            let mut trace = self.tracer.begin(&req, client.addr, client.scheme.as_str());
            let request_id = RequestId::of(self.config.request_id, req.headers(), trusted_peer);
            let mut log = self.access_log.then(|| {
                let mut record =
                    AccessRecord::new(req.method(), req.uri().path(), client.addr, started);
                let subject = client.tls.as_ref().and_then(|t| t.client_subject.clone());
                record.identify(request_id.value(), subject);
                Box::new(record)
            });
            // Top-level rules apply to every answer, alb's own refusals included.
            let mut vars = self
                .has_rules(None, None)
                .then(|| RequestVars::of(&req, client, request_id.value()));
            let mut route = None;
            let mut pool_rules: Option<&HeaderRules> = None;
            let answer: Result<Reply, Rejection> = 'answer: {
                if peer.tls.as_ref().is_some_and(|tls| tls.misdirects(&req)) {
                    break 'answer Err(Rejection::refused(ProxyError::Misdirected));
                }
                // Before routing: a CONNECT names no path a route could match (405 over either
                // protocol, not a 404 for its authority).
                if req.method() == http::Method::CONNECT {
                    let error =
                        ProxyError::MethodNotAllowed("CONNECT is not supported by this proxy");
                    break 'answer Err(Rejection::refused(error));
                }
                if client.scheme == Scheme::Http
                    && let Some(tls) = self.config.tls.as_ref().filter(|tls| tls.redirect_http)
                {
                    break 'answer Ok(self.local_answer(
                        redirect::to_https(&req, tls.listen.port()),
                        log.take(),
                        method,
                        &mut trace,
                    ));
                }
                let read_path;
                (route, read_path) = match self.route_for(&req, client, trusted_peer) {
                    Ok(routed) => routed,
                    Err(error) => {
                        break 'answer Err(Rejection::refused(error));
                    }
                };
                let config = route.map(|r| self.routes.get(r));
                if vars.is_none() && self.has_rules(config, None) {
                    vars = Some(RequestVars::of(&req, client, request_id.value()));
                }
                if let Some(config) = config {
                    if !config.policy.admits(client.addr.ip()) {
                        let error = ProxyError::Forbidden("this client may not use this route");
                        break 'answer Err(Rejection::refused(error));
                    }
                    if let (Some(to), Some(vars)) = (&config.policy.redirect, &vars) {
                        break 'answer Ok(self.local_answer(
                            redirect::to_route_target(to, vars),
                            log.take(),
                            method,
                            &mut trace,
                        ));
                    }
                }
                let plan = match self.plan(route, &req, client) {
                    Ok(plan) => plan,
                    Err(error) => {
                        if let ProxyError::NoRoute = error {
                            self.stats.no_route.fetch_add(1, Ordering::Relaxed);
                        }
                        break 'answer Err(Rejection::refused(error));
                    }
                };
                if vars.is_none() && self.has_rules(config, Some(plan.pool)) {
                    vars = Some(RequestVars::of(&req, client, request_id.value()));
                }
                pool_rules = Some(&plan.pool.response_headers);
                trace.route(route.zip(config), plan.pool.name());
                let over_limit = match route {
                    Some(route) => self.over_limit(route, &req, client).await,
                    None => None,
                };
                if let Some(wait) = over_limit {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let error = ProxyError::RateLimited(wait);
                    break 'answer Err(Rejection::refused(error));
                }
                let mut req = req;
                let replacement = config.and_then(|c| {
                    let prefix = c.path_prefix.as_deref()?;
                    let to = if c.strip_prefix {
                        Some("")
                    } else {
                        c.policy.rewrite_prefix.as_deref()
                    };
                    Some((prefix, to?))
                });
                // The backend gets the path the routes matched (see `path_reading::PathReading`).
                match (replacement, read_path.as_deref()) {
                    (Some((prefix, to)), read) => route::replace_prefix(&mut req, read, prefix, to),
                    (None, Some(read)) => path_reading::set_path(&mut req, read),
                    (None, None) => {}
                }
                // A gRPC caller's deadline bounds the wait for the answer like `timeouts.request`.
                let deadline = match (
                    plan.timeouts.request,
                    crate::http2::grpc::timeout(req.headers()),
                ) {
                    (Some(limit), Some(caller)) => Some(limit.min(caller)),
                    (limit, caller) => limit.or(caller),
                };
                let hop = Hop {
                    peer,
                    trusted_peer,
                    rfc7239: self.config.forwarded.rfc7239,
                    request_id: match &request_id {
                        RequestId::Made(id) => Some(id),
                        _ => None,
                    },
                };
                let rules = vars.as_ref().map(|vars| RequestRules {
                    vars,
                    top: &self.config.request_headers,
                    pool: &plan.pool.request_headers,
                    route: config.map(|c| &c.policy.request_headers),
                });
                let prepared = self
                    .prepare(req, &hop, rules, plan.retry.max_body_buffer, &trace)
                    .await;
                let outbound = match prepared {
                    Ok(prepared) => prepared,
                    Err(error) => {
                        break 'answer Err(Rejection::refused(error));
                    }
                };
                let arrival = Arrival { started, method };
                let dispatch = self.dispatch(&plan, outbound, &mut log, arrival, &mut trace);
                match deadline {
                    Some(limit) => {
                        tokio::time::timeout(limit, dispatch)
                            .await
                            .unwrap_or_else(|_| {
                                Err(Rejection {
                                    error: ProxyError::Deadline(limit),
                                    backend: None,
                                    unsent: false,
                                })
                            })
                    }
                    None => dispatch.await,
                }
            };
            // Every refusal and failure above becomes alb's answer here, once.
            let mut reply = match answer {
                Ok(reply) => reply,
                Err(rejection) => self.local_response(
                    &rejection.error,
                    rejection.backend.as_deref(),
                    log.take(),
                    method,
                    &mut trace,
                ),
            };
            if let Some(vars) = &vars {
                header_rules::apply_to_response(&self.config.response_headers, vars, &mut reply);
                if let Some(rules) = pool_rules {
                    header_rules::apply_to_response(rules, vars, &mut reply);
                }
                if let Some(config) = route.map(|r| self.routes.get(r)) {
                    header_rules::apply_to_response(
                        &config.policy.response_headers,
                        vars,
                        &mut reply,
                    );
                }
            }
            if self.config.request_id.response
                && let Some(id) = request_id.value()
            {
                reply.headers.insert(&edge::X_REQUEST_ID, id.clone());
            }
            reply
        }
    }

    /// Whether a request on `route` to `pool` (as far as they are known) needs [`RequestVars`]:
    /// some header rule or a redirect.
    fn has_rules(&self, route: Option<&RouteConfig>, pool: Option<&BackendPool>) -> bool {
        !self.config.request_headers.is_empty()
            || !self.config.response_headers.is_empty()
            || route.is_some_and(|r| {
                r.policy.redirect.is_some()
                    || !r.policy.request_headers.is_empty()
                    || !r.policy.response_headers.is_empty()
            })
            || pool.is_some_and(|p| !p.request_headers.is_empty() || !p.response_headers.is_empty())
    }

    /// An answer alb makes without a backend (a redirect), or the error that stopped it.
    fn local_answer(
        &self,
        made: Result<Reply, ProxyError>,
        log: Option<Box<AccessRecord>>,
        method: usize,
        trace: &mut Trace,
    ) -> Reply {
        match made {
            Ok(reply) => {
                trace.answered(reply.status.as_u16());
                self.stats.record_local(method, reply.status.as_u16());
                if let Some(log) = log {
                    log.finish(reply.status.as_u16(), None, 0, Outcome::Complete);
                }
                reply
            }
            Err(error) => self.local_response(&error, None, log, method, trace),
        }
    }
}

/// The request rules that apply to one request (top level, pool, route, in that order), and what
/// their templates are filled from.
pub(super) struct RequestRules<'a> {
    pub(super) vars: &'a RequestVars,
    pub(super) top: &'a HeaderRules,
    pub(super) pool: &'a HeaderRules,
    pub(super) route: Option<&'a HeaderRules>,
}

impl RequestRules<'_> {
    pub(super) fn apply(
        &self,
        headers: &mut http::HeaderMap,
        added: &mut crate::upstream::AddedFields,
    ) {
        header_rules::apply_to_request(self.top, self.vars, headers, added);
        header_rules::apply_to_request(self.pool, self.vars, headers, added);
        if let Some(route) = self.route {
            header_rules::apply_to_request(route, self.vars, headers, added);
        }
    }
}
