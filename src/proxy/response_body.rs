//! The response body on its way to the client: a backend's body streamed through (one kind per
//! backend protocol), a tunnel's empty one, or a short answer alb makes itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::h1_body::UpstreamBody;
use super::h2_body::H2UpstreamBody;
use super::settlement::ResponseBodyError;
use super::tunnel::Tunnel;

/// The upstream body is boxed: it is large (connection, guard, upload) and the
/// response is moved several times on its way to the client; one allocation is cheaper than
/// copying it at every step.
#[derive(Debug)]
pub enum ResponseBody {
    Upstream(Box<UpstreamBody>),
    /// From an HTTP/2 backend.
    Http2(Box<H2UpstreamBody>),
    /// A `101`: no body; the connection becomes this tunnel once the head is written.
    Tunnel(Box<Tunnel>),
    /// A short answer alb makes itself (errors).
    Local(Full<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => body.poll(cx),
            ResponseBody::Http2(body) => body.poll(cx),
            ResponseBody::Tunnel(_) => Poll::Ready(None),
            ResponseBody::Local(body) => Pin::new(body).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(body) => body.is_end_stream(),
            ResponseBody::Http2(body) => body.is_end_stream(),
            ResponseBody::Tunnel(_) => true,
            ResponseBody::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(body) => body.size_hint(),
            ResponseBody::Http2(body) => body.size_hint(),
            ResponseBody::Tunnel(_) => SizeHint::with_exact(0),
            ResponseBody::Local(body) => body.size_hint(),
        }
    }
}
