//! The TLS listener's edge: SNI against Host (421 for a host the connection's certificate does
//! not name, over HTTP/1.1 and HTTP/2, HTTP/2 reuse for the names of one certificate), the
//! server's cipher order, and a TLS 1.2 renegotiation refused at once. Real clients: curl,
//! `openssl s_client`, rustls with the h2 crate.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::pki::{Pki, curl, write_leaf};
use crate::support::{TempDir, TestBackend, TestBalancer, backends_line};

/// A TLS listener with two certificates: `ab` (the `[tls] cert` one) for a.example and
/// b.example, and `admin` for admin.example.
struct Site {
    dir: TempDir,
    pki: Pki,
    lb: TestBalancer,
}

async fn start_site(name: &str, backend: &TestBackend) -> Site {
    let dir = TempDir::new(name);
    let pki = Pki::new();
    write_leaf(
        &dir,
        "ab",
        &pki.leaf("ab", &["a.example", "b.example"], None),
    );
    write_leaf(&dir, "admin", &pki.leaf("admin", &["admin.example"], None));
    dir.write("ca.pem", &pki.ca_pem());
    let config = format!(
        "listen = \"127.0.0.1:0\"\n{}\n[admin]\nlisten = \"off\"\n[health_check]\ninterval = \"60s\"\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"ab.pem\"\nkey = \"ab.key\"\n\
         [[tls.certificate]]\ncert = \"admin.pem\"\nkey = \"admin.key\"\n",
        backends_line(&[backend])
    );
    let path = dir.write("alb.toml", &config);
    let lb = TestBalancer::start_file(&path).await;
    Site { dir, pki, lb }
}

impl Site {
    fn port(&self) -> u16 {
        self.lb.tls_addr.expect("TLS listener").port()
    }

    /// curl to `https://{sni}:port/` (so SNI `sni`), with Host `host`; the status it got.
    async fn status(&self, protocol: &str, sni: &str, host: &str) -> String {
        let port = self.port();
        let (ok, out, err) = curl(&[
            protocol,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--cacert",
            &self.dir.0.join("ca.pem").display().to_string(),
            "--resolve",
            &format!("{sni}:{port}:127.0.0.1"),
            "-H",
            &format!("Host: {host}"),
            &format!("https://{sni}:{port}/"),
        ])
        .await;
        assert!(ok, "curl: {err}");
        out
    }
}

#[tokio::test]
async fn a_host_the_connections_certificate_does_not_name_gets_421_over_http1_and_http2() {
    let backend = TestBackend::start("a").await;
    let site = start_site("sni-host", &backend).await;
    for (protocol, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let port = site.port();
        assert_eq!(
            site.status(protocol, "a.example", "admin.example").await,
            format!("421 {version}")
        );
        assert_eq!(
            site.status(protocol, "a.example", &format!("admin.example:{port}"))
                .await,
            format!("421 {version}")
        );
        assert_eq!(
            site.status(protocol, "a.example", "a.example").await,
            format!("200 {version}")
        );
        assert_eq!(
            site.status(protocol, "a.example", &format!("B.Example:{port}"))
                .await,
            format!("200 {version}"),
            "another name of the same certificate"
        );
        assert_eq!(
            site.status(protocol, "admin.example", "admin.example")
                .await,
            format!("200 {version}")
        );
        assert_eq!(
            site.status(protocol, "admin.example", "a.example").await,
            format!("421 {version}")
        );
    }
    assert_eq!(
        backend.hits(),
        6,
        "no misdirected request reached the backend"
    );
    site.lb.stop().await;
    backend.stop().await;
}

/// An HTTP/2 connection made with SNI `sni`, over rustls trusting the test CA.
async fn h2_connection(site: &Site, sni: &str) -> h2::client::SendRequest<Bytes> {
    let config = site.pki.client_config(b"h2");
    let tcp = TcpStream::connect(site.lb.tls_addr.unwrap()).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (sender, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// GET `https://{authority}/` on an open HTTP/2 connection; the status.
async fn get_h2(sender: &mut h2::client::SendRequest<Bytes>, authority: &str) -> u16 {
    let request = Request::get(format!("https://{authority}/"))
        .body(())
        .unwrap();
    let mut ready = sender.clone().ready().await.expect("connection open");
    let (response, _) = ready.send_request(request, true).expect("stream");
    let response = response.await.expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    status
}

#[tokio::test]
async fn an_http2_connection_serves_every_name_of_its_certificate_and_no_other() {
    let backend = TestBackend::start("a").await;
    let site = start_site("h2-reuse", &backend).await;
    let mut sender = h2_connection(&site, "a.example").await;
    assert_eq!(get_h2(&mut sender, "a.example").await, 200);
    assert_eq!(
        get_h2(&mut sender, "b.example").await,
        200,
        "reuse (RFC 9113 §9.1.1)"
    );
    assert_eq!(get_h2(&mut sender, "admin.example").await, 421);
    // A 421 is the stream's: the connection goes on serving its own names.
    assert_eq!(get_h2(&mut sender, "a.example").await, 200);
    drop(sender);
    site.lb.stop().await;
    backend.stop().await;
}

/// `openssl s_client` with `args` against the site; everything it printed.
async fn s_client(site: &Site, args: &[&str]) -> String {
    let run = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", site.port()),
        ])
        .args(["-servername", "a.example"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("s_client finishes")
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_servers_cipher_order_wins_over_the_clients() {
    let backend = TestBackend::start("a").await;
    let site = start_site("cipher-order", &backend).await;
    // The client puts ChaCha20 first; alb prefers AES-GCM (rustls' order) and picks it.
    let tls12 = s_client(
        &site,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    )
    .await;
    assert!(
        tls12.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{tls12}"
    );
    let tls13 = s_client(
        &site,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
        ],
    )
    .await;
    assert!(
        tls13.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "{tls13}"
    );
    site.lb.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn a_tls12_renegotiation_is_refused_at_once() {
    let backend = TestBackend::start("a").await;
    let site = start_site("renegotiation", &backend).await;
    // `R` on a line of its own makes s_client renegotiate; stdin stays open, so s_client ends
    // only when alb refuses (it used to wait for a ServerHello until the idle timeout).
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", site.port()),
        ])
        .args(["-servername", "a.example", "-tls1_2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let started = Instant::now();
    stdin.write_all(b"R\n").await.expect("write R");
    let output = tokio::time::timeout(Duration::from_secs(3), child.wait_with_output())
        .await
        .expect("s_client ends within 3 s: the renegotiation was refused, not left hanging")
        .expect("s_client output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("RENEGOTIATING"), "s_client tried: {text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(stdin);
    site.lb.stop().await;
    backend.stop().await;
}
