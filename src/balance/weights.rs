//! Cumulative weights, so that a position in `0..total` maps to a backend whatever the number of
//! backends: through a direct table (one array read) when the weights, divided by their common
//! divisor, add up to at most [`DIRECT_LIMIT`], by binary search over the cumulative sums otherwise.
//! When all weights are equal a position is its backend's index, with no table to read: in a large
//! pool that table would be one more likely cache miss per pick.

use std::sync::Arc;

use crate::upstream::Backend;

/// Largest (reduced) total weight served by a direct table: 4 MiB of `u32` at most.
const DIRECT_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct WeightTable {
    /// `ends[i]` is the sum of the (reduced) weights of backends `0..=i`.
    ends: Vec<u64>,
    /// `direct[p]` is the backend owning position `p`, when the total is small enough and the
    /// weights are not all equal.
    direct: Vec<u32>,
    /// Every (reduced) weight is 1, so position `p` belongs to backend `p`.
    uniform: bool,
}

pub(super) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl WeightTable {
    pub fn new(backends: &[Arc<Backend>]) -> WeightTable {
        let divisor = backends
            .iter()
            .map(|b| u64::from(b.weight()))
            .fold(0, gcd)
            .max(1);
        let mut sum = 0u64;
        let ends: Vec<u64> = backends
            .iter()
            .map(|b| {
                sum += u64::from(b.weight()) / divisor;
                sum
            })
            .collect();
        let uniform = sum == ends.len() as u64;
        let direct = if sum <= DIRECT_LIMIT && !uniform {
            let mut direct = Vec::with_capacity(sum as usize);
            let mut start = 0;
            for (i, &end) in ends.iter().enumerate() {
                direct.extend(std::iter::repeat_n(i as u32, (end - start) as usize));
                start = end;
            }
            direct
        } else {
            Vec::new()
        };
        WeightTable {
            ends,
            direct,
            uniform,
        }
    }

    pub fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The backend owning `position` (taken modulo the total weight).
    pub fn index_at(&self, position: u64) -> Option<usize> {
        match self.total() {
            0 => None,
            total => Some(self.owner(position % total)),
        }
    }

    /// A backend drawn at random in proportion to its weight.
    pub fn random_index(&self) -> Option<usize> {
        match self.total() {
            0 => None,
            total => Some(self.owner(fastrand::u64(..total))),
        }
    }

    /// The backend owning position `p`, which is below the total.
    #[inline]
    fn owner(&self, p: u64) -> usize {
        if self.uniform {
            return p as usize;
        }
        if let Some(&i) = self.direct.get(p as usize) {
            return i as usize;
        }
        self.ends.partition_point(|&end| end <= p)
    }
}
