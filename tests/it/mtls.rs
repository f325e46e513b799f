//! Client certificates on the TLS listener (mTLS), with curl as the client: `client_auth`
//! required and optional on the listener, a per-certificate policy chosen by SNI, certificates
//! from the right CA and from another, and the config's refusals naming their key.

use crate::support::pki::{Pki, curl, write_leaf};
use crate::support::{TempDir, TestBackend, TestBalancer, backends_line};

/// A TLS listener whose `[tls]` section gets `tls_extra` and whose second certificate
/// (admin.example) gets `admin_extra`. Files in the directory: `ca.pem` (signs the server's
/// certificates and the client certificate `client.pem`), `other.pem`, a client certificate
/// from another CA.
struct Site {
    dir: TempDir,
    lb: TestBalancer,
}

async fn start_site(name: &str, backend: &TestBackend, tls_extra: &str, admin_extra: &str) -> Site {
    let dir = TempDir::new(name);
    let pki = Pki::new();
    write_leaf(&dir, "a", &pki.leaf("a", &["a.example"], None));
    write_leaf(&dir, "admin", &pki.leaf("admin", &["admin.example"], None));
    write_leaf(&dir, "client", &pki.leaf("client-1", &[], None));
    write_leaf(&dir, "other", &Pki::new().leaf("intruder", &[], None));
    dir.write("ca.pem", &pki.ca_pem());
    let config = format!(
        "listen = \"127.0.0.1:0\"\n{}\n[admin]\nlisten = \"off\"\n[health_check]\ninterval = \"60s\"\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"a.pem\"\nkey = \"a.key\"\n{tls_extra}\n\
         [[tls.certificate]]\ncert = \"admin.pem\"\nkey = \"admin.key\"\n{admin_extra}\n",
        backends_line(&[backend])
    );
    let path = dir.write("alb.toml", &config);
    let lb = TestBalancer::start_file(&path).await;
    Site { dir, lb }
}

impl Site {
    fn file(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }

    /// curl to `https://{sni}/` presenting the client certificate `cert` (`client`, `other`)
    /// if any: the status, or None when the handshake (or the first read) failed.
    async fn status(&self, sni: &str, host: &str, cert: Option<&str>) -> Option<String> {
        self.get(sni, "/", &[&format!("Host: {host}")], cert).await
    }

    /// [`Site::status`] for `path` with the request fields `fields`.
    async fn get(
        &self,
        sni: &str,
        path: &str,
        fields: &[&str],
        cert: Option<&str>,
    ) -> Option<String> {
        let port = self.lb.tls_addr.expect("TLS listener").port();
        let mut args = vec![
            "-o".to_string(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "--cacert".into(),
            self.file("ca.pem"),
            "--resolve".into(),
            format!("{sni}:{port}:127.0.0.1"),
        ];
        for field in fields {
            args.extend(["-H".to_string(), field.to_string()]);
        }
        if let Some(c) = cert {
            args.extend([
                "--cert".into(),
                self.file(&format!("{c}.pem")),
                "--key".into(),
                self.file(&format!("{c}.key")),
            ]);
        }
        args.push(format!("https://{sni}:{port}{path}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, _err) = curl(&args).await;
        ok.then_some(out)
    }
}

#[tokio::test]
async fn required_client_certificates_admit_the_cas_clients_only() {
    let backend = TestBackend::start("a").await;
    let site = start_site(
        "mtls-required",
        &backend,
        "client_ca = \"ca.pem\"\nclient_auth = \"required\"",
        "",
    )
    .await;
    for sni in ["a.example", "admin.example"] {
        assert_eq!(
            site.status(sni, sni, None).await,
            None,
            "{sni}: no certificate"
        );
        assert_eq!(
            site.status(sni, sni, Some("other")).await,
            None,
            "{sni}: a certificate from another CA"
        );
        assert_eq!(
            site.status(sni, sni, Some("client")).await.as_deref(),
            Some("200"),
            "{sni}: the CA's client"
        );
    }
    assert_eq!(backend.hits(), 2);
    site.lb.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn optional_client_certificates_admit_clients_without_one_but_not_a_bad_one() {
    let backend = TestBackend::start("a").await;
    let site = start_site(
        "mtls-optional",
        &backend,
        "client_ca = \"ca.pem\"\nclient_auth = \"optional\"",
        "",
    )
    .await;
    let sni = "a.example";
    assert_eq!(site.status(sni, sni, None).await.as_deref(), Some("200"));
    assert_eq!(
        site.status(sni, sni, Some("client")).await.as_deref(),
        Some("200")
    );
    assert_eq!(
        site.status(sni, sni, Some("other")).await,
        None,
        "unverifiable"
    );
    site.lb.stop().await;
    backend.stop().await;
}

/// The policy follows the certificate SNI chose; and SNI cannot be used to dodge it, since a
/// Host of the guarded certificate on another certificate's connection gets 421.
#[tokio::test]
async fn a_certificates_own_policy_applies_to_its_names_alone() {
    let backend = TestBackend::start("a").await;
    let site = start_site(
        "mtls-per-sni",
        &backend,
        "",
        "client_ca = \"ca.pem\"\nclient_auth = \"required\"",
    )
    .await;
    assert_eq!(
        site.status("a.example", "a.example", None).await.as_deref(),
        Some("200")
    );
    assert_eq!(
        site.status("admin.example", "admin.example", None).await,
        None
    );
    assert_eq!(
        site.status("admin.example", "admin.example", Some("client"))
            .await
            .as_deref(),
        Some("200")
    );
    assert_eq!(
        site.status("a.example", "admin.example", None)
            .await
            .as_deref(),
        Some("421"),
        "the guarded name through the open certificate's connection"
    );
    site.lb.stop().await;
    backend.stop().await;

    // The listener requires, the certificate opts out.
    let backend = TestBackend::start("b").await;
    let site = start_site(
        "mtls-opt-out",
        &backend,
        "client_ca = \"ca.pem\"",
        "client_auth = \"none\"",
    )
    .await;
    assert_eq!(site.status("a.example", "a.example", None).await, None);
    assert_eq!(
        site.status("admin.example", "admin.example", None)
            .await
            .as_deref(),
        Some("200")
    );
    site.lb.stop().await;
    backend.stop().await;
}

#[tokio::test]
async fn client_auth_mistakes_refuse_the_config_naming_the_key() {
    let dir = TempDir::new("mtls-config");
    let pki = Pki::new();
    write_leaf(&dir, "a", &pki.leaf("a", &["a.example"], None));
    dir.write("ca.pem", &pki.ca_pem());
    dir.write("empty.pem", "");
    let cases = [
        ("client_auth = \"required\"", "", "tls.client_auth"),
        ("client_auth = \"optional\"", "", "tls.client_auth"),
        (
            "client_ca = \"ca.pem\"\nclient_auth = \"sometimes\"",
            "",
            "tls.client_auth",
        ),
        ("client_ca = \"missing.pem\"", "", "tls.client_ca"),
        ("client_ca = \"empty.pem\"", "", "tls.client_ca"),
        (
            "",
            "client_auth = \"required\"",
            "tls.certificate[0].client_auth",
        ),
        (
            "",
            "client_ca = \"missing.pem\"",
            "tls.certificate[0].client_ca",
        ),
    ];
    for (tls_extra, cert_extra, key) in cases {
        let config = format!(
            "listen = \"127.0.0.1:0\"\nbackends = [\"http://127.0.0.1:1\"]\n\
             [tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n{tls_extra}\n\
             [[tls.certificate]]\ncert = \"a.pem\"\nkey = \"a.key\"\n{cert_extra}\n"
        );
        let path = dir.write("alb.toml", &config);
        let error = alb::Config::load(&path)
            .expect_err(&format!("{tls_extra} {cert_extra}"))
            .to_string();
        assert!(error.contains(key), "{key} in: {error}");
    }
}

#[tokio::test]
async fn alb_check_lists_each_certificates_client_policy() {
    let dir = TempDir::new("mtls-check");
    let pki = Pki::new();
    write_leaf(&dir, "a", &pki.leaf("a", &["a.example"], None));
    write_leaf(&dir, "b", &pki.leaf("b", &["b.example"], None));
    dir.write("ca.pem", &pki.ca_pem());
    let path = dir.write(
        "alb.toml",
        "listen = \"127.0.0.1:0\"\nbackends = [\"http://127.0.0.1:1\"]\n\
         [tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nclient_ca = \"ca.pem\"\nclient_auth = \"optional\"\n\
         [[tls.certificate]]\ncert = \"b.pem\"\nkey = \"b.key\"\nclient_auth = \"none\"\n",
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_alb"))
        .args(["check", "-c"])
        .arg(&path)
        .kill_on_drop(true)
        .output()
        .await
        .expect("alb check runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert_eq!(
        text.matches("client certificates optional").count(),
        1,
        "tls has the listener's policy, tls.certificate[0] none: {text}"
    );
}

/// A route on "has a verified client certificate", and the certificate's subject in a header
/// rule: with the CA's client certificate the route takes the request and the backend is told
/// who it is; without one the next route (here: refusing everyone) does.
#[tokio::test]
async fn a_route_on_a_verified_certificate_and_its_subject_in_a_header_rule() {
    let backend = TestBackend::start("a").await;
    let routes = "\n[[route]]\npath_prefix = \"/partners/\"\nclient_certificate = true\n\
                  pool = \"default\"\n\
                  [route.request_headers]\nset = { x-client-subject = \"{tls_client_subject}\" }\n\
                  [[route]]\npath_prefix = \"/partners/\"\ndeny = [\"0.0.0.0/0\", \"::/0\"]\n\
                  pool = \"default\"\n";
    let site = start_site(
        "mtls-route",
        &backend,
        "client_ca = \"ca.pem\"\nclient_auth = \"optional\"",
        routes,
    )
    .await;
    let forged = ["X-Client-Subject: CN=forged"];
    let with = site.get("a.example", "/partners/x", &forged, Some("client"));
    assert_eq!(with.await.as_deref(), Some("200"));
    let seen = backend.last_request().expect("the backend got it");
    let subject = seen.headers["x-client-subject"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(subject.contains("CN=client-1"), "{subject}");
    assert_eq!(seen.headers.get_all("x-client-subject").iter().count(), 1);
    let without = site.get("a.example", "/partners/x", &forged, None);
    assert_eq!(without.await.as_deref(), Some("403"));
    assert_eq!(backend.hits(), 1);
    site.lb.stop().await;
    backend.stop().await;
}
