//! Memory while streaming large bodies, JSON logs, and the access log's completeness.

use super::check::BAD_CONFIG;
use super::*;

/// `len` bytes of `b'x'` in 64 KiB chunks, all sharing one buffer, with an exact size hint (so the
/// request has a Content-Length).
struct Generated {
    chunk: Bytes,
    left: u64,
}

impl Generated {
    fn new(len: u64) -> Generated {
        Generated {
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            left: len,
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// 256 MiB each way: over six times the RSS limit, so a proxy that buffered a body would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_large_bodies_each_way_keeps_memory_bounded() {
    let _cpu = crate::support::cpu::shared().await;
    const DOWNLOAD: u64 = 256 * 1024 * 1024;
    const UPLOAD: u64 = 256 * 1024 * 1024;
    const LIMIT_KIB: u64 = 40 * 1024;
    let backend = TestBackend::start("bulk").await;
    let dir = TempDir::new("memory");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&[], &config).await;
    let client = client();
    let baseline = alb.peak_rss_kib();

    let started = Instant::now();
    let request = Request::get(format!("http://{addr}/bytes/{DOWNLOAD}"))
        .body(full(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.expect("download through alb");
    assert_eq!(response.status(), 200);
    assert_eq!(
        discard(response.into_body()).await,
        DOWNLOAD,
        "downloaded length"
    );
    let download = started.elapsed();
    let after_download = alb.peak_rss_kib();

    let started = Instant::now();
    let request = Request::post(format!("http://{addr}/echo"))
        .body(Generated::new(UPLOAD).boxed())
        .unwrap();
    let response = client.request(request).await.expect("upload through alb");
    assert_eq!(response.status(), 200);
    assert_eq!(discard(response.into_body()).await, UPLOAD, "echoed length");
    let upload = started.elapsed();
    let after_upload = alb.peak_rss_kib();

    eprintln!(
        "alb peak RSS: {baseline} KiB at start, {after_download} KiB after the {} MiB download ({download:?}), \
         {after_upload} KiB after the {} MiB upload+echo ({upload:?})",
        DOWNLOAD >> 20,
        UPLOAD >> 20
    );
    assert!(
        after_download < LIMIT_KIB,
        "peak RSS {after_download} KiB after the download"
    );
    assert!(
        after_upload < LIMIT_KIB,
        "peak RSS {after_upload} KiB after the upload"
    );
    assert_eq!(backend.hits(), 2);

    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));
}

/// Reads a response body to its end without keeping it; returns its length.
async fn discard(mut body: hyper::body::Incoming) -> u64 {
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("body frame").data_ref() {
            total += data.len() as u64;
        }
    }
    total
}

#[tokio::test]
async fn json_log_format_writes_one_object_per_line() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("one").await;
    let dir = TempDir::new("json");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&["--log-format", "json"], &config).await;

    let (status, _, _) = get(&client(), &format!("http://{addr}/hello")).await;
    assert_eq!(status, 200);
    let access = alb.wait_line(|l| l.contains("alb::access")).await;
    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));

    assert!(
        alb.log.len() >= 4,
        "listening, access, SIGTERM, shutdown lines: {:#?}",
        alb.log
    );
    for line in &alb.log {
        let value = json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(
            matches!(value, json::Value::Object(_)),
            "not an object: {line}"
        );
        for field in ["timestamp", "level", "message", "target"] {
            assert!(
                value.get(field).and_then(json::Value::as_str).is_some(),
                "no string {field:?} in {line}"
            );
        }
    }
    let listening = alb
        .log
        .iter()
        .find(|l| l.contains("alb listening on"))
        .unwrap();
    let listening = json::parse(listening).unwrap();
    assert_eq!(
        listening.get("message").and_then(|m| m.as_str()),
        Some(format!("alb listening on {addr}").as_str())
    );
    assert_eq!(
        listening.get("level").and_then(|m| m.as_str()),
        Some("INFO")
    );
    let access = json::parse(&access).unwrap();
    assert_eq!(
        access.get("message").and_then(|m| m.as_str()),
        Some("GET /hello 200")
    );
    assert_eq!(access.get("status"), Some(&json::Value::Number(200.0)));
    assert_eq!(
        access.get("backend").and_then(|m| m.as_str()),
        Some(backend.url().as_str())
    );
    assert_eq!(
        access.get("outcome").and_then(|m| m.as_str()),
        Some("complete")
    );
}

/// With `--log-format json`, a start-up error is logged as JSON (src/main.rs:81) and then printed
/// again as plain text (src/main.rs:82), so stderr is no longer one JSON object per line (and in
/// text mode the whole problem list appears twice).
#[tokio::test]
async fn json_log_format_also_covers_start_up_errors() {
    let _cpu = crate::support::cpu::shared().await;
    let dir = TempDir::new("json-bad");
    let path = dir.write("bad.toml", BAD_CONFIG);
    let (status, _, stderr) = alb_output(&[
        "--log-format",
        "json",
        "run",
        "--config",
        path.to_str().unwrap(),
    ])
    .await;
    assert_eq!(status.code(), Some(1));
    for line in stderr.lines() {
        let value = json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(
            matches!(value, json::Value::Object(_)),
            "not an object: {line}"
        );
    }
}

/// The access log is written by a thread of its own, fed by every connection: what was logged
/// must still all be there when alb has exited on SIGTERM right after its last answer. Eight
/// clients at once send GETs and POSTs, some answered 404: the logged (method, path, status)
/// are exactly those sent and answered, and each client's requests are logged in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_line_is_written_in_order_by_exit() {
    let _cpu = crate::support::cpu::shared().await;
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 250;
    let backend = TestBackend::start("one").await;
    let dir = TempDir::new("access-order");
    let config = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{}", backends_line(&[&backend])),
    );
    let (mut alb, addr) = Alb::run(&[], &config).await;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            tokio::spawn(async move {
                let c = client();
                let mut sent = Vec::with_capacity(PER_CLIENT);
                for i in 0..PER_CLIENT {
                    let (method, path) = match i % 4 {
                        3 => ("GET", "/status/404".to_string()),
                        1 => ("POST", format!("/seq/{k}/{i}")),
                        _ => ("GET", format!("/seq/{k}/{i}")),
                    };
                    let request = Request::builder()
                        .method(method)
                        .uri(format!("http://{addr}{path}"))
                        .body(full(Bytes::new()))
                        .unwrap();
                    let (status, _, _) = send(&c, request).await;
                    sent.push((method.to_string(), path, status.as_u16()));
                }
                sent
            })
        })
        .collect();
    let mut sent = Vec::new();
    for client in clients {
        sent.extend(client.await.unwrap());
    }
    assert!(sent.iter().any(|(_, _, s)| *s == 404) && sent.iter().any(|(_, _, s)| *s == 200));
    let status = alb.stop().await;
    assert_eq!(status.code(), Some(0));
    let field = |line: &str, name: &str| -> String {
        line.split(&format!(" {name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    let logged: Vec<(String, String, u16)> = alb
        .log
        .iter()
        .filter(|l| l.contains("alb::access"))
        .map(|l| {
            let status = field(l, "status").parse().expect("a status");
            (field(l, "method"), field(l, "path"), status)
        })
        .collect();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    let mut logged_sorted = logged.clone();
    logged_sorted.sort();
    assert_eq!(
        logged_sorted.len(),
        CLIENTS * PER_CLIENT,
        "access lines lost or added"
    );
    assert!(
        logged_sorted == sent_sorted,
        "the access log differs from what was sent and answered"
    );
    for k in 0..CLIENTS {
        let prefix = format!("/seq/{k}/");
        let order: Vec<usize> = logged
            .iter()
            .filter_map(|(_, path, _)| path.strip_prefix(&prefix)?.parse().ok())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "client {k}'s access lines out of order"
        );
    }
}
