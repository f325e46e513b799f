//! Weighted random: each request draws a backend with probability proportional to its weight.
//! Stateless, so it never contends on anything, at the price of a lumpier short-term spread than
//! round robin.

use std::sync::Arc;

use super::weights::WeightTable;
use super::{Exclude, Selector, eligible, scan_from_random};
use crate::upstream::Backend;

const MAX_DRAWS: usize = 8;

#[derive(Debug)]
pub struct WeightedRandom {
    weights: WeightTable,
}

impl WeightedRandom {
    pub fn new(backends: &[Arc<Backend>]) -> WeightedRandom {
        WeightedRandom {
            weights: WeightTable::new(backends),
        }
    }
}

impl Selector for WeightedRandom {
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
        for _ in 0..MAX_DRAWS {
            let i = self.weights.random_index()?;
            if i < backends.len() && eligible(&backends[i], i, exclude) {
                return Some(i);
            }
        }
        scan_from_random(backends, exclude)
    }
}
