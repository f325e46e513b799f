//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` field read
//! strictly and written. Imports nothing from the rest of alb, so the proxy, the exporter and
//! the tests share one reading of the field.
//!
//! Strict means: version `00` in exactly the 55-byte form, lowercase hex only, neither id all
//! zeros. A field that fails any of these is treated as absent (the spec's "restart the
//! trace"), never repaired: a repaired id would join the request to a trace nobody started.
//! Higher versions are not read either: alb only knows how version 00 lays out its fields, and
//! the spec lets a reader that does not understand a version restart the trace.

/// A trace's 16-byte id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span's 8-byte id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// The `sampled` bit of trace-flags.
pub const SAMPLED: u8 = 0x01;

/// Length of a version-00 `traceparent`: `00-` 32 hex `-` 16 hex `-` 2 hex.
pub const TRACEPARENT_LEN: usize = 55;

/// A `traceparent` as read from a request or to be written to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The span of the caller: the parent of the span that reads this field.
    pub parent_id: SpanId,
    /// trace-flags as received; only bit 0 (sampled) has a meaning in version 00, the others
    /// are passed on untouched so that a later version's flags survive a hop through alb.
    pub flags: u8,
}

impl TraceId {
    /// A random, non-zero trace id. Not cryptographic: trace ids need to be unique, not secret
    /// (the spec asks for randomness so that they spread evenly, which is what ratio sampling
    /// reads them for).
    pub fn random() -> TraceId {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }

    /// Whether a trace falls within `ratio` of all traces, judged from its id alone (the low 8
    /// bytes, the part the spec asks to be random), so that every hop sampling by ratio on the
    /// same id decides the same way.
    pub fn within_ratio(&self, ratio: f64) -> bool {
        if ratio >= 1.0 {
            return true;
        }
        if ratio <= 0.0 {
            return false;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.0[8..]);
        // Compared on 63 bits so that `ratio * 2^63` stays exact enough and within u64.
        let draw = u64::from_be_bytes(low) >> 1;
        (draw as f64) < ratio * (1u64 << 63) as f64
    }
}

impl SpanId {
    /// A random, non-zero span id.
    pub fn random() -> SpanId {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return SpanId(id);
            }
        }
    }
}

impl TraceParent {
    /// Reads a `traceparent` value. `None` for anything but a valid version-00 field.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() != TRACEPARENT_LEN
            || &value[..3] != b"00-"
            || value[35] != b'-'
            || value[52] != b'-'
        {
            return None;
        }
        let mut trace_id = [0u8; 16];
        hex_into(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        hex_into(&value[36..52], &mut parent_id)?;
        let mut flags = [0u8; 1];
        hex_into(&value[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags: flags[0],
        })
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The field's value, version 00, lowercase hex.
    pub fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[..3].copy_from_slice(b"00-");
        hex_from(&self.trace_id.0, &mut out[3..35]);
        out[35] = b'-';
        hex_from(&self.parent_id.0, &mut out[36..52]);
        out[52] = b'-';
        hex_from(&[self.flags], &mut out[53..55]);
        out
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn hex_from(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Reads lowercase hex into `out`; `None` at the first byte that is not `0-9a-f`.
fn hex_into(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (pair, byte) in hex.chunks_exact(2).zip(out.iter_mut()) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_specs_example_and_writes_it_back_byte_for_byte() {
        let parsed = TraceParent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(parsed.trace_id.0[0], 0x4b);
        assert_eq!(parsed.parent_id.0[7], 0xb7);
        assert!(parsed.sampled());
        assert_eq!(&parsed.encode()[..], VALID.as_bytes());
    }

    #[test]
    fn keeps_flags_other_than_sampled() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02";
        let parsed = TraceParent::parse(v.as_bytes()).expect("valid");
        assert!(!parsed.sampled());
        assert_eq!(parsed.flags, 0x02);
        assert_eq!(&parsed.encode()[..], v.as_bytes());
    }

    #[test]
    fn refuses_every_malformed_field() {
        let bad = [
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // other versions, and the forbidden one
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with anything after the flags
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // wrong lengths and separators
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            // not hex
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn random_ids_are_never_zero_and_differ() {
        let (a, b) = (TraceId::random(), TraceId::random());
        assert_ne!(a, b);
        assert_ne!(a.0, [0; 16]);
        assert_ne!(SpanId::random().0, [0; 8]);
    }

    #[test]
    fn ratio_sampling_takes_about_the_ratio_and_the_edges_exactly() {
        let ids: Vec<TraceId> = (0..20_000).map(|_| TraceId::random()).collect();
        assert!(ids.iter().all(|id| id.within_ratio(1.0)));
        assert!(ids.iter().all(|id| !id.within_ratio(0.0)));
        let taken = ids.iter().filter(|id| id.within_ratio(0.25)).count();
        assert!((4_400..5_600).contains(&taken), "{taken} of 20000 at 0.25");
        let max = TraceId([0xff; 16]);
        assert!(!max.within_ratio(0.999_999));
    }
}
