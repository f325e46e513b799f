//! Parsers for single config values (counts, durations, sizes) that record a problem naming the key
//! and fall back to the default, so validation can go on and report everything at once.

use std::time::Duration;

use super::Problem;
use super::raw::RawSize;

/// Longest duration any setting takes: far beyond any sensible timeout or interval, and far from
/// the arithmetic limits of `Duration` (jitter multiplies intervals).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// Runs `validate` on a section found under `prefix` (`pools.api.`, `route[2].`): the
    /// section's own checks name their keys from its top, this puts the path in front.
    pub(super) fn scoped<T>(
        &mut self,
        prefix: &str,
        validate: impl FnOnce(&mut Problems) -> T,
    ) -> T {
        let mut inner = Problems::default();
        let value = validate(&mut inner);
        for problem in inner.0 {
            self.add(format!("{prefix}{}", problem.key), problem.reason);
        }
        value
    }

    pub(super) fn into_result(self) -> Result<(), Vec<Problem>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// A whole number in `min..=max`.
pub(super) fn count(
    key: &str,
    value: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
    problems: &mut Problems,
) -> u32 {
    match value {
        None => default,
        Some(v) if (i64::from(min)..=i64::from(max)).contains(&v) => v as u32,
        Some(v) => {
            problems.add(key, format!("must be between {min} and {max}, got {v}"));
            default
        }
    }
}

pub(super) fn duration(
    key: &str,
    value: Option<String>,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let Some(text) = value else {
        return default;
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d <= MAX_DURATION => d,
        Ok(_) => {
            problems.add(
                key,
                format!("{text:?} is longer than the maximum of 7 days"),
            );
            default
        }
        Err(e) => {
            problems.add(
                key,
                format!("{text:?} is not a duration ({e}); write it like \"5s\" or \"500ms\""),
            );
            default
        }
    }
}

pub(super) fn positive_duration(
    key: &str,
    value: Option<String>,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let given = value.is_some();
    let parsed = duration(key, value, default, problems);
    if given && parsed.is_zero() {
        problems.add(key, "must be greater than zero");
        return default;
    }
    parsed
}

/// A byte size: a number of bytes, or a number with a unit (B, KB, KiB, MB, MiB, GB, GiB).
pub(super) fn size(
    key: &str,
    value: Option<RawSize>,
    default: u64,
    problems: &mut Problems,
) -> u64 {
    let parsed = match value {
        None => return default,
        Some(RawSize::Bytes(n)) => u64::try_from(n).map_err(|_| format!("{n} is negative")),
        Some(RawSize::Text(text)) => parse_size(&text),
    };
    parsed.unwrap_or_else(|reason| {
        problems.add(key, reason);
        default
    })
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size; write it like 65536, \"64KiB\" or \"10MB\"")
    })?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}, use B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A path a route matches or writes (`path`, `path_prefix`, `rewrite_prefix`): origin form,
/// starting with `/`, without a query; otherwise a problem under `key`.
pub(super) fn route_path(key: &str, path: &str, problems: &mut Problems) {
    if !path.starts_with('/')
        || path.parse::<http::uri::PathAndQuery>().is_err()
        || path.contains('?')
    {
        problems.add(
            key,
            format!("{path:?} must be a path starting with '/', without a query"),
        );
    }
}
