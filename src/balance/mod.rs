//! Choosing a backend for a request. Each algorithm is one [`Selector`] in its own file.
//!
//! Selection is a plain synchronous function over a slice of backends: no I/O, no await, no lock.
//! Shared state is limited to per-backend atomics and, for round robin, one counter (for consistent
//! hashing, a load estimate that large pools refresh now and then).

mod hash;
mod least_conn;
mod least_time;
mod p2c;
mod random;
mod round_robin;
mod tiers;
mod weights;

use std::sync::Arc;

pub use hash::{ConsistentHash, DEFAULT_BALANCE, key_hash};
pub use least_conn::LeastConn;
pub use least_time::LeastTime;
pub use p2c::PowerOfTwoChoices;
pub use random::WeightedRandom;
pub use round_robin::RoundRobin;
pub use tiers::Tiers;

use crate::config::Algorithm;
use crate::upstream::Backend;

/// Picks one backend among the healthy ones not yet tried for this request.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// Returns the index into `backends` of the chosen backend, or `None` when every backend is
    /// unhealthy or excluded.
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize>;

    /// Like [`Selector::select`] for a request that carries an affinity key ([`key_hash`] of a
    /// client address, header, cookie…). Algorithms that ignore request keys keep this default.
    fn select_keyed(
        &self,
        backends: &[Arc<Backend>],
        exclude: &Exclude,
        key: u64,
    ) -> Option<usize> {
        let _ = key;
        self.select(backends, exclude)
    }
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
    backend.is_available() && (exclude.is_empty() || !exclude.contains(index))
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
        Algorithm::LeastTime => Box::new(LeastTime),
        Algorithm::Hash => Box::new(ConsistentHash::new(backends, hash::DEFAULT_BALANCE)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{BackendAddr, BackendSpec};
    use crate::upstream::InFlightGuard;

    fn pool(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16));
                Arc::new(Backend::new(&BackendSpec {
                    url: format!("http://{addr}"),
                    authority: addr.to_string(),
                    addr: BackendAddr::Ip(addr),
                    weight,
                    max_connections: None,
                    dns_name: None,
                    tls: None,
                    http2: false,
                    zone: None,
                    backup: false,
                    draining: false,
                }))
            })
            .collect()
    }

    const ALL: [Algorithm; 5] = [
        Algorithm::LeastConn,
        Algorithm::RoundRobin,
        Algorithm::Random,
        Algorithm::P2c,
        Algorithm::LeastTime,
    ];

    fn counts(
        selector: &dyn Selector,
        backends: &[Arc<Backend>],
        picks: usize,
    ) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for _ in 0..picks {
            let i = selector
                .select(backends, &Exclude::default())
                .expect("a pick");
            *counts.entry(i).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn every_algorithm_skips_unhealthy_and_excluded_backends() {
        for algorithm in ALL {
            let backends = pool(&[1, 1, 1, 1]);
            backends[0].set_healthy(false);
            backends[2].set_healthy(false);
            let selector = selector_for(algorithm, &backends);
            let mut exclude = Exclude::default();
            exclude.add(1);
            for _ in 0..200 {
                assert_eq!(
                    selector.select(&backends, &exclude),
                    Some(3),
                    "{algorithm:?}"
                );
            }
            exclude.add(3);
            assert_eq!(selector.select(&backends, &exclude), None, "{algorithm:?}");
        }
    }

    #[test]
    fn every_algorithm_finds_the_one_healthy_backend_in_a_large_pool() {
        for algorithm in ALL {
            let backends = pool(&vec![1; 5000]);
            for b in &backends {
                b.set_healthy(false);
            }
            backends[4321].set_healthy(true);
            let selector = selector_for(algorithm, &backends);
            assert_eq!(
                selector.select(&backends, &Exclude::default()),
                Some(4321),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn least_conn_picks_the_lowest_in_flight_per_weight() {
        let backends = pool(&[1, 1, 4]);
        let selector = LeastConn::new();
        let _busy: Vec<InFlightGuard> = [0, 0, 1, 2, 2, 2, 2]
            .iter()
            .map(|&i| InFlightGuard::new(backends[i].clone()))
            .collect();
        // In flight per weight: 2/1, 1/1, 4/4: backends 1 and 2 tie, neither picked yet.
        assert_eq!(selector.select(&backends, &Exclude::default()), Some(1));
        // Still tied on load; now 2 has fewer picks per weight (0/4 against 1/1).
        assert_eq!(selector.select(&backends, &Exclude::default()), Some(2));
        let _more = InFlightGuard::new(backends[2].clone());
        // 5/4 against 1/1.
        assert_eq!(selector.select(&backends, &Exclude::default()), Some(1));
    }

    #[test]
    fn least_conn_owes_nothing_to_a_backend_load_kept_away_from() {
        let backends = pool(&[1, 1]);
        let selector = LeastConn::new();
        {
            // Backend 1 is busy (slow): 100 picks go to 0 on load alone.
            let _slow = InFlightGuard::new(backends[1].clone());
            for _ in 0..100 {
                assert_eq!(selector.select(&backends, &Exclude::default()), Some(0));
            }
        }
        // Both idle again: ties alternate from here, they do not all go to 1 to even the count.
        let picks: Vec<usize> = (0..6)
            .map(|_| selector.select(&backends, &Exclude::default()).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 3, "{picks:?}");
    }

    #[test]
    fn least_conn_rotates_ties_and_spreads_idle_traffic_by_weight() {
        let backends = pool(&[1, 1, 1]);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                LeastConn::new()
                    .select(&backends, &Exclude::default())
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let backends = pool(&[3, 1]);
        let c = counts(&LeastConn::new(), &backends, 400);
        assert_eq!((c[&0], c[&1]), (300, 100));
    }

    #[test]
    fn round_robin_gives_each_its_weight_per_cycle_interleaved() {
        let backends = pool(&[5, 1, 1]);
        let selector = RoundRobin::new(&backends);
        let cycle: Vec<usize> = (0..7)
            .map(|_| selector.select(&backends, &Exclude::default()).unwrap())
            .collect();
        let heavy = cycle.iter().filter(|&&i| i == 0).count();
        assert_eq!(heavy, 5, "{cycle:?}");
        assert!(cycle.contains(&1) && cycle.contains(&2), "{cycle:?}");
        let longest_run = cycle
            .chunk_by(|a, b| a == b)
            .map(<[usize]>::len)
            .max()
            .unwrap();
        assert!(longest_run <= 3, "heavy turns are interleaved: {cycle:?}");
    }

    #[test]
    fn weighted_algorithms_follow_weights_over_many_picks() {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::Random,
            Algorithm::P2c,
            Algorithm::LeastConn,
        ] {
            let backends = pool(&[1, 2, 7]);
            let selector = selector_for(algorithm, &backends);
            let c = counts(selector.as_ref(), &backends, 10_000);
            for (i, expected) in [(0, 0.1), (1, 0.2), (2, 0.7)] {
                let got = c.get(&i).copied().unwrap_or(0) as f64 / 10_000.0;
                assert!(
                    (got - expected).abs() < 0.03,
                    "{algorithm:?}: backend {i} got {got}"
                );
            }
        }
    }

    #[test]
    fn golden_stride_is_coprime_with_the_total() {
        for total in 1..500u64 {
            let selector = RoundRobin::new(&pool(&vec![1; total as usize]));
            let backends = pool(&vec![1; total as usize]);
            let mut seen = vec![false; total as usize];
            for _ in 0..total {
                seen[selector.select(&backends, &Exclude::default()).unwrap()] = true;
            }
            assert!(
                seen.iter().all(|&s| s),
                "total {total}: one cycle visits every backend"
            );
        }
    }
}
