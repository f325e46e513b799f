//! alb's header policy for the request it forwards: **what a backend is told about the client and
//! about this hop is decided here and only here**, whichever protocol the client came over and
//! whichever the backend speaks.
//!
//! - Hop-by-hop fields are removed (RFC 9110 §7.6.1), and so is every field the Connection field
//!   names, but for Host and the framing (see [`may_be_nominated`]).
//! - From a peer alb does not trust (`[forwarded] trusted`; by default none), every field by which
//!   a client could tell a backend who it is or how it came is removed: `Forwarded` (RFC 7239,
//!   which Spring, Jetty, Undertow and Quarkus prefer), X-Real-IP, X-Forwarded-Proto, -Host,
//!   -Port, -Prefix, -Ssl and the like ([`is_forwarding`]). X-Forwarded-For becomes the peer's
//!   address alone, X-Forwarded-Proto and -Host say what this hop received, and X-Request-Id is
//!   alb's own. No client chooses the scheme, host or address a backend acts on.
//! - From a trusted peer they are kept: X-Forwarded-For gets the peer appended, X-Forwarded-Proto
//!   and -Host are written only where the peer sent none.
//! - With `rfc7239`, alb writes its own `Forwarded` element (after a trusted peer's).
//! - Host is kept as the client sent it; a request without one (HTTP/1.0) gets the backend's
//!   authority from the session that sends it ([`crate::http1::RequestHead::for_backend`]).
//!
//! Most requests carry none of the fields this removes, so the policy first scans the names once
//! and only touches the map when it found something; a `remove` per listed name on every request
//! costs a hash and a probe each. The fields alb adds are not inserted into the map either (which
//! may grow it): they ride beside it in [`AddedFields`], written after the client's.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::client::ClientInfo;
use super::edge::{FORWARDED, X_FORWARDED_FOR, X_REQUEST_ID};
use crate::upstream::AddedFields;

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The hop a request is forwarded from, as the policy needs it.
pub struct Hop<'a> {
    /// The connection's peer (after a PROXY protocol header): the hop alb appends.
    pub peer: &'a ClientInfo,
    /// `[forwarded] trusted` lists the peer.
    pub trusted_peer: bool,
    /// Write an RFC 7239 `Forwarded` element.
    pub rfc7239: bool,
    /// alb's X-Request-Id, replacing any the client sent; none: the field is left as it came.
    pub request_id: Option<&'a HeaderValue>,
}

impl<'a> Hop<'a> {
    /// A hop from an untrusted peer with no request id: the default policy.
    pub fn untrusted(peer: &'a ClientInfo) -> Hop<'a> {
        Hop {
            peer,
            trusted_peer: false,
            rfc7239: false,
            request_id: None,
        }
    }
}

/// Applies the policy to a request's fields (hop-by-hop ones, and the client's forwarding fields
/// unless its peer is trusted, removed) and returns the fields alb adds for this hop.
pub fn forward(headers: &mut HeaderMap, hop: &Hop<'_>) -> AddedFields {
    let scan = hop_scan(headers);
    if scan.any {
        strip_hop_by_hop(headers);
    }
    let peer = hop.peer;
    if !hop.trusted_peer && scan.forwarding {
        let found: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_forwarding(n))
            .cloned()
            .collect();
        for name in found {
            headers.remove(name);
        }
    }
    let forwarded_for = match (scan.forwarded_for, hop.trusted_peer) {
        (true, true) => earlier_hops(headers, &peer.ip_header),
        (true, false) => {
            headers.remove(&X_FORWARDED_FOR);
            peer.ip_header.clone()
        }
        (false, _) => peer.ip_header.clone(),
    };
    let mut added = AddedFields::new();
    added.push((&X_FORWARDED_FOR, forwarded_for));
    if !(hop.trusted_peer && scan.proto) {
        added.push((&X_FORWARDED_PROTO, peer.scheme.header_value()));
    }
    if !(hop.trusted_peer && scan.forwarded_host)
        && let Some(host) = &scan.host
    {
        added.push((&X_FORWARDED_HOST, host.clone()));
    }
    if hop.rfc7239 {
        let earlier = (hop.trusted_peer && scan.rfc7239).then(|| {
            let joined = join_values(headers, &FORWARDED);
            headers.remove(&FORWARDED);
            joined
        });
        added.push((
            &FORWARDED,
            forwarded_element(earlier, peer, scan.host.as_ref()),
        ));
    }
    if let Some(id) = hop.request_id {
        if scan.request_id {
            headers.remove(&X_REQUEST_ID);
        }
        added.push((&X_REQUEST_ID, id.clone()));
    }
    added
}

/// The values of every `name` line, joined with `, ` (one list, RFC 9110 §5.3).
fn join_values(headers: &HeaderMap, name: &HeaderName) -> Vec<u8> {
    let mut joined = Vec::with_capacity(64);
    for value in headers.get_all(name) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    joined
}

/// This hop's `Forwarded` element (RFC 7239 §4), after the `earlier` ones a trusted peer sent:
/// `for` the peer (an IPv6 address bracketed and quoted), `proto`, and `host` quoted (a port's
/// `:` is not a token character).
fn forwarded_element(
    earlier: Option<Vec<u8>>,
    peer: &ClientInfo,
    host: Option<&HeaderValue>,
) -> HeaderValue {
    let mut text = earlier.unwrap_or_default();
    if !text.is_empty() {
        text.extend_from_slice(b", ");
    }
    match peer.addr.ip() {
        std::net::IpAddr::V4(ip) => text.extend_from_slice(format!("for={ip}").as_bytes()),
        std::net::IpAddr::V6(ip) => text.extend_from_slice(format!("for=\"[{ip}]\"").as_bytes()),
    }
    text.extend_from_slice(b";proto=");
    text.extend_from_slice(peer.scheme.as_str().as_bytes());
    // A Host with a quote or a backslash would need escaping; such a Host is no authority.
    if let Some(host) = host.filter(|h| !h.as_bytes().iter().any(|b| matches!(b, b'"' | b'\\'))) {
        text.extend_from_slice(b";host=\"");
        text.extend_from_slice(host.as_bytes());
        text.push(b'"');
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| peer.ip_header.clone())
}

/// Fields by which a client says who it is or how it came, which frameworks believe: removed
/// from untrusted peers ([`crate::http1::is_forwarding`] holds the list, shared with the
/// look-alike check of field names).
fn is_forwarding(name: &HeaderName) -> bool {
    crate::http1::is_forwarding(name.as_str())
}

/// X-Forwarded-For as one field: the client's elements (its repeated lines folded, in order,
/// and taken out of the map), then `last`.
fn earlier_hops(headers: &mut HeaderMap, last: &HeaderValue) -> HeaderValue {
    let mut joined = join_values(headers, &X_FORWARDED_FOR);
    // Empty when the Connection field named it (and it went with the hop-by-hop fields).
    if !joined.is_empty() {
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
    /// Any of [`is_forwarding`]'s fields.
    forwarding: bool,
    /// X-Forwarded-Proto, X-Forwarded-Host, Forwarded, X-Request-Id.
    proto: bool,
    forwarded_host: bool,
    rfc7239: bool,
    request_id: bool,
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
        } else if name == X_REQUEST_ID {
            scan.request_id = true;
        } else if is_forwarding(name) {
            scan.forwarding = true;
            scan.proto |= name == X_FORWARDED_PROTO;
            scan.forwarded_host |= name == X_FORWARDED_HOST;
            scan.rfc7239 |= name == FORWARDED;
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

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn sent(headers: &HeaderMap, added: &AddedFields) -> Vec<(String, String)> {
        headers
            .iter()
            .chain(added.iter().map(|(n, v)| (*n, v)))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn a_trusted_peer_gets_its_hop_appended_and_anyone_else_is_replaced() {
        let mut h = map(&[
            ("host", "example.com"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("accept", "*/*"),
        ]);
        let peer = client(Scheme::Http);
        let trusted = Hop {
            trusted_peer: true,
            ..Hop::untrusted(&peer)
        };
        let mut from_untrusted = h.clone();
        let added = forward(&mut h, &trusted);
        let pairs = sent(&h, &added);
        let expected = [
            ("host", "example.com"),
            ("accept", "*/*"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.1"),
        ];
        let expected = owned(&expected);
        assert_eq!(pairs, expected, "a trusted peer's fields are kept");
        let added = forward(&mut from_untrusted, &Hop::untrusted(&peer));
        let pairs = sent(&from_untrusted, &added);
        let expected = [
            ("host", "example.com"),
            ("accept", "*/*"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "example.com"),
        ];
        let expected = owned(&expected);
        assert_eq!(pairs, expected);
    }

    #[test]
    fn a_clean_request_keeps_its_map_and_gets_three_fields() {
        let mut h = map(&[("host", "a.example"), ("accept", "*/*")]);
        let peer = client(Scheme::Https);
        let added = forward(&mut h, &Hop::untrusted(&peer));
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
        let peer = client(Scheme::Http);
        let added = forward(&mut h, &Hop::untrusted(&peer));
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
        let peer = client(Scheme::Http);
        let trusted = Hop {
            trusted_peer: true,
            ..Hop::untrusted(&peer)
        };
        let added = forward(&mut h, &trusted);
        assert_eq!(added[0].1, "10.0.0.1");
        assert!(!h.contains_key(&X_FORWARDED_FOR));
    }

    #[test]
    fn an_untrusted_client_names_no_scheme_host_or_address_in_any_field() {
        let lies = [
            ("host", "a.example"),
            ("forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("true-client-ip", "6.6.6.6"),
            ("x-request-id", "chosen"),
            ("x-kept", "1"),
        ];
        let peer = client(Scheme::Http);
        let id = HeaderValue::from_static("0123");
        let hop = Hop {
            rfc7239: true,
            request_id: Some(&id),
            ..Hop::untrusted(&peer)
        };
        let mut h = map(&lies);
        let added = forward(&mut h, &hop);
        let pairs = sent(&h, &added);
        let expected = [
            ("host", "a.example"),
            ("x-kept", "1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "a.example"),
            ("forwarded", "for=10.0.0.1;proto=http;host=\"a.example\""),
            ("x-request-id", "0123"),
        ];
        let expected = owned(&expected);
        assert_eq!(pairs, expected);
    }

    #[test]
    fn a_trusted_peers_forwarded_gets_this_hop_appended() {
        let peer = ClientInfo::new("[2001:db8::2]:5000".parse().unwrap()).over(Scheme::Https);
        let hop = Hop {
            trusted_peer: true,
            rfc7239: true,
            ..Hop::untrusted(&peer)
        };
        let mut h = map(&[
            ("host", "a.example:8443"),
            ("forwarded", "for=192.0.2.60;proto=http"),
        ]);
        let added = forward(&mut h, &hop);
        let forwarded: Vec<&HeaderValue> = added
            .iter()
            .filter(|(n, _)| **n == FORWARDED)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            forwarded,
            [
                "for=192.0.2.60;proto=http, for=\"[2001:db8::2]\";proto=https;host=\"a.example:8443\""
            ]
        );
        assert!(!h.contains_key(&FORWARDED));
    }
}
