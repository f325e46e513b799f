//! Header hygiene: hop-by-hop removal, forwarding fields, and the head alb encodes.

use super::*;

// ---------------------------------------------------------------------------------------------
// 2. Header hygiene
// ---------------------------------------------------------------------------------------------

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// A valid header name (tchar), in any case.
fn token_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}"
}

/// Visible ASCII plus spaces: what a header value may hold.
fn header_value() -> impl Strategy<Value = String> {
    "[ -~]{0,16}"
}

fn mixed_case(name: &str, style: u8) -> String {
    match style % 3 {
        0 => name.to_string(),
        1 => name.to_ascii_uppercase(),
        _ => name
            .split('-')
            .map(|part| {
                let mut c = part.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// A header set as ordered `(name, value)` lines, where some names are hop-by-hop, some are listed
/// in a generated Connection value, and the rest are random tokens.
fn header_lines() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(token_name(), 1..6).prop_flat_map(|listed| {
        let listed_for_tokens = listed.clone();
        // One Connection token: a listed name, a hop-by-hop name, a common option or junk, in any
        // case and with optional white space around it.
        let token = (
            prop_oneof![
                4 => select(listed_for_tokens),
                2 => select(&HOP_BY_HOP[..]).prop_map(str::to_string),
                1 => select(&["close", "keep-alive", "Upgrade", "", " ", "a b", "x@y", "a;b"][..])
                    .prop_map(str::to_string),
            ],
            any::<u8>(),
            select(&["", " ", "  ", "\t"][..]),
            select(&["", " ", "\t "][..]),
        )
            .prop_map(|(name, style, before, after)| {
                format!("{before}{}{after}", mixed_case(&name, style))
            });
        let connection_value = proptest::collection::vec(token, 0..5).prop_map(|t| t.join(","));
        let connection_line = connection_value
            .prop_map(|v| ("connection".to_string(), v))
            .boxed();
        let name = prop_oneof![
            3 => select(listed.clone()),
            2 => select(&HOP_BY_HOP[..]).prop_map(str::to_string),
            3 => token_name(),
            1 => select(&["host", "x-forwarded-for", "accept", "content-length"][..])
                .prop_map(str::to_string),
        ];
        let plain_line = (name, any::<u8>(), header_value())
            .prop_map(|(n, style, v)| (mixed_case(&n, style), v))
            .boxed();
        proptest::collection::vec(prop_oneof![1 => connection_line, 4 => plain_line], 0..16)
    })
}

fn to_map(lines: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("generated a valid name"),
            HeaderValue::from_str(value).expect("generated a valid value"),
        );
    }
    map
}

fn values(map: &HeaderMap, name: &HeaderName) -> Vec<HeaderValue> {
    map.get_all(name).iter().cloned().collect()
}

/// Names the hop-by-hop rules remove from `map`: the fixed list plus every valid token of every
/// Connection field line (comma-separated, optional white space around each token).
fn removed_names(map: &HeaderMap) -> HashSet<HeaderName> {
    let mut removed: HashSet<HeaderName> = HOP_BY_HOP
        .iter()
        .map(|n| HeaderName::from_static(n))
        .collect();
    for value in map.get_all(http::header::CONNECTION) {
        let text = value.to_str().expect("generated visible ASCII");
        for token in text.split(',') {
            let token = token.trim_matches([' ', '\t']);
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                removed.insert(name);
            }
        }
    }
    removed
}

fn ip_value() -> impl Strategy<Value = HeaderValue> {
    any::<IpAddr>().prop_map(|ip| HeaderValue::from_str(&ip.to_string()).expect("an ip is valid"))
}

proptest! {
    #![proptest_config(cases(256))]

    /// A backend's fields reach the client as they came, minus exactly the hop-by-hop ones (and
    /// Content-Length, which the client side writes from the framing), in their order.
    #[test]
    fn a_backend_response_passes_exactly_its_end_to_end_fields(lines in header_lines()) {
        let lines: Vec<(String, String)> = lines
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("transfer-encoding"))
            .collect();
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for (name, value) in &lines {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("content-length: 0\r\n\r\n");
        let mut buf = bytes::BytesMut::from(head.as_str());
        let parsed = parse_response_head(&mut buf, false, None).unwrap().unwrap();
        let mut out = bytes::BytesMut::new();
        parsed.fields.write_to(&mut out);
        let passed: Vec<(String, String)> = String::from_utf8(out.to_vec())
            .unwrap()
            .split_terminator("\r\n")
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let removed = removed_names(&to_map(&lines));
        let expected: Vec<(String, String)> = lines
            .iter()
            .filter(|(n, _)| !removed.contains(&HeaderName::from_bytes(n.as_bytes()).unwrap()))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        prop_assert_eq!(passed, expected, "head {:?}", head);
        prop_assert_eq!(parsed.fields.content_length(), Some(0));
    }

    #[test]
    fn hop_by_hop_removal_removes_exactly_the_hop_fields(lines in header_lines()) {
        let original = to_map(&lines);
        let removed = removed_names(&original);
        let mut cleaned = original.clone();
        remove_hop_by_hop(&mut cleaned);

        for name in cleaned.keys() {
            prop_assert!(!removed.contains(name), "{name} survived; lines {lines:?}");
        }
        for name in original.keys() {
            if !removed.contains(name) {
                prop_assert_eq!(
                    values(&cleaned, name),
                    values(&original, name),
                    "{} lost values; lines {:?}", name, lines
                );
            }
        }
        let kept = original.keys().filter(|n| !removed.contains(*n)).count();
        prop_assert_eq!(cleaned.keys_len(), kept);

        let mut twice = cleaned.clone();
        remove_hop_by_hop(&mut twice);
        prop_assert_eq!(twice, cleaned);
    }

    /// A Connection line may carry obs-text (bytes 0x80-0xFF), which HTTP/1.1 parsers, hyper's
    /// included, accept. The valid tokens on that line still name hop-by-hop fields.
    #[test]
    fn connection_listed_names_are_removed_next_to_obs_text(
        listed in proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 1..4),
        junk in proptest::collection::vec(0x80u8..=0xff, 1..3),
        at in any::<proptest::sample::Index>(),
    ) {
        let mut tokens: Vec<Vec<u8>> = listed.iter().map(|n| n.clone().into_bytes()).collect();
        tokens.insert(at.index(tokens.len() + 1), junk);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_bytes(&tokens.join(b", ".as_slice())).unwrap(),
        );
        for name in &listed {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("1"));
        }
        remove_hop_by_hop(&mut headers);
        for name in &listed {
            prop_assert!(!headers.contains_key(name.as_str()), "{} was forwarded: {:?}", name, headers);
        }
    }

    /// The request head as encoded for a backend, read back by an independent parser.
    #[test]
    fn forwarded_headers_name_this_hop(
        lines in header_lines(),
        host in proptest::option::of(header_value()),
        xff in proptest::collection::vec(header_value(), 0..3),
        xfp in proptest::collection::vec(select(&["http", "https", "", "http, https"][..]), 0..3),
        xfh in proptest::collection::vec(header_value(), 0..3),
        scheme in select(&[Scheme::Http, Scheme::Https][..]),
        ip in prop_oneof![
            4 => ip_value(),
            1 => header_value()
                .prop_filter("a client address is never blank", |v| !v.trim().is_empty())
                .prop_map(|v| HeaderValue::from_str(v.trim()).unwrap()),
        ],
    ) {
        let mut original = to_map(&lines);
        if let Some(host) = &host {
            original.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        }
        for (name, vs) in [
            ("x-forwarded-for", xff.clone()),
            ("x-forwarded-proto", xfp.iter().map(|s| s.to_string()).collect()),
            ("x-forwarded-host", xfh.clone()),
        ] {
            for v in vs {
                original.append(name, HeaderValue::from_str(&v).unwrap());
            }
        }
        // On the wire a field value has no leading or trailing whitespace (RFC 9110 §5.5): what
        // a client sends arrives trimmed, as here.
        let original = trimmed(&original);
        let after = forwarded_upstream(&original, &ip, scheme);

        let xff_name = HeaderName::from_static("x-forwarded-for");
        let xfp_name = HeaderName::from_static("x-forwarded-proto");
        let xfh_name = HeaderName::from_static("x-forwarded-host");

        // X-Forwarded-For from a client alb does not trust: this client alone, whatever it
        // wrote there (a trusted proxy's list is continued: the unit tests of `header_policy`
        // and tests/it/proxying/edge_policy.rs).
        let got = values(&after, &xff_name);
        prop_assert_eq!(got.len(), 1, "one line");
        prop_assert_eq!(got[0].as_bytes(), ip.as_bytes());

        // X-Forwarded-Proto and -Host say what this hop received, alone: a client's values never
        // come first (frameworks read the first element).
        prop_assert_eq!(
            values(&after, &xfp_name),
            vec![HeaderValue::from_static(scheme.as_str())]
        );
        match original.get(http::header::HOST) {
            Some(host) => prop_assert_eq!(values(&after, &xfh_name), vec![host.clone()]),
            None => prop_assert!(values(&after, &xfh_name).is_empty()),
        }

        // The encoder frames the body it sends (here none, a GET) and speaks for its own
        // connection: no framing, Connection or Upgrade field of the client's reaches the
        // backend (Upgrade is hop-by-hop too, RFC 9110 §7.6.1; an upgrade alb passes on is
        // written by the encoder from what it decided, not copied).
        for own in [http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING, http::header::CONNECTION, http::header::UPGRADE] {
            prop_assert!(!after.contains_key(&own), "{} was copied: {:?}", own, after);
        }

        // Hop-by-hop fields (RFC 9110 §7.6.1), and those the Connection field names (but for
        // Host and the framing), are gone; nothing else changes.
        let forwarded = [xff_name, xfp_name, xfh_name];
        let own = [http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING, http::header::CONNECTION, http::header::UPGRADE];
        let nominated: Vec<String> = values(&original, &http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b',').map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase()).collect::<Vec<_>>())
            .filter(|n| n != "host" && n != "content-length" && n != "transfer-encoding")
            .collect();
        let hop_by_hop = ["te", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate"];
        for name in original.keys().chain(after.keys()) {
            if forwarded.contains(name) || own.contains(name) {
                continue;
            }
            if hop_by_hop.contains(&name.as_str()) || nominated.iter().any(|n| n == name.as_str()) {
                prop_assert!(values(&after, name).is_empty(), "{} was forwarded", name);
            } else {
                prop_assert_eq!(values(&after, name), values(&original, name), "{} changed", name);
            }
        }
    }
}

fn trimmed(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        out.append(
            name,
            HeaderValue::from_bytes(value.as_bytes().trim_ascii()).unwrap(),
        );
    }
    out
}

/// Encodes a GET with `headers` for the upstream hop and parses the fields back; a Host that alb
/// had to add (the client sent none) is checked and left out.
fn forwarded_upstream(headers: &HeaderMap, ip: &HeaderValue, scheme: Scheme) -> HeaderMap {
    let mut request = http::Request::get("/").body(()).unwrap();
    *request.headers_mut() = headers.clone();
    let (parts, ()) = request.into_parts();
    let backend = HeaderValue::from_static("backend.test:8080");
    let bytes =
        crate::support::encode::request_head(&parts, ip, scheme, BodyFraming::None, &backend);
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Request::new(&mut fields);
    assert!(parsed.parse(&bytes).unwrap().is_complete());
    let mut after = HeaderMap::new();
    for field in parsed.headers.iter() {
        after.append(
            HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(field.value).unwrap(),
        );
    }
    if !headers.contains_key(http::header::HOST) {
        assert_eq!(after.remove(http::header::HOST), Some(backend));
    }
    after
}
