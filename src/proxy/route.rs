//! Choosing a request's pool: the routes of the config, first match wins, found through a host
//! table rather than a scan of every route, so that a thousand routes cost what ten do.
//!
//! Routes are indexed by their host condition: exact names in one map, `*.example.com` patterns
//! in another (looked up once per dot of the request's host), and routes without a host in a
//! bucket of their own; within each, by the first segment of their path condition (`/api/v1/`
//! files under `api`; `/` and no path condition under "any"). Path prefixes match on whole
//! segments, so a route can only match requests whose first segment is its own. A request's
//! candidates are a few lists, each in file order; walking them merged by route number and
//! testing each candidate's other conditions gives the first route of the file that matches, as
//! a linear scan would, without looking at routes for other hosts or other first segments.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, Method, Request};

use super::path_reading::{AmbiguousPath, PathReading, set_path};
use crate::config::{HeaderTest, HostPattern, RouteConfig, prefix_matches};

/// The routes of one snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
    /// Requests each route took since this snapshot began (the admin API shows them).
    hits: Vec<AtomicU64>,
    exact: HashMap<String, Bucket>,
    suffixes: HashMap<String, Bucket>,
    /// Dots in the longest `*.` pattern (`.example.com`: 2): a request's host is looked up
    /// under its last that many suffixes only, so a host of a thousand labels costs what a
    /// short one does.
    suffix_dots: usize,
    hostless: Bucket,
}

/// The routes of one host condition, by the first segment of their path condition.
#[derive(Debug, Default)]
struct Bucket {
    by_segment: HashMap<String, Vec<u32>>,
    /// Routes with no path condition, or `/`: any first segment.
    any: Vec<u32>,
}

impl Bucket {
    fn add(&mut self, index: u32, route: &RouteConfig) {
        match route
            .path
            .as_deref()
            .or(route.path_prefix.as_deref())
            .filter(|p| *p != "/")
        {
            Some(path) => self
                .by_segment
                .entry(first_segment(path).to_string())
                .or_default()
                .push(index),
            None => self.any.push(index),
        }
    }

    /// The lists a request with this first path segment must look at.
    fn candidates<'a>(&'a self, segment: &str, lists: &mut Lists<'a>) {
        if let Some(list) = self.by_segment.get(segment) {
            lists.push(list);
        }
        if !self.any.is_empty() {
            lists.push(&self.any);
        }
    }
}

type Lists<'a> = smallvec::SmallVec<[&'a [u32]; 6]>;

/// `api` of `/api/v1/users` and of `/api`; empty for `/`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// What routing reads of a request, taken once.
pub(super) struct RequestKey<'a> {
    /// Lower case, without port or trailing dot.
    host: Option<Cow<'a, str>>,
    /// Dot segments resolved and unreserved characters decoded, as a backend will read it, and
    /// how the most liberal backend would (see [`PathReading`]).
    path: PathReading<'a>,
    method: &'a Method,
    headers: &'a HeaderMap,
    /// The client presented a certificate the TLS listener verified.
    verified_client: bool,
    /// The peer is a trusted proxy: conditions on forwarding fields may read them.
    trusted_peer: bool,
}

impl<'a> RequestKey<'a> {
    /// The path as read, when reading changed it (dot segments, slashes, escapes).
    pub(super) fn into_read_path(self) -> Option<String> {
        match self.path.path {
            Cow::Owned(path) => Some(path),
            Cow::Borrowed(_) => None,
        }
    }

    pub(super) fn of<B>(
        request: &'a Request<B>,
        verified_client: bool,
        trusted_peer: bool,
    ) -> Result<RequestKey<'a>, AmbiguousPath> {
        Ok(RequestKey {
            host: request
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(host_of),
            path: PathReading::of(request.uri().path())?,
            method: request.method(),
            headers: request.headers(),
            verified_client,
            trusted_peer,
        })
    }
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let mut table = RouteTable {
            routes: routes.to_vec(),
            hits: routes.iter().map(|_| AtomicU64::new(0)).collect(),
            ..RouteTable::default()
        };
        for (i, route) in routes.iter().enumerate() {
            let bucket = match &route.host {
                None => &mut table.hostless,
                Some(HostPattern::Exact(name)) => table.exact.entry(name.clone()).or_default(),
                Some(HostPattern::Suffix(suffix)) => {
                    table.suffixes.entry(suffix.clone()).or_default()
                }
            };
            bucket.add(i as u32, route);
        }
        table.suffix_dots = table
            .suffixes
            .keys()
            .map(|suffix| suffix.matches('.').count())
            .max()
            .unwrap_or(0);
        table
    }

    pub(super) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub(super) fn get(&self, index: usize) -> &RouteConfig {
        &self.routes[index]
    }

    pub(super) fn hits(&self) -> Vec<u64> {
        self.hits
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect()
    }

    /// The first route, in file order, that `request` meets (counted as a hit); `Err` for a
    /// path backends read in more than one way (see [`PathReading`]).
    pub fn route_of<B>(&self, request: &Request<B>) -> Result<Option<usize>, AmbiguousPath> {
        self.find(&RequestKey::of(request, false, false)?)
    }

    /// The first route, in file order, whose conditions all hold, counted as a hit; `Err` when
    /// the liberal reading of the path would choose another.
    pub(super) fn find(&self, request: &RequestKey<'_>) -> Result<Option<usize>, AmbiguousPath> {
        let found = self.lookup(request, &request.path.path);
        if let Some(liberal) = &request.path.liberal
            && self.lookup(request, liberal) != found
        {
            return Err(AmbiguousPath);
        }
        // Capitals are common and mostly meant (gRPC's `/pkg.Service/Method`): the folded
        // reading only refuses a path that it would give to a route coming first, one the
        // request passed by (`/ADMIN/x` taken by a catch-all after `/admin/`).
        if let Some(folded) = &request.path.folded
            && let Some(earlier) = self.lookup(request, folded)
            && found.is_none_or(|found| earlier < found)
        {
            return Err(AmbiguousPath);
        }
        if let Some(found) = found {
            self.hits[found].fetch_add(1, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// The first route whose conditions hold for `request` with its path read as `path`.
    fn lookup(&self, request: &RequestKey<'_>, path: &str) -> Option<usize> {
        let segment = first_segment(path);
        let mut lists = Lists::new();
        if let Some(host) = request.host.as_deref() {
            if let Some(bucket) = self.exact.get(host) {
                bucket.candidates(segment, &mut lists);
            }
            if !self.suffixes.is_empty() {
                for (dot, _) in host.rmatch_indices('.').take(self.suffix_dots) {
                    if let Some(bucket) = self.suffixes.get(&host[dot..]) {
                        bucket.candidates(segment, &mut lists);
                    }
                }
            }
        }
        self.hostless.candidates(segment, &mut lists);
        merged(&mut lists, |i| {
            self.rest_matches(&self.routes[i], request, path)
        })
    }

    /// Every condition but the host one (the table already matched it).
    fn rest_matches(&self, route: &RouteConfig, request: &RequestKey<'_>, path: &str) -> bool {
        if let Some(prefix) = &route.path_prefix
            && !prefix_matches(prefix, path)
        {
            return false;
        }
        if let Some(exact) = &route.path
            && exact != path
        {
            return false;
        }
        if !route.methods.is_empty() && !route.methods.contains(request.method) {
            return false;
        }
        if route.client_certificate && !request.verified_client {
            return false;
        }
        route.headers.iter().all(|condition| {
            // A forwarding field from a client alb does not trust is not what the backend will
            // see (the header policy replaces it): a condition reads it as absent.
            let believed =
                request.trusted_peer || !crate::http1::is_alb_field(condition.name.as_str());
            let mut values = request
                .headers
                .get_all(&condition.name)
                .iter()
                .filter(|_| believed);
            match &condition.test {
                HeaderTest::Present => values.next().is_some(),
                HeaderTest::Absent => values.next().is_none(),
                HeaderTest::Equals(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
            }
        })
    }
}

/// Forwards `request` with `replacement` instead of `prefix` at the front of its path:
/// `/api/users?x` under `path_prefix = "/api/"` goes on as `/users?x` (`strip_prefix`, an empty
/// replacement) or `/v2/users?x` (`rewrite_prefix = "/v2/"`). The path cut is `read`, the one
/// the prefix matched (none: the request's own, which reading left as it was).
pub(super) fn replace_prefix<B>(
    request: &mut Request<B>,
    read: Option<&str>,
    prefix: &str,
    replacement: &str,
) {
    let path = read.unwrap_or(request.uri().path());
    let Some(rest) = path.strip_prefix(prefix.trim_end_matches('/')) else {
        return;
    };
    let front = replacement.trim_end_matches('/');
    let slash = if rest.starts_with('/') { "" } else { "/" };
    let path = format!("{front}{slash}{rest}");
    set_path(request, &path);
}

/// Walks sorted lists of route numbers in increasing order (each list is in file order) and
/// returns the first number `matches` accepts.
fn merged(lists: &mut [&[u32]], mut matches: impl FnMut(usize) -> bool) -> Option<usize> {
    loop {
        let (which, &next) = lists
            .iter()
            .enumerate()
            .filter_map(|(k, list)| list.first().map(|first| (k, first)))
            .min_by_key(|(_, first)| **first)?;
        lists[which] = &lists[which][1..];
        if matches(next as usize) {
            return Some(next as usize);
        }
    }
}

/// The host a request names, as routes compare it: lower case, without port or trailing dot.
fn host_of(value: &str) -> Cow<'_, str> {
    let without_port = match value.rfind(':') {
        // `[::1]:8080` or `[::1]`: the colons inside brackets are the address's.
        Some(colon) if !value[colon..].contains(']') => &value[..colon],
        _ => value,
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_port_case_and_trailing_dot() {
        assert_eq!(host_of("API.Example.com:8080"), "api.example.com");
        assert_eq!(host_of("example.com."), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
    }
}
