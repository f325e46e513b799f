//! What alb sends a backend for a client's request head, reached through one function so that a
//! change to its API is adapted here alone: the same header policy and the same encoder as a
//! proxied request ([`alb::proxy::outbound_for`], then the HTTP/1.1 head of its `Outbound`).

use std::net::SocketAddr;

use alb::http1::BodyFraming;
use alb::proxy::{ClientInfo, Scheme, outbound_for};
use http::HeaderValue;
use http::request::Parts;

/// The head alb writes to a backend whose authority is `backend_host`, for a request of `parts`
/// from a client whose address reads `client_ip`, with the body framed by `framing`.
pub fn request_head(
    parts: &Parts,
    client_ip: &HeaderValue,
    scheme: Scheme,
    framing: BodyFraming,
    backend_host: &HeaderValue,
) -> Vec<u8> {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    let (copy, ()) = request.into_parts();
    let client = ClientInfo {
        addr: SocketAddr::from(([192, 0, 2, 1], 40000)),
        ip_header: client_ip.clone(),
        scheme,
        tls: None,
    };
    outbound_for(copy, &client, framing)
        .http1_head()
        .for_backend(backend_host)
        .to_vec()
}
