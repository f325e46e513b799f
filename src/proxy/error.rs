//! Everything that can go wrong while proxying one request, and the one place that decides which
//! status code the client gets for it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::body::ResponseBody;
use crate::upstream::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no healthy backend")]
    NoHealthyBackend,
    #[error("backend unreachable: {0}")]
    Connect(#[from] ConnectError),
    #[error("backend sent no response headers within {0:?}")]
    ResponseTimeout(Duration),
    #[error("backend failed before its response headers: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHealthyBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The plain-text body: what happened, in a line, without internal details a client should
    /// not see (addresses of backends stay in the logs).
    fn message(&self) -> &'static str {
        match self {
            ProxyError::NoHealthyBackend => "no healthy backend is available, try again later",
            ProxyError::Connect(_) => "the backend could not be reached",
            ProxyError::Upstream(_) => "the backend failed to answer",
            ProxyError::ResponseTimeout(_) => "the backend did not answer in time",
            ProxyError::BadRequest(m) | ProxyError::MethodNotAllowed(m) => m,
        }
    }

    /// The response alb sends for this error. `retry_after` goes on 503s.
    pub fn to_response(&self, retry_after: &HeaderValue) -> Response<ResponseBody> {
        let status = self.status();
        let text = format!(
            "{} {}: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.message()
        );
        let mut response = Response::new(ResponseBody::Local(Full::new(Bytes::from(text))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, retry_after.clone());
        }
        if let ProxyError::MethodNotAllowed(_) = self {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"),
            );
        }
        response
    }
}
