//! The response on its way to the client, whoever made it and whichever protocol carries it:
//! status, the fields of its head, and its body. Each client-side writer turns it into its own
//! wire form; no writer looks into the body for fields.

use http::{HeaderMap, StatusCode};

use super::ResponseBody;
use crate::http1::RawFields;

/// A response for the client.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// An HTTP/1.1 backend's end-to-end fields, kept as spans of its head (passing them on is a
    /// copy, with no map built), written first.
    pub relayed: Option<RawFields>,
    /// Fields in a map: an HTTP/2 backend's, those of an answer alb makes itself, and what alb
    /// adds to a backend's (Set-Cookie, `x-alb-*`).
    pub headers: HeaderMap,
    pub body: ResponseBody,
}

impl Reply {
    pub fn new(status: StatusCode, body: ResponseBody) -> Reply {
        Reply {
            status,
            relayed: None,
            headers: HeaderMap::new(),
            body,
        }
    }
}
