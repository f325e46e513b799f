//! Consistent hashing with bounded loads: a request key goes to the backend owning the key's
//! position on a hash ring, unless that backend already carries more than its share of the
//! requests in flight; then the walk goes on clockwise to the next backend with room (Mirrokni,
//! Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2017).
//!
//! A ring rather than Maglev: the bounded-load overflow is "the next one clockwise", which a ring
//! gives for free and which spreads one hot backend's overflow over many neighbours (each of its
//! points has a different successor); a ring also moves only the keys of a backend that leaves
//! (Maglev's table rebuild moves a few more) and weights are just more points. Maglev's one-read
//! lookup is nearly matched by cutting the ring in slices indexed by their top bits (see
//! [`ConsistentHash::slices`]): a pick among 10,000 backends takes about 40 ns.
//!
//! Ring points come from each backend's URL and a point number, never from its index in the pool,
//! so a backend keeps its positions (and its keys) when others join or leave, and two alb replicas
//! with the same backends build the same ring. [`key_hash`] is pinned by a test for that reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Exclude, LeastConn, Selector, eligible};
use crate::upstream::Backend;

/// How far above the average in-flight load (per unit of weight) a backend may go before its keys
/// overflow to the next one: the paper's `1 + ε`. Higher keeps more keys home, lower spreads load.
pub const DEFAULT_BALANCE: f64 = 1.25;

/// Ring points per unit of weight. A backend's share of the key space varies by about
/// 1/√points, so 256 points hold a weight-1 backend within ~6 % of its due share.
const POINTS_PER_WEIGHT: f64 = 256.0;

/// The most points a ring holds (plus up to one per backend, see [`points_for`]): 2^18 points at
/// 12 bytes each (position, owner) and at most 2 more for [`ConsistentHash::slices`] is 3.5 MiB
/// per pool, whatever the pool. Uniform weights reach it at 1,024 backends; at 10,000 backends
/// each gets ~26 points, so shares vary by ~20 %, which bounded load keeps from turning into
/// overload. Up to the cap the point count per weight is fixed, so membership
/// changes add or remove only the points of the backend concerned; past it the count shrinks a
/// little for every backend, which moves up to about one extra backend's share of keys.
const MAX_POINTS: f64 = (1u64 << 18) as f64;

/// Ring points looked at for one pick, at most: with a fifth of the weight always under its cap
/// (see [`ConsistentHash::select_keyed`]) a walk rarely needs more than a few dozen; this stops
/// one from reading the whole ring when nearly everything is down or excluded.
const MAX_WALK: usize = 1024;

/// Pools up to this size sum their load exactly on every keyed pick.
const EXACT_LOAD_LIMIT: usize = 32;

/// Larger pools refresh a shared estimate of their load on average once per `n / LOAD_READS`
/// picks (see [`LoadEstimate`]): the sum's cost spread over picks is this many backend reads,
/// each likely a cache miss in a large pool, which is why it is small.
const LOAD_READS: usize = 4;

/// Ring points per slice of [`ConsistentHash::slices`], on average: the binary search that ends a
/// lookup runs over about this many positions in one or two cache lines.
const POINTS_PER_SLICE: usize = 4;

/// Pools up to this size remember which backends the walk already judged (one bit each), and stop
/// as soon as every backend was seen.
const SEEN_MASK_LIMIT: usize = 64;

/// A hash of request-key bytes that stays the same across processes, machines, replicas and
/// compiler versions, so that every alb replica sends one key to one backend: FNV-1a over the
/// bytes, then the splitmix64 finalizer, because in FNV-1a the last bytes reach the high bits,
/// which place a key on the ring, through a single multiplication: short keys that differ at the
/// end (addresses of one subnet) would land close together. Not keyed: a client can choose keys
/// that land on one backend, but it could anyway by resending one key, and bounded load caps that.
pub fn key_hash(bytes: &[u8]) -> u64 {
    mix(fnv1a(FNV_OFFSET, bytes))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The splitmix64 output function: every input bit flips about half of the output bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Point number `n` of a backend whose URL hashed (FNV-1a, unfinished) to `url_hash`. The zero
/// byte separates URL from number (URLs never contain one).
fn ring_point(url_hash: u64, n: u32) -> u64 {
    mix(fnv1a(fnv1a(url_hash, &[0]), &n.to_le_bytes()))
}

/// Points for a backend of `weight` at `per_weight` points per unit: at least one, so that a
/// light backend among very heavy ones still gets some keys.
fn points_for(weight: u32, per_weight: f64) -> u32 {
    (f64::from(weight) * per_weight).round().max(1.0) as u32
}

/// In-flight requests and weight of the available backends, as last summed: what the caps of a
/// large pool are computed from between two sums. Between sums the total can have grown by at
/// most the number of picks since (each adds one), about `n / LOAD_READS` on average, which moves
/// each cap by `balance × that × w / W`: a third of a request for an average backend. `Relaxed` is enough: both
/// are independent statistics, and a torn pair (one from the last sum, one from the previous)
/// only shifts caps by as little for one pick.
#[derive(Debug)]
struct LoadEstimate {
    in_flight: AtomicU64,
    weight: AtomicU64,
}

/// Consistent hashing with bounded loads over one list of backends; see the module docs. A pick
/// without a key (the request had none) goes to least connections.
pub struct ConsistentHash {
    /// Ring positions, sorted.
    points: Vec<u64>,
    /// `owners[k]` is the index of the backend that owns `points[k]`.
    owners: Vec<u32>,
    /// Where each slice of the ring starts: the points whose top bits are `b` are
    /// `points[slices[b]..slices[b + 1]]`. A lookup reads one entry here and searches a few
    /// points, instead of a binary search over the whole ring, whose last steps would each miss
    /// the cache in a large pool.
    slices: Vec<u32>,
    /// `64 - bits`, the shift taking a position to its slice (64 when there is one slice).
    slice_shift: u32,
    /// The length of the backend list the ring was built from.
    backends: usize,
    balance: f64,
    load: LoadEstimate,
    fallback: LeastConn,
}

impl std::fmt::Debug for ConsistentHash {
    /// The ring itself would be megabytes of numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("points", &self.points.len())
            .field("backends", &self.backends)
            .field("balance", &self.balance)
            .finish_non_exhaustive()
    }
}

impl ConsistentHash {
    /// Builds the ring over `backends` (weights are read once). `balance` below 1 would cap every
    /// backend under the average, which cannot hold for all of them: it is raised to 1 (and a NaN
    /// becomes [`DEFAULT_BALANCE`]).
    pub fn new(backends: &[Arc<Backend>], balance: f64) -> ConsistentHash {
        let balance = if balance.is_nan() {
            DEFAULT_BALANCE
        } else {
            balance.max(1.0)
        };
        let total_weight: u64 = backends.iter().map(|b| u64::from(b.weight())).sum();
        let per_weight = POINTS_PER_WEIGHT.min(MAX_POINTS / total_weight.max(1) as f64);
        let mut ring: Vec<(u64, u32)> = Vec::new();
        for (index, backend) in backends.iter().enumerate() {
            let Ok(owner) = u32::try_from(index) else {
                break;
            };
            let url_hash = fnv1a(FNV_OFFSET, backend.url().as_bytes());
            let count = points_for(backend.weight(), per_weight);
            ring.extend((0..count).map(|n| (ring_point(url_hash, n), owner)));
        }
        // Two backends on one point (odds 2^-64 per pair) are ordered by index: still the same
        // ring on every replica with the same pool.
        ring.sort_unstable();
        let (points, owners): (Vec<u64>, Vec<u32>) = ring.into_iter().unzip();
        let bits = (points.len() / POINTS_PER_SLICE)
            .next_power_of_two()
            .trailing_zeros();
        let slice_shift = 64 - bits;
        let mut slices = Vec::with_capacity((1 << bits) + 1);
        let mut k = 0;
        for slice in 0..1u64 << bits {
            while k < points.len() && points[k].checked_shr(slice_shift).unwrap_or(0) < slice {
                k += 1;
            }
            slices.push(k as u32);
        }
        slices.push(points.len() as u32);
        ConsistentHash {
            points,
            owners,
            slices,
            slice_shift,
            backends: backends.len(),
            balance,
            load: LoadEstimate {
                in_flight: AtomicU64::new(0),
                weight: AtomicU64::new(total_weight),
            },
            fallback: LeastConn::new(),
        }
    }

    /// In-flight requests on the available backends and their total weight: summed now in a small
    /// pool or once in a while in a large one (see [`LoadEstimate`]), else the last sum.
    fn load(&self, backends: &[Arc<Backend>]) -> (u64, u64) {
        let n = backends.len();
        if n > EXACT_LOAD_LIMIT && fastrand::usize(..n) >= LOAD_READS {
            return (
                self.load.in_flight.load(Ordering::Relaxed),
                self.load.weight.load(Ordering::Relaxed),
            );
        }
        let (mut in_flight, mut weight) = (0u64, 0u64);
        for backend in backends.iter().filter(|b| b.is_available()) {
            in_flight += backend.in_flight();
            weight += u64::from(backend.weight());
        }
        if n > EXACT_LOAD_LIMIT {
            self.load.in_flight.store(in_flight, Ordering::Relaxed);
            self.load.weight.store(weight, Ordering::Relaxed);
        }
        (in_flight, weight)
    }

    /// The index of the first point at or after `key`, `points.len()` when there is none (the
    /// ring then wraps to the first).
    fn first_at_or_after(&self, key: u64) -> usize {
        let slice = key.checked_shr(self.slice_shift).unwrap_or(0) as usize;
        let start = self.slices[slice] as usize;
        let end = self.slices[slice + 1] as usize;
        start + self.points[start..end].partition_point(|&point| point < key)
    }
}

impl Selector for ConsistentHash {
    /// A request without a key: least connections, so it still goes where there is room.
    fn select(&self, backends: &[Arc<Backend>], exclude: &Exclude) -> Option<usize> {
        self.fallback.select(backends, exclude)
    }

    /// The first backend clockwise from `key` that may take the request and is under its cap,
    /// `ceil(balance × (in flight + 1) × weight / available weight)`. With exact counts some
    /// available backend is always under it (were all at their cap, together they would hold more
    /// than everything in flight), so only exclusions leave none: then the first eligible one on
    /// the walk takes it.
    fn select_keyed(
        &self,
        backends: &[Arc<Backend>],
        exclude: &Exclude,
        key: u64,
    ) -> Option<usize> {
        let n = backends.len();
        let len = self.points.len();
        if len == 0 || n != self.backends {
            // Not the list the ring was built for: its owners would be the wrong backends.
            return self.fallback.select(backends, exclude);
        }
        let (in_flight, weight) = self.load(backends);
        // The cap of a backend is this times its weight.
        let per_weight = self.balance * (in_flight + 1) as f64 / weight.max(1) as f64;
        let everyone = match n {
            SEEN_MASK_LIMIT => u64::MAX,
            n if n < SEEN_MASK_LIMIT => (1u64 << n) - 1,
            _ => 0,
        };
        let mut seen = 0u64;
        let mut previous = u32::MAX;
        let mut first_eligible = None;
        // The first point at or after the key; past the last point the ring wraps to the first.
        let mut at = self.first_at_or_after(key);
        for _ in 0..len.min(MAX_WALK) {
            if at == len {
                at = 0;
            }
            let owner = self.owners[at];
            at += 1;
            if owner == previous {
                continue;
            }
            previous = owner;
            let index = owner as usize;
            if everyone != 0 {
                let bit = 1u64 << index;
                if seen & bit != 0 {
                    continue;
                }
                seen |= bit;
            }
            let backend = &backends[index];
            if eligible(backend, index, exclude) {
                let cap = (per_weight * f64::from(backend.weight())).ceil();
                if (backend.in_flight() as f64) < cap {
                    return Some(index);
                }
                first_eligible.get_or_insert(index);
            }
            if seen == everyone && everyone != 0 {
                break;
            }
        }
        // Nothing eligible on the part of the ring walked: a large pool may still have some.
        first_eligible.or_else(|| self.fallback.select(backends, exclude))
    }
}

#[cfg(test)]
mod tests;
