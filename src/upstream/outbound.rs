//! The request as alb sends it to a backend, in no protocol's terms: method, target, the fields
//! left and added by the proxy's header policy, and how the body is delimited. The proxy builds
//! one per request; every attempt's session sends it, each in its own protocol (an HTTP/1.1 head
//! encoded once and kept for every attempt, an HTTP/2 request built from the fields).
//!
//! The body travels beside it: it moves from attempt to attempt (see [`super::Progress`]), the
//! head does not change.

use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use smallvec::SmallVec;

use crate::http1::{BodyFraming, RequestHead, encode_request_head};

/// Fields the proxy adds for this hop, written after the client's own: names of alb's own
/// (static, nothing to clone or drop), room inline for the X-Forwarded-* three, X-Request-Id,
/// `Forwarded` and `traceparent`.
pub type AddedFields = SmallVec<[(&'static HeaderName, HeaderValue); 6]>;

/// One request, ready for any backend.
#[derive(Debug)]
pub struct Outbound {
    pub method: Method,
    /// Its target: only the path and query are sent (origin form).
    pub uri: Uri,
    /// The client's end-to-end fields as the header policy left them.
    pub fields: HeaderMap,
    /// What the header policy adds (X-Forwarded-*), after `fields`.
    pub added: AddedFields,
    /// How the body alb sends is delimited (not what the client declared).
    pub framing: BodyFraming,
    /// The protocols offered to switch to (the request's filtered `Upgrade`), if any.
    pub upgrade: Option<HeaderValue>,
    /// Whether it may be sent twice.
    pub idempotent: bool,
    /// The HTTP/1.1 head, encoded by the first attempt on an HTTP/1.1 backend, reused by the rest.
    http1: OnceLock<RequestHead>,
}

impl Outbound {
    pub fn new(
        method: Method,
        uri: Uri,
        fields: HeaderMap,
        added: AddedFields,
        framing: BodyFraming,
        upgrade: Option<HeaderValue>,
        idempotent: bool,
    ) -> Outbound {
        Outbound {
            method,
            uri,
            fields,
            added,
            framing,
            upgrade,
            idempotent,
            http1: OnceLock::new(),
        }
    }

    /// A HEAD request: its answer has no body whatever it declares.
    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }

    /// The origin-form target.
    pub fn target(&self) -> &str {
        match self.uri.path_and_query().map(|p| p.as_str()) {
            Some(target) if !target.is_empty() => target,
            _ => "/",
        }
    }

    /// Every field sent, in order: the client's (as the policy left them), then alb's.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields
            .iter()
            .chain(self.added.iter().map(|(n, v)| (*n, v)))
    }

    /// The HTTP/1.1 head, encoded once whatever the number of attempts.
    pub fn http1_head(&self) -> &RequestHead {
        self.http1.get_or_init(|| {
            encode_request_head(
                &self.method,
                self.target(),
                self.fields(),
                self.framing,
                self.upgrade.as_ref(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn outbound(framing: BodyFraming) -> Outbound {
        let mut fields = HeaderMap::new();
        fields.insert(header::HOST, HeaderValue::from_static("site.example"));
        fields.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        // The framing the client declared is not what alb sends.
        fields.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
        let mut added = AddedFields::new();
        added.push((&X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.7")));
        let uri = Uri::from_static("/a?b=c");
        Outbound::new(Method::PUT, uri, fields, added, framing, None, true)
    }

    #[test]
    fn the_http1_head_has_the_fields_then_alb_s_then_the_framing_alb_sends() {
        let outbound = outbound(BodyFraming::Chunked);
        let head = outbound
            .http1_head()
            .for_backend(&HeaderValue::from_static("b:1"));
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "PUT /a?b=c HTTP/1.1\r\nhost: site.example\r\naccept: */*\r\n\
             x-forwarded-for: 192.0.2.7\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn the_http1_head_is_encoded_once_for_every_attempt() {
        let outbound = outbound(BodyFraming::Length(3));
        let first = outbound.http1_head() as *const RequestHead;
        let second = outbound.http1_head() as *const RequestHead;
        assert_eq!(first, second);
    }

    #[test]
    fn an_empty_target_is_sent_as_the_root() {
        let mut outbound = outbound(BodyFraming::None);
        outbound.uri = Uri::from_static("http://site.example");
        assert_eq!(outbound.target(), "/");
    }
}
