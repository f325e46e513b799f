//! h2c by prior knowledge, and h2 by ALPN on the TLS listener.

use super::*;

// ---------------------------------------------------------------------------------------------
// 1. h2c by prior knowledge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn curl_h2c_prior_knowledge_reaches_the_backend_with_host_and_forwarded_fields() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let lb = h2c_balancer(&[&backend], "").await;
    let port = lb.addr.port();
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("http://site.test:{port}/path?q=1");
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_code} %{http_version}",
        "--resolve",
        &resolve,
        &url,
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "b1\n200 2", "body, status and HTTP version");
    let seen = backend.last_request().expect("the backend got the request");
    assert_eq!(seen.uri, "/path?q=1");
    assert_eq!(
        seen.headers["host"],
        format!("site.test:{port}"),
        ":authority became Host"
    );
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("site.test:{port}")
    );
    assert_eq!(lb.proxy.stats().h2_connections.load(Ordering::Relaxed), 1);
    assert_eq!(lb.proxy.stats().h2_requests.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn without_cleartext_the_h2c_preface_is_refused_as_a_malformed_http1_request() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let lb = TestBalancer::start(&format!("{}{QUIET_HEALTH}", backends_line(&[&backend]))).await;
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_code} %{http_version}",
        &lb.url("/"),
    ])
    .await;
    assert!(
        !ok,
        "curl got an answer over h2c from an HTTP/1.1-only listener: {out}"
    );
    assert!(!out.ends_with(" 2"), "{out}\n{err}");

    // What alb answers the preface, byte by byte: an HTTP/1.1 error, then it closes.
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let mut hello = h2raw::PREFACE.to_vec();
    hello.extend_from_slice(&h2raw::settings(&[]));
    let (answer, closed) = raw_exchange(&mut stream, &hello).await;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().to_string();
    assert!(
        status_line.starts_with("HTTP/1.1 400 "),
        "answer to the h2c preface: {text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\n400 Bad Request: malformed request head\n"),
        "{text:?}"
    );
    assert!(closed, "the connection stays open after {status_line:?}");
    assert_eq!(backend.hits(), 0, "the preface reached the backend");
    assert_eq!(lb.proxy.stats().h2_connections.load(Ordering::Relaxed), 0);
    eprintln!(
        "curl: {}; alb answered the preface with {text:?}",
        err.trim()
    );
}

/// Writes `bytes`, then reads until the peer closes or 3 s pass.
async fn raw_exchange(stream: &mut TcpStream, bytes: &[u8]) -> (Vec<u8>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(bytes).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. ALPN h2 on the TLS listener
// ---------------------------------------------------------------------------------------------

/// A balancer with a TLS listener (certificate for `site.test`), `http2` lines under `[http2]`.
async fn tls_balancer(dir: &TempDir, backend: &TestBackend, http2: &str) -> TestBalancer {
    let pki = Pki::new();
    write_leaf(dir, "site", &pki.leaf("site.test", &["site.test"], None));
    dir.write("ca.pem", &pki.ca_pem());
    let config = format!(
        "listen = \"127.0.0.1:0\"\n{}{QUIET_HEALTH}[admin]\nlisten = \"off\"\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"site.pem\"\nkey = \"site.key\"\n\
         [http2]\n{http2}",
        backends_line(&[backend])
    );
    TestBalancer::start_file(&dir.write("alb.toml", &config)).await
}

async fn curl_tls(dir: &TempDir, lb: &TestBalancer) -> (bool, String, String) {
    let port = lb.tls_addr.expect("TLS listener").port();
    let ca = dir.0.join("ca.pem").display().to_string();
    curl(&[
        "--http2",
        "-v",
        "-w",
        "\n%{http_code} %{http_version}",
        "--cacert",
        &ca,
        "--resolve",
        &format!("site.test:{port}:127.0.0.1"),
        &format!("https://site.test:{port}/tls"),
    ])
    .await
}

#[tokio::test]
async fn curl_over_tls_negotiates_h2_by_alpn_and_the_backend_sees_https() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("h2-alpn");
    let lb = tls_balancer(&dir, &backend, "").await;
    let (ok, out, err) = curl_tls(&dir, &lb).await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "b1\n200 2", "{err}");
    assert!(
        err.lines().any(|l| l.contains("ALPN") && l.contains("h2")),
        "no ALPN h2 in curl's account:\n{err}"
    );
    let seen = backend.last_request().expect("the backend got the request");
    assert_eq!(seen.uri, "/tls");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    let port = lb.tls_addr.unwrap().port();
    assert_eq!(seen.headers["host"], format!("site.test:{port}"));
}

#[tokio::test]
async fn with_http2_tls_off_curl_falls_back_to_http1_over_tls() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let dir = TempDir::new("h2-alpn-off");
    let lb = tls_balancer(&dir, &backend, "tls = false\n").await;
    let (ok, out, err) = curl_tls(&dir, &lb).await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "b1\n200 1.1", "{err}");
    assert_eq!(
        backend.last_request().unwrap().headers["x-forwarded-proto"],
        "https"
    );
    assert_eq!(lb.proxy.stats().h2_connections.load(Ordering::Relaxed), 0);
}
