//! How a request's path is read before it is routed and forwarded: as the backends behind alb
//! will resolve it, in every way they commonly do, so that no spelling of a path reaches a route
//! (or a backend's resource) that another spelling is kept from.

use std::borrow::Cow;

use http::Request;

/// The path as a backend resolves it (RFC 3986 §6.2.2): percent-encoded unreserved characters
/// decoded, dot segments removed and repeated slashes merged, so that `/%73tatic/x` and
/// `/api/../static/x` match the routes of `/static/`, as the backend will serve them. An encoded
/// `/` stays encoded here; [`PathReading::of`] decides what happens when a backend could read
/// it, a `\` or a `;` otherwise. Most paths need none of this and are borrowed.
pub(super) fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') && !path.contains("/.") && !path.contains("//") {
        return Cow::Borrowed(path);
    }
    Cow::Owned(resolve_segments(&decode_unreserved(path)))
}

/// Dot segments removed and empty segments merged (`//` is one `/` to most servers, nginx
/// merges them by default: `//api/x` must not pass the `/api` route's limit by reaching its
/// backend another way).
fn resolve_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (k, segment) in segments.iter().enumerate() {
        match *segment {
            "" if k != last => {}
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        // `/a/.` and `/a/b/..` name a directory: keep the trailing slash.
        if k == last && matches!(*segment, "." | "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

/// How a request's path is read for routing, and whether every common backend reads it the same.
///
/// **This is where alb makes sure no backend can resolve a path to somewhere its route did not
/// lead.** alb routes on its reading ([`normalize_path`]) and forwards that reading (see
/// [`set_path`]), so a backend that does not resolve dot segments or merge slashes (a
/// raw `req.url` prefix mount) gets what alb matched. Backends disagree on more than that: nginx
/// and Python's http.server decode `%2F` before resolving dot segments, IIS and some Java and
/// Node servers read `\` (and `%5C`) as `/`, Tomcat drops a segment's `;parameters` (so `..;`
/// is `..`), Windows drops a segment's trailing dots and spaces, and Express, ASP.NET and IIS
/// match paths without regard to case. Two more readings cover them: the liberal one applies
/// all the decoding, the folded one lower-cases. A path is refused (400) when
///
/// - the liberal reading finds a dot segment where alb's found none (`/public/..%2fadmin`,
///   `/public/..\admin`, `/public/..;/admin`): no client needs that, it can only climb out of
///   the route it matched;
/// - or the liberal reading would choose a different route (`/api%2Fv1/x` when `/api/v1/` and
///   `/api/` lead to different pools), or the folded one a route that comes before the one the
///   request took (`/ADMIN/x` beside an `/admin/` route and a catch-all after it).
///
/// Otherwise the path goes on as read: `/files/a%2Fb` stays one segment for the backends that
/// keep it so, under the route every reading chose.
pub(super) struct PathReading<'a> {
    /// alb's reading, the one routes match.
    pub(super) path: Cow<'a, str>,
    /// The liberal reading, when it differs from alb's (without a dot segment).
    pub(super) liberal: Option<String>,
    /// The lower-cased reading, when the path has capitals.
    pub(super) folded: Option<String>,
}

/// A path some common backend resolves through a dot segment alb's reading does not have, or to
/// another route.
#[derive(Debug, PartialEq, Eq)]
pub struct AmbiguousPath;

impl<'a> PathReading<'a> {
    pub(super) fn of(raw: &'a str) -> Result<PathReading<'a>, AmbiguousPath> {
        let path = normalize_path(raw);
        let folded = path
            .bytes()
            .any(|b| b.is_ascii_uppercase())
            .then(|| path.to_ascii_lowercase());
        let odd = path.bytes().any(|b| matches!(b, b'%' | b'\\' | b';'))
            || path.contains("./")
            || path.ends_with('.');
        if !odd {
            return Ok(PathReading {
                path,
                liberal: None,
                folded,
            });
        }
        let liberal = liberal_segments(&path);
        if liberal.split('/').any(|s| s == "." || s == "..") {
            return Err(AmbiguousPath);
        }
        let liberal = resolve_segments(&without_trailing_dots(&liberal));
        let liberal = (liberal != path).then_some(liberal);
        Ok(PathReading {
            path,
            liberal,
            folded,
        })
    }
}

/// `path` (dot segments already resolved) with `%2F`, `%5C`, `%3B` and `%20` decoded, `\` read
/// as `/`, each segment's `;parameters` dropped and its encoded dots decoded: what the most
/// liberal of the common backends resolves.
fn liberal_segments(path: &str) -> String {
    let mut decoded = String::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(b'/' | b'\\')) | (b'\\', _) => decoded.push('/'),
            (_, Some(b'.')) => decoded.push('.'),
            (_, Some(b';')) => decoded.push(';'),
            (_, Some(b' ')) => decoded.push(' '),
            _ => {
                let len = path[i..].chars().next().map_or(1, char::len_utf8);
                decoded.push_str(&path[i..i + len]);
                i += len;
                continue;
            }
        }
        i += if bytes[i] == b'%' { 3 } else { 1 };
    }
    decoded
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

/// Each segment without its trailing dots and spaces, as Windows names files (`admin.` and
/// `admin ` are `admin`); a segment of dots alone was a dot segment already.
fn without_trailing_dots(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let trimmed = segment.trim_end_matches(['.', ' ']);
            if trimmed.is_empty() { segment } else { trimmed }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Gives `request` the path `path` (origin form, starting with `/`), its query kept: the path as
/// alb read it when that differs from what the client wrote (dot segments resolved, slashes
/// merged, unreserved characters decoded), so that a backend that does not resolve `/admin//../x`
/// itself cannot reach `/admin/` with it after alb routed it as `/x`; or a rewritten prefix. A
/// path that is no valid target leaves the request as it was.
pub(super) fn set_path<B>(request: &mut Request<B>, path: &str) {
    let target = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(path_and_query) = target.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = path
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            && (byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
        {
            out.push(byte as char);
            i += 3;
            continue;
        }
        // Not a decodable unreserved character: copied as it is, up to the next byte boundary.
        let len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + len]);
        i += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_as_a_backend_resolves_them() {
        for (raw, want) in [
            ("/static/x", "/static/x"),
            ("/%73tatic/x", "/static/x"),
            ("/%7Eu/x", "/~u/x"),
            ("/api/../static/x", "/static/x"),
            ("/./static/./x", "/static/x"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/a%2Fb", "/a%2Fb"),
            ("/%2e%2e/static/x", "/static/x"),
            ("/.well-known/x", "/.well-known/x"),
            ("//api/x", "/api/x"),
            ("/api//x/", "/api/x/"),
            ("/a/", "/a/"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn paths_a_backend_could_resolve_through_an_encoded_separator_are_refused() {
        for raw in [
            "/public/..%2fadmin",
            "/public/%2e%2e%2fadmin",
            "/public/..%2Fadmin",
            "/public/..\\admin",
            "/public/..%5cadmin",
            "/public/..;/admin",
            "/public/.;x/..;y/admin",
            "/public/%2e%2e;/admin",
            "/x/../..%2fy",
            "/public/.%2e%2fadmin",
        ] {
            assert_eq!(PathReading::of(raw).err(), Some(AmbiguousPath), "{raw}");
        }
    }

    #[test]
    fn encoded_separators_without_dot_segments_keep_alb_reading() {
        for (raw, path, liberal) in [
            ("/files/a%2Fb", "/files/a%2Fb", Some("/files/a/b")),
            ("/api;v=1/x", "/api;v=1/x", Some("/api/x")),
            ("/a\\b", "/a\\b", Some("/a/b")),
            (
                "/app/page;jsessionid=1",
                "/app/page;jsessionid=1",
                Some("/app/page"),
            ),
            ("/%41pi/x", "/Api/x", None),
            ("/plain/path", "/plain/path", None),
            ("/a%2e%2e/b", "/a../b", Some("/a/b")),
            ("/admin./x", "/admin./x", Some("/admin/x")),
            ("/admin%20/x", "/admin%20/x", Some("/admin/x")),
        ] {
            let reading = PathReading::of(raw).unwrap();
            assert_eq!(reading.path, path, "{raw}");
            assert_eq!(reading.liberal.as_deref(), liberal, "{raw}");
        }
    }

    #[test]
    fn capitals_give_a_folded_reading() {
        let reading = PathReading::of("/ADMIN/x").unwrap();
        assert_eq!(reading.folded.as_deref(), Some("/admin/x"));
        assert!(PathReading::of("/admin/x").unwrap().folded.is_none());
    }

    #[test]
    fn paths_go_on_as_read() {
        for (raw, sent) in [
            ("/admin//../x?q=1", "/x?q=1"),
            ("/a/%7Eu/./b", "/a/~u/b"),
            ("/plain?x=/../", "/plain?x=/../"),
        ] {
            let mut request = Request::get(raw).body(()).unwrap();
            if let Cow::Owned(read) = normalize_path(request.uri().path()) {
                set_path(&mut request, &read);
            }
            assert_eq!(request.uri().to_string(), sent, "{raw}");
        }
    }
}
