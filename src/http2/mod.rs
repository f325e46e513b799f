//! HTTP/2 as alb speaks it, on the `h2` crate: framing, HPACK, flow control and the protocol's
//! own defences (header lists bounded while they are decoded, CONTINUATION frames counted,
//! resets of unaccepted streams capped) are h2's. What lives here is the translation between
//! h2's messages and the forms the proxy forwards, and a body that hands flow-control credit
//! back only as the proxy consumes data, so that a connection's window bounds what a client
//! can make alb hold.
//!
//! Like `http1`, this module imports nothing above the codecs.

mod body;
pub mod grpc;
mod request;
mod response;

pub use body::RecvBody;
pub use request::{forwardable, is_connection_specific};
pub use response::{SendError, response_fields, send_body};
