//! The little of gRPC a balancer must know: which requests are gRPC calls, how long their
//! caller will wait (`grpc-timeout`), and how to say an alb-made failure in gRPC's terms, since
//! a gRPC client reads the status from trailers, not from the HTTP status.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};

/// `content-type: application/grpc` (with or without a `+format` suffix).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The caller's deadline from `grpc-timeout` (digits and a unit: H M S m u n), when valid.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// gRPC's code for an HTTP status alb answered with (the gRPC spec's mapping, but for 504,
/// which from alb means no answer in time: DEADLINE_EXCEEDED).
pub fn code_of(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        408 | 504 => 4,        // DEADLINE_EXCEEDED
        413 | 431 => 8,        // RESOURCE_EXHAUSTED
        429 | 502 | 503 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// UNAVAILABLE: the call may be tried again (a backend went away under it).
pub const UNAVAILABLE: u8 = 14;

/// A trailers-only gRPC answer (HTTP 200, the status in the head, no body).
pub fn trailers_only(code: u8, message: &str) -> Response<()> {
    let mut response = Response::new(());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(message) = HeaderValue::from_str(&percent_encoded(message)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// Trailers ending a call with `code` after its head went out.
pub fn status_trailers(code: u8, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(message) = HeaderValue::from_str(&percent_encoded(message)) {
        trailers.insert("grpc-message", message);
    }
    trailers
}

/// grpc-message is percent-encoded outside printable ASCII (and `%` itself).
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_follow_the_spec() {
        let mut h = HeaderMap::new();
        for (text, want) in [
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("5u", Some(Duration::from_micros(5))),
            ("123456789S", None),
            ("m", None),
            ("10x", None),
            ("-1S", None),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(text));
            assert_eq!(timeout(&h), want, "{text}");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encoded("a 100% é"), "a 100%25 %C3%A9");
    }
}
