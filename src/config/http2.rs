//! `[http2]`: HTTP/2 from clients. Offered by ALPN on the TLS listener unless turned off, and by
//! prior knowledge (h2c) on the plain listener only when asked for: a cleartext listener behind
//! which every client speaks HTTP/1.1 gains nothing from it, and an h2c preface reaching an
//! HTTP/1.1-only port is then refused as the malformed request it is.

use super::raw::RawHttp2;
use super::values::{Problems, count, size};

/// How alb speaks HTTP/2 to its clients. Every limit here bounds what one connection may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Config {
    /// ALPN `h2` on the TLS listener.
    pub tls: bool,
    /// h2c by prior knowledge on the plain listener.
    pub cleartext: bool,
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Request body bytes a stream may have in flight before alb has read them.
    pub stream_window: u32,
    /// Request body bytes a connection may have in flight, over all its streams: the bound on
    /// what a client can make alb buffer.
    pub connection_window: u32,
    /// Streams a client may cancel per second before the connection is closed with
    /// ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487: each cancelled stream costs alb a
    /// request's work and the client nothing).
    pub max_resets_per_second: u32,
}

impl Default for Http2Config {
    fn default() -> Http2Config {
        Http2Config {
            tls: true,
            cleartext: false,
            max_concurrent_streams: 128,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            max_resets_per_second: 200,
        }
    }
}

/// HTTP/2's own bounds on a flow-control window (RFC 9113 §6.9.1).
const MIN_WINDOW: u64 = 65_535;
const MAX_WINDOW: u64 = (1 << 31) - 1;

pub(super) fn http2(raw: RawHttp2, problems: &mut Problems) -> Http2Config {
    let d = Http2Config::default();
    let mut window = |key: &str, value, default: u32| {
        let key = format!("http2.{key}");
        let bytes = size(&key, value, u64::from(default), problems);
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&bytes) {
            problems.add(
                key,
                format!("must be between {MIN_WINDOW} and {MAX_WINDOW} bytes, got {bytes}"),
            );
            return default;
        }
        u32::try_from(bytes).unwrap_or(default)
    };
    let stream_window = window("stream_window", raw.stream_window, d.stream_window);
    let connection_window = window(
        "connection_window",
        raw.connection_window,
        d.connection_window,
    );
    if connection_window < stream_window {
        problems.add(
            "http2.connection_window",
            format!(
                "{connection_window} is smaller than http2.stream_window ({stream_window}): \
                 one stream could never use its window"
            ),
        );
    }
    Http2Config {
        tls: raw.tls.unwrap_or(d.tls),
        cleartext: raw.cleartext.unwrap_or(d.cleartext),
        max_concurrent_streams: count(
            "http2.max_concurrent_streams",
            raw.max_concurrent_streams,
            d.max_concurrent_streams,
            1,
            10_000,
            problems,
        ),
        stream_window,
        connection_window,
        max_resets_per_second: count(
            "http2.max_resets_per_second",
            raw.max_resets_per_second,
            d.max_resets_per_second,
            1,
            1_000_000,
            problems,
        ),
    }
}
