//! Just enough of a Kubernetes API client for a list and a watch: GET requests over HTTP/1.1 (TLS
//! with the cluster's CA in-cluster), a bearer token, and answers read within bounds. Written on
//! hyper rather than taken from the `kube` crate, whose dependency tree (k8s-openapi and its
//! every API type) would outweigh alb and needs a newer Rust than alb's.
//!
//! The API server is trusted to be the API server (its certificate is checked) but not to be
//! well-behaved: every answer is read under a deadline and a size cap, so a broken or hostile
//! one costs alb a retry, never unbounded memory or a task stuck forever.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, AUTHORIZATION, HOST, HeaderValue, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

/// Where a pod finds its service account's credentials.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Connecting, the TLS handshake and the answer's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest error answer read (for its Status message).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest token file read: projected tokens are ~1 KiB.
const MAX_TOKEN: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("not running in a Kubernetes pod: {0} is not set")]
    NotInCluster(&'static str),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad API server URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("bad CA certificates: {0}")]
    Ca(String),
    #[error("the token is not usable in a header")]
    Token,
    #[error("cannot connect to the API server: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake with the API server failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the API server answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    /// The resourceVersion asked for is older than the API server keeps: list again.
    #[error("the resourceVersion expired (410 Gone): {0}")]
    Gone(String),
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error("an answer from the API server was larger than {0} bytes")]
    TooLarge(usize),
    #[error("an answer from the API server broke off: {0}")]
    Body(String),
    #[error("an answer from the API server is not what was expected: {0}")]
    Json(#[from] serde_json::Error),
}

/// How to reach the API server: in-cluster by default (`KUBERNETES_SERVICE_HOST`/`_PORT`, the
/// service account's token and CA), or given explicitly (a URL, a token, a CA PEM). Cheap to
/// clone: one per cluster serves every watched Service.
#[derive(Clone)]
pub struct ApiServer {
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Host and port to connect to (an IPv6 host without brackets).
    host: String,
    port: u16,
    /// The Host header.
    authority: String,
    /// A path the API is under (behind a proxy), without a trailing slash; usually empty.
    base: String,
    token: Arc<Token>,
}

/// A bearer token, given once or read from a file before each request: projected service
/// account tokens are rotated in place (hourly), and a token read once at start would expire.
enum Token {
    None,
    Fixed(HeaderValue),
    File {
        path: PathBuf,
        /// The last token read: used when a read fails (the kubelet swaps the file
        /// atomically, but a read can still meet an I/O error).
        last: Mutex<Option<HeaderValue>>,
    },
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = match &*self.token {
            Token::None => "none".to_string(),
            Token::Fixed(_) => "given".to_string(),
            Token::File { path, .. } => path.display().to_string(),
        };
        f.debug_struct("ApiServer")
            .field("scheme", &if self.tls.is_some() { "https" } else { "http" })
            .field("authority", &self.authority)
            .field("base", &self.base)
            .field("token", &token)
            .finish()
    }
}

impl ApiServer {
    /// The API server as a pod sees it: its Service's address from the environment the kubelet
    /// sets, the pod's service account token (re-read before each request) and CA.
    pub fn in_cluster() -> Result<ApiServer, KubeError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| KubeError::NotInCluster("KUBERNETES_SERVICE_HOST"))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .map_err(|_| KubeError::NotInCluster("KUBERNETES_SERVICE_PORT"))?;
        ApiServer::from_service_account(&host, &port, Path::new(SERVICE_ACCOUNT))
    }

    /// An API server given explicitly: `http://` (tests, a local `kubectl proxy`) or `https://`,
    /// trusting `ca_pem` alone when given, else the system's roots.
    pub fn new(
        url: String,
        token: Option<String>,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<ApiServer, KubeError> {
        let token = match token {
            Some(token) => Token::Fixed(bearer(&token)?),
            None => Token::None,
        };
        ApiServer::build(&url, token, ca_pem.as_deref())
    }

    /// An API server given in the config: its URL, a token file read before each request (as
    /// in a pod, so that a rotated token is picked up), and the CA file.
    pub fn from_files(
        url: &str,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<ApiServer, KubeError> {
        let token = match token_file {
            Some(path) => {
                let token = Token::File {
                    path: path.to_path_buf(),
                    last: Mutex::new(None),
                };
                token.header()?;
                token
            }
            None => Token::None,
        };
        let ca = match ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| KubeError::Read {
                path: path.to_path_buf(),
                source,
            })?),
            None => None,
        };
        ApiServer::build(url, token, ca.as_deref())
    }

    fn from_service_account(host: &str, port: &str, dir: &Path) -> Result<ApiServer, KubeError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|source| KubeError::Read { path, source })
        };
        let ca = read("ca.crt")?;
        let token = Token::File {
            path: dir.join("token"),
            last: Mutex::new(None),
        };
        // Read now, so that a pod without a token fails at start rather than at its first list.
        token.header()?;
        // As client-go joins them: an IPv6 service address needs its brackets in a URL.
        let url = match host.contains(':') {
            true => format!("https://[{host}]:{port}"),
            false => format!("https://{host}:{port}"),
        };
        ApiServer::build(&url, token, Some(&ca))
    }

    fn build(url: &str, token: Token, ca_pem: Option<&[u8]>) -> Result<ApiServer, KubeError> {
        let bad = |why| KubeError::Url {
            url: url.to_string(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not supported (give a token)"));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not supported"));
        }
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match https {
            true => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|_| bad("the host is neither a DNS name nor an IP address"))?;
                Some((tls_config(ca_pem)?, name))
            }
            false => None,
        };
        Ok(ApiServer {
            tls,
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            base: uri.path().trim_end_matches('/').to_string(),
            token: Arc::new(token),
        })
    }

    /// A GET whose answer is a success; any other answer is an error (`Gone` for 410), with the
    /// message of the Status the API server sent.
    pub(super) async fn get(&self, path_and_query: &str) -> Result<Answer, KubeError> {
        let token = self.token.header()?;
        let answer = tokio::time::timeout(HEAD_TIMEOUT, self.exchange(path_and_query, token))
            .await
            .map_err(|_| KubeError::Timeout(HEAD_TIMEOUT))??;
        let status = answer.response.status();
        if status.is_success() {
            return Ok(answer);
        }
        let body = answer.read_all(MAX_ERROR_BODY, HEAD_TIMEOUT).await;
        let message = body
            .ok()
            .and_then(|b| serde_json::from_slice::<StatusMessage>(&b).ok())
            .and_then(|s| s.message)
            .unwrap_or_default();
        Err(match status {
            StatusCode::GONE => KubeError::Gone(message),
            status => KubeError::Status { status, message },
        })
    }

    async fn exchange(
        &self,
        path_and_query: &str,
        token: Option<HeaderValue>,
    ) -> Result<Answer, KubeError> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(KubeError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = match &self.tls {
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(KubeError::Tls)?;
                handshake(tls).await?
            }
            None => handshake(stream).await?,
        };
        let mut request = Request::get(format!("{}{path_and_query}", self.base))
            .header(HOST, self.authority.as_str())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("alb/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token);
        }
        let request = request.body(Empty::new()).map_err(|_| KubeError::Url {
            url: path_and_query.to_string(),
            why: "not a valid request target",
        })?;
        let response = sender.send_request(request).await?;
        Ok(Answer { response, conn })
    }
}

/// The fields read of a Status answer.
#[derive(serde::Deserialize)]
struct StatusMessage {
    #[serde(default)]
    message: Option<String>,
}

fn bearer(token: &str) -> Result<HeaderValue, KubeError> {
    let mut value =
        HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| KubeError::Token)?;
    value.set_sensitive(true);
    Ok(value)
}

impl Token {
    fn header(&self) -> Result<Option<HeaderValue>, KubeError> {
        let (path, last) = match self {
            Token::None => return Ok(None),
            Token::Fixed(value) => return Ok(Some(value.clone())),
            Token::File { path, last } => (path, last),
        };
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        // A small read of a tmpfs file, once per list or watch (minutes apart): not worth a
        // blocking-pool thread.
        let read = std::fs::File::open(path).and_then(|file| {
            let mut text = String::new();
            file.take(MAX_TOKEN).read_to_string(&mut text).map(|_| text)
        });
        match read {
            Ok(text) => {
                let value = bearer(&text)?;
                *last = Some(value.clone());
                Ok(Some(value))
            }
            Err(source) => match last.as_ref() {
                Some(value) => {
                    tracing::debug!(path = %path.display(), %source, "kubernetes: token not re-read, using the last one");
                    Ok(Some(value.clone()))
                }
                None => Err(KubeError::Read {
                    path: path.clone(),
                    source,
                }),
            },
        }
    }
}

fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, KubeError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| KubeError::Ca(format!("not PEM certificates ({e})")))?;
            if certs.is_empty() {
                return Err(KubeError::Ca("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| KubeError::Ca(format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if roots.add_parsable_certificates(found.certs).0 == 0 {
                return Err(KubeError::Ca(
                    "none given and no system root certificates found".into(),
                ));
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(crate::config::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| KubeError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A watch is one long HTTP/1.1 response: nothing for HTTP/2 to multiplex.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn handshake<T>(io: T) -> Result<(SendRequest<Empty<Bytes>>, ConnTask), KubeError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, ConnTask(task)))
}

/// The task driving one connection: it ends with its answer, so that a watch dropped mid-read
/// (its task aborted, its receiver gone) leaves no connection open behind it.
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A successful answer's head, its body still to read, and its connection.
pub(super) struct Answer {
    response: http::Response<Incoming>,
    conn: ConnTask,
}

impl Answer {
    /// The whole body, at most `max` bytes, within `within`.
    pub async fn read_all(self, max: usize, within: Duration) -> Result<Bytes, KubeError> {
        let read = Limited::new(self.response.into_body(), max).collect();
        let body = tokio::time::timeout(within, read)
            .await
            .map_err(|_| KubeError::Timeout(within))?;
        drop(self.conn);
        match body {
            Ok(body) => Ok(body.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(KubeError::TooLarge(max)),
            Err(e) => Err(KubeError::Body(e.to_string())),
        }
    }

    /// The body as newline-delimited lines (a watch's events).
    pub fn lines(self, max_line: usize, idle: Duration) -> Lines {
        Lines {
            body: self.response.into_body(),
            _conn: self.conn,
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
            idle,
        }
    }
}

/// A watch's stream of lines: each at most `max_line` bytes, and no more than `idle` between
/// two reads.
pub(super) struct Lines {
    body: Incoming,
    _conn: ConnTask,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    max_line: usize,
    idle: Duration,
}

impl Lines {
    /// The next line without its newline; None when the stream ended cleanly (a partial last
    /// line is dropped: an event cut off is an event not sent).
    pub async fn next(&mut self) -> Result<Option<Bytes>, KubeError> {
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let mut line = self.buf.split_to(self.scanned + at + 1);
                line.truncate(line.len() - 1);
                self.scanned = 0;
                return Ok(Some(line.freeze()));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_line {
                return Err(KubeError::TooLarge(self.max_line));
            }
            let frame = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| KubeError::Timeout(self.idle))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(KubeError::Body(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Whether a whole line is already read: events that came together are applied together
    /// and published once.
    pub fn has_line(&self) -> bool {
        self.buf[self.scanned..].contains(&b'\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let api = ApiServer::new("http://127.0.0.1:8001/k8s/".into(), None, None).unwrap();
        assert_eq!((api.host.as_str(), api.port), ("127.0.0.1", 8001));
        assert_eq!(api.base, "/k8s");
        let api = ApiServer::new("http://[::1]".into(), Some("t".into()), None).unwrap();
        assert_eq!(
            (api.host.as_str(), api.port, api.authority.as_str()),
            ("::1", 80, "[::1]")
        );
        for url in [
            "ftp://host",
            "http://u:p@host",
            "http://host/?a=b",
            "not a url",
        ] {
            assert!(matches!(
                ApiServer::new(url.into(), None, None),
                Err(KubeError::Url { .. })
            ));
        }
        assert!(matches!(
            ApiServer::new("https://host".into(), None, Some(b"junk".to_vec())),
            Err(KubeError::Ca(_))
        ));
        assert!(matches!(
            ApiServer::new("http://host".into(), Some("a\nb".into()), None),
            Err(KubeError::Token)
        ));
    }

    #[test]
    fn the_service_account_token_is_read_again_before_each_request() {
        let dir = std::env::temp_dir().join(format!("alb-kube-sa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = ApiServer::from_service_account("10.96.0.1", "443", &dir);
        assert!(matches!(missing, Err(KubeError::Read { .. })), "no ca.crt");
        let ca = rcgen::generate_simple_self_signed(vec!["kubernetes".to_string()]).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert.pem()).unwrap();
        assert!(matches!(
            ApiServer::from_service_account("10.96.0.1", "443", &dir),
            Err(KubeError::Read { .. })
        ));
        std::fs::write(dir.join("token"), "first\n").unwrap();
        let api = ApiServer::from_service_account("fd00::1", "6443", &dir).unwrap();
        assert_eq!(api.authority, "[fd00::1]:6443");
        assert!(api.tls.is_some());
        let header = |api: &ApiServer| api.token.header().unwrap().unwrap();
        assert_eq!(header(&api), "Bearer first");
        std::fs::write(dir.join("token"), "second").unwrap();
        assert_eq!(header(&api), "Bearer second", "a rotated token is used");
        std::fs::remove_file(dir.join("token")).unwrap();
        assert_eq!(
            header(&api),
            "Bearer second",
            "the last one while unreadable"
        );
        assert!(!format!("{api:?}").contains("second"), "never printed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
