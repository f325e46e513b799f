//! Everything that can go wrong while proxying one request, and the one place that decides which
//! status code the client gets for it.

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use super::reply::Reply;
use crate::http1::UpstreamError;
use crate::upstream::{BodyError, ConnectError, QueueError, SessionError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no healthy backend")]
    NoHealthyBackend,
    #[error("backend unreachable: {0}")]
    Connect(#[from] ConnectError),
    #[error("backend sent no response headers within {0:?}")]
    ResponseTimeout(Duration),
    #[error("backend failed before its response headers: {0}")]
    Upstream(#[source] UpstreamError),
    #[error("backend's HTTP/2 stream failed before its response headers: {0}")]
    UpstreamStream(#[source] h2::Error),
    #[error("backend answered {0}")]
    UpstreamStatus(u16),
    #[error("{0}")]
    Queue(#[from] QueueError),
    #[error("no response headers within the request deadline of {0:?}")]
    Deadline(Duration),
    #[error("{0}")]
    Body(#[from] BodyError),
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    #[error("backend response framing: {0}")]
    UpstreamFraming(&'static str),
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("no route matches the request and there is no pool \"default\"")]
    NoRoute,
    /// A path common backends resolve in more than one way (`path_reading::PathReading`).
    #[error("the path reads differently to different servers")]
    AmbiguousPath,
    /// The route does not admit this client (its address, or no verified certificate).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A request on a TLS connection for a host the connection's certificate does not name
    /// (SNI said one site, Host another): 421, so that the client retries on a connection of
    /// its own for that host (RFC 9110 §15.5.20).
    #[error("the connection's certificate does not cover the requested host")]
    Misdirected,
    /// Over its route's `rate_limit`; the next request is allowed in this long.
    #[error("over the rate limit, next allowed in {0:?}")]
    RateLimited(Duration),
}

impl From<SessionError> for ProxyError {
    fn from(error: SessionError) -> ProxyError {
        match error {
            SessionError::Connect(e) => ProxyError::Connect(e),
            SessionError::Queue(e) => ProxyError::Queue(e),
            SessionError::Broken(e) => ProxyError::Upstream(e),
            SessionError::Stream(e) => ProxyError::UpstreamStream(e),
            SessionError::Timeout(limit) => ProxyError::ResponseTimeout(limit),
            SessionError::Framing(problem) => ProxyError::UpstreamFraming(problem),
            SessionError::Client(e) => ProxyError::Body(e),
        }
    }
}

impl ProxyError {
    /// The one place a failure becomes a status code.
    pub fn status(&self) -> StatusCode {
        match self {
            // The backend answered, but not with the TLS alb was told to expect (its
            // certificate, its protocol): a gateway fault, not a passing unavailability.
            ProxyError::Connect(ConnectError::Handshake(_)) => StatusCode::BAD_GATEWAY,
            // A backend that could not be reached never saw the request: the service is
            // unavailable (HAProxy and Envoy say 503 too), and the client may simply try again.
            ProxyError::NoHealthyBackend | ProxyError::Queue(_) | ProxyError::Connect(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream(_)
            | ProxyError::UpstreamStream(_)
            | ProxyError::UpstreamStatus(_)
            | ProxyError::UpstreamFraming(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout(_) | ProxyError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Body(BodyError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Body(BodyError::Idle(_)) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Body(BodyError::Client(_)) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::AmbiguousPath => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// What this error tells passive health about the backend, if anything: only the backend's
    /// own failures count, never the client's.
    pub fn passive_failure(&self) -> Option<&'static str> {
        match self {
            ProxyError::Connect(ConnectError::Handshake(_)) => Some("TLS handshake failed"),
            ProxyError::Connect(_) => Some("connect failed"),
            ProxyError::Upstream(_) => Some("connection broke before the response"),
            ProxyError::UpstreamStream(_) => Some("HTTP/2 stream failed before the response"),
            ProxyError::ResponseTimeout(_) => Some("response timeout"),
            _ => None,
        }
    }

    /// The plain-text body: what happened, in a line, without internal details a client should
    /// not see (addresses of backends stay in the logs).
    fn message(&self) -> &'static str {
        match self {
            ProxyError::NoHealthyBackend => "no healthy backend is available, try again later",
            ProxyError::Connect(ConnectError::Handshake(_)) => {
                "the backend's TLS could not be verified"
            }
            ProxyError::Connect(_) => "no backend could be reached, try again later",
            ProxyError::Upstream(_)
            | ProxyError::UpstreamStream(_)
            | ProxyError::UpstreamStatus(_) => "the backend failed to answer",
            ProxyError::ResponseTimeout(_) => "the backend did not answer in time",
            ProxyError::Queue(QueueError::Full) => {
                "the backend is at its connection limit and its queue is full"
            }
            ProxyError::Queue(QueueError::Timeout(_)) => {
                "waited too long for a free connection to the backend"
            }
            ProxyError::Deadline(_) => "the request took longer than its deadline",
            ProxyError::Body(BodyError::TooLarge(_)) => "the request body is too large",
            ProxyError::Body(BodyError::Idle(_)) => "the request body stalled",
            ProxyError::Body(BodyError::Client(_)) => "the request body broke off",
            ProxyError::UriTooLong(_) => "the request target is too long",
            ProxyError::UpstreamFraming(_) => "the backend sent a response alb cannot forward",
            ProxyError::BadRequest(m) | ProxyError::MethodNotAllowed(m) => m,
            ProxyError::NoRoute => "no route for this request",
            ProxyError::AmbiguousPath => {
                "the path holds an encoded /, a \\ or a ; that servers resolve differently"
            }
            ProxyError::Forbidden(m) => m,
            ProxyError::Misdirected => {
                "this connection's certificate is not for the requested host: connect to it by its own name"
            }
            ProxyError::RateLimited(_) => "too many requests, slow down",
        }
    }

    /// The response alb sends for this error. `retry_after` goes on 503s.
    pub fn to_reply(&self, retry_after: &HeaderValue) -> Reply {
        let status = self.status();
        let mut reply = Reply::local(status, self.message());
        let headers = &mut reply.headers;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, retry_after.clone());
        }
        // After a client error the rest of the connection cannot be trusted (an unread body, a
        // stalled upload): answer and close. A request that was merely routed nowhere or
        // limited or refused by its route's policy was read like any other (an unread body still
        // closes, see `downstream::h1`).
        if let ProxyError::RateLimited(wait) = self {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        } else if status.is_client_error()
            && !matches!(self, ProxyError::NoRoute | ProxyError::Forbidden(_))
        {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        reply
    }
}
