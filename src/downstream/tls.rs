//! TLS termination for the `[tls]` listener: the rustls server configuration, the certificate
//! resolver (by SNI), and each connection's handshake before it is served like a plain one.
//!
//! The certificates live in the config snapshot (loaded by `config::tls`), and the resolver
//! reads the snapshot current at each handshake: a reload swaps the snapshot whole (arc-swap), so
//! new handshakes get the new certificates at once, a handshake never waits on a reload, and
//! open connections keep the session they have.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{PeerIncompatible, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::connection::{ConnSettings, Seat};
use super::detect::{refuse_header, serve_connection};
use super::h2::serve_h2;
use super::proxy_protocol::{Source, read_header};
use super::shutdown::Shutdown;
use crate::config::{LoadedCertificate, crypto_provider};
use crate::deadline::Deadline;
use crate::http1::{ClientStream, Prefixed, ReadSide};
use crate::proxy::{ClientInfo, Proxy, TlsFailure, TlsSession};

/// Sessions remembered for resumption by session ID (TLS 1.2 clients that do not take tickets).
/// An entry is a few hundred bytes; this many cover a busy minute of new clients.
const SESSION_CACHE_ENTRIES: usize = 16 * 1024;
/// The same for each certificate with a client-certificate policy (fewer clients, as a rule).
const MTLS_SESSION_CACHE_ENTRIES: usize = 1024;
/// Listen backlog of the TLS listener, as tokio gives the plain one.
const BACKLOG: i32 = 1024;

/// The server side of every TLS handshake: TLS 1.2 and 1.3 with rustls' default cipher suites
/// (AEAD only, forward secret), resumption by tickets (keys rotated by rustls every 6 hours) and
/// by a session cache, and ALPN `h2` (unless `http2.tls` is off) and `http/1.1`. The protocol
/// list is fixed when the listener starts: a reload does not change it.
pub fn server_config(proxy: Arc<Proxy>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let h2 = proxy.snapshot().config().http2.tls;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { proxy }));
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // alb's order of cipher suites wins over the client's, as scanners (testssl) expect of a
    // server: rustls' order, AES-GCM before ChaCha20-Poly1305. Every suite is AEAD with
    // forward secrecy either way; what a client listing ChaCha20 first loses is only speed on a
    // CPU without AES instructions, which present-day servers and phones have.
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// Binds the TLS listener (without a runtime's help: `Server::from_listener` is not async).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As tokio does for the plain listener: a restart need not wait out TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Chooses the certificate by the client's SNI from the current snapshot's set.
#[derive(Debug)]
struct SniResolver {
    proxy: Arc<Proxy>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.proxy.snapshot.load();
        let tls = snapshot.config().tls.as_ref()?;
        tls.certificates.choose(hello.server_name()).cloned()
    }
}

/// Takes a connection accepted on the TLS listener through its PROXY protocol header (when
/// required) and its handshake, both within `timeouts.client_header`, then serves it. A failed
/// handshake is counted by reason and the connection closed (after rustls' alert, where the
/// client is owed one).
///
/// Like `serve_connection`, a plain function around an `async move` block (an `async fn` would
/// keep its arguments twice), with the PROXY header and the handshake boxed apart: once
/// established, a TLS connection's task is its HTTP connection's and not a handshake's.
#[allow(clippy::manual_async_fn)] // see above: the state's size
pub fn serve_tls(
    stream: TcpStream,
    server: Arc<ServerConfig>,
    proxy: Arc<Proxy>,
    client: ClientInfo,
    settings: Arc<ConnSettings>,
    shutdown: Arc<Shutdown>,
    seat: Seat,
) -> impl Future<Output = ()> + Send {
    async move {
        let accepted = Box::pin(accept_session(
            stream, server, &proxy, client, &settings, &shutdown,
        ));
        let Some((session, client)) = accepted.await else {
            return;
        };
        if session.get_ref().1.alpn_protocol() == Some(b"h2") {
            return Box::pin(serve_h2(session, proxy, client, settings, shutdown, seat)).await;
        }
        serve_connection(
            ClientStream::Tls(session),
            proxy,
            client,
            settings,
            shutdown,
            seat,
        )
        .await;
    }
}

/// The PROXY protocol header (when required) and the handshake, within
/// `timeouts.client_header`: the session and the client it serves, or `None` once the failure
/// is counted.
async fn accept_session(
    stream: TcpStream,
    server: Arc<ServerConfig>,
    proxy: &Proxy,
    client: ClientInfo,
    settings: &ConnSettings,
    shutdown: &Shutdown,
) -> Option<(Box<crate::http1::TlsClientStream>, ClientInfo)> {
    let (stream, early, client) = if settings.proxy_header {
        proxy_header(stream, proxy, client, settings, shutdown).await?
    } else {
        (stream, BytesMut::new(), client)
    };
    let handshake = handshake(Prefixed::for_tls(early, stream), server, proxy);
    match tokio::time::timeout(settings.header_timeout, handshake).await {
        Ok(Ok((mut session, settled))) => {
            let client = client.with_tls(settled);
            let (io, tls) = session.get_mut();
            if tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2) {
                io.refuse_renegotiation();
            } else {
                io.stop_watching();
            }
            Some((Box::new(session), client))
        }
        Ok(Err((reason, detail))) => {
            failed(proxy, &client, reason, &detail);
            None
        }
        Err(_) => {
            let detail = format!("not done within {:?}", settings.header_timeout);
            failed(proxy, &client, TlsFailure::Timeout, &detail);
            None
        }
    }
}

/// Reads the PROXY protocol header in front of the TLS session; gives back the socket, the
/// bytes that followed the header (the start of the ClientHello) and the client it names.
async fn proxy_header(
    stream: TcpStream,
    proxy: &Proxy,
    client: ClientInfo,
    settings: &ConnSettings,
    shutdown: &Shutdown,
) -> Option<(TcpStream, BytesMut, ClientInfo)> {
    let (read, write) = ClientStream::Plain(stream).split();
    let mut reader = ReadSide {
        half: read,
        buf: BytesMut::new(),
    };
    let mut timer = Deadline::default();
    let mut stopping = pin!(shutdown.notified());
    stopping.as_mut().enable();
    let header = read_header(
        &mut reader,
        &mut timer,
        settings.header_timeout,
        shutdown,
        stopping,
    )
    .await;
    let client = match header {
        Ok(header) => match header.source {
            Source::Client(addr) => ClientInfo::new(addr),
            Source::Peer => client,
        },
        Err(failure) => {
            refuse_header(proxy, &client, &failure);
            return None;
        }
    };
    match reader.half.reunite(write) {
        Ok(ClientStream::Plain(stream)) => Some((stream, reader.buf, client)),
        _ => None,
    }
}

/// Reads the ClientHello, refuses an SNI name no certificate has, and completes the handshake
/// under the server configuration of the certificate the name chose (its client-certificate
/// policy). Gives back the session and what it settled (the certificate's names, a verified
/// client certificate's subject). A failure comes with its reason and what rustls said.
async fn handshake(
    io: Prefixed,
    server: Arc<ServerConfig>,
    proxy: &Proxy,
) -> Result<(crate::http1::TlsClientStream, Arc<TlsSession>), (TlsFailure, String)> {
    let why = |e: std::io::Error| (classify(&e), e.to_string());
    let start = LazyConfigAcceptor::new(Acceptor::default(), io)
        .await
        .map_err(why)?;
    let (chosen, name) = {
        let hello = start.client_hello();
        let snapshot = proxy.snapshot.load();
        let chosen = snapshot
            .config()
            .tls
            .as_ref()
            .and_then(|tls| tls.certificates.entry(hello.server_name()))
            .map(|certificate| (certificate.covers.clone(), config_for(certificate, &server)));
        (chosen, hello.server_name().map(str::to_string))
    };
    let Some((covers, config)) = chosen else {
        // Let rustls refuse it (its resolver finds nothing either), so that the client gets an
        // alert and not a bare close; the reason counted is the name.
        let _ = start.into_stream(server).await;
        let detail = format!("no certificate for {:?}", name.unwrap_or_default());
        return Err((TlsFailure::UnknownName, detail));
    };
    let config = config.map_err(|e| (TlsFailure::BadHello, e.to_string()))?;
    let session = start.into_stream(config).await.map_err(why)?;
    let settled = TlsSession {
        certificate_names: covers,
        client_subject: client_subject(session.get_ref().1.peer_certificates()),
        sni: name.is_some(),
    };
    Ok((session, Arc::new(settled)))
}

/// The server configuration for handshakes `certificate` answers: the listener's own, or, for
/// a certificate with a client-certificate policy, one made for it (once per config snapshot)
/// with its verifier and a resolver that gives that certificate alone. rustls takes the
/// verifier per configuration, so choosing the configuration by SNI (the ClientHello is read
/// already) is what lets each certificate have its own policy. Its session tickets and cache
/// are its own: a session begun without a client certificate never resumes under a policy
/// that asks for one.
fn config_for(
    certificate: &LoadedCertificate,
    base: &Arc<ServerConfig>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let Some(auth) = &certificate.client_auth else {
        return Ok(base.clone());
    };
    if let Some(made) = auth.server.get() {
        return Ok(made.clone());
    }
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(auth.policy.verifier.clone())
        .with_cert_resolver(Arc::new(OneCertificate(certificate.certified.clone())));
    config.alpn_protocols = base.alpn_protocols.clone();
    config.ignore_client_order = base.ignore_client_order;
    config.session_storage = ServerSessionMemoryCache::new(MTLS_SESSION_CACHE_ENTRIES);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(auth.server.get_or_init(|| Arc::new(config)).clone())
}

/// The certificate of a configuration made for one certificate.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The subject of the client's certificate (RFC 4514 form, `CN=…, O=…`), which rustls
/// presents only once verified against the policy's CA.
fn client_subject(chain: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<Arc<str>> {
    let leaf = chain?.first()?;
    let (_, parsed) = X509Certificate::from_der(leaf).ok()?;
    Some(Arc::from(parsed.subject().to_string()))
}

/// The metric's reason for a failed handshake.
fn classify(error: &std::io::Error) -> TlsFailure {
    use std::io::ErrorKind;
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            | rustls::Error::InvalidMessage(rustls::InvalidMessage::UnknownProtocolVersion) => {
                TlsFailure::NotTls
            }
            // A ClientHello without signature_algorithms is from before TLS 1.2 (the extension
            // came with it): rustls refuses it on that before it looks at the version.
            rustls::Error::PeerIncompatible(
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::SignatureAlgorithmsExtensionRequired,
            ) => TlsFailure::ProtocolVersion,
            rustls::Error::PeerIncompatible(_) => TlsFailure::Incompatible,
            rustls::Error::NoApplicationProtocol => TlsFailure::Incompatible,
            _ => TlsFailure::BadHello,
        };
    }
    match error.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            TlsFailure::Closed
        }
        _ => TlsFailure::BadHello,
    }
}

/// Counts a failed handshake; logged at debug: on a public port, scanners fail handshakes all day.
fn failed(proxy: &Proxy, client: &ClientInfo, reason: TlsFailure, detail: &str) {
    proxy.stats().record_tls_failure(reason);
    tracing::debug!(
        peer = %client.addr,
        reason = reason.name(),
        "TLS handshake failed, connection closed: {detail}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_subject_is_the_leafs_in_rfc_4514_form() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client-1");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Ops");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        let chain = [cert.der().clone()];
        let subject = client_subject(Some(&chain)).expect("a subject");
        assert!(subject.contains("CN=client-1"), "{subject}");
        assert!(subject.contains("O=Example Ops"), "{subject}");
        assert_eq!(client_subject(None), None);
        assert_eq!(client_subject(Some(&[])), None);
    }
}
