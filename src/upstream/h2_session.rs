//! The session with an HTTP/2 backend (`h2c://`, or `https://` with `upstream_tls.http2`): one
//! connection per backend carries every request as a stream of its own, so that least_conn and
//! p2c count streams (each request holds its in-flight guard as on HTTP/1.1) while the backend
//! sees one connection. Requests beyond the backend's SETTINGS_MAX_CONCURRENT_STREAMS wait in
//! h2 for a stream to end, within `timeouts.response`.
//!
//! How far a request got maps onto the same [`Progress`] as HTTP/1.1: a stream the backend
//! refused (REFUSED_STREAM) or left out of a GOAWAY was not processed (RFC 9113 §8.7), and its
//! body, when kept, goes elsewhere as unsent.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Uri};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use super::h2_liveness;
use super::request_body::{BodyError, RequestBody, Streamed};
use super::session::{Progress, SessionError, SessionRequest, Unanswered};
use super::{Backend, ConnectError, Outbound, UpstreamConn};
use crate::config::Timeouts;
use crate::http2::{SendError, is_connection_specific, send_body};

/// Streams alb lets a backend's connection carry before it waits for one to end, whatever the
/// backend allows; and the flow-control windows it offers for response bodies.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// The HTTP/2 connection alb keeps to one backend: a handle to open streams on it. The
/// connection itself runs in a task of its own (h2's), which ends when the backend closes it or
/// when the backend is dropped with its last handle.
///
/// Requests that find no connection share the one being opened (the cell makes the connect a
/// single flight), so a burst of requests to a new backend opens one connection, not one each.
#[derive(Default)]
pub struct H2Connection {
    live: Mutex<Generation>,
}

/// One connection's lifetime: set once connected, replaced by a new, empty one when it fails.
type Generation = Arc<OnceCell<SendRequest<Bytes>>>;

impl std::fmt::Debug for H2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H2Connection")
    }
}

impl H2Connection {
    /// The connection (opened if there is none), ready for one more stream within
    /// `timeouts.response`; with its generation, to [`Self::forget`] it should it fail.
    async fn ready(
        &self,
        backend: &Backend,
        timeouts: &Timeouts,
    ) -> Result<(SendRequest<Bytes>, Generation), SessionError> {
        let generation = self.current();
        let connecting = generation.get_or_try_init(|| connect(backend, timeouts));
        let handle = match connecting.await {
            Ok(handle) => handle.clone(),
            Err(e) => return Err(e.into()),
        };
        match tokio::time::timeout(timeouts.response, handle.ready()).await {
            Ok(Ok(ready)) => Ok((ready, generation)),
            Ok(Err(e)) => {
                // Closed or going away: the next request opens another.
                self.forget(&generation);
                Err(SessionError::Stream(e))
            }
            Err(_) => Err(SessionError::Timeout(timeouts.response)),
        }
    }

    fn current(&self) -> Generation {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lets the next request open a new connection, unless another request already did.
    fn forget(&self, generation: &Generation) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&live, generation) {
            *live = Generation::default();
        }
    }
}

async fn connect(
    backend: &Backend,
    timeouts: &Timeouts,
) -> Result<SendRequest<Bytes>, ConnectError> {
    let opening = UpstreamConn::open(backend.addr(), backend.tls(), timeouts.connect);
    let heard = Arc::new(AtomicU64::new(0));
    let stream = h2_liveness::heard(Box::pin(opening).await?.into_parts().0, heard.clone());
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // Until the backend's SETTINGS say how many streams it takes, one: a burst sent on a
        // new connection must not overrun a limit alb has not heard yet.
        .initial_max_send_streams(1);
    let handshake = builder.handshake::<_, Bytes>(stream);
    let (handle, connection) = match tokio::time::timeout(timeouts.connect, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(ConnectError::Http2(e)),
        Err(_) => return Err(ConnectError::Timeout(timeouts.connect)),
    };
    tokio::spawn(h2_liveness::drive(
        connection,
        heard,
        backend.url().to_owned(),
        timeouts.upstream_idle,
    ));
    Ok(handle)
}

/// The HTTP/2 request for a backend, built from the neutral one: Host becomes `:authority` (the
/// backend's own when the client sent none), connection-specific fields and the framing are left
/// out (DATA frames delimit the body), and `te: trailers` says alb relays trailers, which gRPC
/// servers require. `None` when the authority cannot be one in a URI.
fn h2_request(
    outbound: &Outbound,
    scheme: &str,
    backend_host: &HeaderValue,
) -> Option<Request<()>> {
    let authority = outbound.fields.get(header::HOST).unwrap_or(backend_host);
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority.as_bytes())
        .path_and_query(outbound.target())
        .build()
        .ok()?;
    let mut headers = HeaderMap::with_capacity(outbound.fields.len() + outbound.added.len() + 1);
    for (name, value) in outbound.fields() {
        if name == header::HOST || name == header::CONTENT_LENGTH || is_connection_specific(name) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let mut request = Request::new(());
    *request.method_mut() = outbound.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;
    Some(request)
}

/// One attempt on an HTTP/2 `backend`.
pub(super) async fn exchange_h2(
    backend: &Backend,
    request: SessionRequest<'_>,
    body: RequestBody,
    timeouts: &Timeouts,
) -> Result<http::Response<RecvStream>, Unanswered> {
    let scheme = if backend.tls().is_some() {
        "https"
    } else {
        "http"
    };
    let Some(head) = h2_request(request.outbound, scheme, backend.host_header()) else {
        return Err(Unanswered {
            error: SessionError::Framing("the request cannot be carried in HTTP/2"),
            progress: Progress::Final,
        });
    };
    let (mut sender, generation) = match backend.h2().ready(backend, timeouts).await {
        Ok(ready) => ready,
        Err(error) => {
            backend.request_recheck();
            return Err(Unanswered {
                error,
                progress: Progress::Unsent(body),
            });
        }
    };
    let end = matches!(body, RequestBody::Empty);
    let (response, send) = match sender.send_request(head, end) {
        Ok(pair) => pair,
        Err(e) => {
            backend.h2().forget(&generation);
            return Err(Unanswered {
                error: SessionError::Stream(e),
                progress: Progress::Unsent(body),
            });
        }
    };
    let kept = match &body {
        RequestBody::Empty => Some(RequestBody::Empty),
        RequestBody::Buffered(bytes) => Some(RequestBody::Buffered(bytes.clone())),
        RequestBody::Client(_) => None,
    };
    let upload = match body {
        RequestBody::Empty => None,
        RequestBody::Buffered(bytes) => {
            let mut send = send;
            // Kept bodies are small (`retry.max_body_buffer`): h2 holds what the window
            // does not let out yet.
            let _ = send.send_data(bytes, true);
            None
        }
        RequestBody::Client(mut streamed) => {
            streamed.keep_sent(usize::try_from(request.keep_body).unwrap_or(usize::MAX));
            Some(tokio::spawn(upload(streamed, send, timeouts.write)))
        }
    };
    let (mut upload, mut stopped) = (upload, None);
    let waiting = await_head(response, &mut upload, &mut stopped, timeouts.response);
    let failed = match waiting.await {
        Ok(response) => return Ok(response),
        Err(failed) => failed,
    };
    let (error, progress) = match failed {
        Failed::Client(e) => (SessionError::Client(e), Progress::Final),
        Failed::Late => (
            SessionError::Timeout(timeouts.response),
            Progress::NoAnswerInTime,
        ),
        Failed::Stream(e) => {
            let unprocessed =
                e.reason() == Some(Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
            if e.is_go_away() || e.is_io() {
                backend.h2().forget(&generation);
            }
            let again = match kept {
                Some(body) => Some(body),
                None if unprocessed => rewound(upload, stopped).await,
                None => None,
            };
            let progress = match again {
                Some(body) if unprocessed => Progress::Unsent(body),
                _ => Progress::NoAnswer,
            };
            (SessionError::Stream(e), progress)
        }
    };
    Err(Unanswered { error, progress })
}

/// A streamed body whose stream the backend turned away, from its first byte again, when all
/// that was sent of it was kept. The upload ends promptly then: its stream is reset.
async fn rewound(
    upload: Option<JoinHandle<Uploaded>>,
    stopped: Option<Box<Streamed>>,
) -> Option<RequestBody> {
    let body = match (stopped, upload) {
        (Some(body), _) => body,
        (None, Some(upload)) => match tokio::time::timeout(Duration::from_secs(1), upload).await {
            Ok(Ok(Uploaded::Stopped(body))) => body,
            _ => return None,
        },
        (None, None) => return None,
    };
    body.rewind().map(RequestBody::Client)
}

enum Failed {
    Client(BodyError),
    Late,
    Stream(h2::Error),
}

/// How an upload ended.
enum Uploaded {
    Done,
    ClientFailed(BodyError),
    /// The backend stopped the stream: the body, for a rewind.
    Stopped(Box<Streamed>),
}

/// Waits for the response head. **The response timeout starts when the upload ends**, as on
/// HTTP/1.1: a client streaming a long body (a client-streaming gRPC call) is not the backend
/// being slow. A client whose body fails ends the attempt as the client's doing.
async fn await_head(
    response: h2::client::ResponseFuture,
    upload: &mut Option<JoinHandle<Uploaded>>,
    stopped: &mut Option<Box<Streamed>>,
    limit: Duration,
) -> Result<http::Response<RecvStream>, Failed> {
    let mut response = pin!(response);
    let mut deadline = upload.is_none().then(|| Instant::now() + limit);
    loop {
        tokio::select! {
            head = &mut response => return head.map_err(Failed::Stream),
            done = poll_fn(|cx| match upload.as_mut() {
                Some(task) => Pin::new(task).poll(cx),
                None => std::task::Poll::Pending,
            }), if upload.is_some() => {
                *upload = None;
                match done {
                    Ok(Uploaded::ClientFailed(e)) => return Err(Failed::Client(e)),
                    // Stopped by the backend: its answer (or reset) follows on the response.
                    Ok(Uploaded::Stopped(body)) => *stopped = Some(body),
                    Ok(Uploaded::Done) | Err(_) => {}
                }
                deadline = Some(Instant::now() + limit);
            }
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => return Err(Failed::Late),
        }
    }
}

/// Sends a streamed client body on its stream, beside the response (a bidirectional gRPC call
/// needs both at once). A body the client breaks off resets the stream.
async fn upload(
    mut body: Box<Streamed>,
    mut send: SendStream<Bytes>,
    write_limit: Duration,
) -> Uploaded {
    match send_body(&mut send, Pin::new(&mut *body), write_limit).await {
        Ok(()) => Uploaded::Done,
        Err(SendError::Body(e)) => {
            send.send_reset(Reason::CANCEL);
            Uploaded::ClientFailed(e)
        }
        Err(SendError::Stalled(_)) => {
            send.send_reset(Reason::CANCEL);
            Uploaded::Done
        }
        // The backend ended the stream: its answer (or its reset) tells the rest.
        Err(SendError::Peer(_)) => Uploaded::Stopped(body),
    }
}
