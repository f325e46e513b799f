//! alb's header policy for the request it forwards: **what a backend is told about the client and
//! about this hop is decided here and only here**, whichever protocol the client came over and
//! whichever the backend speaks.
//!
//! - Hop-by-hop fields are removed (RFC 9110 §7.6.1), and so is every field the Connection field
//!   names, but for Host and the framing (see [`may_be_nominated`]).
//! - X-Forwarded-For is a list of hops: alb appends its client to what came.
//! - X-Forwarded-Proto and X-Forwarded-Host say what *this* hop received, and frameworks read their
//!   first element: alb writes them alone, so that no client chooses the scheme or the host a
//!   backend acts on.
//! - Host is kept as the client sent it; a request without one (HTTP/1.0) gets the backend's
//!   authority from the session that sends it ([`crate::http1::RequestHead::for_backend`]).
//!
//! Most requests carry none of the fields this removes, so the policy first scans the names once
//! and only touches the map when it found something; a `remove` per listed name on every request
//! costs a hash and a probe each. The fields alb adds are not inserted into the map either (which
//! may grow it): they ride beside it in [`AddedFields`], written after the client's.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::client::ClientInfo;
use crate::upstream::AddedFields;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Applies the policy to a request's fields (hop-by-hop ones, the client's forwarding fields
/// removed) and returns the fields alb adds for this hop.
pub fn forward(headers: &mut HeaderMap, client: &ClientInfo) -> AddedFields {
    let scan = hop_scan(headers);
    if scan.any {
        strip_hop_by_hop(headers);
    }
    if scan.forwarded_this_hop {
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
    }
    let forwarded_for = if scan.forwarded_for {
        earlier_hops(headers, &client.ip_header)
    } else {
        client.ip_header.clone()
    };
    let mut added = AddedFields::new();
    added.push((&X_FORWARDED_FOR, forwarded_for));
    added.push((&X_FORWARDED_PROTO, client.scheme.header_value()));
    if let Some(host) = scan.host {
        added.push((&X_FORWARDED_HOST, host));
    }
    added
}

/// X-Forwarded-For as one field: the client's elements (its repeated lines folded, in order,
/// and taken out of the map), then `last`.
fn earlier_hops(headers: &mut HeaderMap, last: &HeaderValue) -> HeaderValue {
    let mut joined = Vec::with_capacity(64);
    for value in headers.get_all(&X_FORWARDED_FOR) {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(last.as_bytes());
    headers.remove(&X_FORWARDED_FOR);
    // Each part was a valid value and the separator is too.
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| last.clone())
}

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

/// What one pass over the fields found.
#[derive(Debug, Default)]
struct HopScan {
    /// The first Host, found on the way (a lookup would cost a hash and a probe).
    host: Option<HeaderValue>,
    /// Any hop-by-hop field at all.
    any: bool,
    /// The client sent X-Forwarded-For.
    forwarded_for: bool,
    /// The client sent X-Forwarded-Proto or -Host.
    forwarded_this_hop: bool,
}

/// Looks at every name once, touching no value: most messages have none of the fields the
/// policy removes and need nothing more.
fn hop_scan(headers: &HeaderMap) -> HopScan {
    let mut scan = HopScan::default();
    for (name, value) in headers {
        if name == header::HOST {
            if scan.host.is_none() {
                scan.host = Some(value.clone());
            }
        } else if is_hop_by_hop(name) {
            scan.any = true;
        } else if name == X_FORWARDED_FOR {
            scan.forwarded_for = true;
        } else if name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST {
            scan.forwarded_this_hop = true;
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
fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    use crate::proxy::Scheme;
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

    fn client(scheme: Scheme) -> ClientInfo {
        ClientInfo::new("10.0.0.1:5000".parse().unwrap()).over(scheme)
    }

    fn sent(headers: &HeaderMap, added: &AddedFields) -> Vec<(String, String)> {
        headers
            .iter()
            .chain(added.iter().map(|(n, v)| (*n, v)))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn appends_this_hop_to_forwarded_for_and_writes_proto_and_host_alone() {
        let mut h = map(&[
            ("host", "example.com"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("accept", "*/*"),
        ]);
        let added = forward(&mut h, &client(Scheme::Http));
        let pairs = sent(&h, &added);
        let expected = [
            ("host", "example.com"),
            ("accept", "*/*"),
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "example.com"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn a_clean_request_keeps_its_map_and_gets_three_fields() {
        let mut h = map(&[("host", "a.example"), ("accept", "*/*")]);
        let added = forward(&mut h, &client(Scheme::Https));
        assert_eq!(h.len(), 2);
        let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
        );
        assert_eq!(added[1].1, "https");
    }

    #[test]
    fn a_request_without_host_gets_no_forwarded_host() {
        let mut h = map(&[("x-forwarded-host", "evil.example")]);
        let added = forward(&mut h, &client(Scheme::Http));
        assert!(h.is_empty());
        assert!(added.iter().all(|(n, _)| **n != X_FORWARDED_HOST));
    }

    #[test]
    fn forwarded_for_named_by_connection_is_dropped_before_alb_appends() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "x-forwarded-for"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        let added = forward(&mut h, &client(Scheme::Http));
        assert_eq!(added[0].1, "10.0.0.1");
        assert!(!h.contains_key(&X_FORWARDED_FOR));
    }
}
