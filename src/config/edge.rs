//! Who alb believes about a request's client (`[forwarded]`) and how requests are named
//! (`[request_id]`).

use std::net::IpAddr;

use super::IpNet;
use super::ipnet::networks;
use super::raw::{RawForwarded, RawRequestId};
use super::values::Problems;

/// `[forwarded]`: the peers (a CDN, an L7 balancer in front) whose X-Forwarded-For, Forwarded,
/// X-Forwarded-Proto/-Host and X-Request-Id alb believes. Empty by default: alb is the edge, and
/// what a client writes in those fields is replaced, never passed on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardedConfig {
    pub trusted: Vec<IpNet>,
    /// Which field of a trusted proxy names its client. One, chosen here: were alb to read
    /// whichever is present, a client could send the one its proxy passes through untouched.
    pub client_header: ClientHeader,
    /// Write an RFC 7239 `Forwarded` field of alb's own beside the X-Forwarded ones.
    pub rfc7239: bool,
}

/// `forwarded.client_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientHeader {
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters.
    Forwarded,
}

impl ForwardedConfig {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        // `::ffff:10.0.0.1` is 10.0.0.1 to a list written in IPv4.
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(ip))
    }
}

/// `[request_id]`: an `X-Request-Id` on every request a backend receives (kept from a trusted
/// peer, made by alb otherwise), written in the access log, and in the response when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestIdConfig {
    pub enabled: bool,
    /// Send it back to the client too.
    pub response: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            enabled: true,
            response: false,
        }
    }
}

pub(super) fn forwarded(raw: RawForwarded, problems: &mut Problems) -> ForwardedConfig {
    let given = raw.trusted.unwrap_or_default();
    let client_header = match raw.client_header.as_deref() {
        None | Some("x-forwarded-for") => ClientHeader::XForwardedFor,
        Some("forwarded") => ClientHeader::Forwarded,
        Some(other) => {
            problems.add(
                "forwarded.client_header",
                format!("{other:?}: \"x-forwarded-for\" or \"forwarded\""),
            );
            ClientHeader::XForwardedFor
        }
    };
    ForwardedConfig {
        client_header,
        trusted: networks("forwarded.trusted", &given, problems),
        rfc7239: raw.rfc7239.unwrap_or(false),
    }
}

pub(super) fn request_id(raw: RawRequestId) -> RequestIdConfig {
    let d = RequestIdConfig::default();
    RequestIdConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        response: raw.response.unwrap_or(d.response),
    }
}
