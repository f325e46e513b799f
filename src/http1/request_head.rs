//! Writing the request head sent to a backend: the request line and the fields the proxy chose
//! (its header policy already applied), encoded once per request and sent as is on every attempt.
//!
//! **The framing alb forwards is the framing alb writes.** This encoder is the one place that
//! frames a request for an HTTP/1.1 backend: it writes exactly one `Content-Length` or
//! `Transfer-Encoding: chunked`, from [`BodyFraming`], which describes the body alb is about to
//! send (not what the client declared), and it never copies a framing field from the fields it is
//! given. A client's `Connection` list, a repeated length or a look-alike name can therefore not
//! change how a backend splits the bytes that follow.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use http::header::{self, HeaderName, HeaderValue};

use super::put_field;

/// How the request body alb sends upstream is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// Length unknown in advance: chunked.
    Chunked,
}

/// An encoded request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Complete with its final blank line, or (when Host is missing) without it.
    bytes: Bytes,
    host_missing: bool,
}

impl RequestHead {
    /// The head as sent to a backend whose authority is `host`: a request without Host (HTTP/1.0)
    /// names the backend.
    pub fn for_backend(&self, host: &HeaderValue) -> Cow<'_, [u8]> {
        if !self.host_missing {
            return Cow::Borrowed(&self.bytes);
        }
        let mut out = BytesMut::with_capacity(self.bytes.len() + host.len() + 12);
        out.put_slice(&self.bytes);
        put_field(&mut out, header::HOST.as_str().as_bytes(), host.as_bytes());
        out.put_slice(b"\r\n");
        Cow::Owned(out.to_vec())
    }
}

/// Encodes a request head for the upstream hop: `method`, the origin-form `target` and `fields`
/// as given (but the framing and connection fields, written here), then the framing of the body
/// alb sends. `upgrade`: the protocols this request asks the backend to switch to (see
/// [`super::requested_upgrade`]), written with `Connection: upgrade`; otherwise no Connection.
pub fn encode_request_head<'a>(
    method: &Method,
    target: &str,
    fields: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: BodyFraming,
    upgrade: Option<&HeaderValue>,
) -> RequestHead {
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let mut host_missing = true;
    for (name, value) in fields {
        if name == header::HOST {
            host_missing = false;
        } else if is_written_here(name) {
            continue;
        }
        put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        BodyFraming::Chunked => put_field(&mut out, b"transfer-encoding", b"chunked"),
        BodyFraming::Length(n) => put_field(
            &mut out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        ),
        BodyFraming::None if expects_body(method) => {
            put_field(&mut out, b"content-length", b"0");
        }
        BodyFraming::None => {}
    }
    if let Some(protocols) = upgrade {
        put_field(&mut out, b"connection", b"upgrade");
        put_field(&mut out, b"upgrade", protocols.as_bytes());
    }
    if !host_missing {
        out.put_slice(b"\r\n");
    }
    RequestHead {
        bytes: out.freeze(),
        host_missing,
    }
}

/// Fields this encoder writes itself, never copied: the framing (from the body), Connection and
/// Upgrade (for its own hop).
fn is_written_here(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == header::UPGRADE
}

/// Methods whose requests normally have a body: without one, they say so with a zero length.
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(request: http::Request<()>, framing: BodyFraming) -> String {
        let (parts, ()) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let head = encode_request_head(&parts.method, target, parts.headers.iter(), framing, None);
        let bytes = head.for_backend(&HeaderValue::from_static("backend:81"));
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn writes_the_request_line_and_the_fields_given_in_order() {
        let request = http::Request::post("/up?x=1")
            .header("host", "example.com")
            .header("x-forwarded-for", "1.1.1.1")
            .header("accept", "*/*")
            .header("content-length", "3")
            .body(())
            .unwrap();
        assert_eq!(
            encode(request, BodyFraming::Length(3)),
            "POST /up?x=1 HTTP/1.1\r\nhost: example.com\r\nx-forwarded-for: 1.1.1.1\r\n\
             accept: */*\r\ncontent-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn offers_an_upgrade_with_its_own_connection_field() {
        let (parts, ()) = http::Request::get("/chat")
            .header("host", "h")
            .header("connection", "keep-alive")
            .body(())
            .unwrap()
            .into_parts();
        let upgrade = HeaderValue::from_static("websocket");
        let head = encode_request_head(
            &parts.method,
            "/chat",
            parts.headers.iter(),
            BodyFraming::None,
            Some(&upgrade),
        );
        let text = String::from_utf8(head.for_backend(&upgrade).to_vec()).unwrap();
        assert_eq!(
            text,
            "GET /chat HTTP/1.1\r\nhost: h\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn frames_the_body_it_will_send() {
        let chunked = http::Request::put("/")
            .header("host", "h")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let text = encode(chunked, BodyFraming::Chunked);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
        let empty_post = http::Request::post("/")
            .header("host", "h")
            .body(())
            .unwrap();
        assert!(encode(empty_post, BodyFraming::None).contains("content-length: 0\r\n"));
    }

    #[test]
    fn writes_one_framing_field_of_its_own_whatever_the_map_holds() {
        let request = http::Request::post("/")
            .header("host", "h")
            .header("content-length", "99")
            .header("content-length", "99")
            .header("transfer-encoding", "chunked")
            .header("connection", "content-length")
            .body(())
            .unwrap();
        let text = encode(request, BodyFraming::Length(3));
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(text.contains("content-length: 3\r\n"), "{text}");
        assert!(
            !text.contains("transfer-encoding") && !text.contains("connection"),
            "{text}"
        );
    }

    #[test]
    fn a_request_without_host_names_the_backend() {
        let mut request = http::Request::get("/").body(()).unwrap();
        *request.version_mut() = http::Version::HTTP_10;
        let text = encode(request, BodyFraming::None);
        assert!(text.starts_with("GET / HTTP/1.1\r\n"), "{text}");
        assert!(text.ends_with("host: backend:81\r\n\r\n"), "{text}");
    }
}
