//! One attempt of a request on one backend, in no protocol's terms: what is sent
//! ([`SessionRequest`]), what comes back ([`Answer`]), and, when it fails, why and how far it got.
//! One session type per backend protocol ([`super::h1_session`], [`super::h2_session`]) speaks it.
//!
//! **How far a request got is known in the sessions and only there.** A failed session reports it
//! as a [`Progress`]: never sent (the body comes back whole), sent without an answer (or without
//! one in time), or final. Retries are decided from that and nothing else.

use std::time::Duration;

use super::request_body::{BodyError, RequestBody};
use super::upload::Upload;
use super::{ConnectError, Outbound, QueueError, UpstreamConn};
use crate::http1::{ResponseHead, UpstreamError};

/// The request as every attempt sends it.
#[derive(Debug, Clone, Copy)]
pub struct SessionRequest<'a> {
    pub outbound: &'a Outbound,
    /// How much of a streamed body a session may keep to send it again when a backend turned
    /// the request away unprocessed (`retry.max_body_buffer`; HTTP/2 backends).
    pub keep_body: u64,
}

/// A backend's response head, with what its body will come through.
// The large variant is the common one (HTTP/1.1 backends): boxing it would cost an allocation
// per request to save a few hundred bytes of stack on the rarer one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Answer {
    Http1 {
        response: ResponseHead,
        /// The connection it came on, which carries the body.
        conn: UpstreamConn,
        /// The rest of the request body, when the backend answered before it was all sent.
        upload: Option<Upload>,
    },
    /// From an HTTP/2 backend: its head, and its body still to come on the stream.
    Http2(http::Response<h2::RecvStream>),
}

impl Answer {
    pub fn status(&self) -> http::StatusCode {
        match self {
            Answer::Http1 { response, .. } => response.status,
            Answer::Http2(response) => response.status(),
        }
    }
}

/// Why a session with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The backend is at its `max_connections` and its queue is full or the wait ran out.
    #[error("{0}")]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Broken(UpstreamError),
    /// An HTTP/2 backend's connection or stream failed; the error keeps its kind
    /// (REFUSED_STREAM, GOAWAY, flow control, I/O).
    #[error("HTTP/2: {0}")]
    Stream(#[source] h2::Error),
    #[error("no response head within {0:?}")]
    Timeout(Duration),
    /// A response head alb will not forward (ambiguous framing, a protocol switch it did not ask
    /// for).
    #[error("{0}")]
    Framing(&'static str),
    /// The client's body broke off, stalled or grew too large: the client's doing.
    #[error("{0}")]
    Client(#[from] BodyError),
}

/// How far a failed request got.
#[derive(Debug)]
pub enum Progress {
    /// Nothing reached the backend: it cannot have acted on the request. The body is whole.
    Unsent(RequestBody),
    /// Sent, in part or whole, and the connection ended (or carried what is not a response
    /// head) before a complete response head.
    NoAnswer,
    /// Sent, and no response head came within `timeouts.response`.
    NoAnswerInTime,
    /// Not to be sent again: the backend answered with what alb cannot forward, or the
    /// client's own body failed.
    Final,
}

/// A failed session: what went wrong and how far the request got.
#[derive(Debug)]
pub struct Unanswered {
    pub error: SessionError,
    pub progress: Progress,
}
