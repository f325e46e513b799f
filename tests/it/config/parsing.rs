//! Config parsing and validation through the public API: `Config::from_toml` and `Config::load`.
//!
//! Every accepted form is checked value by value; every rejection is checked to name the key it is
//! about, both in `ConfigError::problems()` and in the Display text an operator reads.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::TempDir;
use alb::Config;
use alb::config::{Algorithm, BackendAddr, ConfigError, Problem};

const ONE_BACKEND: &str = "backends = [\"http://127.0.0.1:8081\"]\n";

fn parse(text: &str) -> Config {
    Config::from_toml(text, "test.toml")
        .unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
}

fn reject(text: &str) -> ConfigError {
    match Config::from_toml(text, "test.toml") {
        Ok(config) => panic!("expected a rejection of\n{text}\nbut it parsed as {config:?}"),
        Err(e) => e,
    }
}

/// Rejects `text` with exactly one problem, on `key`, and returns that problem. The Display text
/// must name the origin and the key, so an operator sees where to look.
fn reject_one(text: &str, key: &str) -> Problem {
    let error = reject(text);
    let problems = error.problems();
    assert!(
        matches!(error, ConfigError::Invalid { .. }),
        "not a validation error: {error:?}"
    );
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    assert_eq!(problems[0].key, key, "wrong key in {problems:#?}");
    assert!(!problems[0].reason.is_empty());
    let shown = error.to_string();
    assert!(shown.contains("test.toml"), "origin missing from {shown:?}");
    assert!(
        shown.contains(&format!("{key}: ")),
        "key {key} missing from {shown:?}"
    );
    problems[0].clone()
}

/// Rejects `text` as a syntax error (unknown key, wrong type) whose message names `word`.
fn reject_syntax(text: &str, word: &str) -> String {
    let error = reject(text);
    assert!(
        matches!(error, ConfigError::Syntax { .. }),
        "not a syntax error: {error:?}"
    );
    let problems = error.problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "(syntax)");
    assert!(
        problems[0].reason.contains(word),
        "{word:?} not named in {:?}",
        problems[0].reason
    );
    let shown = error.to_string();
    assert!(shown.starts_with("test.toml: "), "{shown:?}");
    assert!(shown.contains(word), "{word:?} not named in {shown:?}");
    shown
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------------
// Accepted forms
// ---------------------------------------------------------------------------------------------

#[test]
fn minimal_form_parses_with_typed_values() {
    let config = parse(
        r#"
listen = "0.0.0.0:9090"
algorithm = "round_robin"
backends = ["http://127.0.0.1:8081", "http://10.0.0.2:8082"]

[health_check]
path = "/healthz"
interval = "10s"
timeout = "3s"
rise = 3
fall = 4

[timeouts]
connect = "1s"
response = "45s"
"#,
    );
    assert_eq!(config.listen, "0.0.0.0:9090".parse::<SocketAddr>().unwrap());
    assert_eq!(config.algorithm, Algorithm::RoundRobin);
    let urls: Vec<&str> = config.backends.iter().map(|b| b.url.as_str()).collect();
    assert_eq!(urls, ["http://127.0.0.1:8081", "http://10.0.0.2:8082"]);
    assert_eq!(
        config.backends[0].addr,
        BackendAddr::Ip("127.0.0.1:8081".parse().unwrap())
    );
    assert_eq!(
        config.backends[1].addr,
        BackendAddr::Ip("10.0.0.2:8082".parse().unwrap())
    );
    assert_eq!(config.backends[0].authority, "127.0.0.1:8081");
    assert!(config.backends.iter().all(|b| b.weight == 1));
    assert_eq!(config.health_check.path, "/healthz");
    assert_eq!(config.health_check.interval, secs(10));
    assert_eq!(config.health_check.timeout, secs(3));
    assert_eq!(config.health_check.rise, 3);
    assert_eq!(config.health_check.fall, 4);
    assert_eq!(config.timeouts.connect, secs(1));
    assert_eq!(config.timeouts.response, secs(45));
    // Not given: defaults.
    assert_eq!(config.timeouts.drain, secs(30));
    assert_eq!(config.retry.attempts, 2);
    assert!(config.access_log);
}

#[test]
fn omitted_keys_take_their_defaults() {
    let config = parse(ONE_BACKEND);
    assert_eq!(
        config.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.algorithm, Algorithm::LeastConn);
    assert_eq!(config.backends.len(), 1);
    assert_eq!(config.backends[0].weight, 1);
    assert_eq!(config.health_check.path, "/");
    assert_eq!(config.health_check.interval, secs(5));
    assert_eq!(config.health_check.timeout, secs(2));
    assert_eq!(config.health_check.rise, 2);
    assert_eq!(config.health_check.fall, 2);
    assert_eq!(config.timeouts.connect, secs(2));
    assert_eq!(config.timeouts.response, secs(30));
    assert_eq!(config.timeouts.drain, secs(30));
    assert_eq!(config.retry.attempts, 2);
    assert!(config.access_log);

    // Empty sections are the same as missing ones.
    let config = parse(&format!(
        "{ONE_BACKEND}[health_check]\n[timeouts]\n[retry]\n"
    ));
    assert_eq!(config.health_check.interval, secs(5));
    assert_eq!(config.health_check.rise, 2);
    assert_eq!(config.timeouts.response, secs(30));
    assert_eq!(config.retry.attempts, 2);
}

#[test]
fn every_algorithm_name_parses() {
    for (name, algorithm) in [
        ("least_conn", Algorithm::LeastConn),
        ("round_robin", Algorithm::RoundRobin),
        ("random", Algorithm::Random),
        ("p2c", Algorithm::P2c),
    ] {
        let config = parse(&format!("algorithm = \"{name}\"\n{ONE_BACKEND}"));
        assert_eq!(config.algorithm, algorithm);
        assert_eq!(config.algorithm.name(), name);
    }
}

#[test]
fn backend_tables_with_weights() {
    let config = parse(
        r#"
[[backend]]
url = "http://127.0.0.1:8081"
weight = 3

[[backend]]
url = "http://127.0.0.1:8082"
"#,
    );
    assert_eq!(config.backends.len(), 2);
    assert_eq!(config.backends[0].url, "http://127.0.0.1:8081");
    assert_eq!(config.backends[0].weight, 3);
    assert_eq!(config.backends[1].url, "http://127.0.0.1:8082");
    assert_eq!(
        config.backends[1].weight, 1,
        "a table without weight gets weight 1"
    );

    let config = parse("[[backend]]\nurl = \"http://127.0.0.1:8081\"\nweight = 10000\n");
    assert_eq!(
        config.backends[0].weight, 10_000,
        "the maximum weight is accepted"
    );
}

#[test]
fn backend_urls_are_normalised() {
    let config = parse(
        r#"backends = [
    "http://127.0.0.1:8081/",
    "http://Backend.Example:9000",
    "http://example.com",
    "http://[::1]:8082",
]"#,
    );
    let b = &config.backends;
    assert_eq!(b[0].url, "http://127.0.0.1:8081", "trailing slash dropped");
    assert_eq!(b[1].url, "http://backend.example:9000", "host lowercased");
    assert_eq!(
        b[1].addr,
        BackendAddr::Name {
            host: "backend.example".into(),
            port: 9000
        }
    );
    assert_eq!(b[1].authority, "backend.example:9000");
    assert_eq!(b[2].url, "http://example.com:80", "port 80 by default");
    assert_eq!(
        b[2].addr,
        BackendAddr::Name {
            host: "example.com".into(),
            port: 80
        }
    );
    assert_eq!(b[3].url, "http://[::1]:8082");
    assert_eq!(b[3].addr, BackendAddr::Ip("[::1]:8082".parse().unwrap()));
    assert_eq!(
        b[3].authority, "[::1]:8082",
        "brackets kept for the Host header"
    );
}

#[test]
fn durations_in_several_units() {
    let config = parse(&format!(
        "{ONE_BACKEND}[health_check]\ninterval = \"500ms\"\ntimeout = \"250ms\"\n\
         [timeouts]\nconnect = \"1500ms\"\nresponse = \"1m\"\ndrain = \"1m 30s\"\n"
    ));
    assert_eq!(config.health_check.interval, Duration::from_millis(500));
    assert_eq!(config.health_check.timeout, Duration::from_millis(250));
    assert_eq!(config.timeouts.connect, Duration::from_millis(1500));
    assert_eq!(config.timeouts.response, secs(60));
    assert_eq!(config.timeouts.drain, secs(90));
}

#[test]
fn access_log_and_retry_are_read() {
    let config = parse(&format!(
        "access_log = false\n{ONE_BACKEND}[retry]\nattempts = 1\n"
    ));
    assert!(!config.access_log);
    assert_eq!(config.retry.attempts, 1);
}

// ---------------------------------------------------------------------------------------------
// Rejections: each names its key
// ---------------------------------------------------------------------------------------------

#[test]
fn no_backends_is_rejected() {
    let missing = reject_one("listen = \"127.0.0.1:8080\"\n", "backends");
    assert!(missing.reason.contains("no backends"), "{missing:?}");
    let empty = reject_one("backends = []\n", "backends");
    assert!(empty.reason.contains("no backends"), "{empty:?}");
    // An empty file too: nothing is configured.
    reject_one("", "backends");
}

#[test]
fn bad_backend_urls_are_rejected() {
    for (url, says) in [
        ("not a url", "not a valid URL"),
        ("http://", "not a valid URL"),
        ("http://:8080", "missing host"),
        ("127.0.0.1:8081", "missing scheme"),
        ("http://user:pw@127.0.0.1:8081", "user info"),
    ] {
        let problem = reject_one(&format!("backends = [\"{url}\"]\n"), "backends[0]");
        assert!(problem.reason.contains(says), "{url:?}: {problem:?}");
        assert!(
            problem.reason.contains(url),
            "the URL is quoted in {problem:?}"
        );
    }
}

#[test]
fn schemes_other_than_http_and_https_are_rejected() {
    for url in ["ws://127.0.0.1:8443", "ftp://127.0.0.1:21"] {
        let text = format!("backends = [\"http://127.0.0.1:8081\", \"{url}\"]\n");
        let problem = reject_one(&text, "backends[1]");
        assert!(problem.reason.contains("scheme"), "{url}: {problem:?}");
    }
    // https:// is TLS to the backend, on port 443 unless given.
    let config = parse("backends = [\"https://127.0.0.1\", \"HTTPS://127.0.0.1:8443\"]\n");
    let urls: Vec<&str> = config.backends.iter().map(|b| b.url.as_str()).collect();
    assert_eq!(urls, ["https://127.0.0.1:443", "https://127.0.0.1:8443"]);
    assert!(config.backends.iter().all(|b| b.tls.is_some()));
}

#[test]
fn urls_with_a_path_or_query_are_rejected() {
    for url in [
        "http://127.0.0.1:8081/api",
        "http://127.0.0.1:8081/api/",
        "http://127.0.0.1:8081/?x=1",
    ] {
        let problem = reject_one(&format!("backends = [\"{url}\"]\n"), "backends[0]");
        assert!(
            problem.reason.contains("path or query"),
            "{url}: {problem:?}"
        );
    }
}

#[test]
fn duplicate_backends_are_rejected() {
    let problem = reject_one(
        "backends = [\"http://127.0.0.1:8081\", \"http://127.0.0.1:8082\", \"http://127.0.0.1:8081\"]\n",
        "backends[2]",
    );
    assert!(
        problem
            .reason
            .contains("duplicate backend http://127.0.0.1:8081"),
        "{problem:?}"
    );

    // Spelled differently, same backend.
    let problem = reject_one(
        "backends = [\"http://127.0.0.1:8081\", \"http://127.0.0.1:8081/\"]\n",
        "backends[1]",
    );
    assert!(problem.reason.contains("duplicate"), "{problem:?}");
    let problem = reject_one(
        "backends = [\"http://LOCALHOST:80\", \"http://localhost\"]\n",
        "backends[1]",
    );
    assert!(problem.reason.contains("duplicate"), "{problem:?}");

    // And in the table form, where the key is `backend[i]`.
    let problem = reject_one(
        "[[backend]]\nurl = \"http://127.0.0.1:8081\"\n[[backend]]\nurl = \"http://127.0.0.1:8081/\"\nweight = 2\n",
        "backend[1]",
    );
    assert!(problem.reason.contains("duplicate"), "{problem:?}");
}

#[test]
fn weights_out_of_range_are_rejected() {
    for weight in ["0", "-1", "10001"] {
        let text = format!("[[backend]]\nurl = \"http://127.0.0.1:8081\"\nweight = {weight}\n");
        let problem = reject_one(&text, "backend[0].weight");
        assert!(
            problem.reason.contains(&format!("got {weight}")),
            "{problem:?}"
        );
    }
    // The key points at the right table.
    let text = "[[backend]]\nurl = \"http://127.0.0.1:8081\"\n[[backend]]\nurl = \"http://127.0.0.1:8082\"\nweight = 0\n";
    reject_one(text, "backend[1].weight");
}

#[test]
fn zero_durations_are_rejected() {
    for (section, key) in [
        ("health_check", "interval"),
        ("health_check", "timeout"),
        ("timeouts", "connect"),
        ("timeouts", "response"),
    ] {
        for zero in ["0s", "0ms"] {
            let text = format!("{ONE_BACKEND}[{section}]\n{key} = \"{zero}\"\n");
            let problem = reject_one(&text, &format!("{section}.{key}"));
            assert!(problem.reason.contains("greater than zero"), "{problem:?}");
        }
    }
}

#[test]
fn unparseable_durations_are_rejected() {
    for (section, key, value) in [
        ("health_check", "interval", "5"),
        ("health_check", "interval", "fast"),
        ("health_check", "timeout", "-1s"),
        ("timeouts", "connect", "fast"),
        ("timeouts", "response", "5"),
        ("timeouts", "drain", "soon"),
    ] {
        let text = format!("{ONE_BACKEND}[{section}]\n{key} = \"{value}\"\n");
        let problem = reject_one(&text, &format!("{section}.{key}"));
        assert!(problem.reason.contains("not a duration"), "{problem:?}");
        assert!(
            problem.reason.contains(&format!("{value:?}")),
            "the value is quoted in {problem:?}"
        );
    }
}

#[test]
fn a_duration_written_as_a_number_is_a_syntax_error_at_its_line() {
    let shown = reject_syntax(
        &format!("{ONE_BACKEND}[health_check]\ninterval = 5\n"),
        "interval = 5",
    );
    assert!(shown.contains("line 3"), "{shown}");
}

#[test]
fn unknown_algorithm_is_rejected() {
    let problem = reject_one(
        &format!("algorithm = \"fastest\"\n{ONE_BACKEND}"),
        "algorithm",
    );
    assert!(problem.reason.contains("\"fastest\""), "{problem:?}");
    assert!(
        problem
            .reason
            .contains("least_conn, round_robin, random, p2c"),
        "{problem:?}"
    );
    // Names are case-sensitive.
    reject_one(
        &format!("algorithm = \"Round_Robin\"\n{ONE_BACKEND}"),
        "algorithm",
    );
}

#[test]
fn unknown_keys_are_rejected() {
    reject_syntax(
        &format!("{ONE_BACKEND}colour = \"blue\"\n"),
        "unknown field `colour`",
    );
    reject_syntax(
        &format!("{ONE_BACKEND}[health_check]\ntreshold = 3\n"),
        "unknown field `treshold`",
    );
    reject_syntax(
        &format!("{ONE_BACKEND}[timeouts]\nread = \"1s\"\n"),
        "unknown field `read`",
    );
    reject_syntax(
        "[[backend]]\nurl = \"http://127.0.0.1:8081\"\nwieght = 2\n",
        "unknown field `wieght`",
    );
    reject_syntax(
        &format!("{ONE_BACKEND}[healthcheck]\npath = \"/\"\n"),
        "unknown field `healthcheck`",
    );
}

#[test]
fn both_backend_forms_are_rejected() {
    let problem = reject_one(
        "backends = [\"http://127.0.0.1:8081\"]\n[[backend]]\nurl = \"http://127.0.0.1:8082\"\n",
        "backend",
    );
    assert!(problem.reason.contains("not both"), "{problem:?}");
}

#[test]
fn counts_out_of_range_are_rejected() {
    for (section, key) in [
        ("health_check", "rise"),
        ("health_check", "fall"),
        ("retry", "attempts"),
    ] {
        for value in ["0", "-2", "1001"] {
            let text = format!("{ONE_BACKEND}[{section}]\n{key} = {value}\n");
            let problem = reject_one(&text, &format!("{section}.{key}"));
            assert!(
                problem.reason.contains(&format!("got {value}")),
                "{problem:?}"
            );
        }
    }
}

#[test]
fn health_path_must_be_absolute() {
    for path in ["health", "", "http://x/health", "/a b"] {
        let text = format!("{ONE_BACKEND}[health_check]\npath = \"{path}\"\n");
        let problem = reject_one(&text, "health_check.path");
        assert!(problem.reason.contains("absolute path"), "{problem:?}");
    }
    // A query is fine.
    assert_eq!(
        parse(&format!(
            "{ONE_BACKEND}[health_check]\npath = \"/health?full=1\"\n"
        ))
        .health_check
        .path,
        "/health?full=1"
    );
}

#[test]
fn invalid_listen_addresses_are_rejected() {
    for listen in [
        "localhost:8080",
        "127.0.0.1",
        "127.0.0.1:99999",
        ":8080",
        "0.0.0.0:http",
    ] {
        let problem = reject_one(&format!("listen = \"{listen}\"\n{ONE_BACKEND}"), "listen");
        assert!(
            problem.reason.contains(&format!("{listen:?}")),
            "{problem:?}"
        );
    }
    // IPv6 with brackets is an address with a port.
    assert_eq!(
        parse(&format!("listen = \"[::1]:8080\"\n{ONE_BACKEND}")).listen,
        "[::1]:8080".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let error = reject(
        r#"
listen = "nowhere"
algorithm = "fastest"
backends = [
    "ftp://127.0.0.1:8081",
    "http://127.0.0.1:8082/api",
    "http://127.0.0.1:8083",
    "http://127.0.0.1:8083/",
]

[health_check]
path = "health"
interval = "5"
rise = 0

[timeouts]
response = "0s"

[retry]
attempts = 0
"#,
    );
    let keys: Vec<String> = error.problems().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "listen",
            "algorithm",
            "backends[0]",
            "backends[1]",
            "backends[3]",
            "health_check.path",
            "health_check.interval",
            "health_check.rise",
            "timeouts.response",
            "retry.attempts",
        ]
    );
    let shown = error.to_string();
    assert!(shown.starts_with("test.toml: 10 problem(s):\n"), "{shown}");
    // One line per problem, each prefixed with the origin and naming its key.
    let lines: Vec<&str> = shown.lines().skip(1).collect();
    assert_eq!(lines.len(), 10, "{shown}");
    for (line, key) in lines.iter().zip(&keys) {
        assert!(
            line.starts_with(&format!("  test.toml: {key}: ")),
            "{line:?} should name {key}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Config::load
// ---------------------------------------------------------------------------------------------

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = TempDir::new("load");
    let good = dir.write(
        "good.toml",
        "backends = [\"http://127.0.0.1:8081\"]\nalgorithm = \"p2c\"\n",
    );
    let config = Config::load(&good).expect("valid file");
    assert_eq!(config.algorithm, Algorithm::P2c);
    assert_eq!(config.backends[0].url, "http://127.0.0.1:8081");

    let bad = dir.write("bad.toml", "backends = []\n[health_check]\nfall = 0\n");
    let error = Config::load(&bad).expect_err("invalid file");
    let keys: Vec<String> = error.problems().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["backends", "health_check.fall"]);
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{}: 2 problem(s)", bad.display())),
        "{shown}"
    );

    let syntax = dir.write("syntax.toml", "backends = [\n");
    let error = Config::load(&syntax).expect_err("broken TOML");
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: ", syntax.display())),
        "{error}"
    );

    let missing = dir.0.join("missing.toml");
    let error = Config::load(&missing).expect_err("missing file");
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert_eq!(error.problems()[0].key, "(file)");
    let shown = error.to_string();
    assert!(shown.contains(&missing.display().to_string()), "{shown}");
    assert!(shown.contains("cannot read"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Ports, fragments and address spellings
// ---------------------------------------------------------------------------------------------

/// A port that does not fit in 16 bits must not silently become 80.
#[test]
fn out_of_range_backend_port_is_rejected() {
    reject_one("backends = [\"http://127.0.0.1:99999\"]\n", "backends[0]");
}

#[test]
fn port_zero_and_fragments_are_rejected() {
    reject_one("backends = [\"http://127.0.0.1:0\"]\n", "backends[0]");
    reject_one("backends = [\"http://127.0.0.1:8081#x\"]\n", "backends[0]");
}

#[test]
fn two_spellings_of_one_ipv6_address_are_duplicates() {
    reject_one(
        "backends = [\"http://[::1]:8081\", \"http://[0:0::1]:8081\"]\n",
        "backends[1]",
    );
}

#[test]
fn durations_longer_than_a_week_are_rejected() {
    reject_one(
        "backends = [\"http://127.0.0.1:8081\"]\n[health_check]\ninterval = \"8days\"\n",
        "health_check.interval",
    );
}

#[test]
fn the_resilience_sections_parse_with_their_defaults_and_values() {
    let config = alb::Config::from_toml(
        "backends = [\"http://127.0.0.1:8081\"]\n\
         [retry]\nattempts = 3\nbudget_percent = 10\non_status = [502, 503]\nmax_body_buffer = \"1MiB\"\n\
         [passive_health]\nconsecutive_failures = 7\ncount_5xx = true\n\
         [limits]\nmax_body_bytes = \"10MB\"\nbackend_max_connections = 50\n\
         [timeouts]\nrequest = \"1m\"\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(config.retry.attempts, 3);
    assert_eq!(config.retry.budget_percent, 10);
    assert_eq!(config.retry.budget_min_per_second, 10);
    assert_eq!(config.retry.on_status, [502, 503]);
    assert_eq!(config.retry.max_body_buffer, 1 << 20);
    assert_eq!(config.passive_health.consecutive_failures, 7);
    assert!(config.passive_health.count_5xx);
    assert_eq!(config.passive_health.failure_statuses, [500, 502, 503, 504]);
    assert_eq!(
        config.passive_health.ejection_time,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(config.limits.max_body_bytes, Some(10_000_000));
    assert_eq!(config.backends[0].max_connections, Some(50));
    assert_eq!(
        config.timeouts.request,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(
        config.timeouts.client_header,
        std::time::Duration::from_secs(10)
    );
}

#[test]
fn bad_resilience_values_name_their_keys() {
    let error = alb::Config::from_toml(
        "backends = [\"http://127.0.0.1:8081\"]\nunderscores_in_headers = \"sometimes\"\n\
         [retry]\non_status = [404]\nmax_body_buffer = \"12 parsecs\"\n\
         [passive_health]\nmax_ejected_percent = 150\nejection_time = \"1m\"\nmax_ejection_time = \"10s\"\n\
         failure_statuses = [503, 404]\n\
         [limits]\nmax_header_bytes = 10\n",
        "t.toml",
    )
    .unwrap_err();
    let keys: Vec<String> = error.problems().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "limits.max_header_bytes",
            "retry.on_status",
            "retry.max_body_buffer",
            "passive_health.max_ejection_time",
            "passive_health.failure_statuses",
            "passive_health.max_ejected_percent",
            "underscores_in_headers",
        ]
    );
}

#[test]
fn proxy_protocol_is_off_by_default_and_reads_its_trusted_networks() {
    let config = parse(ONE_BACKEND);
    assert!(!config.proxy_protocol.enabled);
    assert!(config.proxy_protocol.trusted.is_empty());

    let config = parse(&format!(
        "{ONE_BACKEND}[proxy_protocol]\nenabled = true\n\
         trusted = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1/128\", \"2001:db8::/32\"]\n"
    ));
    let pp = &config.proxy_protocol;
    assert!(pp.enabled);
    let shown: Vec<String> = pp.trusted.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        shown,
        ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "2001:db8::/32"]
    );
    for (ip, trusted) in [
        ("10.20.30.40", true),
        ("11.0.0.1", false),
        ("127.0.0.1", true),
        ("127.0.0.2", false),
        ("::1", true),
        ("::ffff:10.0.0.9", true),
        ("2001:db8:1::5", true),
        ("2001:db9::5", false),
    ] {
        assert_eq!(pp.trusts(ip.parse().unwrap()), trusted, "{ip}");
    }
    // A list kept while the feature is off is fine (and still checked).
    let config = parse(&format!(
        "{ONE_BACKEND}[proxy_protocol]\ntrusted = [\"10.0.0.0/8\"]\n"
    ));
    assert!(!config.proxy_protocol.enabled);
}

#[test]
fn proxy_protocol_problems_name_their_keys() {
    let problem = reject_one(
        &format!("{ONE_BACKEND}[proxy_protocol]\nenabled = true\n"),
        "proxy_protocol.trusted",
    );
    assert!(problem.reason.contains("10.0.0.0/8"), "{problem}");
    reject_one(
        &format!("{ONE_BACKEND}[proxy_protocol]\nenabled = true\ntrusted = []\n"),
        "proxy_protocol.trusted",
    );
    let problem = reject_one(
        &format!(
            "{ONE_BACKEND}[proxy_protocol]\nenabled = true\ntrusted = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n"
        ),
        "proxy_protocol.trusted[1]",
    );
    assert!(problem.reason.contains("10.0.0.0/8"), "{problem}");
    let problem = reject_one(
        &format!("{ONE_BACKEND}[proxy_protocol]\ntrusted = [\"lb.internal\"]\n"),
        "proxy_protocol.trusted[0]",
    );
    assert!(problem.reason.contains("not an IP address"), "{problem}");
    reject_one(
        &format!("{ONE_BACKEND}[proxy_protocol]\ntrusted = [\"::/129\"]\n"),
        "proxy_protocol.trusted[0]",
    );
    reject_syntax(
        &format!("{ONE_BACKEND}[proxy_protocol]\nenable = true\n"),
        "enable",
    );
}

#[test]
fn http2_defaults_and_values() {
    let config = parse(ONE_BACKEND);
    assert!(config.http2.tls && !config.http2.cleartext);
    assert_eq!(config.http2.max_concurrent_streams, 128);
    let config = parse(&format!(
        "{ONE_BACKEND}[http2]\ntls = false\ncleartext = true\nmax_concurrent_streams = 10\n\
         stream_window = \"64KiB\"\nconnection_window = \"2MiB\"\nmax_resets_per_second = 5\n"
    ));
    assert!(!config.http2.tls && config.http2.cleartext);
    assert_eq!(config.http2.max_concurrent_streams, 10);
    assert_eq!(config.http2.stream_window, 65_536);
    assert_eq!(config.http2.connection_window, 2 << 20);
    assert_eq!(config.http2.max_resets_per_second, 5);
}

#[test]
fn http2_problems_name_their_keys() {
    // Below HTTP/2's smallest window (RFC 9113 §6.9.2: 65,535).
    reject_one(
        &format!("{ONE_BACKEND}[http2]\nstream_window = 1000\n"),
        "http2.stream_window",
    );
    reject_one(
        &format!("{ONE_BACKEND}[http2]\nconnection_window = \"4GiB\"\n"),
        "http2.connection_window",
    );
    reject_one(
        &format!(
            "{ONE_BACKEND}[http2]\nstream_window = \"1MiB\"\nconnection_window = \"512KiB\"\n"
        ),
        "http2.connection_window",
    );
    reject_one(
        &format!("{ONE_BACKEND}[http2]\nmax_concurrent_streams = 0\n"),
        "http2.max_concurrent_streams",
    );
    reject_one(
        &format!("{ONE_BACKEND}[http2]\nmax_resets_per_second = -1\n"),
        "http2.max_resets_per_second",
    );
}

#[test]
fn h2c_backends_speak_http2_and_https_ones_only_when_asked() {
    let config = parse("backends = [\"h2c://127.0.0.1:50051\", \"http://127.0.0.1:8080\"]\n");
    assert_eq!(config.backends[0].url, "h2c://127.0.0.1:50051");
    assert!(config.backends[0].http2);
    assert!(!config.backends[1].http2);
    let config = parse("backends = [\"h2c://grpc.internal\"]\n");
    assert_eq!(config.backends[0].url, "h2c://grpc.internal:80");
    let config = parse("backends = [\"https://127.0.0.1:8443\"]\n[upstream_tls]\nhttp2 = true\n");
    assert!(config.backends[0].http2);
    assert!(config.upstream_tls.as_ref().is_some_and(|tls| tls.http2));
    let config = parse("backends = [\"https://127.0.0.1:8443\"]\n");
    assert!(!config.backends[0].http2);
}
