//! The request target and Host, read by RFC 9112 §3.2 and RFC 9110 §7.2: the forms a target may
//! take for its method, and what a valid authority looks like. No client picks the Host a backend
//! sees by any other way than a Host field or an absolute-form target.

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};

use super::{Rejected, bad};

/// The request target, in the two forms alb forwards.
pub(super) enum Target {
    /// `/path?query`, or `*` (OPTIONS), or any authority-form target of CONNECT (which the
    /// proxy refuses with 405).
    Origin(Uri),
    /// `http://authority/path`: forwarded as its origin form with the authority as Host.
    Absolute { authority: HeaderValue, origin: Uri },
}

impl Target {
    /// Reads `raw` by RFC 9112 §3.2: the form must fit the method.
    pub(super) fn of(method: &Method, raw: Bytes) -> Result<Target, Rejected> {
        let invalid = || bad("invalid request target");
        let uri = Uri::from_maybe_shared(raw.clone()).map_err(|_| invalid())?;
        if method == Method::CONNECT {
            return Ok(Target::Origin(uri));
        }
        match raw.first() {
            Some(b'/') => return Ok(Target::Origin(uri)),
            Some(b'*') if raw.len() == 1 && method == Method::OPTIONS => {
                return Ok(Target::Origin(uri));
            }
            _ => {}
        }
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            // Authority-form (`evil.example:80`) is for CONNECT only (§3.2.3).
            return Err(bad("the request target is not in origin or absolute form"));
        };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(invalid());
        }
        // User info never names the host (RFC 9110 §4.2.4): `http://a@evil.example/` is refused
        // rather than read one way here and another way behind.
        if authority.as_str().contains('@') || !is_authority(authority.as_str().as_bytes()) {
            return Err(bad("invalid authority in the request target"));
        }
        let authority_value = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid())?;
        // No path at all after the authority: `/`, or `*` for OPTIONS (RFC 9112 §3.2.4).
        let after_authority = raw.len() - (scheme.len() + 3 + authority.as_str().len());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let origin = match path {
            _ if after_authority == 0 && method == Method::OPTIONS => "*",
            "" => "/",
            path => path,
        };
        let origin = origin.parse::<Uri>().map_err(|_| invalid())?;
        Ok(Target::Absolute {
            authority: authority_value,
            origin,
        })
    }
}

/// The bytes of a reg-name (RFC 3986: unreserved and sub-delims) but `,` and `%` (checked apart),
/// as a table: Host is checked on every request.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name, an IPv4 address or a
/// bracketed IP literal, then digits. Stricter than the grammar where it costs nothing real: the
/// host is never empty (an `http` URI with an empty host is invalid, RFC 9110 §4.2.1), a `%` must
/// start an escape, and `,` is refused (it would make X-Forwarded-Host read as a list).
pub fn is_authority(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b":.vV".contains(&b))
        {
            return false;
        }
        (literal, &rest[close + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        }
    };
    let reg_name = value.first() == Some(&b'[')
        || (host.iter().enumerate()).all(|(i, &b)| {
            REG_NAME[usize::from(b)]
                || (b == b'%'
                    && host
                        .get(i + 1..i + 3)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
        });
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    !host.is_empty() && reg_name && port_ok
}
