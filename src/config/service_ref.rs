//! `k8s://namespace/service:port`: the Service a discovered backend reads, checked once here by
//! the API's own rules for each name, so that a typo is a config error naming its key rather
//! than a watch answered 404, or watching for a port no slice has, forever.

use std::fmt;
use std::str::FromStr;

/// Where a Service's endpoints are read from: `k8s://namespace/service:port` (port = the port's
/// name in the EndpointSlice, or its number).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
}

/// The port of the endpoints alb connects to. A number is the endpoints' own port (the Service's
/// `targetPort`, which is what slices carry), not the Service's `port`; a name is the Service
/// port's name, the same on every slice even when pods serve it on different numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Name(String),
    Number(u16),
}

impl FromStr for ServiceRef {
    type Err = String;

    fn from_str(text: &str) -> Result<ServiceRef, String> {
        const FORM: &str = "k8s://namespace/service:port";
        let rest = text
            .strip_prefix("k8s://")
            .ok_or_else(|| format!("{text:?} does not start with k8s:// ({FORM})"))?;
        let (namespace, rest) = rest
            .split_once('/')
            .ok_or_else(|| format!("{text:?} has no namespace ({FORM})"))?;
        let (service, port) = rest.split_once(':').ok_or_else(|| {
            format!("{text:?} has no port ({FORM}: the port's name or the endpoints' number)")
        })?;
        dns_label("namespace", namespace, false)?;
        dns_label("service", service, true)?;
        let port = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            match port.parse::<u16>() {
                Ok(n) if n > 0 => PortRef::Number(n),
                _ => return Err(format!("port {port} is not in 1..=65535")),
            }
        } else {
            port_name(port)?;
            PortRef::Name(port.to_string())
        };
        Ok(ServiceRef {
            namespace: namespace.to_string(),
            service: service.to_string(),
            port,
        })
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k8s://{}/{}:{}", self.namespace, self.service, self.port)
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Name(name) => f.write_str(name),
            PortRef::Number(n) => write!(f, "{n}"),
        }
    }
}

/// A namespace is an RFC 1123 label, a Service name an RFC 1035 one (a letter first): checked
/// here so that a typo is a config error, not a watch answered 404 forever, and so that both go
/// into the request's path as they are.
fn dns_label(what: &str, label: &str, letter_first: bool) -> Result<(), String> {
    let valid = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
        && (!letter_first || label.starts_with(|c: char| c.is_ascii_lowercase()));
    match valid {
        true => Ok(()),
        false => Err(format!(
            "{what} {label:?} is not a DNS label (1 to 63 of a-z, 0-9 and '-', \
             alphanumeric at both ends{})",
            if letter_first { ", a letter first" } else { "" }
        )),
    }
}

/// The API's rule for port names (IANA_SVC_NAME).
fn port_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    match valid {
        true => Ok(()),
        false => Err(format!(
            "port {name:?} is neither a number nor a port name (1 to 15 of a-z, 0-9 and '-', \
             a letter among them)"
        )),
    }
}
