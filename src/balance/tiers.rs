//! Backends in order of preference: the backends in this replica's zone first, then the other
//! zones, and backups only when nothing else is left. Each tier is balanced by the pool's own
//! algorithm over its members alone; a request goes to the first tier that can take it.
//!
//! A same-zone tier takes requests only while it is fit to: at least `min_healthy` of its
//! members available (below that, the few left would carry what a whole zone carried), and not
//! all of them at their in-flight bound. Otherwise requests spill over to the next tier, and come
//! back as soon as the zone is fit again: nothing is remembered between requests, so there is no
//! state to go stale. A backup tier is used only when every tier before it has no backend left
//! that may take the request (HAProxy's `backup`, nginx's `backup`).

use std::sync::Arc;

use super::{ConsistentHash, Exclude, Selector, selector_for};
use crate::config::{Algorithm, Locality};
use crate::upstream::Backend;

#[derive(Debug)]
pub struct Tiers {
    tiers: Vec<Tier>,
    min_healthy: f64,
    max_in_flight: Option<u32>,
}

#[derive(Debug)]
struct Tier {
    /// Indexes of its members in the pool.
    members: Vec<usize>,
    backends: Vec<Arc<Backend>>,
    selector: Box<dyn Selector>,
    /// In this replica's zone: taken only while fit (see the module docs).
    local: bool,
}

/// Where a backend stands: backups after the rest, and within each, this zone first.
fn rank(backend: &Backend, zone: Option<&str>) -> (bool, bool) {
    let elsewhere = zone.is_some_and(|zone| backend.zone() != Some(zone));
    (backend.is_backup(), elsewhere)
}

impl Tiers {
    /// The tiers of `backends`; none when they all stand alike (the pool is then balanced as
    /// one, with no cost added to a pick).
    pub fn new(
        backends: &[Arc<Backend>],
        algorithm: Algorithm,
        hash_balance: f64,
        locality: &Locality,
    ) -> Option<Tiers> {
        let zone = locality.zone.as_deref();
        let mut ranks: Vec<(bool, bool)> = backends.iter().map(|b| rank(b, zone)).collect();
        ranks.sort();
        ranks.dedup();
        if ranks.len() <= 1 {
            return None;
        }
        let tiers = ranks
            .into_iter()
            .map(|tier_rank| {
                let members: Vec<usize> = (0..backends.len())
                    .filter(|&i| rank(&backends[i], zone) == tier_rank)
                    .collect();
                let backends: Vec<Arc<Backend>> =
                    members.iter().map(|&i| backends[i].clone()).collect();
                let selector: Box<dyn Selector> = match algorithm {
                    Algorithm::Hash => Box::new(ConsistentHash::new(&backends, hash_balance)),
                    other => selector_for(other, &backends),
                };
                Tier {
                    members,
                    backends,
                    selector,
                    local: zone.is_some() && !tier_rank.1,
                }
            })
            .collect();
        Some(Tiers {
            tiers,
            min_healthy: locality.min_healthy,
            max_in_flight: locality.max_in_flight,
        })
    }

    /// The pool index of the backend for this request: from the first tier that can take it.
    pub fn select(&self, exclude: &Exclude, key: Option<u64>) -> Option<usize> {
        self.tiers.iter().find_map(|tier| {
            if tier.local && !self.fit(tier) {
                return None;
            }
            let mut own = Exclude::default();
            for (i, member) in tier.members.iter().enumerate() {
                if exclude.contains(*member) {
                    own.add(i);
                }
            }
            let index = match key {
                Some(key) => tier.selector.select_keyed(&tier.backends, &own, key),
                None => tier.selector.select(&tier.backends, &own),
            }?;
            Some(tier.members[index])
        })
    }

    /// Whether a same-zone tier may take requests: enough of it available, and not every
    /// available member at its in-flight bound.
    fn fit(&self, tier: &Tier) -> bool {
        let mut available = 0usize;
        let mut has_room = false;
        // Drained and disabled members are on their way out (a pod terminating, an operator's
        // maintenance): the zone is judged by the ones meant to serve.
        let serving = tier
            .backends
            .iter()
            .filter(|b| b.admin_state() == crate::upstream::AdminState::Enabled)
            .count();
        for backend in tier.backends.iter().filter(|b| b.is_available()) {
            available += 1;
            let bound = self.max_in_flight.or(backend.max_connections());
            has_room |= bound.is_none_or(|bound| backend.in_flight() < u64::from(bound));
        }
        let needed = (self.min_healthy * serving as f64).ceil() as usize;
        available > 0 && available >= needed && has_room
    }

    /// The tier of each backend, by pool index, 0 first (for the API and `explain`).
    pub fn tier_of(&self, index: usize) -> usize {
        self.tiers
            .iter()
            .position(|t| t.members.contains(&index))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{BackendAddr, BackendSpec};
    use crate::upstream::InFlightGuard;

    fn backend(i: u16, zone: &str, backup: bool, max: Option<u32>) -> Arc<Backend> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + i));
        Arc::new(Backend::new(&BackendSpec {
            url: format!("http://{addr}"),
            authority: addr.to_string(),
            addr: BackendAddr::Ip(addr),
            weight: 1,
            max_connections: max,
            dns_name: None,
            tls: None,
            http2: false,
            zone: Some(zone.to_string()),
            backup,
            draining: false,
        }))
    }

    fn locality(zone: &str) -> Locality {
        Locality {
            zone: Some(zone.into()),
            ..Locality::default()
        }
    }

    fn picks(tiers: &Tiers, n: usize) -> std::collections::BTreeSet<usize> {
        (0..n)
            .filter_map(|_| tiers.select(&Exclude::default(), None))
            .collect()
    }

    #[test]
    fn one_tier_costs_nothing() {
        let same = [backend(0, "a", false, None), backend(1, "a", false, None)];
        assert!(Tiers::new(&same, Algorithm::LeastConn, 1.25, &locality("a")).is_none());
        let unzoned = [backend(0, "a", false, None), backend(1, "b", false, None)];
        assert!(Tiers::new(&unzoned, Algorithm::LeastConn, 1.25, &Locality::default()).is_none());
    }

    #[test]
    fn the_zone_takes_everything_while_fit_and_spills_when_half_is_down() {
        let pool = [
            backend(0, "b", false, None),
            backend(1, "a", false, None),
            backend(2, "a", false, None),
            backend(3, "b", false, None),
        ];
        for algorithm in [
            Algorithm::LeastConn,
            Algorithm::RoundRobin,
            Algorithm::P2c,
            Algorithm::Random,
            Algorithm::Hash,
        ] {
            let tiers = Tiers::new(&pool, algorithm, 1.25, &locality("a")).expect("tiers");
            assert_eq!(picks(&tiers, 200), [1, 2].into(), "{algorithm:?}");
            // One of two down: half is still there (min_healthy 0.5), the zone keeps it.
            pool[1].set_healthy(false);
            assert_eq!(picks(&tiers, 200), [2].into(), "{algorithm:?}");
            pool[2].set_healthy(false);
            assert_eq!(picks(&tiers, 200), [0, 3].into(), "{algorithm:?}");
            pool[1].set_healthy(true);
            pool[2].set_healthy(true);
        }
        // With min_healthy 1.0, one down is enough to spill.
        let strict = Locality {
            min_healthy: 1.0,
            ..locality("a")
        };
        let tiers = Tiers::new(&pool, Algorithm::LeastConn, 1.25, &strict).expect("tiers");
        pool[1].set_healthy(false);
        assert_eq!(picks(&tiers, 200), [0, 3].into());
    }

    #[test]
    fn a_zone_at_its_in_flight_bound_spills_over_and_takes_back() {
        let pool = [
            backend(0, "a", false, Some(2)),
            backend(1, "b", false, None),
        ];
        let tiers = Tiers::new(&pool, Algorithm::LeastConn, 1.25, &locality("a")).expect("tiers");
        assert_eq!(tiers.select(&Exclude::default(), None), Some(0));
        let busy: Vec<InFlightGuard> = (0..2)
            .map(|_| InFlightGuard::new(pool[0].clone()))
            .collect();
        assert_eq!(tiers.select(&Exclude::default(), None), Some(1));
        drop(busy);
        assert_eq!(tiers.select(&Exclude::default(), None), Some(0));
        // `max_in_flight` bounds a backend that has no `max_connections`.
        let unbounded = [backend(0, "a", false, None), backend(1, "b", false, None)];
        let bounded = Locality {
            max_in_flight: Some(1),
            ..locality("a")
        };
        let tiers = Tiers::new(&unbounded, Algorithm::LeastConn, 1.25, &bounded).expect("tiers");
        let _one = InFlightGuard::new(unbounded[0].clone());
        assert_eq!(tiers.select(&Exclude::default(), None), Some(1));
    }

    #[test]
    fn backups_only_when_nothing_else_is_left() {
        let pool = [
            backend(0, "a", true, None),
            backend(1, "a", false, None),
            backend(2, "b", false, None),
            backend(3, "b", true, None),
        ];
        let tiers = Tiers::new(&pool, Algorithm::RoundRobin, 1.25, &locality("a")).expect("tiers");
        // Zone a's primary, then zone b's primary, then a's backup, then b's.
        assert_eq!(picks(&tiers, 50), [1].into());
        let mut exclude = Exclude::default();
        exclude.add(1);
        assert_eq!(tiers.select(&exclude, None), Some(2));
        exclude.add(2);
        assert_eq!(tiers.select(&exclude, None), Some(0));
        pool[0].set_healthy(false);
        assert_eq!(tiers.select(&exclude, None), Some(3));
        exclude.add(3);
        assert_eq!(tiers.select(&exclude, None), None);
        assert_eq!(
            (0..4).map(|i| tiers.tier_of(i)).collect::<Vec<_>>(),
            [2, 0, 1, 3]
        );
    }

    #[test]
    fn terminating_members_do_not_make_a_healthy_zone_spill() {
        // Zone a scaled down from 5 to 2: three pods terminating (drained), two ready.
        let pool = [
            backend(0, "a", false, None),
            backend(1, "a", false, None),
            backend(2, "a", false, None),
            backend(3, "a", false, None),
            backend(4, "a", false, None),
            backend(5, "b", false, None),
        ];
        for terminating in &pool[2..5] {
            terminating.set_admin_state(crate::upstream::AdminState::Draining);
        }
        let tiers = Tiers::new(&pool, Algorithm::RoundRobin, 1.25, &locality("a")).expect("tiers");
        assert_eq!(
            picks(&tiers, 50),
            [0, 1].into(),
            "two healthy in-zone backends, all traffic cross-zone"
        );
    }
}
