//! Choosing a backend for a request. Each algorithm is one [`Selector`] in its own file.
//!
//! Selection is a plain synchronous function over a slice of backends: no I/O, no await, no lock.
//! Shared state is limited to per-backend atomics and, for round robin, one counter.

mod least_conn;
mod p2c;
mod random;
mod round_robin;
mod weights;

use std::sync::Arc;

pub use least_conn::LeastConn;
pub use p2c::PowerOfTwoChoices;
pub use random::WeightedRandom;
pub use round_robin::RoundRobin;

use crate::config::Algorithm;
use crate::upstream::Backend;

/// Picks one backend among the healthy ones not yet tried for this request.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// Returns the index into `backends` of the chosen backend, or `None` when every backend is
    /// unhealthy or excluded.
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize>;
}

/// Backends a request must not go to again (the ones its earlier attempts failed on).
#[derive(Debug, Default, Clone)]
pub struct Exclude {
    tried: Vec<usize>,
}

impl Exclude {
    pub fn add(&mut self, index: usize) {
        self.tried.push(index);
    }

    pub fn contains(&self, index: usize) -> bool {
        self.tried.contains(&index)
    }

    pub fn is_empty(&self) -> bool {
        self.tried.is_empty()
    }
}

/// Whether `backend` at `index` may take this request.
#[inline]
fn eligible(backend: &Backend, index: usize, exclude: &Exclude) -> bool {
    backend.is_healthy() && (exclude.is_empty() || !exclude.contains(index))
}

/// The first eligible backend scanning from a random start: the fallback when sampling found none.
fn scan_from_random(backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let start = fastrand::usize(..n);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| eligible(&backends[i], i, exclude))
}

/// Builds the selector for `algorithm` over this exact list of backends (weights are read once).
pub fn selector_for(algorithm: Algorithm, backends: &[Arc<Backend>]) -> Box<dyn Selector> {
    match algorithm {
        Algorithm::LeastConn => Box::new(LeastConn::new()),
        Algorithm::RoundRobin => Box::new(RoundRobin::new(backends)),
        Algorithm::Random => Box::new(WeightedRandom::new(backends)),
        Algorithm::P2c => Box::new(PowerOfTwoChoices::new(backends)),
    }
}
