//! Power of two choices: draw two backends by weight, send to the one with fewer in-flight requests
//! per unit of weight. Nearly as good as least connections at spreading load, with constant cost
//! and no herd effect when many balancers share a pool.

use std::sync::Arc;

use super::weights::WeightTable;
use super::{Exclude, Selector, eligible, scan_from_random};
use crate::upstream::Backend;

const MAX_DRAWS: usize = 8;

#[derive(Debug)]
pub struct PowerOfTwoChoices {
    weights: WeightTable,
}

impl PowerOfTwoChoices {
    pub fn new(backends: &[Arc<Backend>]) -> PowerOfTwoChoices {
        PowerOfTwoChoices {
            weights: WeightTable::new(backends),
        }
    }

    fn draw(
        &self,
        backends: &[Arc<Backend>],
        exclude: &Exclude,
        not: Option<usize>,
    ) -> Option<usize> {
        (0..MAX_DRAWS)
            .filter_map(|_| self.weights.random_index())
            .find(|&i| i < backends.len() && Some(i) != not && eligible(&backends[i], i, exclude))
    }
}

fn lighter(backends: &[Arc<Backend>], a: usize, b: usize) -> usize {
    let (x, y) = (&backends[a], &backends[b]);
    let load_a = u128::from(x.in_flight()) * u128::from(y.weight());
    let load_b = u128::from(y.in_flight()) * u128::from(x.weight());
    if load_b < load_a { b } else { a }
}

impl Selector for PowerOfTwoChoices {
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
        let Some(first) = self.draw(backends, exclude, None) else {
            return scan_from_random(backends, exclude);
        };
        match self.draw(backends, exclude, Some(first)) {
            Some(second) => Some(lighter(backends, first, second)),
            None => Some(first),
        }
    }
}
