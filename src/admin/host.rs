//! Which Host the admin listener answers: the defence against DNS rebinding.
//!
//! A page on `attacker.example` whose name is rebound to 127.0.0.1 makes the visitor's browser
//! send it requests that look like loopback ones, with `Host: attacker.example` (a page cannot
//! choose its Host). So the Host, not the peer's address, decides: accepted are
//!
//! - an IP address that is the connection's own local address, or a loopback address (a page
//!   served from an IP address has that address as its origin, so no DNS answer is involved;
//!   loopback is listed too because a port published by Docker arrives on the container's
//!   address while the client wrote `127.0.0.1`);
//! - `localhost` and any `*.localhost` name (RFC 6761 §6.3: resolvers and browsers answer them
//!   with loopback themselves and never ask DNS, so they cannot be rebound);
//! - the names (and addresses) of `admin.allowed_hosts`.
//!
//! The port is not compared: port forwards (`kubectl port-forward`, Docker's `-p`) change it,
//! and rebinding rests on the name. Anything else gets 421 Misdirected Request (the request was
//! sent to a server that does not serve that name, RFC 9110 §15.5.20), and an HTTP/1.1 request
//! without Host gets 400 (RFC 9112 §3.2). HTTP/1.0 requests may lack Host: browsers always send
//! it, so a rebinding page cannot send such a request.

use std::net::{IpAddr, SocketAddr};

use http::{Request, StatusCode, Version, header};

/// Why a request's Host is refused, and the status it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// An HTTP/1.1 request with no Host (nor an absolute-form target).
    Missing,
    /// A Host the listener does not answer for.
    Misdirected,
}

impl HostRefusal {
    pub fn status(self) -> StatusCode {
        match self {
            HostRefusal::Missing => StatusCode::BAD_REQUEST,
            HostRefusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HostRefusal::Missing => "{\"error\": \"an HTTP/1.1 request needs a Host header\"}",
            HostRefusal::Misdirected => {
                "{\"error\": \"this admin listener does not answer for that Host: use its address, localhost, or a name in admin.allowed_hosts\"}"
            }
        }
    }
}

/// Checks the Host of `req`, which arrived on a connection whose local address is `local`.
/// `allowed`: `admin.allowed_hosts`, as validated (lower-case names, IP addresses).
pub fn check<B>(
    req: &Request<B>,
    local: SocketAddr,
    allowed: &[String],
) -> Result<(), HostRefusal> {
    // An absolute-form target's authority replaces Host (RFC 9112 §3.2.2).
    let authority = match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => match req.headers().get(header::HOST) {
            Some(value) => Some(value.to_str().map_err(|_| HostRefusal::Misdirected)?),
            None => None,
        },
    };
    let Some(authority) = authority else {
        return match req.version() {
            Version::HTTP_09 | Version::HTTP_10 => Ok(()),
            _ => Err(HostRefusal::Missing),
        };
    };
    if answers_for(authority, local.ip(), allowed) {
        Ok(())
    } else {
        Err(HostRefusal::Misdirected)
    }
}

/// Whether `authority` (a Host value: name or address, maybe a port) is one this listener,
/// reached at `local`, answers for.
fn answers_for(authority: &str, local: IpAddr, allowed: &[String]) -> bool {
    let host = host_part(authority);
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return ip == local.to_canonical()
            || ip.is_loopback()
            || allowed.iter().any(|a| a.parse::<IpAddr>() == Ok(ip));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || allowed.contains(&name)
}

/// The host of a Host value: without its port, an IPv6 literal without its brackets.
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));

    fn ok(host: &str) -> bool {
        answers_for(host, LOCAL, &["ops.example.com".into(), "192.0.2.7".into()])
    }

    #[test]
    fn own_address_loopback_and_localhost_are_answered_with_or_without_port() {
        for host in [
            "10.0.0.5",
            "10.0.0.5:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "[::1]",
            "localhost",
            "LocalHost:9090",
            "localhost.",
            "dash.localhost:9090",
        ] {
            assert!(ok(host), "{host}");
        }
    }

    #[test]
    fn configured_names_and_addresses_are_answered() {
        assert!(ok("ops.example.com"));
        assert!(ok("OPS.example.com:443"));
        assert!(ok("192.0.2.7:9090"));
    }

    #[test]
    fn other_names_and_addresses_are_misdirected() {
        for host in [
            "attacker.example",
            "attacker.example:9090",
            "localhost.attacker.example",
            "sub.ops.example.com",
            "10.0.0.6:9090",
            "",
            "[::2]:9090",
        ] {
            assert!(!ok(host), "{host}");
        }
    }

    #[test]
    fn a_request_without_host_is_refused_on_http_1_1_only() {
        let local = SocketAddr::from(([127, 0, 0, 1], 9090));
        let mut req = Request::new(());
        assert_eq!(check(&req, local, &[]), Err(HostRefusal::Missing));
        *req.version_mut() = Version::HTTP_10;
        assert_eq!(check(&req, local, &[]), Ok(()));
    }
}
