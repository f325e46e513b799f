//! The HTTP/1.1 that alb speaks to its backends: request heads written in one piece, response
//! heads parsed in place (header values share the bytes they were read into), and response bodies
//! decoded by their framing (RFC 9112 §6).
//!
//! Clients are served by hyper; the backend side is ours because a proxy's upstream hop is a
//! narrow, trusted-but-checked dialect: one request at a time per connection, no upgrades, and the
//! connection driven by the request that holds it. hyper's client adds a connection task and two
//! channels per exchange, which was most of alb's cost per request.
//!
//! Everything here is strict: a response that could be read two ways (conflicting lengths, a
//! transfer coding other than chunked, bare LF in chunk framing) is an error, never a guess.

mod body;
mod chunked;
mod request_head;
mod response_head;

pub use body::{BodyDecoder, Decoded};
pub use request_head::{BodyFraming, RequestHead, encode_request_head};
pub use response_head::{Framing, MAX_HEAD_BYTES, ResponseHead, parse_response_head};

/// What can be wrong with what a backend sent.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("invalid response head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("invalid header field in the response")]
    Field,
    #[error("{0}")]
    Framing(&'static str),
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    #[error("connection closed before the end of the response body")]
    BodyCut,
}

/// Why an exchange with a backend broke.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("connection closed before a response")]
    Closed,
}
