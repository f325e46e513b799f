//! Writing the request head sent to a backend: the client's request line and fields as parsed
//! (hop-by-hop fields already removed), with this hop appended to X-Forwarded-For, -Proto and
//! -Host, encoded once per request and sent as is on every attempt.
//!
//! **The framing alb forwards is the framing alb writes.** This encoder is the one place that
//! frames a request for a backend: it writes exactly one `Content-Length` or
//! `Transfer-Encoding: chunked`, from [`BodyFraming`], which describes the body alb is about to
//! send (not what the client declared), and it never copies a framing field from the map. A
//! client's `Connection` list, a repeated length or a look-alike name can therefore not change how
//! a backend splits the bytes that follow.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, request};

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

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The scheme a client used to reach alb: what X-Forwarded-Proto tells the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    /// The client came over the TLS listener.
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
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

/// Encodes the head of `parts` for the upstream hop. `client_ip` joins X-Forwarded-For; `scheme`
/// is how the client reached alb (X-Forwarded-Proto).
/// `upgrade`: the protocols this request asks the backend to switch to (see
/// [`super::requested_upgrade`]), written with `Connection: upgrade`; otherwise no Connection.
///
/// X-Forwarded-For is a list of hops, and alb appends its client to what came. X-Forwarded-Proto
/// and X-Forwarded-Host say what *this* hop received, and frameworks read their first element:
/// alb writes them alone, so that no client chooses the scheme or the host a backend acts on.
pub fn encode_request_head(
    parts: &request::Parts,
    client_ip: &[u8],
    scheme: Scheme,
    framing: BodyFraming,
    upgrade: Option<&HeaderValue>,
) -> RequestHead {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for = false;
    // Found on the way through the fields rather than looked up (a hash and a probe each).
    let mut host = None;
    for (name, value) in &parts.headers {
        if name == header::HOST && host.is_none() {
            host = Some(value);
        }
        if name == X_FORWARDED_FOR {
            forwarded_for = true;
            continue;
        }
        if is_written_here(name) {
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
        BodyFraming::None if expects_body(&parts.method) => {
            put_field(&mut out, b"content-length", b"0");
        }
        BodyFraming::None => {}
    }
    if let Some(protocols) = upgrade {
        put_field(&mut out, b"connection", b"upgrade");
        put_field(&mut out, b"upgrade", protocols.as_bytes());
    }
    put_forwarded_for(&mut out, &parts.headers, forwarded_for, client_ip);
    put_field(
        &mut out,
        X_FORWARDED_PROTO.as_str().as_bytes(),
        scheme.as_str().as_bytes(),
    );
    if let Some(host) = host {
        put_field(
            &mut out,
            X_FORWARDED_HOST.as_str().as_bytes(),
            host.as_bytes(),
        );
    }
    let host_missing = host.is_none();
    if !host_missing {
        out.put_slice(b"\r\n");
    }
    RequestHead {
        bytes: out.freeze(),
        host_missing,
    }
}

/// Fields this encoder writes itself, never copied from the client: the framing (from the body),
/// Connection and Upgrade (for its own hop) and this hop's X-Forwarded-Proto and -Host.
fn is_written_here(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == header::UPGRADE
        || name == X_FORWARDED_PROTO
        || name == X_FORWARDED_HOST
}

/// Methods whose requests normally have a body: without one, they say so with a zero length.
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Writes X-Forwarded-For as one line: the client's elements (its repeated lines folded, in
/// order), then `last`. `any` says whether the client sent the field at all.
fn put_forwarded_for(out: &mut BytesMut, headers: &HeaderMap, any: bool, last: &[u8]) {
    out.put_slice(X_FORWARDED_FOR.as_str().as_bytes());
    out.put_slice(b": ");
    if any {
        for value in headers.get_all(&X_FORWARDED_FOR) {
            out.put_slice(value.as_bytes());
            out.put_slice(b", ");
        }
    }
    out.put_slice(last);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(request: http::Request<()>, framing: BodyFraming) -> String {
        let (parts, ()) = request.into_parts();
        let head = encode_request_head(&parts, b"10.0.0.1", Scheme::Http, framing, None);
        let bytes = head.for_backend(&HeaderValue::from_static("backend:81"));
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn appends_this_hop_to_forwarded_for_and_writes_proto_and_host_alone() {
        let request = http::Request::post("/up?x=1")
            .header("host", "example.com")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-for", "2.2.2.2")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "https")
            .header("content-length", "3")
            .body(())
            .unwrap();
        assert_eq!(
            encode(request, BodyFraming::Length(3)),
            "POST /up?x=1 HTTP/1.1\r\nhost: example.com\r\ncontent-length: 3\r\n\
             x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.com\r\n\r\n"
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
        assert!(!text.contains("x-forwarded-host"), "{text}");
    }
}
