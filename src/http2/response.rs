//! A response on its way out on an HTTP/2 stream: its fields as h2 takes them, and its body
//! sent as the peer's window allows, within the write deadline.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, SizeHint};
use http_body_util::BodyExt;

use super::request::{is_connection_specific, retain_fields};
use crate::http1::{RawFields, date_value};

/// The fields of a response for an HTTP/2 peer: the backend's (`passed`, as they came) then
/// those alb set, with connection-specific ones left out (they have no meaning on a stream,
/// and h2 would refuse the whole response), names lowercased, and Content-Length written from
/// what the body is known to hold.
pub fn response_fields(
    status: StatusCode,
    headers: HeaderMap,
    passed: Option<&RawFields>,
    size: SizeHint,
    head_request: bool,
) -> HeaderMap {
    let mut declared = None;
    let mut fields = match passed {
        // Fields already in a map (an HTTP/2 backend's, alb's own): kept as they are.
        None => {
            let mut fields = headers;
            if let Some(length) = fields.remove(header::CONTENT_LENGTH) {
                declared = length.to_str().ok().and_then(|v| v.parse().ok());
            }
            if fields.keys().any(is_connection_specific) {
                fields = without_connection_fields(fields);
            }
            return finish(fields, status, declared, size, head_request);
        }
        Some(_) => HeaderMap::with_capacity(headers.len() + 8),
    };
    if let Some(passed) = passed {
        declared = passed.content_length();
        for (name, value) in passed.iter() {
            let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            else {
                continue;
            };
            if !is_connection_specific(&name) {
                fields.append(name, value);
            }
        }
    }
    for (name, value) in &headers {
        if name == header::CONTENT_LENGTH {
            declared = declared.or_else(|| value.to_str().ok()?.parse().ok());
        } else if !is_connection_specific(name) {
            fields.append(name.clone(), value.clone());
        }
    }
    finish(fields, status, declared, size, head_request)
}

fn without_connection_fields(fields: HeaderMap) -> HeaderMap {
    let kept = retain_fields(fields, |name| {
        Ok::<bool, std::convert::Infallible>(!is_connection_specific(name))
    });
    match kept {
        Ok(kept) => kept,
        Err(never) => match never {},
    }
}

/// Content-Length from what the body is known to hold, and Date when the fields have none.
fn finish(
    mut fields: HeaderMap,
    status: StatusCode,
    declared: Option<u64>,
    size: SizeHint,
    head_request: bool,
) -> HeaderMap {
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;
    let length = if head_request || status == StatusCode::NOT_MODIFIED {
        declared
    } else {
        declared.or(size.exact())
    };
    if let Some(n) = length.filter(|_| !bodiless) {
        fields.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if !fields.contains_key(header::DATE) {
        fields.insert(header::DATE, date_value());
    }
    fields
}

/// Why a body did not reach the peer whole.
#[derive(Debug, thiserror::Error)]
pub enum SendError<E> {
    /// The body's source failed (the backend broke off): the stream must end in error.
    #[error("response body failed: {0}")]
    Body(E),
    /// The peer reset the stream or the connection went away.
    #[error("peer stopped the stream: {0}")]
    Peer(#[source] h2::Error),
    /// The peer gave no window for this long: a reader that does not read.
    #[error("peer opened no window for {0:?}")]
    Stalled(Duration),
}

/// Sends `body` on `send` to its end (trailers included), each piece as the peer's window
/// opens. **Every wait for window has the write deadline**: a peer that stops reading loses
/// this stream after `write_limit`, and holds at most the stream's window meanwhile.
pub async fn send_body<B>(
    send: &mut h2::SendStream<Bytes>,
    mut body: Pin<&mut B>,
    write_limit: Duration,
) -> Result<(), SendError<B::Error>>
where
    B: Body<Data = Bytes>,
{
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            reset = poll_fn(|cx| send.poll_reset(cx)) => {
                return Err(SendError::Peer(match reset {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                }));
            }
        };
        let frame = match frame {
            None => {
                return send.send_data(Bytes::new(), true).map_err(SendError::Peer);
            }
            Some(Err(e)) => return Err(SendError::Body(e)),
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                // The last piece carries END_STREAM itself, rather than an empty frame after it.
                let last = body.is_end_stream();
                send_data(send, data, last, write_limit).await?;
                if last {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let trailers = trailers
                        .into_iter()
                        .filter_map(|(n, v)| Some((n?, v)))
                        .filter(|(n, _)| !is_connection_specific(n))
                        .collect();
                    return send.send_trailers(trailers).map_err(SendError::Peer);
                }
            }
        }
    }
}

async fn send_data<E>(
    send: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    last: bool,
    write_limit: Duration,
) -> Result<(), SendError<E>> {
    if data.is_empty() {
        return send.send_data(data, last).map_err(SendError::Peer);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = tokio::time::timeout(write_limit, poll_fn(|cx| send.poll_capacity(cx)));
        let n = match granted.await {
            Err(_) => return Err(SendError::Stalled(write_limit)),
            Ok(None) => return Err(SendError::Peer(h2::Error::from(h2::Reason::CANCEL))),
            Ok(Some(Err(e))) => return Err(SendError::Peer(e)),
            Ok(Some(Ok(n))) => n,
        };
        if n == 0 {
            continue;
        }
        let piece = data.split_to(n.min(data.len()));
        send.send_data(piece, last && data.is_empty())
            .map_err(SendError::Peer)?;
    }
    Ok(())
}
