//! Least time: the backend with the lowest expected wait, in-flight requests (plus this one) times
//! its recent response latency, per unit of weight. Where least connections only sees how busy a
//! backend is, this also sees how fast it works through its queue, so a slow backend gets fewer
//! requests even when its connections are free (like nginx Plus `least_time` or Traefik
//! `leasttime`). A backend with no latency sample yet counts as instant, so new and recovered
//! backends are tried at once.
//!
//! Exact over pools up to [`EXACT_LIMIT`](super::least_conn::EXACT_LIMIT) backends, sampled beyond,
//! like least connections.

use std::cmp::Ordering;
use std::sync::Arc;

use super::least_conn::{EXACT_LIMIT, SAMPLES};
use super::{Exclude, Selector, eligible, scan_from_random};
use crate::upstream::Backend;

#[derive(Debug, Default)]
pub struct LeastTime;

fn cost(b: &Backend) -> u128 {
    (u128::from(b.in_flight()) + 1) * b.stats().recent_latency().as_micros()
}

/// `a` before `b` when its expected wait per unit of weight is lower; ties by picks per weight.
fn compare(a: &Backend, b: &Backend) -> Ordering {
    let (wa, wb) = (u128::from(a.weight()), u128::from(b.weight()));
    (cost(a) * wb)
        .cmp(&(cost(b) * wa))
        .then_with(|| (u128::from(a.picks()) * wb).cmp(&(u128::from(b.picks()) * wa)))
}

impl Selector for LeastTime {
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
        let n = backends.len();
        let candidates: Box<dyn Iterator<Item = usize>> = if n <= EXACT_LIMIT {
            Box::new(0..n)
        } else {
            Box::new((0..SAMPLES).map(move |_| fastrand::usize(..n)))
        };
        let mut best: Option<usize> = None;
        for i in candidates {
            if !eligible(&backends[i], i, exclude) {
                continue;
            }
            best = match best {
                Some(b) if compare(&backends[b], &backends[i]) != Ordering::Greater => Some(b),
                _ => Some(i),
            };
        }
        let chosen = best.or_else(|| scan_from_random(backends, exclude));
        if let Some(i) = chosen {
            backends[i].note_pick();
        }
        chosen
    }
}
