//! Writing a response head for a client, and choosing how its body is framed.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap};
use http::{StatusCode, Version};
use http_body::SizeHint;

use super::{RawFields, put_field};

/// How a response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyWrite {
    /// Nothing after the head (HEAD request, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Up to the end of the connection (an HTTP/1.0 client and a length not known upfront).
    Close,
}

/// What the head promised.
#[derive(Debug, Clone, Copy)]
pub struct ResponsePlan {
    pub body: BodyWrite,
    pub keep_alive: bool,
}

/// Encodes a response head into `out` for a client that spoke `version`: the backend's `passed`
/// fields first (when the response is an HTTP/1.1 backend's), then `headers`. `keep_alive` is
/// whether the connection may stay open as far as the request is concerned; the response may
/// still close it.
#[allow(clippy::too_many_arguments)] // each is one fact about the head; a struct would only rename them
pub fn encode_response_head(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    passed: Option<&RawFields>,
    size: SizeHint,
    head_request: bool,
    version: Version,
    keep_alive: bool,
) -> ResponsePlan {
    let mut keep_alive = keep_alive && !asks_to_close(headers);
    let declared = match passed {
        Some(fields) => fields.content_length(),
        None => headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
    };
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = if no_body {
        BodyWrite::None
    } else if let Some(n) = declared.or(size.exact()) {
        BodyWrite::Length(n)
    } else if version == Version::HTTP_11 {
        BodyWrite::Chunked
    } else {
        keep_alive = false;
        BodyWrite::Close
    };
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    if let Some(fields) = passed {
        fields.write_to(out);
    }
    for (name, value) in headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            continue; // written below from what is actually sent
        }
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // A HEAD or 304 answer keeps the length the body would have had; 204 and 1xx have none.
    let length = match body {
        BodyWrite::Length(n) => Some(n),
        BodyWrite::None if status != StatusCode::NO_CONTENT && !status.is_informational() => {
            declared
        }
        _ => None,
    };
    if let Some(n) = length {
        put_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    }
    if body == BodyWrite::Chunked {
        put_field(out, b"transfer-encoding", b"chunked");
    }
    if !headers.contains_key(header::DATE) && !passed.is_some_and(RawFields::has_date) {
        DATE.with_borrow_mut(|date| put_field(out, b"date", date.now()));
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // The connection leaves HTTP: no other request follows on it, and `Upgrade` (among
        // the fields above) says what it speaks now.
        keep_alive = false;
        put_field(out, b"connection", b"upgrade");
    } else if !keep_alive {
        put_field(out, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        put_field(out, b"connection", b"keep-alive");
    }
    out.put_slice(b"\r\n");
    ResponsePlan { body, keep_alive }
}

fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// The Date field's value now, for answers written by another codec.
pub fn date_value() -> http::HeaderValue {
    DATE.with_borrow_mut(|date| http::HeaderValue::from_bytes(date.now()))
        .unwrap_or_else(|_| http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// The Date field, formatted once a second per thread.
struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = const {
        RefCell::new(CachedDate { second: 0, text: String::new() })
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        response: http::Response<()>,
        size: SizeHint,
        head: bool,
        v: Version,
    ) -> (String, ResponsePlan) {
        let (parts, ()) = response.into_parts();
        let mut out = BytesMut::new();
        let plan = encode_response_head(
            &mut out,
            parts.status,
            &parts.headers,
            None,
            size,
            head,
            v,
            true,
        );
        (String::from_utf8(out.to_vec()).unwrap(), plan)
    }

    #[test]
    fn frames_by_what_is_known() {
        let r = http::Response::new(());
        let (text, plan) = encode(r, SizeHint::with_exact(5), false, Version::HTTP_11);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("content-length: 5\r\n") && text.contains("date: "),
            "{text}"
        );
        assert_eq!(plan.body, BodyWrite::Length(5));
        let (text, plan) = encode(
            http::Response::new(()),
            SizeHint::new(),
            false,
            Version::HTTP_11,
        );
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(plan.keep_alive);
        let (text, plan) = encode(
            http::Response::new(()),
            SizeHint::new(),
            false,
            Version::HTTP_10,
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!((plan.body, plan.keep_alive), (BodyWrite::Close, false));
        let head = http::Response::builder()
            .header("content-length", "7")
            .body(())
            .unwrap();
        let (text, plan) = encode(head, SizeHint::with_exact(0), true, Version::HTTP_11);
        assert!(text.contains("content-length: 7\r\n"), "{text}");
        assert_eq!(plan.body, BodyWrite::None);
        let closing = http::Response::builder()
            .header("connection", "close")
            .body(())
            .unwrap();
        let (text, plan) = encode(closing, SizeHint::with_exact(0), false, Version::HTTP_11);
        assert!(
            !plan.keep_alive && text.matches("connection").count() == 1,
            "{text}"
        );
    }
}
