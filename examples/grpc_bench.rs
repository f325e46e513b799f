//! The gRPC side of bench/run.sh's scenario S13: a cheap unary gRPC backend, the request h2load
//! sends, and a real gRPC client (tonic) that checks calls through a proxy end to end.
//!
//! ```text
//! grpc_bench server PORT
//! grpc_bench request FILE
//! grpc_bench check URL CALLS
//! ```
//!
//! `server` listens on 127.0.0.1:PORT and speaks HTTP/1.1 and HTTP/2 by prior knowledge (h2c) on
//! the same port (hyper's auto-detection of the preface). A `POST /alb.bench.Bench/Call` with
//! `content-type: application/grpc` is one unary call: its one length-prefixed message is decoded
//! as a `CallRequest` (prost), and the answer is `200`, `content-type: application/grpc`, one
//! length-prefixed `CallReply` (`message` = "hello " + the request's `name`, a [`REPLY_BYTES`]-byte
//! payload) and the trailers `grpc-status: 0`. A call that does not decode gets `grpc-status: 3`,
//! another path `grpc-status: 12` (both trailers-only, HTTP status 200, as gRPC servers answer).
//! Any other request (a health check, bench.py's readiness polls) gets `200 ok`;
//! `GET /__requests` answers the number of calls answered with `grpc-status: 0` so far, and
//! `GET /__stats` a JSON line with more counters. It allows [`MAX_STREAMS`] concurrent streams per
//! HTTP/2 connection, so that a proxy multiplexing all its calls on one connection per backend
//! is not held back by the backend's limit.
//!
//! `request` writes the body of one call, the 5-byte gRPC prefix (not compressed, big-endian
//! length) and the encoded `CallRequest`, for `h2load -d FILE`.
//!
//! `check` makes CALLS unary calls one after the other with tonic's client (HTTP/2 by prior
//! knowledge for `http://` URLs) and prints one JSON line: calls made, calls that came back with
//! `grpc-status: 0` and the expected reply, and the errors by kind (tonic turns a missing
//! `grpc-status` trailer or a non-zero one into an error). It exits 1 when any call failed.
//!
//! The server runs on a current-thread runtime: one core, so that bench.py can pin it with taskset
//! like the other backends. There is no protoc here: the messages derive `prost::Message` by hand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prost::Message;
use tokio::net::{TcpListener, TcpSocket};

/// The one method: `/package.Service/Method`.
const CALL_PATH: &str = "/alb.bench.Bench/Call";
/// The name the request carries, and its payload's size.
const REQUEST_NAME: &str = "alb-bench";
const REQUEST_BYTES: usize = 64;
/// The reply's payload: S1's answers are 100 B too.
const REPLY_BYTES: usize = 100;
/// Concurrent streams a client may open on one HTTP/2 connection (hyper's default is 200).
const MAX_STREAMS: u32 = 4096;
/// The server's listen backlog, as bench/nginx.conf gives nginx (`listen ... backlog=4096`).
const BACKLOG: u32 = 4096;
/// The largest request body the server reads.
const MAX_BODY: usize = 1 << 20;
/// The longest `check` waits for its connection and for each call.
const WAIT: Duration = Duration::from_secs(10);

const USAGE: &str =
    "usage: grpc_bench server PORT | grpc_bench request FILE | grpc_bench check URL CALLS";

#[derive(Clone, PartialEq, Message)]
pub struct CallRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CallReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

fn the_request() -> CallRequest {
    CallRequest {
        name: REQUEST_NAME.to_string(),
        payload: vec![b'x'; REQUEST_BYTES],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", port] => match port.parse() {
            Ok(port) => runtime.block_on(server(port)),
            Err(_) => usage(),
        },
        ["request", file] => request_file(file),
        ["check", url, calls] => match calls.parse() {
            Ok(calls) if calls > 0 => runtime.block_on(check(url.to_string(), calls)),
            _ => usage(),
        },
        _ => usage(),
    };
    std::process::exit(code);
}

fn usage() -> i32 {
    eprintln!("{USAGE}");
    2
}

/// One gRPC message on the wire: flag 0 (not compressed), 4-byte big-endian length, the bytes.
fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).expect("message under 4 GiB"));
    message.encode(&mut out).expect("BytesMut grows");
    out.freeze()
}

fn request_file(path: &str) -> i32 {
    match std::fs::write(path, frame(&the_request())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("grpc_bench request: {path}: {e}");
            1
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Server

#[derive(Default)]
struct Counters {
    /// Calls answered with grpc-status 0.
    calls: AtomicU64,
    /// Calls refused: a body that is not one CallRequest (3), another path (12).
    bad: AtomicU64,
    /// Requests that came over HTTP/2, and over HTTP/1.x (health checks, readiness polls).
    h2_requests: AtomicU64,
    h1_requests: AtomicU64,
    /// Connections accepted.
    connections: AtomicU64,
}

impl Counters {
    fn json(&self) -> String {
        format!(
            "{{\"calls\":{},\"bad\":{},\"h2_requests\":{},\"h1_requests\":{},\"connections\":{}}}",
            self.calls.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed),
            self.h2_requests.load(Ordering::Relaxed),
            self.h1_requests.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
        )
    }
}

/// A body of at most one data frame and then, optionally, trailers: what a unary gRPC answer
/// is (or a plain one, without trailers).
struct OneShot {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for OneShot {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

async fn server(port: u16) -> i32 {
    let listener = match listen(port) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("grpc_bench server: bind 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    let counters = Arc::new(Counters::default());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(MAX_STREAMS);
    let builder = Arc::new(builder);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let counters = counters.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let counters = counters.clone();
                        async move { Ok::<_, Infallible>(answer(req, &counters).await) }
                    });
                    // A connection that ends with an error (a client gone) needs no report.
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                eprintln!("grpc_bench server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds 127.0.0.1:PORT with a listen backlog of [`BACKLOG`].
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(BACKLOG)
}

async fn answer(req: Request<Incoming>, counters: &Counters) -> Response<OneShot> {
    if req.version() == http::Version::HTTP_2 {
        counters.h2_requests.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.h1_requests.fetch_add(1, Ordering::Relaxed);
    }
    let grpc = req.method() == Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        let body = match req.uri().path() {
            "/__requests" => format!("{}\n", counters.calls.load(Ordering::Relaxed)),
            "/__stats" => format!("{}\n", counters.json()),
            _ => "ok".to_string(),
        };
        // Read (and drop) whatever body came, so that an HTTP/1.1 connection stays usable.
        let _ = http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await;
        let mut response = Response::new(OneShot {
            data: Some(Bytes::from(body)),
            trailers: None,
        });
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        return response;
    }
    if req.uri().path() != CALL_PATH {
        counters.bad.fetch_add(1, Ordering::Relaxed);
        return trailers_only(12, "unknown method");
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            counters.bad.fetch_add(1, Ordering::Relaxed);
            return trailers_only(3, "request body unreadable or too large");
        }
    };
    let Some(request) = decode_one(&body) else {
        counters.bad.fetch_add(1, Ordering::Relaxed);
        return trailers_only(3, "not one CallRequest message");
    };
    let reply = CallReply {
        message: format!("hello {}", request.name),
        payload: vec![b'y'; REPLY_BYTES],
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut response = Response::new(OneShot {
        data: Some(frame(&reply)),
        trailers: Some(trailers),
    });
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    counters.calls.fetch_add(1, Ordering::Relaxed);
    response
}

/// The body's one length-prefixed, uncompressed message, decoded; None for anything else.
fn decode_one(body: &[u8]) -> Option<CallRequest> {
    let (head, message) = body.split_at_checked(5)?;
    let len = u32::from_be_bytes(head[1..5].try_into().ok()?) as usize;
    if head[0] != 0 || message.len() != len {
        return None;
    }
    CallRequest::decode(message).ok()
}

/// A gRPC error as servers send it: HTTP 200 and the status in the headers, no body.
fn trailers_only(code: u8, message: &'static str) -> Response<OneShot> {
    let mut response = Response::new(OneShot {
        data: None,
        trailers: None,
    });
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    response
}

// ------------------------------------------------------------------------------------------------
// Client

async fn check(url: String, calls: u64) -> i32 {
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    let mut ok = 0u64;
    let channel = match tonic::transport::Channel::from_shared(url.clone()) {
        Ok(endpoint) => endpoint.connect_timeout(WAIT).timeout(WAIT).connect().await,
        Err(e) => {
            eprintln!("grpc_bench check: {url}: {e}");
            return 2;
        }
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => {
            println!(
                "{{\"calls\":{calls},\"ok\":0,\"errors\":{{\"connect\":{calls}}},\"first_error\":{}}}",
                json_string(&format!("{e:?}"))
            );
            return 1;
        }
    };
    let mut client = tonic::client::Grpc::new(channel);
    let mut first_error = None;
    for _ in 0..calls {
        let result = async {
            client
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            client
                .unary::<CallRequest, CallReply, _>(
                    tonic::Request::new(the_request()),
                    http::uri::PathAndQuery::from_static(CALL_PATH),
                    tonic_prost::ProstCodec::default(),
                )
                .await
        }
        .await;
        let kind = match result {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.message == format!("hello {REQUEST_NAME}")
                    && reply.payload.len() == REPLY_BYTES
                {
                    ok += 1;
                    continue;
                }
                first_error.get_or_insert_with(|| format!("unexpected reply {reply:?}"));
                "unexpected reply".to_string()
            }
            Err(status) => {
                first_error.get_or_insert_with(|| format!("{status:?}"));
                format!("grpc-status {:?}", status.code())
            }
        };
        *errors.entry(kind).or_default() += 1;
    }
    let errors = errors
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_string(k)))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"calls\":{calls},\"ok\":{ok},\"errors\":{{{errors}}},\"first_error\":{}}}",
        first_error.map_or("null".to_string(), |e| json_string(&e))
    );
    if ok == calls { 0 } else { 1 }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
