//! Header hygiene for one hop: hop-by-hop fields are removed in both directions (RFC 9110 §7.6.1).
//! (The X-Forwarded-* lists are extended as the request head is encoded, in [`crate::http1`].)
//!
//! Most requests carry none of the hop-by-hop fields, so the removal first scans the names once and
//! only touches the map when it found something; a `remove` per listed name on every request costs
//! a hash and a probe each.

use http::header::{self, HeaderMap, HeaderName};

/// Fields that only concern one connection. `Proxy-Authenticate`/`Proxy-Authorization` are
/// credentials for this hop (a backend must not see a client's proxy password), `Proxy-Connection`
/// and `Keep-Alive` are legacy connection options.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// What one pass over the field names found.
#[derive(Debug, Clone, Copy, Default)]
pub struct HopScan {
    /// Any hop-by-hop field at all.
    pub any: bool,
}

/// Looks at every name once, touching no value: most messages have no hop-by-hop field and need
/// nothing more.
pub fn hop_scan(headers: &HeaderMap) -> HopScan {
    let mut scan = HopScan::default();
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            scan.any = true;
        }
    }
    scan
}

/// Whether the Connection field may name `name` for removal (RFC 9110 §7.6.1 lets it name any
/// field). It may not name the fields that say where and how the message goes: Host, and the
/// framing (which the request parser has taken out of the map anyway and the encoder writes).
/// nginx and HAProxy ignore such names too; honouring them is what lets a request be smuggled.
fn may_be_nominated(name: &HeaderName) -> bool {
    name != header::HOST && name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING
}

/// Removes every hop-by-hop field, including the ones the Connection field names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if hop_scan(headers).any {
        strip_hop_by_hop(headers);
    }
}

/// [`remove_hop_by_hop`] for a map already known (by [`hop_scan`]) to hold some.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Split the raw bytes: a value with obs-text (bytes 0x80-0xFF) is not a `str`, but the names
    // it lists must go all the same.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(may_be_nominated)
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_standard_and_connection_listed_fields() {
        let mut h = map(&[
            ("host", "example.test"),
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "x-kept"]);
    }

    #[test]
    fn connection_cannot_name_host_or_framing() {
        let mut h = map(&[
            ("host", "example.test"),
            ("connection", "host, content-length, transfer-encoding, x-a"),
            ("content-length", "5"),
            ("x-a", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "content-length"]);
    }

    #[test]
    fn leaves_clean_maps_alone() {
        let mut h = map(&[("host", "a"), ("accept", "*/*")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }
}
