//! The edge policy through the real proxy, as a backend with a parser of its own reads it
//! (`Recorder`) and as curl sends it over HTTP/1.1 and h2c: what an untrusted client can no
//! longer say about itself, what a trusted proxy still can, request ids, IP lists, header rules,
//! redirects and prefix rewrites.

use crate::support::recorder::{Recorded, Recorder};
use crate::support::*;

/// alb before `recorder` with `extra` config, h2c on.
async fn balancer(recorder: &Recorder, extra: &str) -> TestBalancer {
    Scenario::new()
        .backend_url(recorder.url())
        .config(&format!("[http2]\ncleartext = true\n{extra}"))
        .quiet_health()
        .start()
        .await
        .lb
}

/// curl's status line, headers and body for `args` (status first).
async fn curl_head(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-i", "-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let (ok, out, err) = pki::curl(&all).await;
    assert!(ok, "curl failed: {err}");
    let (text, status) = out.rsplit_once('\n').expect("status after the answer");
    (status.trim().parse().expect("status"), text.to_string())
}

const LIES: &[&str] = &[
    "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
    "X-Real-IP: 6.6.6.6",
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Prefix: /admin",
    "X-Forwarded-Ssl: on",
    "True-Client-IP: 6.6.6.6",
    "X-Request-Id: chosen-by-client",
];

fn lying(extra: &[&str]) -> Vec<String> {
    LIES.iter()
        .chain(extra)
        .flat_map(|h| ["-H".to_string(), h.to_string()])
        .collect()
}

fn assert_told_nothing(seen: &Recorded, how: &str) {
    for gone in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "true-client-ip",
    ] {
        assert!(
            seen.values(gone).is_empty(),
            "{how}: {gone} reached the backend: {seen:?}"
        );
    }
    assert_eq!(seen.values("x-forwarded-for"), ["127.0.0.1"], "{how}");
    assert_eq!(seen.values("x-forwarded-proto"), ["http"], "{how}");
    assert_eq!(seen.values("x-forwarded-host"), ["site.test"], "{how}");
    let ids = seen.values("x-request-id");
    assert_eq!(ids.len(), 1, "{how}: one request id");
    assert!(
        ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "{how}: alb's own id, got {ids:?}"
    );
}

#[tokio::test]
async fn an_untrusted_client_chooses_no_scheme_host_address_or_id_over_h1_and_h2() {
    let recorder = Recorder::start().await;
    let lb = balancer(&recorder, "").await;
    for (how, version) in [
        ("HTTP/1.1", "--http1.1"),
        ("h2c", "--http2-prior-knowledge"),
    ] {
        let target = format!("/{}", how.replace('/', ""));
        let url = format!("http://127.0.0.1:{}{target}", lb.addr.port());
        let mut args = vec![version.to_string(), "-H".into(), "Host: site.test".into()];
        args.extend(lying(&[]));
        args.push(url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _) = curl_head(&args).await;
        assert_eq!(status, 200, "{how}");
        assert_told_nothing(&recorder.only(&target), how);
    }
    lb.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_speaks_for_its_client_in_lists_rules_and_forwarded_fields() {
    let recorder = Recorder::start().await;
    let lb = balancer(
        &recorder,
        "[forwarded]\ntrusted = [\"127.0.0.0/8\"]\nrfc7239 = true\n\
         [[route]]\npath_prefix = \"/inside/\"\nallow = [\"198.51.100.0/24\"]\npool = \"default\"\n\
         [route.request_headers]\nset = { x-client = \"{client_ip}\" }\n",
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", lb.addr.port());
    let via_proxy = |client: &str| {
        vec![
            "-H".to_string(),
            "Host: site.test".to_string(),
            "-H".to_string(),
            format!("X-Forwarded-For: 6.6.6.6, {client}"),
            "-H".to_string(),
            "X-Forwarded-Proto: https".to_string(),
            "-H".to_string(),
            "X-Request-Id: edge-1".to_string(),
            "-H".to_string(),
            "Forwarded: for=6.6.6.6".to_string(),
        ]
    };
    let mut args = via_proxy("198.51.100.7");
    args.push(url("/inside/a"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl_head(&args).await.0, 200);
    let seen = recorder.only("/inside/a");
    assert_eq!(
        seen.values("x-client"),
        ["198.51.100.7"],
        "the rightmost untrusted hop"
    );
    assert_eq!(
        seen.values("x-forwarded-for"),
        ["6.6.6.6, 198.51.100.7, 127.0.0.1"]
    );
    assert_eq!(
        seen.values("x-forwarded-proto"),
        ["https"],
        "the proxy's word is kept"
    );
    assert_eq!(seen.values("x-request-id"), ["edge-1"]);
    assert_eq!(
        seen.values("forwarded"),
        ["for=6.6.6.6, for=127.0.0.1;proto=http;host=\"site.test\""]
    );
    // The same proxy for a client outside the route's list.
    let mut args = via_proxy("203.0.113.5");
    args.push(url("/inside/b"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl_head(&args).await.0, 403);
    assert!(recorder.requests().iter().all(|r| r.target != "/inside/b"));
    lb.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn ip_lists_refuse_with_403_and_the_connection_serves_on() {
    let recorder = Recorder::start().await;
    let lb = balancer(
        &recorder,
        "[[route]]\npath_prefix = \"/closed/\"\ndeny = [\"127.0.0.0/8\"]\npool = \"default\"\n\
         [[route]]\npath_prefix = \"/\"\npool = \"default\"\n",
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", lb.addr.port());
    let (ok, out, err) = pki::curl(&[
        "-w",
        " %{http_code} %{num_connects}\n",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &url("/closed/x"),
        &url("/open"),
    ])
    .await;
    assert!(ok, "curl: {err}");
    assert_eq!(
        out, " 403 1\n 200 0\n",
        "403, then the same connection serves on"
    );
    lb.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn header_rules_redirects_and_rewrites_as_the_backend_and_client_see_them() {
    let recorder = Recorder::start().await;
    let lb = balancer(
        &recorder,
        "[request_id]\nresponse = true\n\
         [response_headers]\nset = { strict-transport-security = \"max-age=63072000\" }\n\
         remove = [\"server\"]\n\
         [[route]]\npath_prefix = \"/old/\"\nredirect = { to = \"https://{host}/new{path}\", status = 301 }\n\
         [[route]]\npath_prefix = \"/api/\"\nrewrite_prefix = \"/v2/\"\npool = \"default\"\n\
         [route.request_headers]\nset = { x-env = \"prod\" }\nadd = { x-req = \"id {request_id}\" }\n\
         remove = [\"x-debug\"]\n\
         [route.response_headers]\nadd = { x-route = \"api\" }\n",
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", lb.addr.port());
    let (status, head) = curl_head(&[
        "-H",
        "Host: site.test",
        "-H",
        "X-Debug: 1",
        "-H",
        "X-Env: dev",
        &url("/api/users?x=1"),
    ])
    .await;
    assert_eq!(status, 200, "{head}");
    let seen = recorder.only("/v2/users?x=1");
    assert_eq!(seen.values("x-env"), ["prod"]);
    assert!(seen.values("x-debug").is_empty());
    let id = seen.header("x-request-id").expect("an id").to_string();
    assert_eq!(seen.values("x-req"), [format!("id {id}").as_str()]);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("strict-transport-security: max-age=63072000"),
        "{head}"
    );
    assert!(head.contains("x-route: api"), "{head}");
    assert!(head.contains(&format!("x-request-id: {id}")), "{head}");
    assert!(
        !head.contains("server:"),
        "the backend's Server is removed: {head}"
    );

    let (status, head) = curl_head(&["-H", "Host: site.test", &url("/old/page?q=2")]).await;
    assert_eq!(status, 301, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("location: https://site.test/new/old/page?q=2"),
        "{head}"
    );
    // A Host that is no authority is not written into a Location.
    let (status, _) = curl_head(&["-H", "Host: evil.example/x", &url("/old/page")]).await;
    assert_eq!(status, 400);
    assert!(
        recorder
            .requests()
            .iter()
            .all(|r| !r.target.starts_with("/old"))
    );
    lb.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn a_pools_rules_apply_between_the_top_level_and_the_routes() {
    let recorder = Recorder::start().await;
    let lb = balancer(
        &recorder,
        &format!(
            "[request_headers]\nset = {{ x-layer = \"top\", x-top = \"1\" }}\n\
             [pools.named]\nbackends = [\"{}\"]\n\
             [pools.named.request_headers]\nset = {{ x-layer = \"pool\" }}\n\
             [pools.named.response_headers]\nset = {{ x-pool = \"named\" }}\n\
             [[route]]\npath_prefix = \"/named/route/\"\npool = \"named\"\n\
             [route.request_headers]\nset = {{ x-layer = \"route\" }}\n\
             [[route]]\npath_prefix = \"/named/\"\npool = \"named\"\n",
            recorder.url()
        ),
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", lb.addr.port());
    let (status, head) = curl_head(&[&url("/named/x")]).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("x-pool: named"),
        "{head}"
    );
    let seen = recorder.only("/named/x");
    assert_eq!(seen.values("x-layer"), ["pool"]);
    assert_eq!(seen.values("x-top"), ["1"]);
    assert_eq!(curl_head(&[&url("/named/route/x")]).await.0, 200);
    assert_eq!(recorder.only("/named/route/x").values("x-layer"), ["route"]);
    lb.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn a_route_condition_on_a_forwarding_field_reads_what_the_backend_will_see() {
    let recorder = Recorder::start().await;
    let lb = balancer(
        &recorder,
        "[[route]]\npath_prefix = \"/\"\nheaders = { x-forwarded-proto = \"https\" }\n\
         redirect = { to = \"https://secure.example{path}\" }\n\
         [[route]]\npath_prefix = \"/\"\npool = \"default\"\n",
    )
    .await;
    let url = format!("http://127.0.0.1:{}/x", lb.addr.port());
    // The client's claim is not what the backend would be told: the condition does not hold.
    let (status, _) = curl_head(&["-H", "X-Forwarded-Proto: https", &url]).await;
    assert_eq!(status, 200);
    assert_eq!(recorder.only("/x").values("x-forwarded-proto"), ["http"]);
    lb.stop().await;
    recorder.stop().await;
}
