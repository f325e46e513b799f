//! alb's request-head encoder, reached through one function so that a change to its API is
//! adapted here alone.

use alb::http1::{BodyFraming, Scheme, encode_request_head};
use http::HeaderValue;
use http::request::Parts;

/// The head alb writes to a backend whose authority is `backend_host`, for a request of `parts`
/// from `client_ip`, with the body framed by `framing`.
pub fn request_head(
    parts: &Parts,
    client_ip: &[u8],
    scheme: Scheme,
    framing: BodyFraming,
    upgrade: Option<&HeaderValue>,
    backend_host: &HeaderValue,
) -> Vec<u8> {
    encode_request_head(parts, client_ip, scheme, framing, upgrade)
        .for_backend(backend_host)
        .to_vec()
}
