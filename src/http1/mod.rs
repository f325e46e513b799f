//! The HTTP/1.1 that alb speaks to its backends: request heads written in one piece, response
//! heads parsed in place (header values share the bytes they were read into), and response bodies
//! decoded by their framing (RFC 9112 §6).
//!
//! Both hops are ours: client requests are parsed here and their responses encoded here, backend
//! requests encoded and responses parsed here. A proxy speaks a narrow dialect of HTTP/1.1 (one
//! request at a time per upstream connection; an upgraded one leaves HTTP for a byte tunnel), and owning it lets one task drive a
//! whole exchange: no connection tasks, no channels between them, buffers only while a request is
//! in flight. hyper's client and server pair cost about twice as many instructions per request.
//!
//! Everything here is strict: a response that could be read two ways (conflicting lengths, a
//! transfer coding other than chunked, bare LF in chunk framing) is an error, never a guess.

mod body;
mod chunked;
mod client_body;
mod client_io;
mod client_request;
mod client_response;
mod forwarding;
mod io;
mod request_head;
mod response_head;
mod target;
mod upgrade;

pub use body::{BodyDecoder, Decoded};
pub use chunked::{CHUNK_END, LAST_CHUNK, put_chunk_head};
pub use client_body::{ClientBody, ClientBodyError, ReadSide, ReadSlot};
pub use client_io::{
    ClientReadHalf, ClientStream, ClientWriteHalf, NotAPair, Prefixed, TlsClientStream,
};
pub use client_request::{
    ClientRequest, RequestRules, Underscores, is_unusual_name, keeps_field, parse_client_request,
};
pub use client_response::{BodyWrite, ResponsePlan, date_value, encode_response_head};
pub use forwarding::{is_alb_field, is_forwarding};
pub use io::{PartialWrite, poll_fill, poll_fill_from, poll_write_within, write_all_within};
pub use request_head::{BodyFraming, RequestHead, encode_request_head};
pub use response_head::{Framing, MAX_HEAD_BYTES, RawFields, ResponseHead, parse_response_head};
pub use target::is_authority;
pub use upgrade::requested_upgrade;

/// Writes one `name: value` field line.
fn put_field(out: &mut bytes::BytesMut, name: &[u8], value: &[u8]) {
    use bytes::BufMut;
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// A Content-Length value: digits only (no sign, no spaces inside), at most 19 of them, so that
/// it cannot overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Why a client's request head was refused, and the status that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub status: http::StatusCode,
    pub reason: &'static str,
}

/// A request refused as malformed: 400.
fn bad(reason: &'static str) -> Rejected {
    Rejected {
        status: http::StatusCode::BAD_REQUEST,
        reason,
    }
}

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
