//! What alb settles about a request before routing it: which client it speaks for, and its id.
//!
//! **The client address is decided here and only here.** A peer alb does not trust (by default,
//! every peer) is the client, whatever its fields say. A trusted peer (`[forwarded] trusted`: a
//! CDN, a balancer in front) speaks for someone else: the client is the rightmost address of its
//! X-Forwarded-For (or, with `client_header = "forwarded"`, of its `Forwarded` `for=`; never
//! whichever is present, which the client could choose) that is not itself a trusted hop, as
//! nginx's `real_ip_recursive` reads it. That one address is what routes' IP lists, rate
//! limits, hashing on `client_ip`, the access log and header rules see; X-Forwarded-For still
//! records the hop that connected (see `header_policy`).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::ClientInfo;
use crate::config::{ClientHeader, ForwardedConfig, RequestIdConfig};

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client a request speaks for.
pub(super) struct Seen<'a> {
    pub(super) client: Cow<'a, ClientInfo>,
    /// The connection's peer is trusted: its forwarding fields are kept.
    pub(super) trusted_peer: bool,
}

pub(super) fn seen<'a>(
    config: &ForwardedConfig,
    peer: &'a ClientInfo,
    headers: &HeaderMap,
) -> Seen<'a> {
    if config.trusted.is_empty() || !config.trusts(peer.addr.ip()) {
        return Seen {
            client: Cow::Borrowed(peer),
            trusted_peer: false,
        };
    }
    let hops = hops_of(headers, config.client_header);
    let client = hops
        .into_iter()
        .rev()
        .map_while(|hop| hop)
        .find(|ip| !config.trusts(*ip));
    let client = match client {
        Some(ip) => {
            let mut seen = ClientInfo::new(SocketAddr::new(ip, 0)).over(peer.scheme);
            seen.tls = peer.tls.clone();
            Cow::Owned(seen)
        }
        // Every hop trusted, or a hop alb cannot read: the peer, the one hop alb can vouch for.
        None => Cow::Borrowed(peer),
    };
    Seen {
        client,
        trusted_peer: true,
    }
}

/// The addresses a trusted peer lists in `field`, first hop first; `None` for an element that is
/// no address (`unknown`, an obfuscated name): the walk from the right stops there.
fn hops_of(headers: &HeaderMap, field: ClientHeader) -> Vec<Option<IpAddr>> {
    if field == ClientHeader::XForwardedFor {
        return headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|element| address(std::str::from_utf8(element).ok()?.trim()))
            .collect();
    }
    headers
        .get_all(&FORWARDED)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|element| {
            let element = std::str::from_utf8(element).ok()?;
            let value = element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.eq_ignore_ascii_case("for").then_some(value)
            })?;
            address(value.trim().trim_matches('"'))
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn address(text: &str) -> Option<IpAddr> {
    text.parse()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = text.strip_prefix('[')?.split(']').next()?;
            inner.parse().ok()
        })
}

/// What becomes of a request's X-Request-Id.
pub(super) enum RequestId {
    /// Ids are off: the field, if any, is the client's to send.
    Off,
    /// A trusted peer's id, left where it is.
    Kept(HeaderValue),
    /// alb's id, replacing whatever the client sent.
    Made(HeaderValue),
}

impl RequestId {
    pub(super) fn of(
        config: RequestIdConfig,
        headers: &HeaderMap,
        trusted_peer: bool,
    ) -> RequestId {
        if !config.enabled {
            return RequestId::Off;
        }
        let theirs = headers
            .get(&X_REQUEST_ID)
            .filter(|v| trusted_peer && (1..=200).contains(&v.len()));
        match theirs {
            Some(id) if id.as_bytes().iter().all(|b| b.is_ascii_graphic()) => {
                RequestId::Kept(id.clone())
            }
            _ => RequestId::Made(new_id()),
        }
    }

    pub(super) fn value(&self) -> Option<&HeaderValue> {
        match self {
            RequestId::Off => None,
            RequestId::Kept(v) | RequestId::Made(v) => Some(v),
        }
    }
}

/// Ids are cut from a per-thread buffer of this many bytes: one allocation per 128 ids rather
/// than one per request (each id's `Bytes` shares the buffer until the last is dropped).
const ID_BUFFER: usize = 32 * 128;

thread_local! {
    static ID_SPACE: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

/// 128 random bits in hex: unique enough for a fleet's logs, and no coordination to make.
fn new_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..).to_be_bytes();
    let mut text = [0u8; 32];
    for (pair, byte) in text.chunks_exact_mut(2).zip(bits) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    let id = ID_SPACE.with_borrow_mut(|space| {
        if space.capacity() < text.len() {
            *space = bytes::BytesMut::with_capacity(ID_BUFFER);
        }
        space.extend_from_slice(&text);
        space.split().freeze()
    });
    HeaderValue::from_maybe_shared(id).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusting(nets: &[&str]) -> ForwardedConfig {
        ForwardedConfig {
            trusted: nets.iter().map(|n| n.parse().unwrap()).collect(),
            client_header: ClientHeader::XForwardedFor,
            rfc7239: false,
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn client_of(config: &ForwardedConfig, peer: &str, pairs: &[(&str, &str)]) -> String {
        let peer = ClientInfo::new(format!("{peer}:5000").parse().unwrap());
        seen(config, &peer, &fields(pairs))
            .client
            .addr
            .ip()
            .to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_writes() {
        let config = trusting(&["10.0.0.0/8"]);
        let lies = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")];
        assert_eq!(client_of(&config, "192.0.2.9", &lies), "192.0.2.9");
        assert_eq!(client_of(&trusting(&[]), "10.0.0.1", &lies), "10.0.0.1");
    }

    #[test]
    fn a_trusted_peer_speaks_for_the_rightmost_untrusted_hop() {
        let config = trusting(&["10.0.0.0/8"]);
        let xff = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")];
        assert_eq!(client_of(&config, "10.0.0.2", &xff), "198.51.100.7");
        let split = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:4711, 10.1.1.1"),
        ];
        assert_eq!(client_of(&config, "10.0.0.2", &split), "198.51.100.7");
        let rfc = [(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.2.2.2",
        )];
        let reading_forwarded = ForwardedConfig {
            client_header: ClientHeader::Forwarded,
            ..config.clone()
        };
        assert_eq!(
            client_of(&reading_forwarded, "10.0.0.2", &rfc),
            "2001:db8::7"
        );
    }

    #[test]
    fn only_the_configured_field_names_the_client() {
        // A proxy that writes `Forwarded` and passes the client's X-Forwarded-For through.
        let both = [
            ("x-forwarded-for", "10.6.6.6"),
            ("forwarded", "for=203.0.113.9;proto=https"),
        ];
        let config = ForwardedConfig {
            client_header: ClientHeader::Forwarded,
            ..trusting(&["127.0.0.0/8"])
        };
        assert_eq!(client_of(&config, "127.0.0.2", &both), "203.0.113.9");
        let config = trusting(&["127.0.0.0/8"]);
        let only_forwarded = [("forwarded", "for=203.0.113.9")];
        assert_eq!(
            client_of(&config, "127.0.0.2", &only_forwarded),
            "127.0.0.2"
        );
    }

    #[test]
    fn a_hop_that_is_no_address_leaves_the_peer_as_the_client() {
        let config = trusting(&["10.0.0.0/8"]);
        let xff = [("x-forwarded-for", "198.51.100.7, garbage, 10.1.1.1")];
        assert_eq!(client_of(&config, "10.0.0.2", &xff), "10.0.0.2");
        let all_trusted = [("x-forwarded-for", "10.3.3.3")];
        assert_eq!(client_of(&config, "10.0.0.2", &all_trusted), "10.0.0.2");
        assert_eq!(client_of(&config, "10.0.0.2", &[]), "10.0.0.2");
    }

    #[test]
    fn request_ids_are_kept_from_trusted_peers_only() {
        let config = RequestIdConfig::default();
        let h = fields(&[("x-request-id", "abc-123")]);
        assert!(matches!(RequestId::of(config, &h, true), RequestId::Kept(v) if v == "abc-123"));
        let made = RequestId::of(config, &h, false);
        let RequestId::Made(id) = made else {
            panic!("untrusted ids are replaced")
        };
        assert_eq!(id.len(), 32);
        assert_ne!(id, "abc-123");
        let off = RequestIdConfig {
            enabled: false,
            response: false,
        };
        assert!(matches!(RequestId::of(off, &h, false), RequestId::Off));
    }

    #[test]
    fn ids_cut_from_the_shared_buffer_stay_whole_and_distinct_across_refills() {
        let ids: Vec<HeaderValue> = (0..3 * ID_BUFFER / 32 + 5).map(|_| new_id()).collect();
        let distinct: std::collections::HashSet<&[u8]> = ids.iter().map(|v| v.as_bytes()).collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        }
    }
}
