//! gRPC on both sides of alb for the grpc tests: a tonic server without codegen (messages derived
//! by hand, one service `test.Echo` dispatched on the path, served by hyper's HTTP/2 server so
//! that a test can cut every connection of a backend at once), tonic clients, and a raw `h2`
//! client for checking alb's own answers byte for byte.
//!
//! Every backend names itself in its replies (`backend` field), counts the calls it served per
//! TCP connection, and records what it saw of each call (`:authority`, Host, headers).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http::HeaderMap;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic::codegen::{BoxFuture, BoxStream};
use tonic::server::{
    ClientStreamingService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message of the echo service, both ways.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub text: String,
    /// A sequence number, a count, or (for `Slow`) milliseconds to sleep.
    #[prost(uint32, tag = "2")]
    pub n: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub blob: Vec<u8>,
    /// Which backend answered (set by the server).
    #[prost(string, tag = "4")]
    pub backend: String,
}

/// `Sum`'s answer: what the server read of a client stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Total {
    #[prost(uint32, tag = "1")]
    pub count: u32,
    #[prost(uint64, tag = "2")]
    pub sum: u64,
    /// Every `n` in the order received, so order is checked too.
    #[prost(uint32, repeated, tag = "3")]
    pub order: Vec<u32>,
    #[prost(string, tag = "4")]
    pub backend: String,
}

/// Message size both sides accept (tonic's default is 4 MiB, less than a 4 MiB message plus its
/// framing).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The authority tonic clients here put in `:authority` (their `origin`): a name, not the
/// balancer's address, so that a backend seeing it proves it was passed through.
pub const AUTHORITY: &str = "grpc.example.test:7443";

/// The metadata a failing handler attaches to its status (sent in trailers).
pub const FAIL_DETAIL_KEY: &str = "x-fail-detail";
pub const FAIL_DETAIL: &str = "the-detail";
/// The failing handlers' status message: non-ASCII and `%`, so it travels percent-encoded.
pub const FAIL_MESSAGE: &str = "no such thing: caf\u{e9} 100%";

/// What a backend saw of one call.
#[derive(Debug, Clone)]
pub struct SeenCall {
    pub path: String,
    /// The request URI's authority (HTTP/2 `:authority`).
    pub authority: Option<String>,
    pub headers: HeaderMap,
    /// Which of the backend's TCP connections carried it (0, 1, ... in accept order).
    pub connection: u64,
}

pub struct BackendState {
    pub name: String,
    calls: AtomicU64,
    connections: AtomicU64,
    seen: Mutex<Vec<SeenCall>>,
    /// `Slow` handlers dropped before they finished (their caller, or alb, gave up).
    cancelled: watch::Sender<u64>,
}

impl BackendState {
    fn record(&self, path: &str, req: &http::Request<Incoming>, connection: u64) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(SeenCall {
            path: path.to_string(),
            authority: req.uri().authority().map(|a| a.to_string()),
            headers: req.headers().clone(),
            connection,
        });
    }
}

/// A gRPC backend (h2c, prior knowledge) on 127.0.0.1, port 0.
///
/// Methods of `test.Echo`: `Unary` echoes its message; `Fail` answers with status NOT_FOUND
/// (trailers-only); `FailLate` streams two messages, then ends with NOT_FOUND in trailers;
/// `Count` streams `n` messages numbered 0..n; `Sum` reads a client stream and answers with its
/// count, sum and order; `Chat` answers every message of a client stream as it arrives; `Slow`
/// sleeps `n` ms before echoing; `Stall` streams `n` messages, then waits forever.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
    task: Option<JoinHandle<()>>,
}

impl GrpcBackend {
    pub async fn start(name: &str) -> GrpcBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gRPC backend");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            name: name.to_string(),
            calls: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            cancelled: watch::Sender::new(0),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        GrpcBackend {
            addr,
            state,
            task: Some(task),
        }
    }

    /// The backend's URL in alb's config: HTTP/2 by prior knowledge.
    pub fn url(&self) -> String {
        format!("h2c://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// gRPC calls received (health checks not counted).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<SeenCall> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Calls per TCP connection that carried any call.
    pub fn calls_per_connection(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for call in self.state.seen.lock().unwrap().iter() {
            *counts.entry(call.connection).or_insert(0) += 1;
        }
        counts
    }

    pub fn cancelled(&self) -> watch::Receiver<u64> {
        self.state.cancelled.subscribe()
    }

    /// A crash: the listener and every open connection close at once (no GOAWAY, no trailers),
    /// and nothing listens on the port any more. Returns once all of it is dropped.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until aborted; the connections live in a `JoinSet` owned by this task,
/// so aborting it drops (closes) every one of them.
async fn serve(listener: TcpListener, state: Arc<BackendState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let id = state.connections.fetch_add(1, Ordering::SeqCst);
                let server = EchoServer { state: state.clone(), connection: id };
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.route(req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[derive(Clone)]
struct EchoServer {
    state: Arc<BackendState>,
    connection: u64,
}

fn grpc<E, D>() -> tonic::server::Grpc<ProstCodec<E, D>>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    tonic::server::Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

impl EchoServer {
    async fn route(self, req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
        let path = req.uri().path().to_string();
        if path == "/health" {
            return http::Response::new(tonic::body::Body::empty());
        }
        self.state.record(&path, &req, self.connection);
        let state = self.state.clone();
        match path.as_str() {
            "/test.Echo/Unary" => grpc::<Echo, Echo>().unary(H::new(state, echo), req).await,
            "/test.Echo/Fail" => grpc::<Echo, Echo>().unary(H::new(state, fail), req).await,
            "/test.Echo/Slow" => grpc::<Echo, Echo>().unary(H::new(state, slow), req).await,
            "/test.Echo/Count" => {
                grpc::<Echo, Echo>()
                    .server_streaming(H::new(state, count), req)
                    .await
            }
            "/test.Echo/FailLate" => {
                grpc::<Echo, Echo>()
                    .server_streaming(H::new(state, fail_late), req)
                    .await
            }
            "/test.Echo/Stall" => {
                grpc::<Echo, Echo>()
                    .server_streaming(H::new(state, stall), req)
                    .await
            }
            "/test.Echo/Sum" => {
                grpc::<Total, Echo>()
                    .client_streaming(H::new(state, sum), req)
                    .await
            }
            "/test.Echo/Chat" => {
                grpc::<Echo, Echo>()
                    .streaming(H::new(state, chat), req)
                    .await
            }
            _ => Status::unimplemented(format!("no method {path}")).into_http(),
        }
    }
}

fn failure() -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(FAIL_DETAIL_KEY, FAIL_DETAIL.parse().unwrap());
    Status::with_metadata(tonic::Code::NotFound, FAIL_MESSAGE, metadata)
}

fn fail(_: Arc<BackendState>, _: Request<Echo>) -> BoxFuture<Response<Echo>, Status> {
    Box::pin(async { Err(failure()) })
}

fn named(state: &BackendState, mut message: Echo) -> Echo {
    message.backend = state.name.clone();
    message
}

fn echo(state: Arc<BackendState>, r: Request<Echo>) -> BoxFuture<Response<Echo>, Status> {
    let reply = named(&state, r.into_inner());
    let name = state.name.clone();
    Box::pin(async move {
        let mut response = Response::new(reply);
        response
            .metadata_mut()
            .insert("x-backend", name.parse().unwrap());
        Ok(response)
    })
}

/// Marks a `Slow` call cancelled if dropped before it finished.
struct CancelGuard(Option<Arc<BackendState>>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.cancelled.send_modify(|n| *n += 1);
        }
    }
}

fn slow(state: Arc<BackendState>, r: Request<Echo>) -> BoxFuture<Response<Echo>, Status> {
    Box::pin(async move {
        let message = r.into_inner();
        let mut guard = CancelGuard(Some(state.clone()));
        tokio::time::sleep(Duration::from_millis(u64::from(message.n))).await;
        guard.0 = None;
        Ok(Response::new(named(&state, message)))
    })
}

fn count(
    state: Arc<BackendState>,
    r: Request<Echo>,
) -> BoxFuture<Response<BoxStream<Echo>>, Status> {
    let name = state.name.clone();
    let n = r.into_inner().n;
    Box::pin(async move {
        let messages = stream::iter((0..n).map(move |i| {
            Ok(Echo {
                text: format!("message {i}"),
                n: i,
                blob: Vec::new(),
                backend: name.clone(),
            })
        }));
        Ok(Response::new(Box::pin(messages) as BoxStream<Echo>))
    })
}

fn fail_late(
    state: Arc<BackendState>,
    _: Request<Echo>,
) -> BoxFuture<Response<BoxStream<Echo>>, Status> {
    let name = state.name.clone();
    Box::pin(async move {
        let messages = stream::iter([
            Ok(Echo {
                n: 0,
                backend: name.clone(),
                ..Echo::default()
            }),
            Ok(Echo {
                n: 1,
                backend: name,
                ..Echo::default()
            }),
            Err(failure()),
        ]);
        Ok(Response::new(Box::pin(messages) as BoxStream<Echo>))
    })
}

fn stall(
    state: Arc<BackendState>,
    r: Request<Echo>,
) -> BoxFuture<Response<BoxStream<Echo>>, Status> {
    let name = state.name.clone();
    let n = r.into_inner().n;
    Box::pin(async move {
        let first = stream::iter((0..n).map(move |i| {
            Ok(Echo {
                n: i,
                backend: name.clone(),
                ..Echo::default()
            })
        }));
        let messages = futures_util::StreamExt::chain(first, stream::pending());
        Ok(Response::new(Box::pin(messages) as BoxStream<Echo>))
    })
}

fn sum(
    state: Arc<BackendState>,
    r: Request<Streaming<Echo>>,
) -> BoxFuture<Response<Total>, Status> {
    let name = state.name.clone();
    Box::pin(async move {
        let mut incoming = r.into_inner();
        let mut total = Total {
            backend: name,
            ..Total::default()
        };
        while let Some(message) = incoming.message().await? {
            total.count += 1;
            total.sum += u64::from(message.n);
            total.order.push(message.n);
        }
        Ok(Response::new(total))
    })
}

fn chat(
    state: Arc<BackendState>,
    r: Request<Streaming<Echo>>,
) -> BoxFuture<Response<BoxStream<Echo>>, Status> {
    Box::pin(async move {
        let incoming = r.into_inner();
        let replies = stream::unfold(incoming, move |mut incoming| {
            let state = state.clone();
            async move {
                match incoming.message().await {
                    Ok(Some(message)) => Some((Ok(named(&state, message)), incoming)),
                    Ok(None) => None,
                    Err(status) => Some((Err(status), incoming)),
                }
            }
        });
        Ok(Response::new(Box::pin(replies) as BoxStream<Echo>))
    })
}

// tonic's service traits (what tonic-build would generate per method): a handler function and
// the backend state it is called with.

struct H<R, A> {
    state: Arc<BackendState>,
    f: fn(Arc<BackendState>, R) -> BoxFuture<A, Status>,
}

impl<R, A> H<R, A> {
    fn new(state: Arc<BackendState>, f: fn(Arc<BackendState>, R) -> BoxFuture<A, Status>) -> Self {
        H { state, f }
    }

    fn run(&self, request: R) -> BoxFuture<A, Status> {
        (self.f)(self.state.clone(), request)
    }
}

impl<Q, A> UnaryService<Q> for H<Request<Q>, Response<A>> {
    type Response = A;
    type Future = BoxFuture<Response<A>, Status>;
    fn call(&mut self, request: Request<Q>) -> Self::Future {
        self.run(request)
    }
}

// Generic over the stream type (not `BoxStream<A>` itself): rustc checks the `Send` of the
// calling future with the stream's `dyn` lifetime erased, which a `'static`-only impl fails.
impl<Q, S, A> ServerStreamingService<Q> for H<Request<Q>, Response<S>>
where
    S: futures_core::Stream<Item = Result<A, Status>>,
{
    type Response = A;
    type ResponseStream = S;
    type Future = BoxFuture<Response<S>, Status>;
    fn call(&mut self, request: Request<Q>) -> Self::Future {
        self.run(request)
    }
}

impl<Q, A> ClientStreamingService<Q> for H<Request<Streaming<Q>>, Response<A>> {
    type Response = A;
    type Future = BoxFuture<Response<A>, Status>;
    fn call(&mut self, request: Request<Streaming<Q>>) -> Self::Future {
        self.run(request)
    }
}

impl<Q, S, A> StreamingService<Q> for H<Request<Streaming<Q>>, Response<S>>
where
    S: futures_core::Stream<Item = Result<A, Status>>,
{
    type Response = A;
    type ResponseStream = S;
    type Future = BoxFuture<Response<S>, Status>;
    fn call(&mut self, request: Request<Streaming<Q>>) -> Self::Future {
        self.run(request)
    }
}

// Clients.

/// A tonic client on one HTTP/2 connection (one `Channel`, one endpoint) to `addr`, sending
/// [`AUTHORITY`] as `:authority`.
pub struct EchoClient {
    pub grpc: tonic::client::Grpc<Channel>,
}

impl Clone for EchoClient {
    fn clone(&self) -> Self {
        EchoClient {
            grpc: self.grpc.clone(),
        }
    }
}

impl EchoClient {
    pub async fn connect(addr: SocketAddr) -> EchoClient {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .origin(format!("http://{AUTHORITY}").parse().unwrap())
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the balancer");
        EchoClient {
            grpc: tonic::client::Grpc::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))
    }

    pub async fn unary(&mut self, request: Request<Echo>) -> Result<Response<Echo>, Status> {
        self.call_unary("/test.Echo/Unary", request).await
    }

    pub async fn call_unary(
        &mut self,
        path: &'static str,
        request: Request<Echo>,
    ) -> Result<Response<Echo>, Status> {
        self.ready().await?;
        self.grpc
            .unary(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
    }

    pub async fn server_streaming(
        &mut self,
        path: &'static str,
        request: Request<Echo>,
    ) -> Result<Response<Streaming<Echo>>, Status> {
        self.ready().await?;
        self.grpc
            .server_streaming(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
    }

    pub async fn sum<S>(&mut self, request: Request<S>) -> Result<Response<Total>, Status>
    where
        S: futures_core::Stream<Item = Echo> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .client_streaming(
                request,
                PathAndQuery::from_static("/test.Echo/Sum"),
                ProstCodec::<Echo, Total>::default(),
            )
            .await
    }

    pub async fn chat<S>(
        &mut self,
        request: Request<S>,
    ) -> Result<Response<Streaming<Echo>>, Status>
    where
        S: futures_core::Stream<Item = Echo> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .streaming(
                request,
                PathAndQuery::from_static("/test.Echo/Chat"),
                ProstCodec::<Echo, Echo>::default(),
            )
            .await
    }
}

/// A stream of what is sent on `rx`, ending when every sender is gone.
pub fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> Pin<Box<dyn futures_core::Stream<Item = T> + Send>> {
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// One gRPC length-prefixed message (uncompressed).
pub fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.put_slice(&body);
    frame.freeze()
}

/// An HTTP/2 backend that refuses every gRPC stream with RST_STREAM(REFUSED_STREAM) (RFC 9113
/// §8.7: not processed, safe to send elsewhere) and answers health checks with 200.
pub struct RefusingBackend {
    pub addr: SocketAddr,
    refused: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RefusingBackend {
    pub async fn start() -> RefusingBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind refusing backend");
        let addr = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(refuse(listener, refused.clone()));
        RefusingBackend {
            addr,
            refused,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("h2c://{}", self.addr)
    }

    /// Streams refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for RefusingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refuse(listener: TcpListener, refused: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let refused = refused.clone();
                connections.spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        if request.uri().path() == "/health" {
                            let _ = respond.send_response(http::Response::new(()), true);
                        } else {
                            refused.fetch_add(1, Ordering::SeqCst);
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Reads a whole gRPC response body of one message and trailers: the message and trailers.
pub async fn read_grpc_body(mut body: h2::RecvStream) -> (Option<Echo>, Option<HeaderMap>) {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response data");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("response trailers");
    let message = (bytes.len() >= 5).then(|| {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 5 + len, "one whole message");
        <Echo as prost::Message>::decode(&bytes[5..]).expect("an Echo")
    });
    (message, trailers)
}
