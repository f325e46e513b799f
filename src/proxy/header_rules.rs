//! Applying header rules (`request_headers`, `response_headers`; top-level, then the route's)
//! and rendering their templates from what alb settled about a request.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{ClientInfo, Reply};
use crate::config::{HeaderRules, Template, Var};
use crate::upstream::AddedFields;

/// What templates may name, taken from the request before it is forwarded.
pub(super) struct RequestVars {
    client_ip: HeaderValue,
    request_id: Option<HeaderValue>,
    host: Option<HeaderValue>,
    scheme: &'static str,
    path: Bytes,
    subject: Option<std::sync::Arc<str>>,
}

impl RequestVars {
    pub(super) fn of<B>(
        request: &http::Request<B>,
        client: &ClientInfo,
        request_id: Option<&HeaderValue>,
    ) -> RequestVars {
        RequestVars {
            client_ip: client.ip_header.clone(),
            request_id: request_id.cloned(),
            host: request.headers().get(http::header::HOST).cloned(),
            scheme: client.scheme.as_str(),
            path: {
                // As alb read it: `//evil.example` is no path to put in a Location.
                let path = super::path_reading::normalize_path(request.uri().path());
                let mut target = path.into_owned().into_bytes();
                if let Some(query) = request.uri().query() {
                    target.push(b'?');
                    target.extend_from_slice(query.as_bytes());
                }
                Bytes::from(target)
            },
            subject: client.tls.as_ref().and_then(|t| t.client_subject.clone()),
        }
    }

    fn fill(&self, var: Var) -> Option<&[u8]> {
        match var {
            Var::ClientIp => Some(self.client_ip.as_bytes()),
            Var::RequestId => self.request_id.as_ref().map(HeaderValue::as_bytes),
            Var::Host => self.host.as_ref().map(HeaderValue::as_bytes),
            Var::Scheme => Some(self.scheme.as_bytes()),
            Var::Path => Some(&self.path),
            Var::TlsClientSubject => self.subject.as_deref().map(str::as_bytes),
        }
    }

    /// `template` filled in; none when the result is no field value (a subject with a control
    /// character, say): the rule is skipped rather than the request failed.
    pub(super) fn render(&self, template: &Template) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&template.render(|var| self.fill(var))).ok()
    }

    /// The `Location` a redirect template makes: the Host goes in only when it is a plain
    /// authority, so a client cannot make alb send it somewhere by its Host field.
    pub(super) fn location(&self, template: &Template) -> Option<HeaderValue> {
        let authority = |h: &HeaderValue| {
            !h.is_empty()
                && h.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(b))
        };
        if template.uses(Var::Host) && !self.host.as_ref().is_some_and(authority) {
            return None;
        }
        // `*` (OPTIONS) names no resource to send a client to.
        if template.uses(Var::Path) && !self.path.starts_with(b"/") {
            return None;
        }
        self.render(template)
    }
}

/// Request rules over the fields the header policy left and the ones it `added`: a rule's
/// `remove` and `set` reach both (a rule may replace alb's own X-Forwarded-Proto, behind a TLS
/// terminator that is not trusted, say).
pub(super) fn apply_to_request(
    rules: &HeaderRules,
    vars: &RequestVars,
    headers: &mut HeaderMap,
    added: &mut AddedFields,
) {
    apply(rules, vars, headers, |name| {
        added.retain(|(n, _)| *n != name)
    });
}

/// Response rules over a reply: a backend's relayed fields and the map alike.
pub(super) fn apply_to_response(rules: &HeaderRules, vars: &RequestVars, reply: &mut Reply) {
    let relayed = &mut reply.relayed;
    apply(rules, vars, &mut reply.headers, |name| {
        if let Some(relayed) = relayed.as_mut() {
            relayed.remove(name.as_str());
        }
    });
}

/// `rules` over `headers` (remove, then set, then add), with `forget` told each name removed or
/// set, for the fields that ride beside the map.
fn apply(
    rules: &HeaderRules,
    vars: &RequestVars,
    headers: &mut HeaderMap,
    mut forget: impl FnMut(&HeaderName),
) {
    for name in &rules.remove {
        headers.remove(name);
        forget(name);
    }
    for (name, template) in &rules.set {
        forget(name);
        match vars.render(template) {
            Some(value) => {
                headers.insert(name.clone(), value);
            }
            None => {
                headers.remove(name);
            }
        }
    }
    for (name, template) in &rules.add {
        if let Some(value) = vars.render(template) {
            headers.append(name.clone(), value);
        }
    }
}
