//! What the fuzz targets share: a second, deliberately naive reading of HTTP/1.1 message heads
//! (RFC 9112 §2.2 and §5), written from the RFC and not from alb's parsers, against which those
//! parsers' results are checked.
//!
//! It only ever reads heads that alb's parser has already accepted, so it need not reject
//! anything itself: it tells where each head starts and ends and which field lines it holds.

/// One field line, as a recipient that follows the RFC literally reads it.
#[derive(Debug, Clone)]
pub struct Field {
    /// The name as sent (case kept), without the colon.
    pub name: Vec<u8>,
    /// The value without leading and trailing whitespace; continuation lines (obs-fold) are
    /// joined to it with one space, as RFC 9112 §5.2 lets a recipient do.
    pub value: Vec<u8>,
    /// Whitespace between the name and the colon (RFC 9112 §5.1: a server MUST reject that).
    pub space_before_colon: bool,
}

/// One message head: its start line and its fields.
#[derive(Debug, Clone)]
pub struct Head {
    pub start_line: Vec<u8>,
    pub fields: Vec<Field>,
}

impl Head {
    /// The fields named `name`, compared without regard to case (RFC 9110 §5.1).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
        self.fields
            .iter()
            .filter(move |f| trim(&f.name).eq_ignore_ascii_case(name.as_bytes()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.named(name).next().is_some()
    }

    /// Every element of every `name` field, in order: the field lines combined into one list
    /// (RFC 9110 §5.3), empty elements dropped (RFC 9110 §5.6.1).
    pub fn elements<'a>(&'a self, name: &'a str) -> Vec<&'a [u8]> {
        self.named(name)
            .flat_map(|f| list_elements(&f.value))
            .collect()
    }

    /// Whether the Connection field carries `option` (RFC 9110 §7.6.1).
    pub fn connection_option(&self, option: &str) -> bool {
        self.elements("connection")
            .iter()
            .any(|o| o.eq_ignore_ascii_case(option.as_bytes()))
    }

    /// The name of the last transfer coding listed, parameters left out (RFC 9112 §6.1, §7).
    pub fn final_coding(&self) -> Option<Vec<u8>> {
        let elements = self.elements("transfer-encoding");
        let last = elements.last()?;
        let name = last.split(|&b| b == b';').next().unwrap_or(b"");
        Some(trim(name).to_ascii_lowercase())
    }

    /// Whether a request line's version (its last word) is `HTTP/1.0`.
    pub fn request_is_http10(&self) -> bool {
        self.words().last() == Some(&&b"HTTP/1.0"[..])
    }

    /// Whether a status line's version (its first word) is `HTTP/1.0`.
    pub fn response_is_http10(&self) -> bool {
        self.words().first() == Some(&&b"HTTP/1.0"[..])
    }

    fn words(&self) -> Vec<&[u8]> {
        self.start_line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// The three digits after the version in a status line.
    pub fn status_code(&self) -> Option<u16> {
        let word = self
            .start_line
            .split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .nth(1)?;
        if word.len() != 3 || !word.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(word).ok()?.parse().ok()
    }
}

/// Splits `consumed`, the bytes a parser took for one or more heads, into those heads.
///
/// Lines end in LF, with any CR before it dropped (RFC 9112 §2.2 lets a recipient take a bare LF
/// as a line end). Empty lines before a start line are skipped (§2.2 again). A head ends at its
/// first empty line, and `consumed` must end exactly there: anything else is an error saying what
/// the parser took that was not a head.
pub fn split_heads(consumed: &[u8]) -> Result<Vec<Head>, String> {
    if !(consumed.ends_with(b"\n\n") || consumed.ends_with(b"\n\r\n")) {
        return Err("the bytes taken do not end with an empty line".into());
    }
    let mut lines: Vec<&[u8]> = consumed.split(|&b| b == b'\n').collect();
    // After the final LF: nothing.
    lines.pop();
    let mut heads = Vec::new();
    let mut current: Option<Head> = None;
    // Empty lines since the last head ended: fine before another head, not after the last one.
    let mut empty_after_last = 0;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match current.as_mut() {
            None if line.is_empty() => empty_after_last += 1,
            None => {
                empty_after_last = 0;
                current = Some(Head {
                    start_line: line.to_vec(),
                    fields: Vec::new(),
                });
            }
            Some(_) if line.is_empty() => heads.extend(current.take()),
            Some(head) if line.starts_with(b" ") || line.starts_with(b"\t") => {
                // obs-fold: part of the previous field's value (or, before any field, a line a
                // recipient may consume without processing it).
                if let Some(last) = head.fields.last_mut() {
                    last.value.push(b' ');
                    last.value.extend_from_slice(trim(line));
                    let value = trim(&last.value).to_vec();
                    last.value = value;
                }
            }
            Some(head) => {
                // A line without a colon is no field line; such a head tells nothing here.
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    let name = &line[..colon];
                    head.fields.push(Field {
                        name: name.to_vec(),
                        value: trim(&line[colon + 1..]).to_vec(),
                        space_before_colon: name.ends_with(b" ") || name.ends_with(b"\t"),
                    });
                }
            }
        }
    }
    if current.is_some() {
        return Err("the bytes taken end inside a head".into());
    }
    if heads.is_empty() {
        return Err("the bytes taken hold no head".into());
    }
    if empty_after_last > 0 {
        return Err("the bytes taken go on past the empty line ending the last head".into());
    }
    Ok(heads)
}

/// The elements of a comma-separated list value, trimmed, empty ones dropped.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|e| !e.is_empty())
}

/// `bytes` without leading and trailing spaces and tabs (OWS).
pub fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Whether `digits` (a Content-Length element) is a decimal number equal to `n`: leading zeros
/// allowed, no bound on the number of digits, so that the comparison does not depend on how the
/// parser under test limited them.
pub fn decimal_equals(digits: &[u8], n: u64) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let significant = match digits.iter().position(|&d| d != b'0') {
        Some(i) => &digits[i..],
        None => b"0",
    };
    significant == n.to_string().as_bytes()
}

/// Whether `digits` is a valid Content-Length element (RFC 9110 §8.6: `1*DIGIT`).
pub fn is_decimal(digits: &[u8]) -> bool {
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_split_at_their_empty_lines() {
        let heads = split_heads(b"\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\nA: 1\n b\n\n")
            .unwrap();
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[1].status_code(), Some(200));
        assert_eq!(heads[1].fields[0].value, b"1 b");
        assert!(split_heads(b"GET / HTTP/1.1\r\n\r\n\r\n").is_err());
        assert!(split_heads(b"GET / HTTP/1.1\r\nA: b\r\n").is_err());
        assert!(decimal_equals(b"007", 7) && !decimal_equals(b"7 ", 7));
        assert!(decimal_equals(b"000", 0));
    }
}
