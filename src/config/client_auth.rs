//! Client certificates on the TLS listener (mTLS): `client_ca` and `client_auth` in `[tls]`, and
//! the same keys in a `[[tls.certificate]]`, which override the listener's for handshakes that
//! certificate answers (by SNI). The CA file is read and the verifier built while the config is
//! validated, like the certificates themselves: a bad file refuses the config naming its key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::values::Problems;

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// No certificate, no handshake.
    Required,
    /// A certificate is asked for and verified when given; a client without one is served too
    /// (routes and header rules then tell the two apart).
    Optional,
}

impl ClientAuthMode {
    pub fn name(self) -> &'static str {
        match self {
            ClientAuthMode::Required => "required",
            ClientAuthMode::Optional => "optional",
        }
    }
}

/// A client-certificate policy: its CA and its verifier.
#[derive(Debug)]
pub struct ClientAuth {
    pub mode: ClientAuthMode,
    pub ca_file: PathBuf,
    pub verifier: Arc<dyn ClientCertVerifier>,
}

/// What a certificate's handshakes ask of clients, with the server configuration made for them
/// (rustls takes the verifier per `ServerConfig`, not per certificate). Made on first use by the
/// listener (`downstream::tls`), kept with this config snapshot: a reload brings new ones, and
/// with them new session tickets, so a session begun under an older policy never resumes under
/// this one.
#[derive(Debug)]
pub struct CertificateAuth {
    pub policy: Arc<ClientAuth>,
    pub server: OnceLock<Arc<rustls::ServerConfig>>,
}

/// The `client_ca` and `client_auth` keys of one table, as written.
pub(super) struct Written<'a> {
    /// `tls` or `tls.certificate[N]`.
    pub table: &'a str,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
}

/// The policy of `[tls]` (with `inherited` None) or of a `[[tls.certificate]]` (inheriting the
/// listener's policy key by key). `client_auth` defaults to `required` once a CA is given and to
/// none otherwise; `"none"` turns it off (in a certificate: off for its names alone).
pub(super) fn client_auth(
    written: Written<'_>,
    inherited: Option<&Arc<ClientAuth>>,
    base: &Path,
    provider: &Arc<CryptoProvider>,
    problems: &mut Problems,
) -> Option<Arc<ClientAuth>> {
    let Written {
        table,
        client_ca,
        client_auth,
    } = written;
    if client_ca.is_none() && client_auth.is_none() {
        return inherited.cloned();
    }
    let mode_key = format!("{table}.client_auth");
    let mode = match client_auth.as_deref() {
        None => Some(inherited.map_or(ClientAuthMode::Required, |i| i.mode)),
        Some("required") => Some(ClientAuthMode::Required),
        Some("optional") => Some(ClientAuthMode::Optional),
        Some("none") => None,
        Some(other) => {
            problems.add(
                mode_key,
                format!("{other:?} is not one of \"required\", \"optional\", \"none\""),
            );
            return None;
        }
    };
    let mode = mode?;
    let (ca_key, ca_file) = match (client_ca, inherited) {
        (Some(file), _) => (format!("{table}.client_ca"), base.join(file)),
        // Only the mode changed: the listener's CA stays (read again for this verifier).
        (None, Some(listener)) => (mode_key, listener.ca_file.clone()),
        (None, None) => {
            problems.add(
                mode_key,
                format!(
                    "\"{}\" needs `client_ca` (the CA that signs client certificates) here or in [tls]",
                    mode.name()
                ),
            );
            return None;
        }
    };
    match verifier(mode, &ca_file, provider) {
        Ok(verifier) => Some(Arc::new(ClientAuth {
            mode,
            ca_file,
            verifier,
        })),
        Err(reason) => {
            problems.add(ca_key, format!("{}: {reason}", ca_file.display()));
            None
        }
    }
}

/// rustls' WebPKI verifier over the CAs in `ca_file` (PEM): chains to one of them, in its
/// validity period, for client authentication; `optional` lets a client without one through.
fn verifier(
    mode: ClientAuthMode,
    ca_file: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("not a readable PEM file of CA certificates: {e:?}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err("holds no usable CA certificate".into());
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| format!("unusable as a client CA: {e}"))
}
