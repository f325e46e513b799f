//! What a route does to the requests it takes besides choosing their pool: who may enter
//! (`allow`, `deny`), how the path is rewritten (`rewrite_prefix`), a redirect instead of a pool,
//! and header rules each way.

use http::StatusCode;

use super::IpNet;
use super::header_rules::{HeaderRules, Template, Var, header_rules};
use super::ipnet::networks;
use super::raw::{RawRedirect, RawRoute};
use super::values::{Problems, route_path};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// When not empty, only clients in these networks are admitted (403 otherwise).
    pub allow: Vec<IpNet>,
    /// Clients in these networks are refused (403), whatever `allow` says.
    pub deny: Vec<IpNet>,
    /// Forward the path with `path_prefix` replaced by this.
    pub rewrite_prefix: Option<String>,
    /// Answer with a redirect instead of sending to a pool.
    pub redirect: Option<Redirect>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub to: Template,
    pub status: StatusCode,
}

impl RoutePolicy {
    /// Whether a client at `ip` (the trusted client address) may use the route.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        // `::ffff:10.0.0.1` is 10.0.0.1 to a list written in IPv4.
        let ip = ip.to_canonical();
        !self.deny.iter().any(|net| net.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(ip)))
    }
}

/// The policy keys of one route (`prefix` is `route[i].`).
pub(super) fn route_policy(
    prefix: &str,
    raw: &mut RawRoute,
    problems: &mut Problems,
) -> RoutePolicy {
    let key = |k: &str| format!("{prefix}{k}");
    let allow = networks(
        &key("allow"),
        &raw.allow.take().unwrap_or_default(),
        problems,
    );
    let deny = networks(&key("deny"), &raw.deny.take().unwrap_or_default(), problems);
    let rewrite_prefix = raw.rewrite_prefix.take();
    if let Some(to) = &rewrite_prefix {
        if raw.path_prefix.is_none() {
            problems.add(key("rewrite_prefix"), "needs a path_prefix to replace");
        }
        if raw.strip_prefix == Some(true) {
            problems.add(
                key("rewrite_prefix"),
                "give strip_prefix or rewrite_prefix, not both",
            );
        }
        route_path(&key("rewrite_prefix"), to, problems);
    }
    let redirect = raw
        .redirect
        .take()
        .and_then(|r| redirect(prefix, r, problems));
    let request_headers = header_rules(
        &key("request_headers"),
        raw.request_headers.take(),
        problems,
    );
    let response_headers = header_rules(
        &key("response_headers"),
        raw.response_headers.take(),
        problems,
    );
    RoutePolicy {
        allow,
        deny,
        rewrite_prefix,
        redirect,
        request_headers,
        response_headers,
    }
}

fn redirect(prefix: &str, raw: RawRedirect, problems: &mut Problems) -> Option<Redirect> {
    let status = match raw.status.unwrap_or(308) {
        code @ (301 | 302 | 303 | 307 | 308) => StatusCode::from_u16(code).ok()?,
        other => {
            problems.add(
                format!("{prefix}redirect.status"),
                format!("{other} is not a redirect status (301, 302, 303, 307 or 308)"),
            );
            return None;
        }
    };
    let to = match Template::parse(&raw.to) {
        Ok(to) => to,
        Err(reason) => {
            problems.add(format!("{prefix}redirect.to"), reason);
            return None;
        }
    };
    if to.uses(Var::TlsClientSubject) || to.uses(Var::RequestId) {
        problems.add(
            format!("{prefix}redirect.to"),
            "a redirect names a place: {host}, {scheme}, {path} and {client_ip} only",
        );
    }
    Some(Redirect { to, status })
}
