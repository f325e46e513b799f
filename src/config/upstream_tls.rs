//! `[upstream_tls]`: how alb speaks TLS to `https://` backends. The files are read and the rustls
//! client configuration is built here, once per load of the config, so that a bad CA file or a
//! client key that does not match its certificate is a config problem naming its key, found by
//! `alb check` and refused by a reload, never a failure on the request path.
//!
//! Every `https://` backend verifies its certificate against `ca` (or the system's roots) for the
//! name it is reached by: `server_name` when given, else the URL's host (a DNS name, or an IP
//! address the certificate must list). That name is also the SNI alb sends (none for an IP).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::raw::RawUpstreamTls;
use super::tls::crypto_provider;
use super::values::Problems;

/// The TLS client side of every `https://` backend of one config.
pub struct UpstreamTls {
    pub client: Arc<ClientConfig>,
    /// `upstream_tls.server_name`: the name verified (and sent as SNI) instead of the URL's host.
    pub server_name: Option<ServerName<'static>>,
    pub verify: bool,
    /// `upstream_tls.http2`: `https://` backends are spoken to in HTTP/2 (ALPN `h2` alone).
    pub http2: bool,
    /// The settings and the files' contents: two loads are the same TLS identity exactly when
    /// this is equal (a reload that rotates a certificate under the same path changes it).
    fingerprint: u64,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &UpstreamTls) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field(
                "client_auth",
                &self.client.client_auth_cert_resolver.has_certs(),
            )
            .finish()
    }
}

/// Builds `[upstream_tls]` when a backend is `https://` or the section is written; `base` is the
/// directory relative file names are read from.
pub(super) fn upstream_tls(
    raw: Option<RawUpstreamTls>,
    any_https: bool,
    base: &Path,
    problems: &mut Problems,
) -> Option<Arc<UpstreamTls>> {
    if raw.is_none() && !any_https {
        return None;
    }
    let raw = raw.unwrap_or_default();
    let mut fingerprint = DefaultHasher::new();
    let verify = raw.verify.unwrap_or(true);
    verify.hash(&mut fingerprint);
    let http2 = raw.http2.unwrap_or(false);
    http2.hash(&mut fingerprint);
    let server_name = raw.server_name.as_deref().and_then(|name| {
        name.hash(&mut fingerprint);
        match ServerName::try_from(name.to_string()) {
            Ok(name) => Some(name),
            Err(_) => {
                problems.add(
                    "upstream_tls.server_name",
                    format!("{name:?} is neither a DNS name nor an IP address"),
                );
                None
            }
        }
    });
    let roots = roots(raw.ca.as_deref(), base, &mut fingerprint, problems);
    let client_auth = client_auth(&raw, base, &mut fingerprint, problems);
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?;
    let builder = if verify {
        builder.with_root_certificates(roots?)
    } else {
        tracing::warn!(
            "upstream_tls.verify = false: backend certificates are not verified; whoever is on \
             the path to a backend can read and change its traffic"
        );
        let algorithms = crypto_provider().signature_verification_algorithms;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(algorithms)))
    };
    let mut client = match client_auth? {
        Some((chain, key)) => match builder.with_client_auth_cert(chain, key) {
            Ok(client) => client,
            Err(e) => {
                problems.add(
                    "upstream_tls.key",
                    format!("not usable as the client key: {e}"),
                );
                return None;
            }
        },
        None => builder.with_no_client_auth(),
    };
    // One protocol per backend, chosen by the config, never by the handshake: a pool whose
    // backends negotiate different protocols would balance different things.
    client.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Some(Arc::new(UpstreamTls {
        client: Arc::new(client),
        server_name,
        verify,
        http2,
        fingerprint: fingerprint.finish(),
    }))
}

/// The trust anchors: the `ca` file's certificates, or the system's roots. `None` after a problem.
fn roots(
    ca: Option<&str>,
    base: &Path,
    fingerprint: &mut DefaultHasher,
    problems: &mut Problems,
) -> Option<RootCertStore> {
    let mut store = RootCertStore::empty();
    let Some(ca) = ca else {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            problems.add(
                "upstream_tls.ca",
                "no CA file given and no system root certificates found: give upstream_tls.ca",
            );
            return None;
        }
        return Some(store);
    };
    let certs = certificates("upstream_tls.ca", ca, base, fingerprint, problems)?;
    for cert in certs {
        if let Err(e) = store.add(cert) {
            problems.add(
                "upstream_tls.ca",
                format!("{ca}: not a usable CA certificate: {e}"),
            );
            return None;
        }
    }
    Some(store)
}

type ClientAuth = Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>;

/// `cert` and `key`, both or neither. `None` after a problem.
fn client_auth(
    raw: &RawUpstreamTls,
    base: &Path,
    fingerprint: &mut DefaultHasher,
    problems: &mut Problems,
) -> Option<ClientAuth> {
    let (cert, key) = match (raw.cert.as_deref(), raw.key.as_deref()) {
        (None, None) => return Some(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => {
            problems.add("upstream_tls.key", "required with upstream_tls.cert");
            return None;
        }
        (None, Some(_)) => {
            problems.add("upstream_tls.cert", "required with upstream_tls.key");
            return None;
        }
    };
    let chain = certificates("upstream_tls.cert", cert, base, fingerprint, problems)?;
    let text = read("upstream_tls.key", key, base, fingerprint, problems)?;
    match PrivateKeyDer::from_pem_slice(&text) {
        Ok(key) => Some(Some((chain, key))),
        Err(e) => {
            problems.add(
                "upstream_tls.key",
                format!("{key}: no PEM private key ({e})"),
            );
            None
        }
    }
}

/// Every PEM certificate of a file; at least one.
fn certificates(
    key: &str,
    file: &str,
    base: &Path,
    fingerprint: &mut DefaultHasher,
    problems: &mut Problems,
) -> Option<Vec<CertificateDer<'static>>> {
    let text = read(key, file, base, fingerprint, problems)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&text).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            problems.add(key, format!("{file}: no PEM certificate in it"));
            None
        }
        Err(e) => {
            problems.add(key, format!("{file}: not PEM certificates ({e})"));
            None
        }
    }
}

fn read(
    key: &str,
    file: &str,
    base: &Path,
    fingerprint: &mut DefaultHasher,
    problems: &mut Problems,
) -> Option<Vec<u8>> {
    let path: PathBuf = base.join(file);
    match std::fs::read(&path) {
        Ok(bytes) => {
            bytes.hash(fingerprint);
            Some(bytes)
        }
        Err(e) => {
            problems.add(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// `verify = false`: any certificate is taken. The handshake's signatures are still checked,
/// so the connection is at least with whoever holds the key of the certificate it showed.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
