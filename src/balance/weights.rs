//! Cumulative weights, so that a position in `0..total` maps to a backend in O(log n) whatever the
//! number of backends.

use std::sync::Arc;

use crate::upstream::Backend;

#[derive(Debug, Clone)]
pub struct WeightTable {
    /// `ends[i]` is the sum of the weights of backends `0..=i`.
    ends: Vec<u64>,
}

impl WeightTable {
    pub fn new(backends: &[Arc<Backend>]) -> WeightTable {
        let mut sum = 0u64;
        let ends = backends
            .iter()
            .map(|b| {
                sum += u64::from(b.weight());
                sum
            })
            .collect();
        WeightTable { ends }
    }

    pub fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The backend owning `position` (taken modulo the total weight).
    pub fn index_at(&self, position: u64) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let p = position % total;
        Some(self.ends.partition_point(|&end| end <= p))
    }

    /// A backend drawn at random in proportion to its weight.
    pub fn random_index(&self) -> Option<usize> {
        match self.total() {
            0 => None,
            total => self.index_at(fastrand::u64(..total)),
        }
    }
}
