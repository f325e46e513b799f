//! Protocol upgrades (RFC 9110 §7.8) across one hop: which client requests ask for one that alb
//! passes on, and whether a backend's `101 Switching Protocols` switched to what was asked.
//!
//! `Upgrade` and `Connection` are hop-by-hop fields, removed from every message alb forwards;
//! an upgrade alb agrees to pass is the one exception, and it is decided here, in one place:
//! the request must be HTTP/1.1, have no body (the new protocol begins right after the head),
//! say `Connection: upgrade`, and name at least one protocol other than `h2c` (HTTP/2 over
//! cleartext is a hop's own business: a backend that took it would speak HTTP/2 through a byte
//! tunnel to a client that asked alb, not it).

use http::Version;
use http::header::{self, HeaderMap, HeaderValue};

/// The `Upgrade` value to forward for a request, or `None` when the request is to be handled
/// as a plain one (its `Upgrade` then goes the way of every hop-by-hop field).
pub fn requested_upgrade(
    headers: &HeaderMap,
    version: Version,
    has_body: bool,
) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || has_body || !connection_says_upgrade(headers) {
        return None;
    }
    let mut offered = Vec::new();
    for value in headers.get_all(header::UPGRADE) {
        for protocol in tokens(value.as_bytes()) {
            if !is_protocol(protocol) {
                // A malformed list is not passed on in part: no upgrade at all.
                return None;
            }
            if !protocol.eq_ignore_ascii_case(b"h2c") {
                offered.push(protocol);
            }
        }
    }
    if offered.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&offered.join(&b", "[..])).ok()
}

/// Whether a `101`'s `Upgrade` value switches only to protocols the request offered (RFC 9110
/// §7.8: a server must not switch to one the client did not name). `None`: the `101` named none.
pub fn switch_was_offered(switched: Option<&[u8]>, offered: &HeaderValue) -> bool {
    let Some(switched) = switched else {
        return false;
    };
    let mut any = false;
    for protocol in tokens(switched) {
        any = true;
        if !tokens(offered.as_bytes()).any(|o| o.eq_ignore_ascii_case(protocol)) {
            return false;
        }
    }
    any
}

fn connection_says_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
}

/// The non-empty elements of a comma-separated list, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `protocol-name ["/" protocol-version]`, each a token (RFC 9110 §7.8, §5.6.2).
fn is_protocol(protocol: &[u8]) -> bool {
    let mut parts = protocol.splitn(2, |&b| b == b'/');
    let name = parts.next().unwrap_or_default();
    let version_ok = parts.next().is_none_or(is_token);
    is_token(name) && version_ok
}

fn is_token(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn asked(fields: &[(&str, &str)]) -> Option<String> {
        requested_upgrade(&headers(fields), Version::HTTP_11, false)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn a_websocket_handshake_is_passed_on() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(asked(&ws).as_deref(), Some("websocket"));
    }

    #[test]
    fn no_upgrade_without_connection_upgrade_a_body_or_http_1_1() {
        assert_eq!(asked(&[("upgrade", "websocket")]), None);
        let ws = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested_upgrade(&ws, Version::HTTP_11, true), None);
        assert_eq!(requested_upgrade(&ws, Version::HTTP_10, false), None);
    }

    #[test]
    fn h2c_is_never_passed_on() {
        let h2c = [
            ("connection", "upgrade, http2-settings"),
            ("upgrade", "h2c"),
        ];
        assert_eq!(asked(&h2c), None);
        let both = [("connection", "upgrade"), ("upgrade", "H2C, websocket")];
        assert_eq!(asked(&both).as_deref(), Some("websocket"));
    }

    #[test]
    fn a_malformed_protocol_list_is_no_upgrade() {
        let bad = [("connection", "upgrade"), ("upgrade", "web socket")];
        assert_eq!(asked(&bad), None);
        let versioned = [("connection", "upgrade"), ("upgrade", "foo/1.0, bar")];
        assert_eq!(asked(&versioned).as_deref(), Some("foo/1.0, bar"));
    }

    #[test]
    fn a_switch_must_be_to_an_offered_protocol() {
        let offered = HeaderValue::from_static("websocket");
        assert!(switch_was_offered(Some(b"WebSocket"), &offered));
        assert!(!switch_was_offered(Some(b"h2c"), &offered));
        assert!(!switch_was_offered(Some(b"websocket, h2c"), &offered));
        assert!(!switch_was_offered(Some(b""), &offered));
        assert!(!switch_was_offered(None, &offered));
    }
}
