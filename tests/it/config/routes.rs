//! Validation of pools and routes through `Config::from_toml`: what each accepts, what it
//! inherits, and that every refusal names its key (`pools.api.backends[1]`, `route[2].pool`).

use alb::Config;
use alb::config::{HashKey, HostPattern, RateKey};

const TOP: &str = "backends = [\"http://127.0.0.1:8081\"]\n";

fn parse(text: &str) -> Config {
    Config::from_toml(text, "test.toml").unwrap_or_else(|e| panic!("expected valid: {e}"))
}

/// The keys of every problem found in `text`, which must be refused.
fn problem_keys(text: &str) -> Vec<String> {
    match Config::from_toml(text, "test.toml") {
        Ok(config) => panic!("expected a rejection, got {config:?}"),
        Err(e) => e.problems().into_iter().map(|p| p.key).collect(),
    }
}

#[test]
fn the_minimal_form_is_the_pool_default_with_no_routes() {
    let config = parse(TOP);
    let pools = config.all_pools();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].name, "default");
    assert!(config.routes.is_empty() && config.warnings.is_empty());
}

#[test]
fn routes_read_every_condition_and_action() {
    let config = parse(&format!(
        "{TOP}[pools.v1]\nbackends = [\"http://127.0.0.1:9001\"]\n\
         [pools.v2]\nbackends = [\"http://127.0.0.1:9002\"]\n\
         [[route]]\nhost = \"*.Example.COM\"\npath_prefix = \"/api/\"\nmethods = [\"GET\"]\n\
         headers = {{ x-a = \"1\", x-b = true, x-c = false }}\nstrip_prefix = true\n\
         split = [{{ pool = \"v1\", weight = 90 }}, {{ pool = \"v2\", weight = 10 }}]\n\
         rate_limit = {{ per_second = 100, burst = 200, key = \"header:x-api-key\" }}\n\
         [route.retry]\nattempts = 3\n[route.timeouts]\nresponse = \"2s\"\n"
    ));
    let route = &config.routes[0];
    assert_eq!(route.host, Some(HostPattern::Suffix(".example.com".into())));
    assert_eq!(route.headers.len(), 3);
    assert_eq!(route.targets.len(), 2);
    assert_eq!(route.targets[1].weight, 10);
    assert_eq!(route.targets[0].retry.as_ref().unwrap().attempts, 3);
    assert_eq!(
        route.timeouts.as_ref().unwrap().response,
        std::time::Duration::from_secs(2)
    );
    let limit = route.rate_limit.as_ref().unwrap();
    assert_eq!((limit.per_second, limit.burst), (100, 200));
    assert_eq!(limit.key, RateKey::Header("x-api-key".try_into().unwrap()));
}

#[test]
fn hash_and_sticky_settings_parse_per_pool() {
    let config = parse(&format!(
        "{TOP}[pools.cache]\nbackends = [\"http://127.0.0.1:9001\"]\nalgorithm = \"hash\"\n\
         hash_key = \"cookie:session\"\nhash_balance = 1.5\n\
         [pools.cache.sticky]\ncookie = \"srv\"\nttl = \"1h\"\n\
         [[route]]\npool = \"cache\"\n"
    ));
    let cache = &config.pools[0];
    assert_eq!(cache.hash.key, HashKey::Cookie("session".into()));
    assert_eq!(cache.hash.balance, 1.5);
    assert_eq!(cache.sticky.as_ref().unwrap().cookie, "srv");
}

#[test]
fn each_mistake_is_named_by_its_key() {
    for (text, key) in [
        ("[[route]]\npool = \"nope\"\n", "route[0].pool"),
        ("[[route]]\nhost = \"a.example\"\n", "route[0].pool"),
        (
            "[[route]]\nhost = \"a.example:80\"\npool = \"default\"\n",
            "route[0].host",
        ),
        (
            "[[route]]\nhost = \"a.*.example\"\npool = \"default\"\n",
            "route[0].host",
        ),
        (
            "[[route]]\npath_prefix = \"api\"\npool = \"default\"\n",
            "route[0].path_prefix",
        ),
        (
            "[[route]]\nstrip_prefix = true\npool = \"default\"\n",
            "route[0].strip_prefix",
        ),
        (
            "[[route]]\nmethods = [\"G T\"]\npool = \"default\"\n",
            "route[0].methods[0]",
        ),
        (
            "[[route]]\nsplit = [{ pool = \"default\", weight = 0 }]\n",
            "route[0].split",
        ),
        (
            "[[route]]\npool = \"default\"\n[route.timeouts]\nkeepalive_idle = \"1s\"\n",
            "route[0].timeouts",
        ),
        (
            "[[route]]\npool = \"default\"\n[route.retry]\nbudget_percent = 50\n",
            "route[0].retry",
        ),
        (
            "[[route]]\npool = \"default\"\nrate_limit = { burst = 5 }\n",
            "route[0].rate_limit.per_second",
        ),
        (
            "[pools.api]\nbackends = [\"http://127.0.0.1:1\", \"ftp://x\"]\n",
            "pools.api.backends[1]",
        ),
        ("[pools.api]\nalgorithm = \"hash\"\n", "pools.api.backends"),
        (
            "[pools.api]\nbackends = [\"http://127.0.0.1:1\"]\nhash_key = \"path\"\n",
            "pools.api.hash_key",
        ),
        (
            "[pools.api]\nbackends = [\"http://127.0.0.1:1\"]\n[pools.api.health_check]\nrise = 0\n",
            "pools.api.health_check.rise",
        ),
        (
            "[pools.api]\nbackends = [\"http://127.0.0.1:1\"]\n[pools.api.limits]\nmax_uri_bytes = 100\n",
            "pools.api.limits",
        ),
        (
            "[pools.default]\nbackends = [\"http://127.0.0.1:1\"]\n",
            "pools.default",
        ),
        (
            "[pools.\"a b\"]\nbackends = [\"http://127.0.0.1:1\"]\n",
            "pools.a b",
        ),
        (
            "[[route]]\npool = \"default\"\n[[route]]\nhost = \"a.example\"\npool = \"default\"\n",
            "route[1]",
        ),
    ] {
        let keys = problem_keys(&format!("{TOP}{text}"));
        assert!(keys.contains(&key.to_string()), "{text}: {keys:?}");
    }
}

#[test]
fn shadowing_is_found_only_where_an_earlier_route_takes_everything() {
    let shadowed = [
        ("path_prefix = \"/a\"", "path_prefix = \"/a/b\""),
        ("path_prefix = \"/a/\"", "path = \"/a/x\""),
        (
            "host = \"*.example.com\"",
            "host = \"x.example.com\"\npath = \"/\"",
        ),
        ("methods = [\"GET\", \"POST\"]", "methods = [\"GET\"]"),
        (
            "headers = { x-a = \"1\" }",
            "headers = { x-a = \"1\", x-b = true }",
        ),
    ];
    for (earlier, later) in shadowed {
        let text = format!(
            "{TOP}[[route]]\n{earlier}\npool = \"default\"\n[[route]]\n{later}\npool = \"default\"\n"
        );
        assert_eq!(problem_keys(&text), ["route[1]"], "{earlier} / {later}");
    }
    let fine = [
        ("path_prefix = \"/a/b\"", "path_prefix = \"/a\""),
        ("path_prefix = \"/a\"", "path_prefix = \"/ab\""),
        ("host = \"x.example.com\"", "host = \"*.example.com\""),
        ("methods = [\"GET\"]", "methods = [\"GET\", \"POST\"]"),
        ("headers = { x-a = \"1\" }", "headers = { x-a = \"2\" }"),
        ("host = \"a.example\"", "path = \"/\""),
    ];
    for (earlier, later) in fine {
        let text = format!(
            "{TOP}[[route]]\n{earlier}\npool = \"default\"\n[[route]]\n{later}\npool = \"default\"\n"
        );
        parse(&text);
    }
}

#[test]
fn only_named_pools_and_no_catch_all_warns_that_the_rest_gets_404() {
    let config = parse(
        "[pools.api]\nbackends = [\"http://127.0.0.1:9001\"]\n\
         [[route]]\nhost = \"api.example.com\"\npool = \"api\"\n",
    );
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert_eq!(config.warnings[0].key, "route");
    assert!(config.backends.is_empty());
}

#[test]
fn a_route_retry_goes_over_its_pool_retry_key_by_key() {
    let config = parse(&format!(
        "{TOP}[retry]\nattempts = 2\non_timeout = false\n\
         [pools.api]\nbackends = [\"http://127.0.0.1:9001\"]\n[pools.api.retry]\non_status = [503]\n\
         [[route]]\npool = \"api\"\n[route.retry]\nattempts = 4\n"
    ));
    let retry = config.routes[0].targets[0].retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 4, "the route's");
    assert_eq!(retry.on_status, [503], "the pool's");
    assert!(!retry.on_timeout, "the top level's");
}

#[test]
fn edge_policy_refusals_name_their_keys() {
    let keys = problem_keys(&format!(
        "{TOP}[forwarded]\ntrusted = [\"10.0.0.0/33\"]\n\
         [response_headers]\nset = {{ content-length = \"1\" }}\n\
         [[route]]\npath_prefix = \"/a/\"\npool = \"default\"\nallow = [\"nope\"]\n\
         [route.request_headers]\nremove = [\"transfer-encoding\"]\nset = {{ x-a = \"{{unknown}}\" }}\n\
         [[route]]\npath = \"/b\"\nrewrite_prefix = \"/c/\"\npool = \"default\"\n\
         [[route]]\npath_prefix = \"/d/\"\npool = \"default\"\nredirect = {{ to = \"https://{{host}}\", status = 200 }}\n\
         [[route]]\npath_prefix = \"/e/\"\npool = \"default\"\nredirect = {{ to = \"https://x\" }}\n"
    ));
    assert_eq!(
        keys,
        [
            "route[0].allow[0]",
            "route[0].request_headers.remove[0]",
            "route[0].request_headers.set.x-a",
            "route[1].rewrite_prefix",
            "route[2].redirect.status",
            "route[3].redirect",
            "forwarded.trusted[0]",
            "response_headers.set.content-length",
        ]
    );
}

#[test]
fn edge_policy_reads_every_key() {
    let config = parse(&format!(
        "{TOP}[forwarded]\ntrusted = [\"10.0.0.0/8\"]\nrfc7239 = true\n\
         [request_id]\nresponse = true\n\
         [[route]]\npath_prefix = \"/a/\"\nclient_certificate = true\nallow = [\"10.0.0.0/8\"]\n\
         deny = [\"10.6.0.0/16\"]\nrewrite_prefix = \"/b/\"\npool = \"default\"\n\
         [route.response_headers]\nadd = {{ x-a = \"{{request_id}}\" }}\n\
         [[route]]\npath_prefix = \"/r/\"\nredirect = {{ to = \"https://{{host}}{{path}}\" }}\n"
    ));
    assert!(config.forwarded.trusts("10.1.2.3".parse().unwrap()));
    assert!(config.forwarded.rfc7239 && config.request_id.enabled && config.request_id.response);
    let route = &config.routes[0];
    assert!(route.client_certificate);
    assert!(route.policy.admits("10.1.2.3".parse().unwrap()));
    assert!(!route.policy.admits("10.6.2.3".parse().unwrap()));
    assert!(!route.policy.admits("192.0.2.1".parse().unwrap()));
    assert_eq!(route.policy.rewrite_prefix.as_deref(), Some("/b/"));
    assert_eq!(route.policy.response_headers.add.len(), 1);
    let redirect = config.routes[1]
        .policy
        .redirect
        .as_ref()
        .expect("a redirect");
    assert_eq!(redirect.status, 308);
    assert!(config.routes[1].targets.is_empty());
}
