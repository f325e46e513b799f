//! Header rules (`request_headers`, `response_headers`: `set`, `add`, `remove`) and the small
//! templates their values and redirects are written in (`"{scheme}://{host}{path}"`).
//!
//! **Rules can never write the fields that frame a message or belong to one connection**
//! ([`is_protected`]): a rule that names one is refused at load, naming its key, so no config can
//! make alb smuggle a request or a response.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};

use super::raw::RawHeaderRules;
use super::values::Problems;

/// One direction's rules, applied in this order: remove, set (replacing every field of the
/// name), add (beside what is there).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderRules {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// A value with variables: text pieces and what a request fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// What a template may name. Each is filled from what alb settled, never from a field the
/// client could have forged: the client address is the trusted one, the scheme the listener's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    RequestId,
    Host,
    Scheme,
    /// The request's path and query, as received.
    Path,
    TlsClientSubject,
}

impl Var {
    const NAMES: &'static str =
        "{client_ip}, {request_id}, {host}, {scheme}, {path}, {tls_client_subject}";

    fn named(name: &str) -> Option<Var> {
        Some(match name {
            "client_ip" => Var::ClientIp,
            "request_id" => Var::RequestId,
            "host" => Var::Host,
            "scheme" => Var::Scheme,
            "path" => Var::Path,
            "tls_client_subject" => Var::TlsClientSubject,
            _ => return None,
        })
    }
}

impl Template {
    /// Parses `text`: `{name}` is a variable, `{{` and `}}` are braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!("{text:?}: a lone '}}' (write '}}}}' for one)"));
            }
            let close = tail
                .find('}')
                .ok_or_else(|| format!("{text:?}: '{{' without its '}}'"))?;
            let name = &tail[1..close];
            let var = Var::named(name).ok_or_else(|| {
                format!(
                    "{text:?}: unknown variable {{{name}}} (known: {})",
                    Var::NAMES
                )
            })?;
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Var(var));
            rest = &tail[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        if let Some(Piece::Text(t)) = pieces
            .iter()
            .find(|p| matches!(p, Piece::Text(t) if HeaderValue::from_str(t).is_err()))
        {
            return Err(format!("{t:?} cannot be in a field value"));
        }
        Ok(Template(pieces))
    }

    /// The value for a request, with `fill` giving each variable's bytes (none: empty).
    pub fn render<'a>(&'a self, mut fill: impl FnMut(Var) -> Option<&'a [u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Var(var) => out.extend_from_slice(fill(*var).unwrap_or_default()),
            }
        }
        out
    }

    /// Whether it names `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.0.contains(&Piece::Var(var))
    }
}

/// Fields no rule may write or remove: the framing, and what belongs to one connection (RFC
/// 9110 §7.6.1); alb writes them itself from what it forwards.
pub fn is_protected(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "content-length"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
            | "http2-settings"
    )
}

/// `request_headers` / `response_headers` under `key`, wherever given (top level, pool, route);
/// none given: no rules.
pub(super) fn header_rules(
    key: &str,
    raw: Option<RawHeaderRules>,
    problems: &mut Problems,
) -> HeaderRules {
    raw.map(|r| rules_of(key, r, problems)).unwrap_or_default()
}

fn rules_of(key: &str, raw: RawHeaderRules, problems: &mut Problems) -> HeaderRules {
    let mut name = |what: &str, text: &str| -> Option<HeaderName> {
        let field = format!("{key}.{what}");
        match HeaderName::try_from(text) {
            Ok(name) if is_protected(&name) => {
                problems.add(
                    field,
                    format!(
                        "{text:?} frames the message or belongs to one connection: alb writes it"
                    ),
                );
                None
            }
            Ok(name) => Some(name),
            Err(_) => {
                problems.add(field, format!("{text:?} is not a field name"));
                None
            }
        }
    };
    let remove = raw
        .remove
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, text)| name(&format!("remove[{i}]"), text))
        .collect();
    let mut valued = |what: &str, map: Option<BTreeMap<String, String>>| {
        let mut rules = Vec::new();
        for (text, value) in map.unwrap_or_default() {
            let Some(field) = name(&format!("{what}.{text}"), &text) else {
                continue;
            };
            rules.push((field, (format!("{key}.{what}.{text}"), value)));
        }
        rules
    };
    let set = valued("set", raw.set);
    let add = valued("add", raw.add);
    let mut templates = |rules: Vec<(HeaderName, (String, String))>| {
        rules
            .into_iter()
            .filter_map(|(field, (at, value))| match Template::parse(&value) {
                Ok(template) => Some((field, template)),
                Err(reason) => {
                    problems.add(at, reason);
                    None
                }
            })
            .collect()
    };
    HeaderRules {
        remove,
        set: templates(set),
        add: templates(add),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(text: &str) -> String {
        let template = Template::parse(text).unwrap();
        let out = template.render(|var| match var {
            Var::Host => Some(b"a.example".as_slice()),
            Var::Path => Some(b"/x?y=1".as_slice()),
            Var::Scheme => Some(b"https".as_slice()),
            _ => None,
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn templates_fill_variables_and_keep_escaped_braces() {
        assert_eq!(rendered("https://{host}{path}"), "https://a.example/x?y=1");
        assert_eq!(rendered("max-age=63072000"), "max-age=63072000");
        assert_eq!(rendered("{{literal}} {scheme}"), "{literal} https");
        assert_eq!(rendered("{request_id}"), "");
    }

    #[test]
    fn templates_refuse_unknown_variables_and_stray_braces() {
        for bad in ["{nope}", "{host", "a}b", "bad\nvalue"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rules_refuse_framing_and_connection_fields_naming_the_key() {
        let raw = RawHeaderRules {
            set: Some(BTreeMap::from([
                ("transfer-encoding".to_string(), "chunked".to_string()),
                ("x-ok".to_string(), "1".to_string()),
            ])),
            add: None,
            remove: Some(vec!["content-length".into(), "server".into()]),
        };
        let mut problems = Problems::default();
        let rules = header_rules("route[0].request_headers", Some(raw), &mut problems);
        let keys: Vec<String> = problems
            .into_result()
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "route[0].request_headers.remove[0]",
                "route[0].request_headers.set.transfer-encoding",
            ]
        );
        assert_eq!(rules.set.len(), 1);
        assert_eq!(rules.remove, [HeaderName::from_static("server")]);
    }
}
