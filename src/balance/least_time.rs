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

use super::least_conn::pick_least;
use super::{Exclude, Selector};
use crate::upstream::Backend;

#[derive(Debug, Default)]
pub struct LeastTime;

fn cost(b: &Backend) -> u128 {
    (u128::from(b.in_flight()) + 1) * b.recent_latency().as_micros()
}

/// `a` before `b` when its expected wait per unit of weight is lower (ties as in least_conn).
fn compare(a: &Backend, b: &Backend) -> Ordering {
    let (wa, wb) = (u128::from(a.weight()), u128::from(b.weight()));
    (cost(a) * wb).cmp(&(cost(b) * wa))
}

impl Selector for LeastTime {
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
        pick_least(backends, exclude, compare)
    }
}
