//! An HTTP/2 request made into the form every request has once it is read (see
//! `http1::client_request`): origin-form target, Host as the client meant it, no framing field,
//! field names held to the same rules. From there the proxy treats it like any other.
//!
//! h2 has already refused what RFC 9113 §8.2.2 calls malformed (connection-specific fields, TE
//! other than `trailers`, uppercase names, a missing `:path`, Content-Length against the data)
//! with a stream error; what is checked here is what it leaves to the application.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, request};

use crate::http1::{Rejected, RequestRules, is_authority, is_unusual_name, keeps_field};

/// Fields that describe a connection rather than a message: never in an HTTP/2 message
/// (RFC 9113 §8.2.2), so left out of everything alb sends on HTTP/2.
pub fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == "keep-alive"
        || name == "proxy-connection"
}

fn bad(reason: &'static str) -> Rejected {
    Rejected {
        status: http::StatusCode::BAD_REQUEST,
        reason,
    }
}

/// Rewrites `parts` for forwarding and returns the declared body length.
///
/// `:authority` becomes Host (RFC 9113 §8.3.1); a request carrying both must name the same
/// authority, or a backend reading Host would see another site than the one alb routed on.
pub fn forwardable(
    parts: &mut request::Parts,
    rules: &RequestRules,
) -> Result<Option<u64>, Rejected> {
    if parts.method == http::Method::CONNECT {
        return Err(Rejected {
            status: http::StatusCode::METHOD_NOT_ALLOWED,
            reason: "CONNECT is not supported by this proxy",
        });
    }
    // RFC 9113 §8.2.1: a value that starts or ends with whitespace makes the message malformed
    // (HTTP/1.1's parser trims it; h2 leaves it to the application).
    if parts.headers.values().any(|v| {
        let bytes = v.as_bytes();
        matches!(bytes.first(), Some(b' ' | b'\t')) || matches!(bytes.last(), Some(b' ' | b'\t'))
    }) {
        return Err(bad("a field value starts or ends with whitespace"));
    }
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(bad("more than one Host field"));
    }
    match (authority, host) {
        (Some(authority), _) if authority.contains('@') => {
            return Err(bad("user information in :authority"));
        }
        (Some(authority), Some(host)) => {
            if !authority.as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
                return Err(bad(":authority and Host name different authorities"));
            }
        }
        (Some(authority), None) => {
            let value = HeaderValue::from_str(&authority).map_err(|_| bad("invalid :authority"))?;
            parts.headers.insert(header::HOST, value);
        }
        (None, Some(host)) if !is_authority(host.as_bytes()) => {
            return Err(bad("Host is not an authority"));
        }
        (None, Some(_)) => {}
        (None, None) => return Err(bad("no :authority and no Host")),
    }
    if let Some(host) = parts.headers.get(header::HOST)
        && !is_authority(host.as_bytes())
    {
        return Err(bad(":authority is not an authority"));
    }
    let length = declared_length(&parts.headers)?;
    parts.headers.remove(header::CONTENT_LENGTH);
    if parts
        .headers
        .keys()
        .any(|name| is_unusual_name(name.as_str().as_bytes()))
    {
        parts.headers = kept_fields(std::mem::take(&mut parts.headers), rules)?;
    }
    join_cookies(&mut parts.headers);
    let target = parts
        .uri
        .path_and_query()
        .cloned()
        .ok_or_else(|| bad("no :path"))?;
    // RFC 9113 §8.3.1: `:path` is an origin-form target, or `*` for OPTIONS (as HTTP/1.1's
    // parser holds it).
    let asterisk = target.as_str() == "*" && parts.method == http::Method::OPTIONS;
    if !target.as_str().starts_with('/') && !asterisk {
        return Err(bad(":path is not an origin-form target"));
    }
    parts.uri = Uri::from(target);
    Ok(length)
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, Rejected> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad("more than one Content-Length field"));
    }
    let text = value.to_str().map_err(|_| bad("invalid Content-Length"))?;
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("invalid Content-Length"));
    }
    text.parse()
        .map(Some)
        .map_err(|_| bad("invalid Content-Length"))
}

fn kept_fields(headers: HeaderMap, rules: &RequestRules) -> Result<HeaderMap, Rejected> {
    retain_fields(headers, |name| keeps_field(name.as_str().as_bytes(), rules))
}

/// The fields `keep` says yes to, in order (a `HeaderMap` has no `retain`).
pub(super) fn retain_fields<E>(
    fields: HeaderMap,
    mut keep: impl FnMut(&HeaderName) -> Result<bool, E>,
) -> Result<HeaderMap, E> {
    let mut kept = HeaderMap::with_capacity(fields.len());
    let mut name = None;
    for (next, value) in fields {
        if next.is_some() {
            name = next;
        }
        if let Some(name) = &name
            && keep(name)?
        {
            kept.append(name.clone(), value);
        }
    }
    Ok(kept)
}

/// HTTP/2 lets a client split Cookie into one field per pair (RFC 9113 §8.2.3); HTTP/1.1 allows
/// one Cookie field, so they are joined with "; " before anything else reads them.
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}
