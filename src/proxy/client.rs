//! Who a request came from, as the connection it arrived on says: the peer's address, the
//! listener (the scheme), and for TLS what the handshake settled (the certificate's names, a
//! verified client certificate). Computed once per connection; the request's own fields never
//! change it unless the peer is a trusted proxy (see `header_policy`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;

/// The scheme a client used to reach alb: what X-Forwarded-Proto tells the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    /// The client came over the TLS listener.
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub(super) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The client connection a request arrived on, computed once per connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    /// The client's IP as an X-Forwarded-For element.
    pub ip_header: HeaderValue,
    /// Which listener it came to: X-Forwarded-Proto, and whether `tls.redirect_http` applies.
    pub scheme: Scheme,
    /// What the TLS handshake settled, for a client of the TLS listener.
    pub tls: Option<Arc<TlsSession>>,
}

/// What a TLS handshake settled that requests on the connection are held to.
#[derive(Debug, Clone, Default)]
pub struct TlsSession {
    /// The DNS names (SANs, `*.example.com` wildcards kept as written, lower case) and IP
    /// addresses of the certificate the handshake chose: a request whose Host none covers gets
    /// 421 (RFC 9110 §15.5.20), see [`TlsSession::covers`].
    pub certificate_names: Arc<[String]>,
    /// The subject of the client's certificate, when one was presented and verified (mTLS).
    pub client_subject: Option<Arc<str>>,
    /// Whether the client named a server (SNI). A client that connected to an IP address sends
    /// none (RFC 6066 §3 forbids addresses there) and got the `[tls] cert` one.
    pub sni: bool,
}

impl TlsSession {
    /// Whether `req` asks for a host this session's certificate does not name (its Host, which
    /// an HTTP/2 request's `:authority` became): answered 421 before any route, redirect or
    /// limit. A request without Host (HTTP/1.0) names no other site, and matches no route
    /// with a host condition.
    pub fn misdirects<B>(&self, req: &http::Request<B>) -> bool {
        req.headers()
            .get(http::header::HOST)
            .is_some_and(|host| !host.to_str().is_ok_and(|host| self.covers(host)))
    }

    /// Whether a request for `host` (a Host or `:authority` value, port and all) may be served
    /// on this session: whether the certificate the handshake chose names it. Case and a
    /// trailing dot do not count, `*.example.com` covers exactly one more label (as a client's
    /// own name check reads it, RFC 6125 §6.4.3), so requests for every name of one certificate
    /// share a connection (HTTP/2 reuse, RFC 9113 §9.1.1) and no other name does.
    ///
    /// An IP address is covered when the certificate lists it, or when the client sent no SNI:
    /// a client that connected to an address has no way to name it in the handshake, and the
    /// address cannot have chosen another certificate (or its client-certificate policy) either.
    /// A name is held to the `[tls] cert` certificate's names then, like any other session.
    ///
    /// Runs on every request of a TLS connection: it compares in place, without allocating (the
    /// names are lower case already, see `config::tls`).
    pub fn covers(&self, host: &str) -> bool {
        let host = host_without_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return !self.sni
                || self
                    .certificate_names
                    .iter()
                    .any(|name| name.parse::<IpAddr>() == Ok(ip));
        }
        self.certificate_names
            .iter()
            .any(|name| match name.strip_prefix("*.") {
                Some(parent) => host.split_once('.').is_some_and(|(label, rest)| {
                    !label.is_empty() && rest.eq_ignore_ascii_case(parent)
                }),
                None => name.eq_ignore_ascii_case(host),
            })
    }
}

/// The host of a Host value: without its port, an IPv6 literal without its brackets.
fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

impl ClientInfo {
    pub fn new(addr: SocketAddr) -> ClientInfo {
        let ip = addr.ip().to_string();
        let ip_header = HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown"));
        ClientInfo {
            addr,
            ip_header,
            scheme: Scheme::Http,
            tls: None,
        }
    }

    /// The same client, come over `scheme`.
    pub fn over(self, scheme: Scheme) -> ClientInfo {
        ClientInfo { scheme, ..self }
    }

    /// The same client, over a TLS session that settled `tls`.
    pub fn with_tls(self, tls: Arc<TlsSession>) -> ClientInfo {
        ClientInfo {
            scheme: Scheme::Https,
            tls: Some(tls),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(names: &[&str], sni: bool) -> TlsSession {
        TlsSession {
            certificate_names: names.iter().map(|n| n.to_string()).collect(),
            client_subject: None,
            sni,
        }
    }

    #[test]
    fn the_certificates_names_are_covered_whatever_the_case_port_or_trailing_dot() {
        let tls = session(&["a.example", "b.example"], true);
        for host in ["a.example", "A.Example:443", "b.example.", "b.example:8443"] {
            assert!(tls.covers(host), "{host}");
        }
        for host in [
            "admin.example",
            "example",
            "x.a.example",
            "a.example.evil",
            "",
        ] {
            assert!(!tls.covers(host), "{host}");
        }
    }

    #[test]
    fn a_request_is_misdirected_by_a_host_the_certificate_does_not_name() {
        let tls = session(&["a.example"], true);
        let with_host = |host: &[u8]| {
            let mut req = http::Request::new(());
            let value = HeaderValue::from_bytes(host).expect("a field value");
            req.headers_mut().insert(http::header::HOST, value);
            req
        };
        assert!(!tls.misdirects(&with_host(b"a.example:443")));
        assert!(tls.misdirects(&with_host(b"admin.example")));
        assert!(
            tls.misdirects(&with_host(b"a.ex\xe4mple")),
            "not text: no name of ours"
        );
        assert!(
            !tls.misdirects(&http::Request::new(())),
            "no Host (HTTP/1.0)"
        );
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let tls = session(&["*.example.com"], true);
        assert!(tls.covers("api.example.com:443"));
        assert!(!tls.covers("example.com"));
        assert!(!tls.covers("a.b.example.com"));
        assert!(!tls.covers(".example.com"));
    }

    #[test]
    fn an_ip_address_is_covered_when_listed_or_when_no_sni_was_sent() {
        let listed = session(&["a.example", "127.0.0.1", "::1"], true);
        assert!(listed.covers("127.0.0.1:8443"));
        assert!(listed.covers("[::1]:8443"));
        assert!(!listed.covers("10.0.0.1"));
        let unlisted = session(&["a.example"], true);
        assert!(!unlisted.covers("127.0.0.1"));
        let by_address = session(&["a.example"], false);
        assert!(by_address.covers("127.0.0.1:8443"));
        assert!(by_address.covers("a.example"));
        assert!(
            !by_address.covers("admin.example"),
            "names still need the certificate"
        );
    }
}
