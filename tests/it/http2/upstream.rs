//! HTTP/2 to backends (`h2c://`), against real HTTP/2 servers made with the h2 crate: one
//! multiplexed connection per backend, streams counted in flight, the backend's stream limit
//! respected, REFUSED_STREAM taken as "not processed" (retried whatever the method), trailers
//! relayed, and health checks spoken in HTTP/2.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{TestBackend, TestBalancer, full, wait_until};
use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Paths of test requests; everything else (the health checks' `/`) is not counted.
const REQ: &str = "/req";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Answer,
    /// Resets every test request with REFUSED_STREAM before reading it.
    Refuse,
}

#[derive(Default)]
struct Record {
    /// Test requests answered, with their body lengths.
    bodies: Mutex<Vec<usize>>,
    refused: AtomicU64,
    /// Connections that carried a test request.
    connections: Mutex<HashSet<usize>>,
    open_streams: AtomicUsize,
    most_streams: AtomicUsize,
}

/// An HTTP/2 (h2c) backend: answers `<name> <body length>` with a trailer naming itself, after
/// `delay`.
struct H2Backend {
    addr: SocketAddr,
    record: Arc<Record>,
    task: JoinHandle<()>,
}

impl H2Backend {
    async fn start(name: &'static str, mode: Mode, delay: Duration, streams: u32) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Record::default());
        let shared = record.clone();
        let task = tokio::spawn(async move {
            let mut next_id = 0;
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                next_id += 1;
                let record = shared.clone();
                tokio::spawn(serve(tcp, next_id, name, mode, delay, streams, record));
            }
        });
        H2Backend { addr, record, task }
    }

    fn url(&self) -> String {
        format!("h2c://{}", self.addr)
    }

    fn answered(&self) -> usize {
        self.record.bodies.lock().unwrap().len()
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    tcp: TcpStream,
    id: usize,
    name: &'static str,
    mode: Mode,
    delay: Duration,
    streams: u32,
    record: Arc<Record>,
) {
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(streams);
    let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = conn.accept().await {
        let record = record.clone();
        tokio::spawn(async move {
            let test = request.uri().path().starts_with(REQ);
            if test && mode == Mode::Refuse {
                record.refused.fetch_add(1, Ordering::Relaxed);
                respond.send_reset(Reason::REFUSED_STREAM);
                return;
            }
            if test {
                record.connections.lock().unwrap().insert(id);
                let open = record.open_streams.fetch_add(1, Ordering::SeqCst) + 1;
                record.most_streams.fetch_max(open, Ordering::SeqCst);
            }
            let mut body = request.into_body();
            let mut length = 0;
            while let Some(Ok(data)) = body.data().await {
                length += data.len();
                let _ = body.flow_control().release_capacity(data.len());
            }
            tokio::time::sleep(delay).await;
            if test {
                record.open_streams.fetch_sub(1, Ordering::SeqCst);
                record.bodies.lock().unwrap().push(length);
            }
            let response = Response::builder()
                .status(200)
                .header("x-backend", name)
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(response, false) else {
                return;
            };
            let _ = send.send_data(Bytes::from(format!("{name} {length}")), false);
            let mut trailers = HeaderMap::new();
            trailers.insert("x-trailer", HeaderValue::from_static(name));
            let _ = send.send_trailers(trailers);
        });
    }
}

fn config(backends: &[&H2Backend], extra: &str) -> String {
    let urls: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    format!(
        "backends = [{}]\n[http2]\ncleartext = true\n{extra}",
        urls.join(", ")
    )
}

async fn post(balancer: &TestBalancer, body: &'static [u8]) -> (StatusCode, String) {
    let request = Request::post(balancer.url(REQ))
        .body(full(Bytes::from_static(body)))
        .unwrap();
    let response = crate::support::client().request(request).await.unwrap();
    let status = response.status();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn a_refused_stream_is_sent_to_another_backend_even_for_a_post() {
    let _cpu = crate::support::cpu::shared().await;
    let refusing = H2Backend::start("a", Mode::Refuse, Duration::ZERO, 100).await;
    let answering = H2Backend::start("b", Mode::Answer, Duration::ZERO, 100).await;
    let balancer = TestBalancer::start(&config(
        &[&refusing, &answering],
        "[passive_health]\nenabled = false\n",
    ))
    .await;
    for _ in 0..10 {
        let (status, text) = post(&balancer, b"0123456789").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(text, "b 10");
    }
    assert!(
        refusing.record.refused.load(Ordering::Relaxed) > 0,
        "least_conn never tried the refusing backend: the test proves nothing"
    );
    assert_eq!(*answering.record.bodies.lock().unwrap(), vec![10; 10]);
    balancer.stop().await;
}

#[tokio::test]
async fn streams_are_counted_in_flight_over_one_connection_per_backend() {
    let _cpu = crate::support::cpu::shared().await;
    let delay = Duration::from_millis(400);
    let one = H2Backend::start("one", Mode::Answer, delay, 100).await;
    let two = H2Backend::start("two", Mode::Answer, delay, 100).await;
    let balancer = TestBalancer::start(&config(&[&one, &two], "")).await;
    let balancer = Arc::new(balancer);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let balancer = balancer.clone();
            tokio::spawn(async move { post(&balancer, b"x").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().0, StatusCode::OK);
    }
    // least_conn saw each stream: the ten concurrent requests split evenly, not all on the
    // first backend's connection.
    assert_eq!((one.answered(), two.answered()), (5, 5));
    assert_eq!(one.record.connections.lock().unwrap().len(), 1);
    assert_eq!(two.record.connections.lock().unwrap().len(), 1);
    Arc::into_inner(balancer).unwrap().stop().await;
}

#[tokio::test]
async fn the_backends_stream_limit_is_respected() {
    let _cpu = crate::support::cpu::shared().await;
    let only = H2Backend::start("only", Mode::Answer, Duration::from_millis(100), 2).await;
    let balancer = Arc::new(TestBalancer::start(&config(&[&only], "")).await);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let balancer = balancer.clone();
            tokio::spawn(async move { post(&balancer, b"y").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(only.answered(), 8);
    assert!(only.record.most_streams.load(Ordering::SeqCst) <= 2);
    Arc::into_inner(balancer).unwrap().stop().await;
}

#[tokio::test]
async fn trailers_reach_an_http2_client_and_the_body_an_http1_one() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = H2Backend::start("t", Mode::Answer, Duration::ZERO, 100).await;
    let balancer = TestBalancer::start(&config(&[&backend], "")).await;
    let tcp = TcpStream::connect(balancer.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::get(format!("http://{}{REQ}", balancer.addr))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-backend"], "t");
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(data) = body.data().await {
        text.extend_from_slice(&data.unwrap());
    }
    assert_eq!(text, b"t 0");
    let trailers = body.trailers().await.unwrap().expect("trailers relayed");
    assert_eq!(trailers["x-trailer"], "t");
    driver.abort();
    let (status, text) = post(&balancer, b"abc").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "t 3"));
    balancer.stop().await;
}

#[tokio::test]
async fn a_backend_that_speaks_only_http1_is_down_when_named_h2c() {
    let _cpu = crate::support::cpu::shared().await;
    let http1 = TestBackend::start("h1").await;
    let h2c_url = http1.url().replace("http://", "h2c://");
    let balancer = TestBalancer::start(&format!(
        "backends = [\"{h2c_url}\"]\n[health_check]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 1\n"
    ))
    .await;
    let backend = balancer.proxy.backends()[0].clone();
    wait_until(Duration::from_secs(5), || !backend.is_healthy())
        .await
        .expect("an HTTP/1.1-only backend probed in HTTP/2 went DOWN");
    balancer.stop().await;
}

/// An HTTP/2 server in raw frames, so that what it sends is exactly what a test needs: the
/// preface is read, an empty SETTINGS sent and the client's acknowledged; the first HEADERS
/// frame of each connection is counted, and the socket handed to `then`, which decides what the
/// backend does next.
async fn start_raw_backend<F, Fut>(then: F) -> (SocketAddr, Arc<AtomicU64>, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (counter, then) = (counter.clone(), then.clone());
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if tcp.read_exact(&mut preface).await.is_err() {
                    return;
                }
                // Server preface: an empty SETTINGS.
                let _ = tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                loop {
                    let mut head = [0u8; 9];
                    if tcp.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if tcp.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    match head[3] {
                        // SETTINGS (not an ACK): acknowledge it.
                        4 if head[4] & 1 == 0 => {
                            let _ = tcp.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                        }
                        1 => {
                            counter.fetch_add(1, Ordering::Relaxed);
                            return then(tcp).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, requests, task)
}

/// A backend that answers the first request of each connection with GOAWAY naming stream 0 as
/// the last it processed: the request was not acted on (RFC 9113 §6.8). Counts the requests it
/// turned away.
async fn start_goaway_backend() -> (SocketAddr, Arc<AtomicU64>, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    start_raw_backend(|mut tcp: TcpStream| async move {
        // GOAWAY, last stream 0, NO_ERROR; then wait for the close.
        let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let _ = tcp.write_all(&goaway).await;
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    })
    .await
}

#[tokio::test]
async fn a_stream_left_out_of_a_goaway_is_sent_to_another_backend() {
    let _cpu = crate::support::cpu::shared().await;
    let (goaway, turned_away, task) = start_goaway_backend().await;
    let answering = H2Backend::start("b", Mode::Answer, Duration::ZERO, 100).await;
    // Probes get the GOAWAY too: they may fail without taking the backend out.
    let balancer = TestBalancer::start(&format!(
        "backends = [\"h2c://{goaway}\", \"{}\"]\n[passive_health]\nenabled = false\n\
         [health_check]\ninterval = \"60s\"\nfall = 10\n",
        answering.url()
    ))
    .await;
    for _ in 0..6 {
        let (status, text) = post(&balancer, b"payload").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(text, "b 7");
    }
    // The first probe may be among the turned-away requests; least_conn must have sent some
    // test requests there too.
    assert!(
        turned_away.load(Ordering::Relaxed) >= 2,
        "the GOAWAY backend was never tried: the test proves nothing"
    );
    assert_eq!(*answering.record.bodies.lock().unwrap(), vec![7; 6]);
    balancer.stop().await;
    task.abort();
}

/// A body alb streams (no length, still arriving) to a backend that refuses the stream comes
/// back from the session whole (what was sent, then the rest) and goes to the other backend.
#[tokio::test]
async fn a_streamed_body_is_rewound_after_a_refused_stream() {
    let _cpu = crate::support::cpu::shared().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let refusing = H2Backend::start("a", Mode::Refuse, Duration::ZERO, 100).await;
    let answering = H2Backend::start("b", Mode::Answer, Duration::ZERO, 100).await;
    let balancer = TestBalancer::start(&config(
        &[&refusing, &answering],
        "[passive_health]\nenabled = false\n",
    ))
    .await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(balancer.addr).await.unwrap();
        let head = format!(
            "POST {REQ} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        // The rest comes once the request is on the answering backend: alb streamed its head
        // and first chunk there, after the refusing backend reset it if alb tried that first.
        wait_until(Duration::from_secs(5), || {
            answering.record.open_streams.load(Ordering::SeqCst) == 1
        })
        .await
        .expect("the request reached the answering backend");
        tcp.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        answers.push(answer);
    }
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\r\nb 11\r\n"), "{answer}");
    }
    assert!(
        refusing.record.refused.load(Ordering::Relaxed) > 0,
        "the refusing backend was never tried: the test proves nothing"
    );
    assert_eq!(*answering.record.bodies.lock().unwrap(), vec![11; 4]);
    balancer.stop().await;
}

/// A backend that falls silent once a request arrives: it neither reads nor writes again and
/// keeps the socket open, as one powered off or cut off by the network would (no FIN, no RST).
/// Counts the requests it took: one per connection.
async fn start_silent_backend() -> (SocketAddr, Arc<AtomicU64>, JoinHandle<()>) {
    start_raw_backend(|tcp: TcpStream| async move {
        let _held = tcp;
        std::future::pending::<()>().await;
    })
    .await
}

/// A backend that falls silent holds the one HTTP/2 connection every request shares: a PING
/// after `upstream_idle` of silence, unanswered for another `upstream_idle`, closes the
/// connection, so its request ends long before `timeouts.response`, and the next request opens
/// a new one.
#[tokio::test]
async fn a_silent_backend_connection_is_found_out_by_ping() {
    let _cpu = crate::support::cpu::shared().await;
    let (silent, requests, task) = start_silent_backend().await;
    let balancer = TestBalancer::start(&format!(
        "backends = [\"h2c://{silent}\"]\n[timeouts]\nupstream_idle = \"300ms\"\n\
         response = \"60s\"\n[health_check]\ninterval = \"60s\"\n\
         [passive_health]\nenabled = false\n"
    ))
    .await;
    for round in 1..=2u64 {
        let asked = tokio::time::timeout(
            Duration::from_secs(20),
            crate::support::client().get(balancer.url(REQ).parse().unwrap()),
        )
        .await
        .expect("answered before timeouts.response, not at it")
        .unwrap();
        assert_eq!(asked.status(), StatusCode::BAD_GATEWAY, "round {round}");
        // One request per connection reaches it: a second means a second connection (a probe's
        // would count too, hence at least).
        assert!(requests.load(Ordering::Relaxed) >= round, "round {round}");
    }
    balancer.stop().await;
    task.abort();
}
