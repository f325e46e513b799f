//! The `[tls]` section: the TLS listener's address and its certificates, read from their PEM
//! files while the config is validated. Loading them here, and not when the listener starts,
//! means a certificate is checked exactly like any other value: `alb check`, start-up and every
//! reload read the files again, and a broken one refuses the whole config naming its key and
//! file (a reload then keeps the running set).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::client_auth::{CertificateAuth, ClientAuth, Written, client_auth};
use super::raw::{RawCertificate, RawTls};
use super::values::Problems;

/// Below this many days of validity left, `alb check` warns (Let's Encrypt renews at 30 days
/// left; two weeks left means renewal has been failing for a while).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

const DEFAULT_TLS_LISTEN: &str = "127.0.0.1:8443";

/// The crypto provider of every TLS handshake, on both hops: aws-lc-rs, rustls' default. Signing
/// and key exchange are what a TLS listener spends its CPU on, and aws-lc-rs does both faster
/// than *ring* (it is also FIPS-capable); it builds here with the C compiler alone (no CMake, no
/// NASM). Named here rather than taken from the process default, which becomes ambiguous as soon
/// as a dependency enables a second provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A validated `[tls]` section.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where TLS clients connect (`tls.listen`, beside the plain `listen`).
    pub listen: SocketAddr,
    /// Requests on the plain listener get `308` to the same URL over https.
    pub redirect_http: bool,
    /// Every certificate, `[tls] cert` first; swapped whole with the config on reload.
    pub certificates: Arc<CertificateSet>,
    /// `tls.client_ca` and `tls.client_auth`: the listener's client-certificate policy, which
    /// each certificate inherits unless it has its own.
    pub client_auth: Option<Arc<ClientAuth>>,
}

/// One certificate with its key, as loaded from its files.
#[derive(Debug)]
pub struct LoadedCertificate {
    /// The config key it was given under: `tls` or `tls.certificate[N]`.
    pub key: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// DNS names of its subjectAltName (`*.example.com` for a wildcard), lower case.
    pub names: Vec<String>,
    /// What a session on this certificate may be asked for: its DNS names and the IP
    /// addresses of its subjectAltName, as text (see `proxy::TlsSession::covers`).
    pub covers: Arc<[String]>,
    /// The client certificates its handshakes ask for, if any.
    pub client_auth: Option<CertificateAuth>,
    /// The leaf's subject, for `alb check`.
    pub subject: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    pub certified: Arc<CertifiedKey>,
}

impl LoadedCertificate {
    /// Whole days of validity left now (negative once expired).
    pub fn days_left(&self) -> i64 {
        (self.not_after - unix_now()).div_euclid(86_400)
    }
}

/// The certificates and the names that choose them.
#[derive(Debug, Default)]
pub struct CertificateSet {
    certificates: Vec<LoadedCertificate>,
    /// Exact DNS name → index.
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com` → index: matches exactly one more label.
    wildcard: HashMap<String, usize>,
}

impl CertificateSet {
    pub fn certificates(&self) -> &[LoadedCertificate] {
        &self.certificates
    }

    /// The certificate for a handshake: by SNI name, or the `[tls] cert` one for a client that
    /// sent none (a client connecting to an IP address). An unknown name gets none: serving the
    /// default would only fail the client's name check after a full handshake.
    pub fn choose(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        self.entry(server_name).map(|c| &c.certified)
    }

    /// The certificate [`CertificateSet::choose`] picks, whole: its names and client policy.
    pub fn entry(&self, server_name: Option<&str>) -> Option<&LoadedCertificate> {
        let index = match server_name {
            None => 0,
            Some(name) => self.index_of(name)?,
        };
        self.certificates.get(index)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        // A wildcard stands for one label: `a.example.com`, not `example.com` nor `a.b.example.com`.
        let (label, parent) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(parent).copied()
    }

    fn push(&mut self, certificate: LoadedCertificate) {
        let index = self.certificates.len();
        for name in &certificate.names {
            // The first certificate listing a name keeps it.
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_string()).or_insert(index),
                None => self.exact.entry(name.clone()).or_insert(index),
            };
        }
        self.certificates.push(certificate);
    }
}

/// Validates `[tls]`, loading every certificate; paths are relative to `base` (the config
/// file's directory).
pub(super) fn tls(raw: RawTls, base: &Path, problems: &mut Problems) -> TlsConfig {
    let text = raw.listen.as_deref().unwrap_or(DEFAULT_TLS_LISTEN);
    let listen = match text.parse() {
        Ok(addr) => addr,
        Err(_) => {
            problems.add(
                "tls.listen",
                format!("{text:?} is not an IP address with a port, like \"127.0.0.1:8443\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 8443))
        }
    };
    let provider = crypto_provider();
    let mut set = CertificateSet::default();
    let listener_auth = client_auth(
        Written {
            table: "tls",
            client_ca: raw.client_ca,
            client_auth: raw.client_auth,
        },
        None,
        base,
        &provider,
        problems,
    );
    // The `[tls] cert` one has the listener's policy: its own keys are the listener's.
    let first = RawCertificate {
        cert: raw.cert,
        key: raw.key,
        client_ca: None,
        client_auth: None,
    };
    let extra = raw.certificate.unwrap_or_default();
    let all = std::iter::once(("tls".to_string(), first)).chain(
        extra
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("tls.certificate[{i}]"), c)),
    );
    for (key, raw) in all {
        let (Some(cert), Some(private)) = (raw.cert, raw.key) else {
            problems.add(
                key,
                "needs both `cert` (a PEM chain) and `key` (a PEM private key)",
            );
            continue;
        };
        let policy = client_auth(
            Written {
                table: &key,
                client_ca: raw.client_ca,
                client_auth: raw.client_auth,
            },
            listener_auth.as_ref(),
            base,
            &provider,
            problems,
        );
        let loaded = load(
            &key,
            &base.join(cert),
            &base.join(private),
            &provider,
            problems,
        );
        if let Some(mut loaded) = loaded {
            loaded.client_auth = policy.map(|policy| CertificateAuth {
                policy,
                server: std::sync::OnceLock::new(),
            });
            if key != "tls" && loaded.names.is_empty() {
                problems.add(
                    format!("{key}.cert"),
                    format!(
                        "{}: no DNS name in its subjectAltName, so no SNI name could choose it",
                        loaded.cert_file.display()
                    ),
                );
            }
            set.push(loaded);
        }
    }
    TlsConfig {
        listen,
        redirect_http: raw.redirect_http.unwrap_or(false),
        certificates: Arc::new(set),
        client_auth: listener_auth,
    }
}

/// Loads one certificate chain and its key; every problem names `key` and the file.
fn load(
    key: &str,
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
    problems: &mut Problems,
) -> Option<LoadedCertificate> {
    let cert_key = format!("{key}.cert");
    let at = |file: &Path, reason: String| format!("{}: {reason}", file.display());
    let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
    {
        Ok(chain) => chain,
        Err(e) => {
            problems.add(cert_key, at(cert_file, pem_reason(&e, "certificate")));
            return None;
        }
    };
    if chain.is_empty() {
        problems.add(cert_key, at(cert_file, "holds no PEM CERTIFICATE".into()));
        return None;
    }
    // Every certificate of the chain must parse; the leaf (first) is the one described.
    for (i, der) in chain.iter().enumerate() {
        if let Err(e) = X509Certificate::from_der(der) {
            problems.add(
                cert_key.as_str(),
                at(
                    cert_file,
                    format!("certificate {} of the chain: {e}", i + 1),
                ),
            );
            return None;
        }
    }
    let (names, addresses, subject, not_after) = match X509Certificate::from_der(&chain[0]) {
        Ok((_, leaf)) => describe(&leaf),
        Err(_) => return None,
    };
    if not_after < unix_now() {
        problems.add(
            cert_key.as_str(),
            at(cert_file, format!("expired on {}", date(not_after))),
        );
    }
    let private = match PrivateKeyDer::from_pem_file(key_file) {
        Ok(private) => private,
        Err(e) => {
            problems.add(format!("{key}.key"), at(key_file, pem_reason(&e, "key")));
            return None;
        }
    };
    let certified = match CertifiedKey::from_der(chain, private, provider) {
        Ok(certified) => certified,
        Err(rustls::Error::InconsistentKeys(_)) => {
            problems.add(
                format!("{key}.key"),
                at(
                    key_file,
                    format!("does not match the certificate in {}", cert_file.display()),
                ),
            );
            return None;
        }
        Err(e) => {
            problems.add(format!("{key}.key"), at(key_file, format!("unusable: {e}")));
            return None;
        }
    };
    let covers = names
        .iter()
        .cloned()
        .chain(addresses.iter().map(IpAddr::to_string))
        .collect();
    Some(LoadedCertificate {
        key: key.to_string(),
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
        names,
        covers,
        client_auth: None,
        subject,
        not_after,
        certified: Arc::new(certified),
    })
}

/// The leaf's DNS names, IP addresses, subject and end of validity.
fn describe(leaf: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>, String, i64) {
    let mut names = Vec::new();
    let mut addresses = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    let dns = dns.trim_end_matches('.').to_ascii_lowercase();
                    if !names.contains(&dns) {
                        names.push(dns);
                    }
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match *bytes {
                        [a, b, c, d] => Some(IpAddr::from([*a, *b, *c, *d])),
                        octets => <[u8; 16]>::try_from(octets).ok().map(IpAddr::from),
                    };
                    addresses.extend(ip);
                }
                _ => {}
            }
        }
    }
    (
        names,
        addresses,
        leaf.subject().to_string(),
        leaf.validity().not_after.timestamp(),
    )
}

fn pem_reason(error: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::NoItemsFound => format!("holds no PEM {what}"),
        Error::Io(e) => format!("cannot read: {e}"),
        other => format!("not a valid PEM {what}: {other:?}"),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A Unix time as HTTP writes dates (`Wed, 02 Dec 2026 04:26:14 GMT`).
pub fn date(unix: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0).unsigned_abs()))
}
