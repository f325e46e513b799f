//! Certificates for the TLS tests, made with rcgen: a test CA and leaves it signs, and the
//! command-line clients (curl) that check them.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::TempDir;

/// A test certificate authority; curl and the in-test clients trust it alone.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate (PEM chain: leaf, then the CA) and its key.
pub struct Leaf {
    pub chain: String,
    pub key: String,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "alb test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A rustls client that trusts this CA alone and offers `alpn`.
    pub fn client_config(&self, alpn: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem().as_bytes()).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        std::sync::Arc::new(config)
    }

    /// A leaf named `cn` for the DNS `names`, valid until `not_after` (a year by default).
    pub fn leaf(&self, cn: &str, names: &[&str], not_after: Option<SystemTime>) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3 * 365 * 86_400)).into();
        params.not_after = not_after
            .unwrap_or(now + Duration::from_secs(365 * 86_400))
            .into();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            chain: format!("{}{}", cert.pem(), self.ca.pem()),
            key: key.serialize_pem(),
        }
    }
}

pub fn write_leaf(dir: &TempDir, name: &str, leaf: &Leaf) {
    dir.write(&format!("{name}.pem"), &leaf.chain);
    dir.write(&format!("{name}.key"), &leaf.key);
}

/// Runs curl; returns whether it succeeded, its stdout and its stderr.
pub async fn curl(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The port in a log line `... on 127.0.0.1:PORT ...` after `marker`.
pub fn port_after(line: &str, marker: &str) -> u16 {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port after {marker:?} in {line}"))
}
