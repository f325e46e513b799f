//! TLS to backends (`https://` URLs): real TLS servers on loopback (tokio-rustls), certificates
//! made here with rcgen. What is checked is what the backend saw (the SNI, a client certificate,
//! how many handshakes and whether they resumed) and what the client got.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::support::{Scenario, TempDir, TestBalancer, client, get, wait_until};

/// A certificate authority made for one test.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses): (chain PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What a TLS backend saw.
#[derive(Default)]
struct Seen {
    handshakes: AtomicUsize,
    resumed: AtomicUsize,
    failed_handshakes: AtomicUsize,
    requests: AtomicUsize,
    sni: Mutex<Option<String>>,
    client_cert: AtomicBool,
}

/// An HTTP/1.1 server behind TLS. Every answer's body says what the TLS session was (`sni=...;
/// client_cert=...`); with `close_each`, each answer closes its connection. `/upgrade` switches
/// to a raw byte echo after a `101`. Its certificate can be swapped while it runs.
struct TlsBackend {
    addr: SocketAddr,
    seen: Arc<Seen>,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    task: JoinHandle<()>,
}

fn server_config(cert: &str, key: &str, client_ca: Option<&str>) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

impl TlsBackend {
    async fn start(cert: &str, key: &str, client_ca: Option<&str>, close_each: bool) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let config = Arc::new(Mutex::new(server_config(cert, key, client_ca)));
        let (task_seen, task_config) = (seen.clone(), config.clone());
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { return };
                        let acceptor = TlsAcceptor::from(task_config.lock().unwrap().clone());
                        connections.spawn(serve(acceptor, tcp, task_seen.clone(), close_each));
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        TlsBackend {
            addr,
            seen,
            config,
            task,
        }
    }

    /// New handshakes get this certificate from now on.
    fn swap_certificate(&self, cert: &str, key: &str) {
        *self.config.lock().unwrap() = server_config(cert, key, None);
    }

    fn count(&self, counter: fn(&Seen) -> &AtomicUsize) -> usize {
        counter(&self.seen).load(Ordering::SeqCst)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(acceptor: TlsAcceptor, tcp: TcpStream, seen: Arc<Seen>, close_each: bool) {
    let mut tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(_) => {
            seen.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    let (sni, client_cert) = {
        let (_, session) = tls.get_ref();
        seen.handshakes.fetch_add(1, Ordering::SeqCst);
        if session.handshake_kind() == Some(HandshakeKind::Resumed) {
            seen.resumed.fetch_add(1, Ordering::SeqCst);
        }
        (
            session.server_name().unwrap_or("-").to_string(),
            session.peer_certificates().is_some_and(|c| !c.is_empty()),
        )
    };
    *seen.sni.lock().unwrap() = Some(sni.clone());
    seen.client_cert.store(client_cert, Ordering::SeqCst);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end + 4);
        seen.requests.fetch_add(1, Ordering::SeqCst);
        if head.starts_with("get /upgrade ") {
            let _ = tls
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n")
                .await;
            // From here on, every byte back as it came.
            let _ = tls.write_all(&buf).await;
            loop {
                match tls.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tls.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let close = close_each || head.contains("connection: close");
        let body = format!("sni={sni};client_cert={client_cert}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if tls.write_all(answer.as_bytes()).await.is_err() || close {
            let _ = tls.shutdown().await;
            return;
        }
    }
}

/// A balancer in front of `url` with `[upstream_tls]` lines `tls`. A URL with a name is
/// resolved by discovery into one backend per address: tests that watch a backend's health use
/// an IP URL, so that the backend they hold is the one probed.
async fn balancer(url: &str, tls: &str) -> TestBalancer {
    Scenario::new()
        .backend_url(url)
        .quiet_health()
        .config(&format!("[upstream_tls]\n{tls}\n"))
        .start()
        .await
        .lb
}

fn path(dir: &TempDir, file: &str, text: &str) -> String {
    dir.write(file, text).display().to_string()
}

async fn body_of(lb: &TestBalancer, path: &str) -> (u16, String) {
    let (status, _, body) = get(&client(), &lb.url(path)).await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_https_backend_is_verified_against_the_ca_and_its_connections_are_pooled() {
    let _cpu = crate::support::cpu::shared().await;
    let pki = Pki::new("test CA");
    let (cert, key) = pki.leaf(&["localhost"]);
    let backend = TlsBackend::start(&cert, &key, None, false).await;
    let dir = TempDir::new("upstream-tls-pooled");
    let ca = path(&dir, "ca.pem", &pki.ca_pem);
    let url = format!("https://localhost:{}", backend.addr.port());
    let lb = balancer(&url, &format!("ca = \"{ca}\"")).await;
    for _ in 0..20 {
        let (status, body) = body_of(&lb, "/").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "sni=localhost;client_cert=false");
    }
    // 20 requests on pooled connections: a handshake for the health probe, one for traffic.
    let handshakes = backend.count(|s| &s.handshakes);
    assert!(handshakes <= 3, "{handshakes} handshakes for 20 requests");
    lb.stop().await;
}

#[tokio::test]
async fn new_connections_resume_the_tls_session() {
    let _cpu = crate::support::cpu::shared().await;
    let pki = Pki::new("test CA");
    let (cert, key) = pki.leaf(&["localhost"]);
    // Every answer closes its connection: each request needs a handshake.
    let backend = TlsBackend::start(&cert, &key, None, true).await;
    let dir = TempDir::new("upstream-tls-resume");
    let ca = path(&dir, "ca.pem", &pki.ca_pem);
    let url = format!("https://localhost:{}", backend.addr.port());
    let lb = balancer(&url, &format!("ca = \"{ca}\"")).await;
    for _ in 0..6 {
        assert_eq!(body_of(&lb, "/").await.0, 200);
    }
    let (handshakes, resumed) = (
        backend.count(|s| &s.handshakes),
        backend.count(|s| &s.resumed),
    );
    assert!(handshakes >= 6, "{handshakes}");
    assert!(resumed >= 4, "{resumed} of {handshakes} handshakes resumed");
    lb.stop().await;
}

/// A certificate the configured CA did not sign: 502 with a clear reason, and the health check
/// (same TLS settings) takes the backend out with the verifier's word for it.
#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_502() {
    let _cpu = crate::support::cpu::shared().await;
    let (good, other) = (Pki::new("test CA"), Pki::new("another CA"));
    let (cert, key) = good.leaf(&["127.0.0.1"]);
    // Connections close after each answer, so that each request makes a new handshake.
    let backend = TlsBackend::start(&cert, &key, None, true).await;
    let dir = TempDir::new("upstream-tls-wrong-ca");
    let ca = path(&dir, "ca.pem", &good.ca_pem);
    let url = format!("https://{}", backend.addr);
    let lb = balancer(&url, &format!("ca = \"{ca}\"")).await;
    let b = lb.proxy.backends()[0].clone();
    wait_until(Duration::from_secs(5), || b.last_probe().is_some())
        .await
        .expect("probed once");
    assert!(b.is_healthy());
    assert_eq!(body_of(&lb, "/").await.0, 200);
    let (cert, key) = other.leaf(&["127.0.0.1"]);
    backend.swap_certificate(&cert, &key);
    let (status, body) = body_of(&lb, "/").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TLS"), "{body}");
    // The failed connect asks for a probe at once; it fails the same way.
    wait_until(Duration::from_secs(5), || !b.is_healthy())
        .await
        .expect("marked DOWN by its health check");
    let (_, detail) = b.last_probe().expect("probed");
    assert!(
        detail.contains("certificate") || detail.contains("UnknownIssuer"),
        "{detail}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_a_backend_that_asks_for_one() {
    let _cpu = crate::support::cpu::shared().await;
    let (server_pki, client_pki) = (Pki::new("server CA"), Pki::new("client CA"));
    let (cert, key) = server_pki.leaf(&["127.0.0.1"]);
    let backend = TlsBackend::start(&cert, &key, Some(&client_pki.ca_pem), false).await;
    let dir = TempDir::new("upstream-tls-mtls");
    let ca = path(&dir, "ca.pem", &server_pki.ca_pem);
    let (client_cert, client_key) = client_pki.leaf(&["alb.test"]);
    let client_cert = path(&dir, "client.pem", &client_cert);
    let client_key = path(&dir, "client.key", &client_key);
    let url = format!("https://{}", backend.addr);
    let lb = balancer(
        &url,
        &format!("ca = \"{ca}\"\ncert = \"{client_cert}\"\nkey = \"{client_key}\""),
    )
    .await;
    let (status, body) = body_of(&lb, "/").await;
    assert_eq!((status, body.as_str()), (200, "sni=-;client_cert=true"));
    lb.stop().await;

    // Without one, the backend refuses alb: its health check says so.
    let lb = balancer(&url, &format!("ca = \"{ca}\"")).await;
    let b = lb.proxy.backends()[0].clone();
    wait_until(Duration::from_secs(5), || !b.is_healthy())
        .await
        .expect("refused without a client certificate");
    lb.stop().await;
}

/// An IP backend whose certificate names a host: `server_name` says which name to verify and
/// to send; without it, the IP itself must be in the certificate.
#[tokio::test]
async fn server_name_verifies_an_ip_backend_by_the_name_its_certificate_carries() {
    let _cpu = crate::support::cpu::shared().await;
    let pki = Pki::new("test CA");
    let (cert, key) = pki.leaf(&["backend.test"]);
    let backend = TlsBackend::start(&cert, &key, None, false).await;
    let dir = TempDir::new("upstream-tls-name");
    let ca = path(&dir, "ca.pem", &pki.ca_pem);
    let url = format!("https://{}", backend.addr);
    let lb = balancer(
        &url,
        &format!("ca = \"{ca}\"\nserver_name = \"backend.test\""),
    )
    .await;
    let (status, body) = body_of(&lb, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "sni=backend.test;client_cert=false")
    );
    lb.stop().await;

    let lb = balancer(&url, &format!("ca = \"{ca}\"")).await;
    let b = lb.proxy.backends()[0].clone();
    wait_until(Duration::from_secs(5), || !b.is_healthy())
        .await
        .expect("127.0.0.1 is not a name of the certificate");
    lb.stop().await;
}

#[tokio::test]
async fn verify_false_takes_any_certificate() {
    let _cpu = crate::support::cpu::shared().await;
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["elsewhere.test".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap().pem();
    let backend = TlsBackend::start(&cert, &key.serialize_pem(), None, false).await;
    let url = format!("https://localhost:{}", backend.addr.port());
    let lb = balancer(&url, "verify = false").await;
    let (status, body) = body_of(&lb, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "sni=localhost;client_cert=false")
    );
    lb.stop().await;
}

/// An upgraded connection to a TLS backend: bytes both ways through the tunnel, including what
/// rustls had to hold back while the socket was full.
#[tokio::test]
async fn a_tunnel_to_a_tls_backend_carries_bytes_both_ways() {
    let _cpu = crate::support::cpu::shared().await;
    let pki = Pki::new("test CA");
    let (cert, key) = pki.leaf(&["localhost"]);
    let backend = TlsBackend::start(&cert, &key, None, false).await;
    let dir = TempDir::new("upstream-tls-tunnel");
    let ca = path(&dir, "ca.pem", &pki.ca_pem);
    let url = format!("https://localhost:{}", backend.addr.port());
    let lb = balancer(&url, &format!("ca = \"{ca}\"")).await;
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    stream
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        sent
    });
    let mut got = vec![0u8; 4 * 1024 * 1024];
    tokio::time::timeout(Duration::from_secs(20), read.read_exact(&mut got))
        .await
        .expect("the echo in time")
        .unwrap();
    assert!(writer.await.unwrap() == got, "the echo differs");
    lb.stop().await;
}

#[test]
fn tls_problems_name_their_key_and_file() {
    let dir = TempDir::new("upstream-tls-config");
    let missing = dir.0.join("missing.pem").display().to_string();
    let problems = |tls: &str| -> String {
        let text = format!("backends = [\"https://localhost:8443\"]\n[upstream_tls]\n{tls}\n");
        match alb::Config::from_toml(&text, "test.toml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let said = problems(&format!("ca = \"{missing}\""));
    assert!(
        said.contains("upstream_tls.ca") && said.contains("missing.pem"),
        "{said}"
    );
    let pki = Pki::new("test CA");
    let (cert, _) = pki.leaf(&["alb.test"]);
    let (_, other_key) = pki.leaf(&["alb.test"]);
    let cert = path(&dir, "client.pem", &cert);
    let said = problems(&format!("cert = \"{cert}\""));
    assert!(
        said.contains("upstream_tls.key") && said.contains("required"),
        "{said}"
    );
    let other_key = path(&dir, "other.key", &other_key);
    let said = problems(&format!("cert = \"{cert}\"\nkey = \"{other_key}\""));
    assert!(
        said.contains("upstream_tls.key"),
        "a key of another certificate: {said}"
    );
    let not_pem = path(&dir, "ca.txt", "hello");
    let said = problems(&format!("ca = \"{not_pem}\""));
    assert!(
        said.contains("upstream_tls.ca") && said.contains("ca.txt"),
        "{said}"
    );
    let said = problems("server_name = \"not a name\"");
    assert!(said.contains("upstream_tls.server_name"), "{said}");
    let said = match alb::Config::from_toml("backends = [\"ftp://x:1\"]\n", "test.toml") {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    assert!(said.contains("https://"), "{said}");
}

/// The real binary: a backend whose certificate another CA signed is taken out by its first
/// probe, and the log line says which backend and why (the 502 a request meets on a handshake
/// that fails is checked in-process above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_why_a_backend_certificate_was_refused() {
    let _cpu = crate::support::cpu::shared().await;
    use crate::support::binary::LoggedProcess;
    let (good, other) = (Pki::new("test CA"), Pki::new("another CA"));
    let (cert, key) = other.leaf(&["127.0.0.1"]);
    let backend = TlsBackend::start(&cert, &key, None, false).await;
    let dir = TempDir::new("upstream-tls-binary");
    let ca = path(&dir, "ca.pem", &good.ca_pem);
    let config = dir.write(
        "alb.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nbackends = [\"https://{}\"]\n\
             [health_check]\ninterval = \"60s\"\n[upstream_tls]\nca = \"{ca}\"\n\
             [admin]\nlisten = \"off\"\n",
            backend.addr
        ),
    );
    let alb = LoggedProcess::alb(&config);
    let down = alb.wait_line("is DOWN", 1, Duration::from_secs(10)).await;
    assert!(
        down.contains(&format!("https://{}", backend.addr)),
        "{down}"
    );
    assert!(
        down.contains("TLS handshake") && down.contains("UnknownIssuer"),
        "{down}"
    );
    assert_eq!(backend.count(|s| &s.requests), 0, "nothing was sent to it");
}
