//! What ties a request to a backend or to a bucket, read from the request before it is
//! forwarded: the key `algorithm = "hash"` hashes, the sticky cookie, and a rate limit's key.

use std::net::IpAddr;

use http::Request;

use super::ClientInfo;
use super::sticky::cookie_values;
use crate::balance::key_hash;
use crate::config::{HashKey, RateKey};

/// The hash of the request's `key`, or none when the request does not carry it (the pool then
/// balances it as least_conn does). Stable across replicas and restarts: two albs send one key
/// to the same backend.
pub(super) fn hash_of<B>(key: &HashKey, request: &Request<B>, client: &ClientInfo) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(key_hash(&ip_bytes(client.addr.ip()))),
        HashKey::Header(name) => request
            .headers()
            .get(name)
            .map(|value| key_hash(value.as_bytes())),
        HashKey::Cookie(name) => cookie_values(request.headers(), name.as_bytes())
            .next()
            .map(key_hash),
        HashKey::Path => Some(key_hash(request.uri().path().as_bytes())),
        HashKey::Query(name) => request.uri().query().and_then(|query| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(found, _)| *found == name)
                .map(|(_, value)| key_hash(value.as_bytes()))
        }),
    }
}

/// The bytes a rate limit counts a request under. Requests without the header share one bucket
/// (the empty key): leaving the header out is no way around the limit.
pub(super) fn rate_key<'a, B>(
    key: &RateKey,
    request: &'a Request<B>,
    client: &ClientInfo,
) -> std::borrow::Cow<'a, [u8]> {
    match key {
        RateKey::ClientIp => std::borrow::Cow::Owned(ip_bytes(client.addr.ip())),
        RateKey::Header(name) => std::borrow::Cow::Borrowed(
            request
                .headers()
                .get(name)
                .map_or(&b""[..], |value| value.as_bytes()),
        ),
    }
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 client.
fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
