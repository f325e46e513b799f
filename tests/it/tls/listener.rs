//! TLS termination, seen from the wire: curl, `openssl s_client` and rustls clients, test
//! backends that record what reached them, certificates from a test CA (`crate::support::pki`) written
//! next to the config, whose paths are relative to it. The real binary: `tls_binary.rs`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support::pki::{Pki, curl, write_leaf};
use crate::support::{ReservedPort, TempDir, TestBackend, TestBalancer, backends_line, wait_until};

/// A balancer with a TLS listener, its config file and certificates in `dir`.
struct Site {
    dir: TempDir,
    pki: Pki,
    balancer: TestBalancer,
}

/// Certificates: `site.pem` for `site.test` (the default) and `other.pem` for `*.other.test`
/// and `other.test`. `extra` is added to the config's top level (before `[tls]`).
async fn start_site(name: &str, backends: &[&TestBackend], extra: &str, tls_extra: &str) -> Site {
    let dir = TempDir::new(name);
    let pki = Pki::new();
    write_leaf(&dir, "site", &pki.leaf("site.test", &["site.test"], None));
    write_leaf(
        &dir,
        "other",
        &pki.leaf("other", &["*.other.test", "other.test"], None),
    );
    dir.write("ca.pem", &pki.ca_pem());
    let listen = if tls_extra.contains("listen =") {
        ""
    } else {
        "listen = \"127.0.0.1:0\"\n"
    };
    let config = format!(
        "listen = \"127.0.0.1:0\"\n{}{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [tls]\n{listen}cert = \"site.pem\"\nkey = \"site.key\"\n{tls_extra}\n\
         [[tls.certificate]]\ncert = \"other.pem\"\nkey = \"other.key\"\n",
        backends_line(backends)
    );
    let path = dir.write("alb.toml", &config);
    let balancer = TestBalancer::start_file(&path).await;
    Site { dir, pki, balancer }
}

impl Site {
    fn tls_port(&self) -> u16 {
        self.balancer.tls_addr.expect("TLS listener").port()
    }

    fn ca(&self) -> String {
        self.dir.0.join("ca.pem").display().to_string()
    }

    /// curl's `--resolve` for `name` on the TLS port.
    fn resolve(&self, name: &str) -> String {
        format!("{name}:{}:127.0.0.1", self.tls_port())
    }

    fn https(&self, name: &str, path: &str) -> String {
        format!("https://{name}:{}{path}", self.tls_port())
    }

    /// `alb_tls_handshake_failures_total{reason}` as the admin listener reports it.
    async fn failures(&self, reason: &str) -> u64 {
        let url = self.balancer.admin_url("/metrics").await;
        let (_, _, body) = crate::support::get(&crate::support::client(), &url).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        let series = format!("alb_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in the metrics:\n{text}"))
    }

    /// A TLS connection as a Rust client makes it, trusting the test CA, with SNI `name`.
    async fn connect(&self, name: &str) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.balancer.tls_addr.unwrap())
            .await
            .unwrap();
        self.handshake(tcp, name).await
    }

    async fn handshake(&self, tcp: TcpStream, name: &str) -> TlsStream<TcpStream> {
        let config = self.pki.client_config(b"http/1.1");
        let name = ServerName::try_from(name.to_string()).unwrap();
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake")
    }
}

/// The subject CN of the certificate the server showed.
fn peer_cn(stream: &TlsStream<TcpStream>) -> String {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
    leaf.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Runs `openssl s_client` against 127.0.0.1:`port` with nothing to send; returns whether the
/// handshake succeeded and everything it printed.
async fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("s_client finishes")
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// GET `path` on an open connection (keep-alive); the status.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> u16 {
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("body");
    status
}

#[tokio::test]
async fn curl_over_tls_reaches_the_backend_with_https_and_the_clients_host() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site("curl", &[&backend], "", "").await;
    // HTTP/1.1 asked for: alb offers h2 first (tests/http2.rs takes that road).
    let (ok, out, err) = curl(&[
        "-v",
        "-i",
        "--http1.1",
        "--cacert",
        &site.ca(),
        "--resolve",
        &site.resolve("site.test"),
        &site.https("site.test", "/path?q=1"),
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("b1"), "{out}");
    assert!(
        err.lines()
            .any(|l| l.contains("ALPN") && l.contains("accepted") && l.contains("http/1.1")),
        "ALPN http/1.1 not negotiated:\n{err}"
    );
    let seen = backend.last_request().expect("the backend got the request");
    assert_eq!(seen.uri, "/path?q=1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(
        seen.headers["host"],
        format!("site.test:{}", site.tls_port()).as_str()
    );
    // The plain listener still serves, and says so.
    let (ok, _, err) = curl(&[&format!("http://{}/plain", site.balancer.addr)]).await;
    assert!(ok, "{err}");
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.uri, "/plain");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    site.balancer.stop().await;
}

#[tokio::test]
async fn openssl_s_client_gets_tls_1_2_and_1_3_and_is_refused_1_0_and_1_1() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site("versions", &[&backend], "", "").await;
    let port = site.tls_port();
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(port, &[flag, "-alpn", "h2,http/1.1"]).await;
        assert!(ok, "{flag} refused:\n{text}");
        // The summary line of the handshake (the session block after it may come too late for
        // a client that has nothing to send).
        assert!(text.contains(&format!("New, {name}, Cipher is")), "{text}");
        // alb prefers h2 when the client offers it (`http2.tls`, on by default).
        assert!(text.contains("ALPN protocol: h2"), "{text}");
    }
    // The client is allowed the old versions (security level 0), so a refusal is alb's.
    for flag in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(port, &[flag, "-cipher", "DEFAULT@SECLEVEL=0"]).await;
        assert!(!ok, "{flag} accepted:\n{text}");
    }
    assert_eq!(site.failures("protocol_version").await, 2);
    site.balancer.stop().await;
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_a_client_without_sni_gets_the_first() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site("sni", &[&backend], "", "").await;
    let subject = |err: &str| {
        err.lines()
            .find(|l| l.contains("subject:"))
            .unwrap_or_default()
            .to_string()
    };
    for (name, cn) in [
        ("site.test", "CN=site.test"),
        ("a.other.test", "CN=other"),
        ("other.test", "CN=other"),
    ] {
        let (ok, out, err) = curl(&[
            "-v",
            "--cacert",
            &site.ca(),
            "--resolve",
            &site.resolve(name),
            &site.https(name, "/"),
        ])
        .await;
        // curl verified the certificate against the name: its SAN covers it.
        assert!(ok, "{name}: {err}");
        assert!(out.ends_with("b1"), "{out}");
        assert!(subject(&err).contains(cn), "{name}: {}", subject(&err));
    }
    let (ok, text) = s_client(site.tls_port(), &["-noservername"]).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("subject=CN = site.test") || text.contains("subject=CN=site.test"),
        "{text}"
    );
    site.balancer.stop().await;
}

#[tokio::test]
async fn a_name_no_certificate_has_is_refused_and_counted() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site("unknown", &[&backend], "", "").await;
    // A wildcard covers one label only.
    for name in ["nope.test", "a.b.other.test"] {
        let (ok, _, err) = curl(&[
            "--cacert",
            &site.ca(),
            "--resolve",
            &site.resolve(name),
            &site.https(name, "/"),
        ])
        .await;
        assert!(!ok, "{name} was served");
        assert!(err.contains("alert"), "{name}: {err}");
    }
    assert_eq!(site.failures("unknown_sni").await, 2);
    assert_eq!(backend.hits(), 0);
    site.balancer.stop().await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_handshakes_and_open_connections_go_on() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site("reload", &[&backend], "", "").await;
    let old = site.connect("site.test").await;
    assert_eq!(peer_cn(&old), "site.test");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(get_on(&mut sender, "site.test", "/before").await, 200);

    let renewed = site.pki.leaf("site.test renewed", &["site.test"], None);
    write_leaf(&site.dir, "site", &renewed);
    site.balancer.control.reload().expect("reload");
    assert_eq!(
        peer_cn(&site.connect("site.test").await),
        "site.test renewed"
    );
    // The connection opened before the reload is served on, with its session.
    assert_eq!(get_on(&mut sender, "site.test", "/after").await, 200);
    assert!(!conn.is_finished());

    // A broken certificate file: the reload is refused, the running set stays.
    site.dir.write("site.pem", "not a certificate\n");
    let refused = site
        .balancer
        .control
        .reload()
        .expect_err("a broken certificate");
    let message = refused.to_string();
    assert!(
        message.contains("tls.cert") && message.contains("site.pem"),
        "{message}"
    );
    assert_eq!(
        peer_cn(&site.connect("site.test").await),
        "site.test renewed"
    );
    assert_eq!(get_on(&mut sender, "site.test", "/still").await, 200);
    assert_eq!(backend.last_request().unwrap().uri, "/still");
    drop(sender);
    let _ = conn.await;
    site.balancer.stop().await;
}

#[tokio::test]
async fn plain_http_sent_to_the_tls_port_is_closed_without_an_answer_and_counted() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site("plaintext", &[&backend], "", "").await;
    let mut stream = TcpStream::connect(site.balancer.tls_addr.unwrap())
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed")
        .expect("a clean close, not a reset");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    assert_eq!(site.failures("not_tls").await, 1);
    assert_eq!(backend.hits(), 0);
    site.balancer.stop().await;
}

#[tokio::test]
async fn a_handshake_that_does_not_finish_is_cut_after_client_header() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site(
        "slow",
        &[&backend],
        "[timeouts]\nclient_header = \"300ms\"\n",
        "",
    )
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(site.balancer.tls_addr.unwrap())
        .await
        .unwrap();
    // The first bytes of a handshake record, and no more.
    stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("cut by alb");
    let took = started.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert!(took >= Duration::from_millis(300), "cut after {took:?}");
    assert_eq!(site.failures("timeout").await, 1);
    site.balancer.stop().await;
}

/// A WebSocket backend that echoes messages and keeps the X-Forwarded-Proto of its upgrade;
/// a request that is no upgrade (alb's health check) gets a 200.
async fn ws_backend() -> (
    SocketAddr,
    Arc<Mutex<Option<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proto = Arc::new(Mutex::new(None));
    let seen = proto.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // Looked at, not read: the WebSocket handshake reads the head itself.
                let mut head = vec![0u8; 8192];
                let upgrade = loop {
                    let Ok(n) = stream.peek(&mut head).await else {
                        return;
                    };
                    let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
                    if text.contains("\r\n\r\n") || n == 0 {
                        break text.contains("upgrade: websocket");
                    }
                    tokio::task::yield_now().await;
                };
                if !upgrade {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                #[allow(clippy::result_large_err)] // tungstenite's callback type
                let record = |request: &WsRequest, response: Response| {
                    let value = request
                        .headers()
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    *seen.lock().unwrap() = value;
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, proto, task)
}

#[tokio::test]
async fn a_websocket_upgrade_works_over_tls() {
    let _cpu = crate::support::cpu::shared().await;
    let (addr, proto, task) = ws_backend().await;
    let backend_line = format!("backends = [\"http://{addr}\"]\n");
    let site = start_site_with_line("ws", &backend_line, "").await;
    let stream = site.connect("site.test").await;
    let url = format!("wss://site.test:{}/chat", site.tls_port());
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade through alb");
    assert_eq!(response.status(), 101);
    for text in ["hello", "over tls"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo")
            .expect("a message")
            .expect("no error");
        assert_eq!(echoed, Message::text(text));
    }
    ws.close(None).await.unwrap();
    // The backend's close frame comes back through the tunnel, then the end of the stream.
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    assert_eq!(proto.lock().unwrap().as_deref(), Some("https"));
    site.balancer.stop().await;
    task.abort();
}

/// [`start_site`] with the backends given as a config line.
async fn start_site_with_line(name: &str, backends: &str, extra: &str) -> Site {
    let dir = TempDir::new(name);
    let pki = Pki::new();
    write_leaf(&dir, "site", &pki.leaf("site.test", &["site.test"], None));
    dir.write("ca.pem", &pki.ca_pem());
    let config = format!(
        "listen = \"127.0.0.1:0\"\n{backends}{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"site.pem\"\nkey = \"site.key\"\n"
    );
    let path = dir.write("alb.toml", &config);
    let balancer = TestBalancer::start_file(&path).await;
    Site { dir, pki, balancer }
}

#[tokio::test]
async fn redirect_http_answers_308_to_the_same_url_on_the_tls_port() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    // The redirect names the TLS port: a fixed one (port 0 is refused with redirect_http).
    let tls_port = ReservedPort::new();
    let tls_listen = format!(
        "listen = \"127.0.0.1:{}\"\nredirect_http = true\n",
        tls_port.port()
    );
    let site = start_site("redirect", &[&backend], "", &tls_listen).await;
    drop(tls_port);
    let plain = site.balancer.addr.port();
    let (ok, out, err) = curl(&[
        "-i",
        "-H",
        &format!("Host: site.test:{plain}"),
        &format!("http://127.0.0.1:{plain}/a/b?x=1&y=2"),
    ])
    .await;
    assert!(ok, "{err}");
    let head = out.to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 308 permanent redirect\r\n"),
        "{out}"
    );
    assert!(
        head.contains(&format!(
            "\r\nlocation: https://site.test:{}/a/b?x=1&y=2\r\n",
            site.tls_port()
        )),
        "{out}"
    );
    assert!(head.contains("\r\ncontent-length: 0\r\n"), "{out}");
    assert_eq!(backend.hits(), 0);
    // Followed, it is served over TLS.
    let (ok, out, err) = curl(&[
        "-L",
        "--cacert",
        &site.ca(),
        "--resolve",
        &format!("site.test:{plain}:127.0.0.1"),
        "--resolve",
        &site.resolve("site.test"),
        &format!("http://site.test:{plain}/followed"),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.ends_with("b1"), "{out}");
    assert_eq!(
        backend.last_request().unwrap().headers["x-forwarded-proto"],
        "https"
    );
    site.balancer.stop().await;
}

#[tokio::test]
async fn the_proxy_protocol_header_comes_before_the_handshake() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site(
        "proxy-header",
        &[&backend],
        "[proxy_protocol]\nenabled = true\ntrusted = [\"127.0.0.1/32\"]\n",
        "",
    )
    .await;
    let mut tcp = TcpStream::connect(site.balancer.tls_addr.unwrap())
        .await
        .unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
        .await
        .unwrap();
    let tls = site.handshake(tcp, "site.test").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(get_on(&mut sender, "site.test", "/behind").await, 200);
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    drop(sender);
    let _ = conn.await;
    site.balancer.stop().await;
}

/// A client slow to start reading a large answer over TLS: the socket is full when alb writes
/// the body's last piece, and rustls keeps what the socket did not take. That tail must still
/// leave (alb waits for the socket, not for the client's next request): the whole body arrives
/// on a connection kept alive, long before `keepalive_idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_large_answer_leaves_even_when_the_client_reads_late() {
    let _cpu = crate::support::cpu::shared().await;
    let backend = TestBackend::start("b1").await;
    let site = start_site("tls-tail", &[&backend], "", "").await;
    let mut tls = site.connect("site.test").await;
    let size = 32 * 1024 * 1024;
    tls.write_all(format!("GET /bytes/{size} HTTP/1.1\r\nhost: site.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The buffers between alb and this client fill up: at least 64 KiB wait unread in this
    // socket's receive queue, so alb's writes meet a closed window from here on.
    let tcp = &tls.get_ref().0;
    wait_until(Duration::from_secs(5), || {
        rustix::io::ioctl_fionread(tcp).is_ok_and(|unread| unread >= 64 * 1024)
    })
    .await
    .expect("alb wrote 64 KiB the client has not read");
    // The backend streams it, so it comes chunked: read to the last chunk, then count.
    let read_all = async {
        let mut got = Vec::with_capacity(size + 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            // Slower than alb writes: its socket stays full to the end.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let n = tls.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the whole body within 10 s (keepalive_idle is 60 s)");
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (mut rest, mut body) = (&got[head_end..], 0);
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        if n == 0 {
            break;
        }
        body += n;
        rest = &rest[line_end + 2 + n + 2..];
    }
    assert_eq!(body, size);
    backend.stop().await;
}
