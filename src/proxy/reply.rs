//! The response on its way to the client, whoever made it and whichever protocol carries it:
//! status, the fields of its head, and its body. Each client-side writer turns it into its own
//! wire form; no writer looks into the body for fields.
//!
//! **Every answer alb makes itself is made here and only here** ([`Reply::local`]): errors, no
//! route, 408, 429, 503, a request head refused on either protocol. The same status, body and
//! content type reach an HTTP/1.1 and an HTTP/2 client; a gRPC client gets the same status in
//! gRPC's terms ([`Reply::grpc_trailers_only`]).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};
use http_body_util::Full;

use super::ResponseBody;
use crate::http1::{RawFields, date_value};
use crate::http2::grpc;

/// A response for the client.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// An HTTP/1.1 backend's end-to-end fields, kept as spans of its head (passing them on is a
    /// copy, with no map built), written first. Boxed: a reply is moved from step to step on its
    /// way out, and each move of the spans inline costs more than their allocation.
    pub relayed: Option<Box<RawFields>>,
    /// Fields in a map: an HTTP/2 backend's, those of an answer alb makes itself, and what alb
    /// adds to a backend's (Set-Cookie, `x-alb-*`).
    pub headers: HeaderMap,
    pub body: ResponseBody,
}

impl Reply {
    pub fn new(status: StatusCode, body: ResponseBody) -> Reply {
        Reply {
            status,
            relayed: None,
            headers: HeaderMap::new(),
            body,
        }
    }

    /// alb's own answer: `status` and a line saying what happened, as plain text that is never
    /// cached. `message` is for the client: no addresses of backends, no internal detail.
    pub fn local(status: StatusCode, message: &str) -> Reply {
        let text = format!(
            "{} {}: {message}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut reply = Reply::new(status, ResponseBody::Local(Full::new(Bytes::from(text))));
        reply.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        reply
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // RFC 9110 §15.5.6: a 405 lists the methods there are (alb refuses only CONNECT).
        if status == StatusCode::METHOD_NOT_ALLOWED {
            reply.headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"),
            );
        }
        reply
    }

    /// The text of a local answer, taken out of it (its body is empty after); `None` for any
    /// other answer. A local body is whole from the start: nothing is waited for.
    pub fn take_local_text(&mut self) -> Option<Bytes> {
        use http_body::Body;
        let ResponseBody::Local(body) = &mut self.body else {
            return None;
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(body).poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
            _ => None,
        }
    }

    /// Whether alb made this answer itself (and a gRPC client should get it as a gRPC status).
    pub fn is_local(&self) -> bool {
        matches!(self.body, ResponseBody::Local(_))
    }

    /// A local answer for a gRPC client: trailers-only (HTTP 200 with `grpc-status` in the head,
    /// as the gRPC protocol has it), the status mapped by [`grpc::code_of`]. alb's own
    /// fields (explain, Retry-After) go along; the error page's are not this answer's: its
    /// content type would make gRPC clients ignore the status.
    pub fn grpc_trailers_only(&self) -> http::Response<()> {
        let reason = self.status.canonical_reason().unwrap_or("failed");
        let mut head = grpc::trailers_only(grpc::code_of(self.status), &format!("alb: {reason}"));
        let fields = head.headers_mut();
        fields.insert(header::DATE, date_value());
        for (name, value) in &self.headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                fields.append(name, value.clone());
            }
        }
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    #[test]
    fn a_local_answer_says_its_status_in_plain_text_never_cached() {
        let mut reply = Reply::local(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body.size_hint().exact(), Some(44));
        let text = reply.take_local_text().unwrap();
        assert_eq!(&text[..], b"503 Service Unavailable: no healthy backend\n");
        assert_eq!(
            reply.headers[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
        assert!(reply.is_local());
    }

    #[test]
    fn a_grpc_client_gets_the_status_as_grpc_status_without_the_error_page_fields() {
        let mut reply = Reply::local(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend");
        reply
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        let head = reply.grpc_trailers_only();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["grpc-status"], "14"); // UNAVAILABLE
        assert_eq!(head.headers()[header::RETRY_AFTER], "1");
        assert_eq!(head.headers()[header::CONTENT_TYPE], "application/grpc");
    }
}
