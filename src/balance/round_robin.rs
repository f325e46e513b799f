//! Smooth weighted round robin without a lock.
//!
//! A shared counter advances by one per request and is mapped to a position on the cumulative-weight
//! line by a stride coprime with the total weight and close to its golden-ratio fraction. Because the
//! stride is coprime, every `total` consecutive requests visit each position exactly once, so each
//! backend gets exactly its weight's share per cycle; because the stride is near the golden ratio,
//! consecutive requests land far apart, so a heavy backend's turns are interleaved with the others
//! instead of coming in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::weights::{WeightTable, gcd};
use super::{Exclude, Selector, eligible, scan_from_random};
use crate::upstream::Backend;

/// Unhealthy picks skipped before falling back to a scan.
const MAX_SKIPS: usize = 8;

#[derive(Debug)]
pub struct RoundRobin {
    weights: WeightTable,
    stride: u64,
    counter: AtomicU64,
}

impl RoundRobin {
    pub fn new(backends: &[Arc<Backend>]) -> RoundRobin {
        let weights = WeightTable::new(backends);
        let stride = golden_stride(weights.total());
        RoundRobin {
            weights,
            stride,
            counter: AtomicU64::new(0),
        }
    }
}

/// The number coprime with `total` nearest to `total / φ`.
fn golden_stride(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    let target = (total as f64 * 0.618_033_988_75).round() as u64;
    (0..total)
        .flat_map(|d| [target.saturating_sub(d), target + d])
        .find(|&s| s > 0 && s < total && gcd(s, total) == 1)
        .unwrap_or(1)
}

impl Selector for RoundRobin {
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
        for _ in 0..MAX_SKIPS {
            // Relaxed: the counter only needs to hand out distinct values, not order other memory.
            let turn = self.counter.fetch_add(1, Ordering::Relaxed);
            let i = self.weights.index_at(turn.wrapping_mul(self.stride))?;
            if i < backends.len() && eligible(&backends[i], i, exclude) {
                return Some(i);
            }
        }
        scan_from_random(backends, exclude)
    }
}
