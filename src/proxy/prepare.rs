//! Turning the client's request into the one sent upstream: limits checked, headers rewritten
//! for the next hop, and a small body read whole before any backend is involved (so that a slow
//! client cannot hold a backend's slot with it, and an idempotent request can be replayed).

use crate::upstream::IncomingBody;
use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;

use super::ClientInfo;
use super::handle::RequestRules;
use super::header_policy::{self, Hop};
use super::retry::is_idempotent;
use super::{ProxyError, Snapshot};
use crate::http1::{BodyFraming, requested_upgrade};
use crate::upstream::{BodyError, BodyLimits, Outbound, RequestBody};

impl Snapshot {
    /// Makes the client's request into the one sent upstream, in no protocol's terms: limits
    /// checked, the header policy applied ([`header_policy::forward`]), the upgrade alb passes
    /// on, and a small body read whole. Built once, whatever the number of attempts.
    pub(super) async fn prepare(
        &self,
        req: Request<IncomingBody>,
        hop: &Hop<'_>,
        rules: Option<RequestRules<'_>>,
        max_body_buffer: u64,
        trace: &crate::trace::Trace,
    ) -> Result<(Box<Outbound>, RequestBody), ProxyError> {
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
        // The head parser refused transfer codings other than chunked (501), took the framing
        // out of the fields and put an absolute-form target's authority into Host.
        let has_body = !http_body::Body::is_end_stream(&body);
        let upgrade = requested_upgrade(&parts.headers, parts.version, has_body);
        let mut added = header_policy::forward(&mut parts.headers, hop);
        trace.propagate(&mut parts.headers, &mut added);
        if let Some(rules) = rules {
            rules.apply(&mut parts.headers, &mut added);
        }
        // A body of known length up to the route's `retry.max_body_buffer` is read whole before a backend is
        // picked, whatever the method: a client trickling it holds alb's memory (bounded) and
        // not a backend's connection slot; an idempotent request can also be replayed with it.
        let keep = length.is_some_and(|n| n <= max_body_buffer);
        let mut body = body;
        let arrived = match (&body, length) {
            // HTTP/2 clients seldom declare a length (gRPC ones never do), but a small body
            // mostly arrives with its head: kept whole when it has, it can be replayed like a
            // declared one (a refused stream retried, whatever the method).
            (IncomingBody::Http2(_), None) => take_arrived(&mut body, max_body_buffer)?,
            _ => Arrived::Nothing,
        };
        let (body, framing) = if http_body::Body::is_end_stream(&body) && arrived.is_nothing() {
            (RequestBody::Empty, BodyFraming::None)
        } else if let Arrived::Whole(bytes) = arrived {
            let framing = BodyFraming::Length(bytes.len() as u64);
            (RequestBody::Buffered(bytes), framing)
        } else if keep {
            let bytes = self.read_whole(body).await?;
            let framing = BodyFraming::Length(bytes.len() as u64);
            (RequestBody::Buffered(bytes), framing)
        } else if let Arrived::Part(start) = arrived {
            let limits = BodyLimits {
                max_bytes: self.limits.max_body_bytes,
                idle: self.timeouts.client_body_idle,
            };
            (
                RequestBody::client_after(start, body, limits),
                BodyFraming::Chunked,
            )
        } else {
            let limits = BodyLimits {
                max_bytes: self.limits.max_body_bytes,
                idle: self.timeouts.client_body_idle,
            };
            let framing = length.map_or(BodyFraming::Chunked, BodyFraming::Length);
            (RequestBody::client(body, limits), framing)
        };
        Ok((outbound(parts, added, framing, upgrade), body))
    }

    /// Reads a small body (its length is known and at most `retry.max_body_buffer`) within the
    /// body idle timeout.
    async fn read_whole(&self, body: IncomingBody) -> Result<Bytes, ProxyError> {
        let limit = self.timeouts.client_body_idle;
        match tokio::time::timeout(limit, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(_)) => Err(ProxyError::BadRequest("the request body broke off")),
            Err(_) => Err(BodyError::Idle(limit).into()),
        }
    }
}

/// The request sent upstream for `parts`, once the header policy gave the fields alb `added`.
fn outbound(
    parts: http::request::Parts,
    added: crate::upstream::AddedFields,
    framing: BodyFraming,
    upgrade: Option<http::HeaderValue>,
) -> Box<Outbound> {
    // Once sent, an upgrade may have switched the backend's connection to a protocol alb knows
    // nothing of: never sent twice.
    let idempotent = is_idempotent(&parts.method) && upgrade.is_none();
    // Boxed: the request's futures move it from step to step, and each move of a value this size
    // costs more than the allocation.
    Box::new(Outbound::new(
        parts.method,
        parts.uri,
        parts.headers,
        added,
        framing,
        upgrade,
        idempotent,
    ))
}

/// The request alb sends upstream for a client's request head (`parts`, as the client-side
/// parser made it) from `client`, its body delimited by `framing`: the same header policy and
/// the same [`Outbound`] as a proxied request, without a body. For tests and tools that check
/// what a backend receives.
pub fn outbound_for(
    mut parts: http::request::Parts,
    client: &ClientInfo,
    framing: BodyFraming,
) -> Box<Outbound> {
    let added = header_policy::forward(&mut parts.headers, &Hop::untrusted(client));
    outbound(parts, added, framing, None)
}

/// What of a body of unknown length had arrived when the request was prepared.
enum Arrived {
    Nothing,
    /// All of it (its end seen), within `retry.max_body_buffer`.
    Whole(Bytes),
    /// Its start; the rest is still to come, or it is larger than alb keeps.
    Part(Bytes),
}

impl Arrived {
    fn is_nothing(&self) -> bool {
        matches!(self, Arrived::Nothing)
    }
}

/// Takes what `body` holds already, without waiting: up to `max` bytes, and whether that was
/// all of it. Trailers of a request end it (alb forwards none).
fn take_arrived(body: &mut IncomingBody, max: u64) -> Result<Arrived, ProxyError> {
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = bytes::BytesMut::new();
    loop {
        match std::pin::Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Ok(Arrived::Whole(taken.freeze())),
            Poll::Ready(Some(Err(_))) => {
                return Err(ProxyError::BadRequest("the request body broke off"));
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    taken.extend_from_slice(&data);
                    if taken.len() as u64 > max {
                        return Ok(Arrived::Part(taken.freeze()));
                    }
                }
                Err(_) => return Ok(Arrived::Whole(taken.freeze())),
            },
            Poll::Pending if taken.is_empty() => return Ok(Arrived::Nothing),
            Poll::Pending => return Ok(Arrived::Part(taken.freeze())),
        }
    }
}

/// What is needed to send an idempotent request again after it was sent once: its body, when
/// that was empty or kept whole (the head is the same [`Outbound`] for every attempt).
pub(super) struct Replay {
    body: Option<Bytes>,
}

impl Replay {
    pub(super) fn of(body: &RequestBody) -> Option<Replay> {
        match body {
            RequestBody::Empty => Some(Replay { body: None }),
            RequestBody::Buffered(bytes) => Some(Replay {
                body: Some(bytes.clone()),
            }),
            RequestBody::Client(_) => None,
        }
    }

    pub(super) fn rebuild(&self) -> RequestBody {
        match &self.body {
            Some(bytes) => RequestBody::Buffered(bytes.clone()),
            None => RequestBody::Empty,
        }
    }
}
