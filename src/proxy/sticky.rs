//! Sticky sessions by cookie: the answer to a client's first request names, in a cookie, the
//! backend that served it, and later requests carrying that cookie go back there.
//!
//! The cookie's value is an opaque tag, HMAC-SHA256 of the backend's URL under a secret, cut to
//! 128 bits and written in hex: it says nothing of the backend's address, and without the secret
//! no value for a backend can be made up; one from another deployment (another secret) or a
//! changed one names nothing. Replicas given the same secret (`[pools.NAME.sticky] secret`) make
//! the same values, so a client keeps its backend whichever replica it reaches; without one each
//! process draws its own ([`process_secret`]) and a restart re-places every client once.
//!
//! 128 bits because the tag only has to be unguessable, not collision-proof against someone
//! holding the key: 2^-128 per try to hit a backend's value. Hex rather than base64 because its
//! 32 characters are cookie-safe everywhere and need no encoder.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::{digest, hmac, rand};
use http::{HeaderMap, HeaderValue, header::COOKIE};

/// Bytes of the HMAC kept in the cookie.
const TAG_BYTES: usize = 16;

/// Put before every MAC input and hashed secret, so that a secret also used for something else
/// never yields values that mean something there too.
const COOKIE_CONTEXT: &[u8] = b"alb sticky-session cookie v1\0";
const SECRET_CONTEXT: &[u8] = b"alb sticky-session secret v1\0";

#[derive(Debug, thiserror::Error)]
pub enum StickyError {
    #[error(
        "cookie name {0:?} is not a token: use letters, digits and !#$%&'*+-.^_`|~ (RFC 6265 §4.1.1)"
    )]
    InvalidName(String),
}

/// The sticky-session cookie of one pool: which value names which backend, and the
/// `Set-Cookie` field that hands each value out.
#[derive(Debug)]
pub struct StickyCookies {
    name: Box<str>,
    /// A cookie value to the index of its backend in the pool.
    backends: HashMap<Box<[u8]>, usize>,
    /// `Set-Cookie` per backend, for a client that came over plain TCP and over TLS.
    set_plain: Vec<HeaderValue>,
    set_secure: Vec<HeaderValue>,
}

impl StickyCookies {
    /// The cookie `name` naming each of the backends at `urls` (in pool order, so the indices
    /// are the pool's), signed with `secret`. With a `ttl` the cookie lasts that long (rounded
    /// up to whole seconds), otherwise until the browser closes.
    pub fn new<U: AsRef<str>>(
        name: &str,
        ttl: Option<Duration>,
        secret: &[u8; 32],
        urls: &[U],
    ) -> Result<StickyCookies, StickyError> {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(StickyError::InvalidName(name.to_owned()));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut attributes = String::from("; Path=/; HttpOnly; SameSite=Lax");
        if let Some(ttl) = ttl {
            let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            attributes.push_str(&format!("; Max-Age={}", seconds.max(1)));
        }
        let mut backends = HashMap::with_capacity(urls.len());
        let mut set_plain = Vec::with_capacity(urls.len());
        let mut set_secure = Vec::with_capacity(urls.len());
        for (index, url) in urls.iter().enumerate() {
            let value = cookie_value(&key, url.as_ref());
            // The same URL twice in a pool: the first one answers for both.
            backends
                .entry(value.clone().into_bytes().into_boxed_slice())
                .or_insert(index);
            let field = format!("{name}={value}{attributes}");
            let invalid = |_| StickyError::InvalidName(name.to_owned());
            set_plain.push(HeaderValue::from_str(&field).map_err(invalid)?);
            set_secure.push(HeaderValue::from_str(&format!("{field}; Secure")).map_err(invalid)?);
        }
        Ok(StickyCookies {
            name: name.into(),
            backends,
            set_plain,
            set_secure,
        })
    }

    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    /// The index of the backend the request's cookie names, if it names one of this pool's.
    ///
    /// Every `Cookie` field counts (HTTP/2 clients split them), each a `;`-separated list of
    /// `name=value` pairs (RFC 6265 §5.4) with whitespace tolerated around both; pairs without `=`
    /// are skipped, the name must match exactly (it is case-sensitive), and a value in double
    /// quotes, which the cookie grammar allows, counts without them. When the name comes more than
    /// once (a browser sends same-named cookies of several paths, longest path first), the first
    /// value that names a backend wins, so that a stray cookie of the same name set by the
    /// application on a narrower path does not defeat stickiness; each value is checked against
    /// the signed ones all the same.
    ///
    /// The lookup is a hash map's, not constant-time: timing could at most tell an attacker how
    /// close a guess is to a valid value, and the valid values are no secret from clients, who get
    /// them in `Set-Cookie`. What the secret protects is making a value from an address.
    pub fn backend_for(&self, headers: &HeaderMap) -> Option<usize> {
        cookie_values(headers, self.name.as_bytes())
            .find_map(|value| self.backends.get(value).copied())
    }

    /// The `Set-Cookie` value sending the client back to backend `index`, with `Secure` when it
    /// came over TLS (a cookie set `Secure` over plain HTTP would be dropped by the browser).
    /// `None` for an index outside the pool.
    pub fn set_cookie(&self, index: usize, secure: bool) -> Option<HeaderValue> {
        let fields = if secure {
            &self.set_secure
        } else {
            &self.set_plain
        };
        fields.get(index).cloned()
    }
}

/// The cookie value of the backend at `url`: its MAC, cut to [`TAG_BYTES`], in lowercase hex.
fn cookie_value(key: &hmac::Key, url: &str) -> String {
    let mut context = hmac::Context::with_key(key);
    context.update(COOKIE_CONTEXT);
    context.update(url.as_bytes());
    let tag = context.sign();
    let mut value = String::with_capacity(2 * TAG_BYTES);
    for byte in &tag.as_ref()[..TAG_BYTES] {
        value.push(char::from(HEX[usize::from(byte >> 4)]));
        value.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    value
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The values of every cookie called `name` in the request, in order, read as
/// [`StickyCookies::backend_for`] says.
pub(super) fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a [u8],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|field| field.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let (found, value) = split_pair(pair)?;
            (found == name).then(|| unquote(value))
        })
}

/// `name=value` with the whitespace around each removed; `None` without an `=`.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let equals = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..equals].trim_ascii(), pair[equals + 1..].trim_ascii()))
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// A `tchar` of RFC 9110 §5.6.2, which is what RFC 6265 allows in a cookie name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The secret of this process, drawn once from AWS-LC's generator (the operating system's
/// entropy behind a DRBG, the one rustls' keys come from): for pools that configure no secret.
/// `fastrand` would not do: its state is guessable from its outputs, and cookie values are
/// outputs of this key.
pub fn process_secret() -> [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    *SECRET.get_or_init(|| {
        // AWS-LC aborts the process when it cannot get entropy rather than fail this call
        // (openssl/rand.h), so the error is unreachable; a fixed key in its place would let anyone
        // forge values, which is worse than stopping.
        rand::generate::<[u8; 32]>(&rand::SystemRandom::new())
            .expect("AWS-LC aborts instead of failing to draw random bytes")
            .expose()
    })
}

/// The 32-byte key made from a configured secret of any length: its SHA-256. The key is only as
/// strong as the secret is unguessable: configure at least 32 random characters.
pub fn derive_secret(configured: &str) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(SECRET_CONTEXT);
    context.update(configured.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const URLS: [&str; 3] = [
        "http://10.1.2.3:8080",
        "http://10.1.2.4:8080",
        "https://api-7.internal:9443",
    ];

    fn cookies(secret: &[u8; 32]) -> StickyCookies {
        StickyCookies::new("alb_srv", Some(Duration::from_secs(3600)), secret, &URLS).unwrap()
    }

    fn with_cookies(fields: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append(COOKIE, HeaderValue::from_str(field).unwrap());
        }
        headers
    }

    /// The value of backend `index`, as its `Set-Cookie` hands it out.
    fn value(cookies: &StickyCookies, index: usize) -> String {
        let field = cookies.set_cookie(index, false).unwrap();
        let field = field.to_str().unwrap();
        let pair = field.split(';').next().unwrap();
        pair.strip_prefix("alb_srv=").unwrap().to_owned()
    }

    #[test]
    fn each_backend_is_recognised_by_its_own_value() {
        let sticky = cookies(&process_secret());
        for i in 0..URLS.len() {
            let v = value(&sticky, i);
            assert_eq!(v.len(), 32);
            assert!(v.bytes().all(|b| b.is_ascii_hexdigit()));
            let headers = with_cookies(&[&format!("alb_srv={v}")]);
            assert_eq!(sticky.backend_for(&headers), Some(i));
        }
        assert_eq!(sticky.backend_for(&HeaderMap::new()), None);
    }

    #[test]
    fn replicas_with_one_secret_agree_and_other_secrets_do_not() {
        let secret = derive_secret("correct horse battery staple, at length");
        let (a, b) = (cookies(&secret), cookies(&secret));
        let other = cookies(&derive_secret("another deployment"));
        let random = cookies(&process_secret());
        for i in 0..URLS.len() {
            let headers = with_cookies(&[&format!("alb_srv={}", value(&a, i))]);
            assert_eq!(b.backend_for(&headers), Some(i));
            assert_eq!(other.backend_for(&headers), None);
            assert_eq!(random.backend_for(&headers), None);
        }
        assert_eq!(process_secret(), process_secret(), "one per process");
        assert_ne!(derive_secret("a"), derive_secret("b"));
    }

    #[test]
    fn a_forged_or_altered_value_names_nothing() {
        let sticky = cookies(&process_secret());
        let genuine = value(&sticky, 1);
        let mut flipped = genuine.clone().into_bytes();
        flipped[31] = if flipped[31] == b'0' { b'1' } else { b'0' };
        let forgeries = [
            String::from_utf8(flipped).unwrap(),
            genuine[..31].to_owned(),
            format!("{genuine}0"),
            genuine.to_uppercase(),
            "10.1.2.4:8080".to_owned(),
            "http://10.1.2.4:8080".to_owned(),
            "1".to_owned(),
            String::new(),
        ];
        for forged in forgeries {
            let headers = with_cookies(&[&format!("alb_srv={forged}")]);
            assert_eq!(sticky.backend_for(&headers), None, "{forged:?}");
        }
    }

    #[test]
    fn the_value_says_nothing_of_the_address() {
        let sticky = cookies(&process_secret());
        for (i, url) in URLS.iter().enumerate() {
            let field = sticky.set_cookie(i, true).unwrap();
            let field = field.to_str().unwrap();
            for part in ["10.1.2", "8080", "9443", "api-7", "internal", url] {
                assert!(!field.contains(part), "{field} shows {part}");
            }
        }
    }

    #[test]
    fn the_cookie_is_found_among_others_however_it_is_spaced() {
        let sticky = cookies(&process_secret());
        let v = value(&sticky, 2);
        let cases = [
            format!("a=1; alb_srv={v}; b=2"),
            format!("a=1;alb_srv={v}"),
            format!("  alb_srv = {v} ;"),
            format!("\talb_srv=\t{v}"),
            format!("alb_srv=\"{v}\""),
            // Malformed pairs around it are skipped.
            format!("garbage; ; ==; alb_srv={v}; x"),
            // A stale value of the same name first (another path, an old secret).
            format!("alb_srv=0123; alb_srv={v}"),
        ];
        for case in &cases {
            assert_eq!(
                sticky.backend_for(&with_cookies(&[case])),
                Some(2),
                "{case}"
            );
        }
        // Across several Cookie fields.
        let split = with_cookies(&["a=1; b=2", &format!("alb_srv={v}"), "c=3"]);
        assert_eq!(sticky.backend_for(&split), Some(2));
        // The first of two valid ones wins.
        let both = format!("alb_srv={}; alb_srv={v}", value(&sticky, 0));
        assert_eq!(sticky.backend_for(&with_cookies(&[&both])), Some(0));
    }

    #[test]
    fn only_the_exact_name_counts() {
        let sticky = cookies(&process_secret());
        let v = value(&sticky, 0);
        for other in [
            format!("xalb_srv={v}"),
            format!("alb_srvx={v}"),
            format!("ALB_SRV={v}"),
            format!("alb-srv={v}"),
            format!("alb_srv{v}"),
            format!("other=alb_srv={v}"),
            format!("alb_srv=\"{v}"),
        ] {
            assert_eq!(
                sticky.backend_for(&with_cookies(&[&other])),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn set_cookie_carries_the_attributes() {
        let sticky = cookies(&process_secret());
        let v = value(&sticky, 0);
        assert_eq!(
            sticky.set_cookie(0, false).unwrap(),
            format!("alb_srv={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600").as_str()
        );
        assert_eq!(
            sticky.set_cookie(0, true).unwrap(),
            format!("alb_srv={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure").as_str()
        );
        assert_eq!(sticky.set_cookie(3, false), None);
        let session = StickyCookies::new("s", None, &process_secret(), &URLS).unwrap();
        let field = session.set_cookie(1, false).unwrap();
        assert!(!field.to_str().unwrap().contains("Max-Age"), "{field:?}");
        let short = Some(Duration::from_millis(1500));
        let rounded = StickyCookies::new("s", short, &process_secret(), &URLS).unwrap();
        let field = rounded.set_cookie(0, false).unwrap();
        assert!(
            field.to_str().unwrap().ends_with("; Max-Age=2"),
            "{field:?}"
        );
    }

    #[test]
    fn a_name_that_is_not_a_token_is_refused() {
        for bad in ["", "a b", "a;b", "a=b", "sess\u{e9}", "a\"b", "a,b"] {
            assert!(
                StickyCookies::new(bad, None, &process_secret(), &URLS).is_err(),
                "{bad:?}"
            );
        }
        let ok = StickyCookies::new("alb.srv-2", None, &process_secret(), &URLS).unwrap();
        assert_eq!(ok.cookie_name(), "alb.srv-2");
    }

    #[test]
    fn the_same_url_twice_answers_with_the_first_index() {
        let urls = ["http://a:1", "http://b:1", "http://a:1"];
        let sticky = StickyCookies::new("s", None, &process_secret(), &urls).unwrap();
        let field = sticky.set_cookie(2, false).unwrap();
        let pair = field
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(sticky.backend_for(&with_cookies(&[&pair])), Some(0));
    }
}
