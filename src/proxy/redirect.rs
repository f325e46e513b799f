//! `tls.redirect_http`: a request on the plain listener is answered `308 Permanent Redirect` to
//! the same host, path and query over https, on the TLS listener's port. 308 and not 301: a
//! client must repeat the method and body as they were (RFC 9110 §15.4.9), so a POST stays a POST.

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;

use super::{ProxyError, Reply, ResponseBody};

/// The redirect for `request`, or why there can be none: without a Host (HTTP/1.0) alb does not
/// know which name the client wants.
pub(super) fn to_https<B>(request: &Request<B>, port: u16) -> Result<Reply, ProxyError> {
    let location = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| location(host, request.uri(), port))
        .ok_or(ProxyError::BadRequest(
            "a redirect to https needs the Host header",
        ))?;
    let mut reply = Reply::new(
        StatusCode::PERMANENT_REDIRECT,
        ResponseBody::Local(Full::new(Bytes::new())),
    );
    reply.headers.insert(header::LOCATION, location);
    Ok(reply)
}

/// `https://HOST[:PORT]/path?query`: the Host without its port (the parser checked its syntax),
/// the TLS port unless it is https' own 443.
fn location(host: &str, uri: &http::Uri, port: u16) -> Option<HeaderValue> {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal keeps its brackets.
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    if name.is_empty() {
        return None;
    }
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.starts_with('/') { target } else { "/" };
    let text = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    HeaderValue::from_str(&text).ok()
}

/// A route's `redirect`: its status, and its `to` filled in for the request.
pub(super) fn to_route_target(
    redirect: &crate::config::Redirect,
    vars: &super::header_rules::RequestVars,
) -> Result<Reply, ProxyError> {
    let location = vars.location(&redirect.to).ok_or(ProxyError::BadRequest(
        "this redirect needs a Host that names a server",
    ))?;
    let mut reply = Reply::new(
        redirect.status,
        ResponseBody::Local(Full::new(Bytes::new())),
    );
    reply.headers.insert(header::LOCATION, location);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, target: &str, port: u16) -> Option<String> {
        let uri: http::Uri = target.parse().ok()?;
        location(host, &uri, port).map(|v| v.to_str().unwrap_or_default().to_string())
    }

    #[test]
    fn keeps_name_path_and_query_and_names_the_tls_port_unless_443() {
        assert_eq!(
            at("example.com:8080", "/a/b?x=1&y", 8443).as_deref(),
            Some("https://example.com:8443/a/b?x=1&y")
        );
        assert_eq!(
            at("example.com", "/", 443).as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(
            at("[::1]:8080", "/x", 8443).as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(at("", "/", 443), None);
    }
}
