//! The config loader on arbitrary, plausible and nearly valid text.

use super::*;

// ---------------------------------------------------------------------------------------------
// 1. Config loader
// ---------------------------------------------------------------------------------------------

/// `s` as a TOML basic string, whatever it contains.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value of the wrong TOML type (or no valid TOML at all), for any key.
fn wrong_type() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        select(
            &[
                "true",
                "false",
                "1.5",
                "-0.0",
                "nan",
                "inf",
                "[]",
                "{}",
                "[1, \"a\"]",
                "1979-05-27",
                "1e3",
                "0x10",
                "+7",
                "1_000",
                "99999999999999999999",
                "''",
                "\"unterminated",
                "",
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

/// How often a generated value is valid, an edge case, anything at all, or of the wrong type.
#[derive(Debug, Clone, Copy)]
struct Mix {
    valid: u32,
    edge: u32,
    any: u32,
    wrong: u32,
}

/// Anything goes: most documents fail, in the parser or in validation.
const WILD: Mix = Mix {
    valid: 16,
    edge: 8,
    any: 3,
    wrong: 1,
};

/// Well-typed values, now and then one on or past a boundary: many documents validate, so the
/// invariants of a loaded config get exercised, and the ones that fail mostly fail on one key.
const NEAR_VALID: Mix = Mix {
    valid: 40,
    edge: 6,
    any: 0,
    wrong: 0,
};

fn mixed(
    mix: Mix,
    valid: BoxedStrategy<String>,
    edge: BoxedStrategy<String>,
    anything: BoxedStrategy<String>,
) -> BoxedStrategy<String> {
    union(vec![
        (mix.valid, valid),
        (mix.edge, edge),
        (mix.any, anything),
        (mix.wrong, wrong_type().boxed()),
    ])
}

/// One of `options`, chosen by weight; options of weight zero are left out.
fn union(options: Vec<(u32, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let options: Vec<_> = options.into_iter().filter(|(w, _)| *w > 0).collect();
    proptest::strategy::Union::new_weighted(options).boxed()
}

/// A string-typed value.
fn text_value(
    mix: Mix,
    valid: &'static [&'static str],
    edges: &'static [&'static str],
) -> BoxedStrategy<String> {
    mixed(
        mix,
        select(valid).prop_map(toml_string).boxed(),
        select(edges).prop_map(toml_string).boxed(),
        any::<String>().prop_map(|s| toml_string(&s)).boxed(),
    )
}

/// An integer value (weights, counts).
fn int_value(mix: Mix) -> BoxedStrategy<String> {
    mixed(
        mix,
        (1i64..=100).prop_map(|n| n.to_string()).boxed(),
        select(INT_EDGES).prop_map(|n| n.to_string()).boxed(),
        any::<i64>().prop_map(|n| n.to_string()).boxed(),
    )
}

const INT_EDGES: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    -2,
    999,
    1000,
    1001,
    9_999,
    10_000,
    10_001,
    65_536,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MIN,
    i64::MAX,
];

const LISTEN_VALID: &[&str] = &["127.0.0.1:8080", "0.0.0.0:0", "[::1]:8080"];
const ALGORITHM_VALID: &[&str] = &["least_conn", "round_robin", "random", "p2c"];
const DURATION_VALID: &[&str] = &["1ns", "1s", "5s", "500ms", "1h 30m", " 5s ", "7days"];
const PATH_VALID: &[&str] = &["/", "/health", "/?q=1"];

const LISTEN_EDGES: &[&str] = &[
    "127.0.0.1:8080",
    "0.0.0.0:0",
    "[::1]:8080",
    "[::]:65535",
    "127.0.0.1",
    "localhost:8080",
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    ":8080",
    "",
    " 127.0.0.1:8080 ",
    "1.2.3.4:99999999999",
    "é:80",
];

const ALGORITHM_EDGES: &[&str] = &[
    "least_conn",
    "round_robin",
    "random",
    "p2c",
    "LEAST_CONN",
    " p2c",
    "",
    "least-conn",
    "rändom",
];

const DURATION_EDGES: &[&str] = &[
    "0s",
    "0ms",
    "0",
    "1ns",
    "1us",
    "1µs",
    "500ms",
    "5s",
    " 5s ",
    "5 s",
    "1h 30m",
    "1.5s",
    "5",
    "-1s",
    "",
    " ",
    "abc",
    "99999999999h",
    "18446744073709551615s",
    "18446744073709551616s",
    "1000000000000000000000ns",
    "584542046090y",
    "550000000000y",
    "2 weeks",
    "1y",
    "5秒",
    "5s\n",
];

const PATH_EDGES: &[&str] = &[
    "/",
    "/health",
    "/a b",
    "health",
    "",
    "//",
    "/?q=1",
    "/#frag",
    "/é",
    "/%zz",
    "http://x/",
];

const URL_EDGES: &[&str] = &[
    "http://127.0.0.1:8081",
    "http://127.0.0.1:8081/",
    "http://localhost",
    "http://LOCALHOST:80",
    "http://[::1]:9000",
    "http://[0:0::1]:9000",
    "http://[::1",
    "https://127.0.0.1:8081",
    "HTTP://127.0.0.1:8081",
    "ftp://x",
    "http://x:0",
    "http://x:65535",
    "http://x:65536",
    "http://x:",
    "http://x:8080:8080",
    "http://user@x",
    "http://user:pw@x:80",
    "http://x/path",
    "http://x?q",
    "http://x#f",
    "http://",
    "http:///",
    "http://:80",
    "127.0.0.1:80",
    "//127.0.0.1:80",
    "",
    " http://x",
    "http://a b",
    "http://é.test",
    "http://xn--e-9ga.test",
    "http://[::ffff:127.0.0.1]:80",
    "http://127.0.0.1:080",
];

const HOSTS: &[&str] = &[
    "127.0.0.1",
    "10.0.0.7",
    "localhost",
    "LocalHost",
    "backend-1",
    "example.com",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[fe80::1]",
    "[::ffff:10.0.0.7]",
    "",
    "a b",
    "é",
];
const PORTS: &[&str] = &[
    "80",
    "8081",
    "08081",
    "1",
    "0",
    "65535",
    "65536",
    "-1",
    "99999999999",
    "",
    "x",
];
const SUFFIXES: &[&str] = &["", "", "", "/", "/x", "?q", "#f", "/?"];

/// Valid backend URLs, some of them different spellings of one backend (a duplicate).
const URL_VALID: &[&str] = &[
    "http://127.0.0.1:8081",
    "http://127.0.0.1:8081/",
    "http://localhost:8081",
    "http://LOCALHOST:8081",
    "http://[::1]:8081",
    "http://[0:0::1]:8081",
    "http://[::ffff:127.0.0.1]:8081",
    "http://backend-1",
    "http://backend-1:80",
];

fn url_value(mix: Mix) -> BoxedStrategy<String> {
    let valid = prop_oneof![
        3 => (1u16..=65535).prop_map(|port| format!("http://127.0.0.1:{port}")),
        1 => select(URL_VALID).prop_map(str::to_string),
    ];
    let edge = prop_oneof![
        1 => select(URL_EDGES).prop_map(str::to_string),
        1 => (select(HOSTS), proptest::option::of(select(PORTS)), select(SUFFIXES)).prop_map(
            |(host, port, suffix)| match port {
                Some(port) => format!("http://{host}:{port}{suffix}"),
                None => format!("http://{host}{suffix}"),
            }
        ),
    ];
    mixed(
        mix,
        valid.prop_map(|u| toml_string(&u)).boxed(),
        edge.prop_map(|u| toml_string(&u)).boxed(),
        any::<String>().prop_map(|s| toml_string(&s)).boxed(),
    )
}

/// `key = value` on its own line, present about two thirds of the time.
fn line(key: &'static str, value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    proptest::option::weighted(0.65, value)
        .prop_map(move |v| v.map(|v| format!("{key} = {v}\n")).unwrap_or_default())
}

/// A table header followed by its lines, or nothing.
fn table(
    header: &'static str,
    lines: impl Strategy<Value = Vec<String>>,
) -> impl Strategy<Value = String> {
    proptest::option::weighted(0.6, lines).prop_map(move |l| {
        l.map(|l| format!("{header}\n{}", l.concat()))
            .unwrap_or_default()
    })
}

fn backend_table(mix: Mix) -> impl Strategy<Value = String> {
    // A table without its url is a syntax error (a missing field), so only with wrong types allowed.
    let url = union(vec![
        (
            30,
            url_value(mix).prop_map(|u| format!("url = {u}\n")).boxed(),
        ),
        (mix.wrong, Just(String::new()).boxed()),
    ]);
    (url, line("weight", int_value(mix)))
        .prop_map(|(url, weight)| format!("[[backend]]\n{url}{weight}"))
}

/// Rare accidents (with wrong types allowed): an unknown key, a duplicated key, a stray line.
fn accident(mix: Mix) -> BoxedStrategy<String> {
    if mix.wrong == 0 {
        return Just(String::new()).boxed();
    }
    prop_oneof![
        80 => Just(String::new()),
        1 => Just("bogus = 1\n".to_string()),
        1 => Just("listen = \"127.0.0.1:1\"\n".to_string()),
        1 => Just("[health_check]\nrise = 1\n".to_string()),
        1 => Just("= 1\n".to_string()),
        1 => Just("[backend]\nurl = \"http://127.0.0.1:1\"\n".to_string()),
    ]
    .boxed()
}

/// A config document built from the known keys, each with values drawn according to `mix`.
fn plausible_toml(mix: Mix) -> impl Strategy<Value = String> {
    let top = (
        line("listen", text_value(mix, LISTEN_VALID, LISTEN_EDGES)),
        line(
            "algorithm",
            text_value(mix, ALGORITHM_VALID, ALGORITHM_EDGES),
        ),
        line(
            "access_log",
            mixed(
                mix,
                select(&["true", "false"][..])
                    .prop_map(str::to_string)
                    .boxed(),
                Just("false".to_string()).boxed(),
                Just("true".to_string()).boxed(),
            ),
        ),
    )
        .prop_map(|(a, b, c)| format!("{a}{b}{c}"));
    let backends_list = union(vec![
        (
            12,
            proptest::collection::vec(url_value(mix), 1..5)
                .prop_map(|v| format!("backends = [{}]\n", v.join(", ")))
                .boxed(),
        ),
        (1, Just("backends = []\n".to_string()).boxed()),
        (
            mix.wrong,
            wrong_type()
                .prop_map(|v| format!("backends = {v}\n"))
                .boxed(),
        ),
    ]);
    let backend_tables = proptest::collection::vec(backend_table(mix), 1..4)
        .prop_map(|t| t.concat())
        .boxed();
    // Mostly one style of backend list, sometimes neither, sometimes both (an error).
    let backends = prop_oneof![
        9 => (backends_list.clone(), Just(String::new())),
        9 => (Just(String::new()), backend_tables.clone()),
        1 => (Just(String::new()), Just(String::new())),
        1 => (backends_list, backend_tables),
    ];
    let duration = || text_value(mix, DURATION_VALID, DURATION_EDGES);
    let health = table(
        "[health_check]",
        (
            line("path", text_value(mix, PATH_VALID, PATH_EDGES)),
            line("interval", duration()),
            line("timeout", duration()),
            line("rise", int_value(mix)),
            line("fall", int_value(mix)),
        )
            .prop_map(|(a, b, c, d, e)| vec![a, b, c, d, e]),
    );
    let timeouts = table(
        "[timeouts]",
        (
            line("connect", duration()),
            line("response", duration()),
            line("drain", duration()),
        )
            .prop_map(|(a, b, c)| vec![a, b, c]),
    );
    let retry = table(
        "[retry]",
        line("attempts", int_value(mix)).prop_map(|l| vec![l]),
    );
    // Each table at most once (a repeated table is only ever a syntax error), in any order.
    (top, backends, health, timeouts, retry, accident(mix)).prop_flat_map(
        |(top, (list, backend_tables), health, timeouts, retry, accident)| {
            let top = format!("{top}{list}");
            Just(vec![backend_tables, health, timeouts, retry, accident])
                .prop_shuffle()
                .prop_map(move |tables| format!("{top}{}", tables.concat()))
        },
    )
}

/// Whatever `from_toml` returns must be well-formed: a typed config that keeps every invariant, or
/// an error whose every problem names a key and a reason.
fn check_config_result(text: &str) -> Result<(), TestCaseError> {
    match Config::from_toml(text, "p.toml") {
        Err(e) => {
            let problems = e.problems();
            prop_assert!(!problems.is_empty(), "an error without problems: {e}");
            for p in &problems {
                prop_assert!(!p.key.trim().is_empty(), "problem without a key: {p:?}");
                prop_assert!(
                    !p.reason.trim().is_empty(),
                    "problem without a reason: {p:?}"
                );
            }
            // Rendering must not panic either.
            let _ = e.to_string();
        }
        Ok(c) => {
            prop_assert!(!c.backends.is_empty(), "no backends");
            let mut urls = HashSet::new();
            let mut addrs = HashSet::new();
            for b in &c.backends {
                prop_assert!((1..=MAX_WEIGHT).contains(&b.weight), "weight {}", b.weight);
                // TLS exactly for https:// backends.
                let scheme = if b.tls.is_some() { "https" } else { "http" };
                prop_assert!(
                    b.url.starts_with(&format!("{scheme}://")),
                    "url {:?}",
                    b.url
                );
                prop_assert!(b.url.len() > "https://".len(), "url {:?}", b.url);
                prop_assert!(urls.insert(b.url.clone()), "duplicate url {:?}", b.url);
                // The URL is the normalised form of the address, so that two spellings of one
                // backend are caught as duplicates.
                let normal = match &b.addr {
                    BackendAddr::Ip(sa) => sa.to_string(),
                    BackendAddr::Name { host, port } => {
                        prop_assert_eq!(host, &host.to_ascii_lowercase());
                        format!("{host}:{port}")
                    }
                    // Not generated: their URLs are not `scheme://address`.
                    BackendAddr::Srv { .. } | BackendAddr::Kubernetes(_) => continue,
                };
                prop_assert_eq!(&b.url, &format!("{scheme}://{normal}"));
                prop_assert!(addrs.insert(normal), "one backend twice: {:?}", b.url);
            }
            prop_assert!(!c.health_check.interval.is_zero());
            prop_assert!(!c.health_check.timeout.is_zero());
            prop_assert!(!c.timeouts.connect.is_zero());
            prop_assert!(!c.timeouts.response.is_zero());
            prop_assert!(c.health_check.rise >= 1);
            prop_assert!(c.health_check.fall >= 1);
            prop_assert!(c.retry.attempts >= 1);
            prop_assert!(c.health_check.path.starts_with('/'));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_config_result(&text)?;
    }

    #[test]
    fn config_never_panics_on_toml_like_text(
        text in "[a-z_\\[\\]=\"'{}., 0-9#\\n\\\\-]{0,120}",
    ) {
        check_config_result(&text)?;
    }

    #[test]
    fn config_never_panics_on_plausible_toml(text in plausible_toml(WILD)) {
        check_config_result(&text)?;
    }

    #[test]
    fn config_never_panics_on_nearly_valid_toml(text in plausible_toml(NEAR_VALID)) {
        check_config_result(&text)?;
    }

    /// One key on or past a boundary in an otherwise valid file: the file loads exactly when the
    /// value is in range, and otherwise the one problem reported names that key.
    #[test]
    fn config_boundary_values_are_judged_by_their_key(
        (table, key, value) in prop_oneof![
            (
                select(&[
                    ("[[backend]]", "weight"),
                    ("[health_check]", "rise"),
                    ("[health_check]", "fall"),
                    ("[retry]", "attempts"),
                ][..]),
                prop_oneof![select(INT_EDGES), -3i64..=12],
            )
                .prop_map(|((t, k), v)| (t, k, v.to_string())),
            (
                select(&[
                    ("[health_check]", "interval"),
                    ("[health_check]", "timeout"),
                    ("[timeouts]", "connect"),
                    ("[timeouts]", "response"),
                    ("[timeouts]", "drain"),
                ][..]),
                select(DURATION_EDGES),
            )
                .prop_map(|((t, k), v)| (t, k, toml_string(v))),
        ],
    ) {
        let text = if table == "[[backend]]" {
            format!("[[backend]]\nurl = \"http://127.0.0.1:8081\"\n{key} = {value}\n")
        } else {
            format!("backends = [\"http://127.0.0.1:8081\"]\n{table}\n{key} = {value}\n")
        };
        check_config_result(&text)?;
        let dotted = match table {
            "[[backend]]" => format!("backend[0].{key}"),
            t => format!("{}.{key}", t.trim_matches(['[', ']'])),
        };
        // Whether the file must load (Some(true)), must not (Some(false)), or may go either way.
        let expected = match (key, value.parse::<i64>().ok()) {
            ("weight", Some(v)) => Some((1..=i64::from(MAX_WEIGHT)).contains(&v)),
            // Counts have some upper limit; only the lower one is part of the contract.
            (_, Some(v)) if v < 1 => Some(false),
            (_, Some(v)) if v <= 10 => Some(true),
            (_, Some(_)) => None,
            // Zero is a valid drain (close at once), never a valid timeout or interval.
            (key, None) if value == "\"0s\"" || value == "\"0ms\"" => Some(key == "drain"),
            (_, None) if DURATION_VALID.iter().any(|d| toml_string(d) == value) => Some(true),
            (_, None) => None,
        };
        match Config::from_toml(&text, "p.toml") {
            Ok(_) => prop_assert_ne!(expected, Some(false), "accepted: {}", text),
            Err(e) => {
                prop_assert_ne!(expected, Some(true), "refused: {}: {}", text, e);
                let problems = e.problems();
                prop_assert_eq!(problems.len(), 1, "{}", e);
                prop_assert_eq!(&problems[0].key, &dotted, "{}", e);
            }
        }
    }
}

/// Tallies what `from_toml` makes of 1,000 documents drawn with `mix`: (ok, invalid, syntax).
fn outcomes(mix: Mix) -> (u32, u32, u32) {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = plausible_toml(mix);
    let (mut ok, mut invalid, mut syntax) = (0, 0, 0);
    for _ in 0..1000 {
        let text = strategy.new_tree(&mut runner).expect("a value").current();
        match Config::from_toml(&text, "p.toml") {
            Ok(_) => ok += 1,
            Err(alb::config::ConfigError::Invalid { .. }) => invalid += 1,
            Err(_) => syntax += 1,
        }
    }
    (ok, invalid, syntax)
}

/// The generators reach every outcome, the validator included (not only syntax errors), so the
/// properties above are not vacuous.
#[test]
fn plausible_toml_reaches_ok_and_invalid() {
    let (ok, invalid, syntax) = outcomes(WILD);
    assert!(
        ok >= 40 && invalid >= 200 && syntax >= 100,
        "wild: ok {ok}, invalid {invalid}, syntax {syntax}"
    );
    let (ok, invalid, syntax) = outcomes(NEAR_VALID);
    assert!(
        ok >= 200 && invalid >= 200 && syntax == 0,
        "near valid: ok {ok}, invalid {invalid}, syntax {syntax}"
    );
}
