//! Paths that backends resolve differently from alb's reading: an encoded `/`, a `\`, a `;`
//! before a dot segment. Checked against the servers that do the resolving: Debian's nginx
//! (decodes `%2F`, then removes dot segments) and Python's http.server (unquotes, then
//! `normpath`). Each case is first sent to the backend directly, to show it would reach the
//! guarded resource, then through alb, which must refuse it (400) rather than route it by its
//! first segment.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::binary::LoggedProcess;
use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(10);

/// The hostile paths: each climbs from `/public/` to `/admin/` in some common backend's reading.
const CLIMBS: &[&str] = &[
    "/public/..%2fadmin/x",
    "/public/..%2Fadmin/x",
    "/public/%2e%2e%2fadmin/x",
    "/public/%2E%2E%2Fadmin/x",
    "/public/..%5cadmin/x",
    "/public/..\\admin/x",
    "/public/..;/admin/x",
    "/public/%2e%2e;x/admin/x",
];

/// Sends `GET path` over a fresh connection with the raw bytes given (no client library would
/// send a `\`); returns the status and the body.
async fn raw_get(addr: SocketAddr, path: &str, fields: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{fields}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Debian's nginx on `port`, telling in its body which location served a request and the path
/// it resolved (`$uri`: decoded, dot segments removed).
fn start_nginx(program: &Path, dir: &TempDir, port: &ReservedPort) -> LoggedProcess {
    let d = dir.0.display();
    let config = dir.write(
        "nginx.conf",
        &format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log stderr notice;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n default_type text/plain;\n\
             client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port};\n\
               location /admin/ {{ return 200 \"admin $uri\\n\"; }}\n\
               location /limited/ {{ return 200 \"limited $uri\\n\"; }}\n\
               location / {{ return 200 \"other $uri\\n\"; }}\n }}\n}}\n",
            port = port.port()
        ),
    );
    LoggedProcess::spawn(
        "nginx",
        program,
        &[
            "-p",
            dir.0.to_str().expect("utf-8"),
            "-e",
            "stderr",
            "-c",
            config.to_str().expect("utf-8"),
        ],
        "info",
    )
}

/// Waits until `server` accepts connections on `addr` (nginx prints nothing when ready).
async fn wait_listening(server: &mut LoggedProcess, addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_err() {
        server.assert_running();
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// alb in front of one pool, routes guarding `/admin/` (a header) and `/limited/` (one request a
/// second), `/public/` open, nothing else routed (404).
async fn alb_before(backend: SocketAddr) -> TestBalancer {
    TestBalancer::start(&format!(
        "listen = \"127.0.0.1:0\"\n[health_check]\ninterval = \"60s\"\n\
         [pools.app]\nbackends = [\"http://{backend}\"]\n\
         [[route]]\npath_prefix = \"/admin/\"\nheaders = {{ x-admin-key = \"s3cret\" }}\npool = \"app\"\n\
         [[route]]\npath_prefix = \"/limited/\"\npool = \"app\"\n\
         rate_limit = {{ per_second = 1, burst = 1 }}\n\
         [[route]]\npath_prefix = \"/public/\"\npool = \"app\"\n"
    ))
    .await
}

#[tokio::test]
async fn paths_that_climb_through_an_encoded_separator_never_reach_an_nginx_backend() {
    let test = "paths_that_climb_through_an_encoded_separator_never_reach_an_nginx_backend";
    let Some(program) = crate::support::prerequisite::program(
        test,
        &["nginx", "/usr/sbin/nginx"],
        "nginx is not installed (apt-get install nginx)",
    ) else {
        return;
    };
    let dir = TempDir::new("nginx-backend");
    let port = ReservedPort::new();
    let addr = SocketAddr::from(([127, 0, 0, 1], port.port()));
    let mut nginx = start_nginx(&program, &dir, &port);
    wait_listening(&mut nginx, addr).await;
    drop(port);
    let lb = alb_before(addr).await;

    // The premise: nginx resolves each climb through `%2F` to the guarded location (on Linux
    // it reads `\\` as a byte of the name, as Windows servers and Tomcat do not).
    for path in CLIMBS
        .iter()
        .filter(|p| p.to_ascii_lowercase().contains("%2f"))
    {
        assert_eq!(
            raw_get(addr, path, "").await,
            (200, "admin /admin/x\n".to_string()),
            "nginx reads {path} as /admin/x"
        );
    }
    // alb's routes as they stand: the guarded one needs its header, nothing else is routed.
    assert_eq!(raw_get(lb.addr, "/admin/x", "").await.0, 404);
    assert_eq!(
        raw_get(lb.addr, "/admin/x", "X-Admin-Key: s3cret\r\n").await,
        (200, "admin /admin/x\n".to_string())
    );
    for path in CLIMBS {
        let (status, body) = raw_get(lb.addr, path, "").await;
        assert_eq!(status, 400, "{path} must be refused, got {status} {body:?}");
    }
    // The rate-limited route cannot be reached around its limit either.
    assert_eq!(raw_get(lb.addr, "/limited/x", "").await.0, 200);
    assert_eq!(raw_get(lb.addr, "/limited/x", "").await.0, 429);
    for _ in 0..3 {
        assert_eq!(raw_get(lb.addr, "/public/..%2flimited/x", "").await.0, 400);
    }
    // Two readings, two routes: `/public%2Fx` is no route to alb's reading and `/public/` to
    // nginx's.
    assert_eq!(raw_get(lb.addr, "/public%2Fx", "").await.0, 400);
    // An encoded `/` inside the route both readings choose goes on as it came.
    assert_eq!(
        raw_get(lb.addr, "/public/a%2Fb", "").await,
        (200, "other /public/a/b\n".to_string())
    );
    lb.stop().await;
    nginx.kill().await;
}

/// Python's http.server serving `root` (`public/index.txt`, `admin/secret.txt`) on a port it
/// prints.
async fn start_python_files(root: &Path) -> (LoggedProcess, SocketAddr) {
    let script = "import http.server, functools, sys\n\
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)\n\
        print('serving on', server.server_address[1], flush=True)\n\
        server.serve_forever()\n";
    let python = LoggedProcess::spawn_with_stdout(
        "python3",
        Path::new("python3"),
        &["-c", script, root.to_str().expect("utf-8")],
        "info",
    );
    let line = python.wait_line("serving on ", 1, PATIENCE).await;
    let port: u16 = line
        .rsplit(' ')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (python, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn paths_that_climb_through_an_encoded_slash_never_reach_a_python_file_server() {
    let dir = TempDir::new("python-files");
    std::fs::create_dir_all(dir.0.join("public")).expect("mkdir");
    std::fs::create_dir_all(dir.0.join("admin")).expect("mkdir");
    dir.write("public/index.txt", "public\n");
    dir.write("admin/x", "the secret\n");
    let (mut python, addr) = start_python_files(&dir.0).await;
    let lb = alb_before(addr).await;

    assert_eq!(
        raw_get(addr, "/public/..%2fadmin/x", "").await,
        (200, "the secret\n".to_string()),
        "http.server unquotes, then normalises"
    );
    for path in CLIMBS
        .iter()
        .filter(|p| p.to_ascii_lowercase().contains("%2f"))
    {
        let (status, body) = raw_get(lb.addr, path, "").await;
        assert_eq!(status, 400, "{path} must be refused, got {status} {body:?}");
    }
    assert_eq!(
        raw_get(lb.addr, "/public/index.txt", "").await,
        (200, "public\n".to_string())
    );
    lb.stop().await;
    python.kill().await;
}

/// What the backend receives for paths backends other than nginx read their own way: a raw
/// prefix mount (no dot-segment resolution), a case-insensitive router, Windows' trailing dots.
/// The recorder, with its own parser, shows the target as it arrived.
#[tokio::test]
async fn a_guarded_prefix_is_reached_by_no_spelling_through_the_catch_all() {
    let recorder = crate::support::recorder::Recorder::start().await;
    let lb = TestBalancer::start(&format!(
        "listen = \"127.0.0.1:0\"\nbackends = [\"{}\"]\n[health_check]\ninterval = \"60s\"\n\
         [[route]]\npath_prefix = \"/admin/\"\nallow = [\"10.0.0.0/8\"]\npool = \"default\"\n\
         [[route]]\npath_prefix = \"/\"\npool = \"default\"\n",
        recorder.url()
    ))
    .await;
    // Refused outright: capitals, trailing dots or spaces, the bare directory name.
    for path in ["/ADMIN/x", "/Admin/x", "/admin./x", "/admin%20/x", "/admin"] {
        let (status, body) = raw_get(lb.addr, path, "").await;
        assert!(matches!(status, 400 | 403), "{path}: {status} {body:?}");
    }
    // Resolved by alb and sent as resolved: a backend that mounts `/admin/` on the raw target
    // never sees `/admin` in front.
    for (path, sent) in [
        ("/admin//../x", "/x"),
        ("/admin/..", "/"),
        ("/admin/x/../../y?q=/admin/", "/y?q=/admin/"),
    ] {
        let (status, _) = raw_get(lb.addr, path, "").await;
        assert_eq!(status, 200, "{path}");
        let seen = recorder.requests();
        let last = seen.last().expect("the backend got it");
        assert_eq!(last.target, sent, "{path}");
    }
    assert!(
        recorder
            .requests()
            .iter()
            .all(|r| !r.target.to_ascii_lowercase().starts_with("/admin")),
        "{:?}",
        recorder.requests()
    );
    lb.stop().await;
    recorder.stop().await;
}
