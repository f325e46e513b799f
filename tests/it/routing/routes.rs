//! Pools and routes through the real proxy: each condition, first-match order, the default pool,
//! 404 when nothing matches, weighted splits, strip_prefix, per-route timeouts and a reload that
//! changes routes under load. What the backend received is checked at the backend.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::Request;

const QUIET: &str = "[health_check]\ninterval = \"60s\"\n";

/// Sends one request with the given method, path and extra fields; returns status, the backend
/// that answered (empty for alb's own answers) and the body.
async fn ask(
    lb: &TestBalancer,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, Bytes) {
    let mut request = Request::builder().method(method).uri(lb.url(path));
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    let request = request.body(full(Bytes::new())).unwrap();
    let (status, headers, body) = send(&client(), request).await;
    (status.as_u16(), backend_of(&headers), body)
}

async fn backend_for(lb: &TestBalancer, path: &str, fields: &[(&str, &str)]) -> String {
    let (status, backend, body) = ask(lb, "GET", path, fields).await;
    assert_eq!(status, 200, "{path} {fields:?}: {body:?}");
    backend
}

struct Three {
    api: TestBackend,
    web: TestBackend,
    fallback: TestBackend,
}

impl Three {
    async fn start() -> Three {
        Three {
            api: TestBackend::start("api").await,
            web: TestBackend::start("web").await,
            fallback: TestBackend::start("fallback").await,
        }
    }

    /// The fallback as the top-level pool `default`, `api` and `web` as named pools, then `routes`.
    fn config(&self, routes: &str) -> String {
        format!(
            "{}{QUIET}\n[pools.api]\nbackends = [\"{}\"]\n[pools.web]\nbackends = [\"{}\"]\n{routes}",
            backends_line(&[&self.fallback]),
            self.api.url(),
            self.web.url()
        )
    }
}

#[tokio::test]
async fn hosts_route_exactly_or_by_wildcard_case_and_port_ignored_and_the_host_goes_on_unchanged() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&b.config(
        "[[route]]\nhost = \"api.example.com\"\npool = \"api\"\n\
         [[route]]\nhost = \"*.web.example\"\npool = \"web\"\n",
    ))
    .await;
    assert_eq!(
        backend_for(&lb, "/", &[("host", "api.example.com")]).await,
        "api"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("host", "API.Example.COM:8080")]).await,
        "api"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("host", "api.example.com.")]).await,
        "api"
    );
    let seen = b.api.last_request().unwrap();
    assert_eq!(
        seen.headers["host"], "api.example.com.",
        "Host is the client's"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("host", "a.web.example")]).await,
        "web"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("host", "a.b.web.example")]).await,
        "web"
    );
    // The wildcard is for names under it, not the name itself.
    assert_eq!(
        backend_for(&lb, "/", &[("host", "web.example")]).await,
        "fallback"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("host", "xapi.example.com")]).await,
        "fallback"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("host", "evilweb.example")]).await,
        "fallback"
    );
    lb.stop().await;
}

#[tokio::test]
async fn path_prefixes_match_whole_segments_as_the_backend_resolves_the_path() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&b.config(
        "[[route]]\npath_prefix = \"/static/\"\npool = \"web\"\n\
         [[route]]\npath_prefix = \"/api\"\npool = \"api\"\n\
         [[route]]\npath = \"/exact\"\npool = \"api\"\n",
    ))
    .await;
    for (path, want) in [
        ("/static/app.js", "web"),
        ("/static/", "web"),
        // The directory's own name is under it: a backend serves `/static` as `/static/`.
        ("/static", "web"),
        ("/staticx/app.js", "fallback"),
        ("/api", "api"),
        ("/api/v1/users?x=1", "api"),
        ("/apix", "fallback"),
        ("/exact", "api"),
        ("/exact/", "fallback"),
        ("/exact?q=1", "api"),
        // Read as the backend will: dot segments and encoded unreserved characters resolved.
        ("/%73tatic/app.js", "web"),
        ("/api/../static/app.js", "web"),
        ("/static/../private", "fallback"),
        ("//static//app.js", "web"),
    ] {
        assert_eq!(backend_for(&lb, path, &[]).await, want, "{path}");
    }
    lb.stop().await;
}

#[tokio::test]
async fn methods_and_headers_must_all_hold_and_the_first_match_wins() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&b.config(
        "[[route]]\npath_prefix = \"/w\"\nmethods = [\"POST\", \"PUT\"]\npool = \"web\"\n\
         [[route]]\nheaders = { x-canary = \"1\", x-debug = true }\npool = \"web\"\n\
         [[route]]\nheaders = { x-canary = \"1\", cookie = false }\npool = \"api\"\n\
         [[route]]\npath_prefix = \"/w\"\npool = \"api\"\n",
    ))
    .await;
    assert_eq!(ask(&lb, "POST", "/w", &[]).await.1, "web");
    assert_eq!(ask(&lb, "PUT", "/w/x", &[]).await.1, "web");
    assert_eq!(
        ask(&lb, "GET", "/w", &[]).await.1,
        "api",
        "methods must hold"
    );
    let canary = [("x-canary", "1"), ("x-debug", "anything")];
    assert_eq!(backend_for(&lb, "/", &canary).await, "web");
    assert_eq!(
        backend_for(&lb, "/", &[("x-canary", "1")]).await,
        "api",
        "absent cookie"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("x-canary", "1"), ("cookie", "a=b")]).await,
        "fallback"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("x-canary", "2")]).await,
        "fallback",
        "value differs"
    );
    // Both the canary route and the /w route match: the earlier one wins.
    assert_eq!(backend_for(&lb, "/w", &canary).await, "web");
    let hits = lb.proxy.snapshot().route_hits();
    assert_eq!(hits[0], 2, "{hits:?}");
    lb.stop().await;
}

#[tokio::test]
async fn without_a_default_pool_unrouted_requests_get_404_and_are_counted() {
    let _cpu = crate::support::cpu::shared().await;
    let api = TestBackend::start("api").await;
    let lb = TestBalancer::start(&format!(
        "{QUIET}[pools.api]\nbackends = [\"{}\"]\n[[route]]\nhost = \"api.example.com\"\npool = \"api\"\n",
        api.url()
    ))
    .await;
    assert_eq!(
        backend_for(&lb, "/", &[("host", "api.example.com")]).await,
        "api"
    );
    let (status, backend, body) = ask(&lb, "GET", "/", &[("host", "other.example")]).await;
    assert_eq!(status, 404);
    assert_eq!(backend, "");
    assert_eq!(&body[..], b"404 Not Found: no route for this request\n");
    assert!(!body[..body.len() - 1].contains(&b'\n'), "one line");
    assert_eq!(
        lb.proxy
            .stats()
            .no_route
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(api.hits(), 1);
    lb.stop().await;
}

#[tokio::test]
async fn a_split_follows_its_weights_within_three_percent_over_ten_thousand_requests() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&b.config(
        "[[route]]\nsplit = [{ pool = \"api\", weight = 90 }, { pool = \"web\", weight = 10 }]\n",
    ))
    .await;
    let c = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..10_000 {
        let (status, headers, _) = get(&c, &lb.url("/")).await;
        assert_eq!(status, 200);
        *counts.entry(backend_of(&headers)).or_default() += 1;
    }
    let web = counts.get("web").copied().unwrap_or(0) as f64 / 10_000.0;
    let api = counts.get("api").copied().unwrap_or(0) as f64 / 10_000.0;
    assert!((web - 0.10).abs() <= 0.03, "{counts:?}");
    assert!((api - 0.90).abs() <= 0.03, "{counts:?}");
    assert_eq!(b.fallback.hits(), 0);
    lb.stop().await;
}

#[tokio::test]
async fn strip_prefix_forwards_the_rest_of_the_path_with_its_query() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&b.config(
        "[[route]]\npath_prefix = \"/api/\"\nstrip_prefix = true\npool = \"api\"\n\
         [[route]]\npath_prefix = \"/web\"\nstrip_prefix = true\npool = \"web\"\n",
    ))
    .await;
    for (path, pool, want) in [
        ("/api/users?x=1", &b.api, "/users?x=1"),
        ("/api/", &b.api, "/"),
        ("/web", &b.web, "/"),
        ("/web/a/b", &b.web, "/a/b"),
        ("/web?q", &b.web, "/?q"),
    ] {
        backend_for(&lb, path, &[]).await;
        assert_eq!(pool.last_request().unwrap().uri, want, "{path}");
    }
    lb.stop().await;
}

#[tokio::test]
async fn a_routes_timeouts_apply_to_its_requests_only() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    b.api.set_delay(Duration::from_millis(400));
    let lb = TestBalancer::start(&format!(
        "{}[retry]\nattempts = 1\n",
        b.config(
            "[[route]]\npath_prefix = \"/quick\"\npool = \"api\"\n\
             [route.timeouts]\nresponse = \"100ms\"\n\
             [[route]]\npool = \"api\"\n",
        )
    ))
    .await;
    let (status, _, body) = ask(&lb, "GET", "/quick", &[]).await;
    assert_eq!(status, 504, "{body:?}");
    let (status, backend, _) = ask(&lb, "GET", "/slow", &[]).await;
    assert_eq!((status, backend.as_str()), (200, "api"));
    lb.stop().await;
}

#[tokio::test]
async fn a_pool_inherits_the_top_level_sections_key_by_key() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&format!(
        "{}[health_check]\ninterval = \"60s\"\nrise = 7\n\
         [pools.api]\nbackends = [\"{}\"]\nalgorithm = \"round_robin\"\n\
         [pools.api.health_check]\npath = \"/healthz\"\n\
         [[route]]\npool = \"api\"\n",
        backends_line(&[&b.fallback]),
        b.api.url()
    ))
    .await;
    let config = lb.proxy.snapshot().config().clone();
    let api = config.pools.iter().find(|p| p.name == "api").unwrap();
    assert_eq!(api.health_check.path, "/healthz");
    assert_eq!(api.health_check.rise, 7, "inherited");
    assert_eq!(
        api.health_check.interval,
        Duration::from_secs(60),
        "inherited"
    );
    assert_eq!(api.algorithm.name(), "round_robin");
    assert_eq!(config.algorithm.name(), "least_conn");
    assert_eq!(backend_for(&lb, "/", &[]).await, "api");
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_routes_under_load_without_failing_a_request() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let dir = TempDir::new("routing-reload");
    let first = b.config("[[route]]\npath_prefix = \"/a\"\npool = \"api\"\n");
    let second = b.config("[[route]]\npath_prefix = \"/a\"\npool = \"web\"\n");
    let path = dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{first}\n[admin]\nlisten = \"off\"\n"),
    );
    let lb = TestBalancer::start_file(&path).await;
    let url = lb.url("/a/x");
    let load = SteadyLoad::start(&url, 4, 20_000);
    wait_until(Duration::from_secs(5), || b.api.hits() > 50)
        .await
        .expect("traffic flows to api");
    dir.write(
        "alb.toml",
        &format!("listen = \"127.0.0.1:0\"\n{second}\n[admin]\nlisten = \"off\"\n"),
    );
    lb.control.reload().expect("reload");
    let web_before = b.web.hits();
    wait_until(Duration::from_secs(5), || b.web.hits() > web_before + 50)
        .await
        .expect("traffic moves to web");
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    assert!(sent > 100, "{sent}");
    assert_eq!(b.fallback.hits(), 0);
    lb.stop().await;
}

#[tokio::test]
async fn explain_names_the_route_and_pool_that_took_the_request() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&format!(
        "explain = true\n{}",
        b.config("[[route]]\npath_prefix = \"/a\"\npool = \"api\"\n")
    ))
    .await;
    let (_, headers, _) = get(&client(), &lb.url("/a")).await;
    assert_eq!(headers["x-alb-route"], "route[0] pool=api");
    let (_, headers, _) = get(&client(), &lb.url("/b")).await;
    assert_eq!(headers["x-alb-route"], "none pool=default");
    lb.stop().await;
}

#[tokio::test]
async fn wildcard_hosts_match_at_any_depth_and_a_host_of_many_labels_is_still_routed() {
    let _cpu = crate::support::cpu::shared().await;
    let b = Three::start().await;
    let lb = TestBalancer::start(&b.config(
        "[[route]]\nhost = \"*.a.example\"\npool = \"api\"\n\
         [[route]]\nhost = \"*.example\"\npool = \"web\"\n",
    ))
    .await;
    assert_eq!(
        backend_for(&lb, "/", &[("host", "x.a.example")]).await,
        "api"
    );
    assert_eq!(
        backend_for(&lb, "/", &[("host", "x.y.z.a.example")]).await,
        "api"
    );
    assert_eq!(backend_for(&lb, "/", &[("host", "a.example")]).await, "web");
    assert_eq!(
        backend_for(&lb, "/", &[("host", "x.b.example")]).await,
        "web"
    );
    // 4,000 labels: looked up under its last two suffixes only.
    let long = format!("{}a.example", "x.".repeat(4_000));
    assert_eq!(backend_for(&lb, "/", &[("host", &long)]).await, "api");
    lb.stop().await;
}
