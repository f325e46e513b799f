//! Weighted least connections: the healthy backend with the fewest in-flight requests per unit of
//! weight. Ties go to the backend that won the fewest ties per unit of weight, which rotates equal
//! backends and spreads idle-time traffic by weight (what nginx does with weighted round robin
//! among tied peers). Only picks decided by a tie are counted for that: were every pick counted,
//! a slow backend that load kept away from would be owed the difference, and at the next quiet
//! moment every tie would go to it until the counts met (seen with two replicas at one connection
//! each: a third of the requests to the fast backend instead of half).
//!
//! Exact over pools of up to [`EXACT_LIMIT`] backends. Beyond that a full scan per request would cost
//! more than the proxying itself, so the winner is the least loaded of [`SAMPLES`] random eligible
//! backends: the "power of k choices", which keeps the load within a small margin of the optimum
//! at a cost that does not grow with the pool.

use std::cmp::Ordering;
use std::sync::Arc;

use super::{Exclude, Selector, eligible, scan_from_random};
use crate::upstream::Backend;

pub const EXACT_LIMIT: usize = 64;
pub const SAMPLES: usize = 8;

#[derive(Debug, Default)]
pub struct LeastConn;

impl LeastConn {
    pub fn new() -> LeastConn {
        LeastConn
    }
}

/// Orders `a` before `b` when it is less loaded relative to its weight; compares by cross
/// multiplication so no division or float is needed.
fn compare(a: &Backend, b: &Backend) -> Ordering {
    let (wa, wb) = (u128::from(a.weight()), u128::from(b.weight()));
    (u128::from(a.in_flight()) * wb).cmp(&(u128::from(b.in_flight()) * wa))
}

/// The tie-break: fewer tie wins per unit of weight first.
fn fewer_tie_wins(a: &Backend, b: &Backend) -> Ordering {
    let (wa, wb) = (u128::from(a.weight()), u128::from(b.weight()));
    (u128::from(a.picks()) * wb).cmp(&(u128::from(b.picks()) * wa))
}

impl Selector for LeastConn {
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
        pick_least(backends, exclude, compare)
    }
}

/// The eligible backend that `compare` orders first (ties broken by fewer tie wins): over all of
/// them in a pool of up to [`EXACT_LIMIT`], over [`SAMPLES`] random ones in a larger pool (a scan
/// if none of those is eligible). A pick that a tie decided is counted, for later ties.
pub(super) fn pick_least(
    backends: &[Arc<Backend>],
    exclude: &Exclude,
    compare: fn(&Backend, &Backend) -> Ordering,
) -> Option<usize> {
    let n = backends.len();
    let chosen = if n <= EXACT_LIMIT {
        best_of(backends, exclude, 0..n, compare)
    } else {
        let samples = (0..SAMPLES).map(|_| fastrand::usize(..n));
        best_of(backends, exclude, samples, compare)
            .or_else(|| scan_from_random(backends, exclude).map(|i| (i, false)))
    };
    let (index, tied) = chosen?;
    if tied {
        backends[index].note_pick();
    }
    Some(index)
}

fn best_of(
    backends: &[Arc<Backend>],
    exclude: &Exclude,
    candidates: impl Iterator<Item = usize>,
    compare: fn(&Backend, &Backend) -> Ordering,
) -> Option<(usize, bool)> {
    // The best so far, and whether another candidate was as little loaded.
    let mut best: Option<(usize, bool)> = None;
    for i in candidates {
        if !eligible(&backends[i], i, exclude) {
            continue;
        }
        best = match best {
            None => Some((i, false)),
            Some((b, tied)) => match compare(&backends[b], &backends[i]) {
                Ordering::Less => Some((b, tied)),
                Ordering::Greater => Some((i, false)),
                Ordering::Equal if i == b => Some((b, tied)),
                Ordering::Equal => match fewer_tie_wins(&backends[b], &backends[i]) {
                    Ordering::Greater => Some((i, true)),
                    _ => Some((b, true)),
                },
            },
        };
    }
    best
}
