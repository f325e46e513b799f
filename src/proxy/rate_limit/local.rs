//! Per-key rate limits (a route's `rate_limit = { per_second, burst, key }`) in bounded memory,
//! in this process.
//!
//! The algorithm is GCRA, the generic cell rate algorithm: a token bucket of `burst` requests
//! refilled at `per_second`, kept as one number per key, the "theoretical arrival time" (TAT) at
//! which the key's bucket will be full again. A request at `now` passes when the TAT runs at most
//! `(burst - 1)` intervals ahead of `now`, and moves it one interval on; one that does not pass
//! learns how long until it would. A TAT at or before `now` is a full bucket, the same as no entry.
//!
//! Memory is one table of at most `max_keys` slots of 16 bytes (key hash, TAT), allocated when the
//! limiter is built and never grown: a million keys take 16 MB whatever the traffic. It is
//! set-associative with two choices: a key's hash names two buckets of [`WAYS`] slots, where it is
//! looked for; a new key goes to the one with more free slots (empty, or expired: nothing is lost
//! in reusing those), and when both are full of keys still limited, it takes the slot with the
//! oldest TAT of the two, the key closest to being forgotten anyway. That evicted key starts again
//! with a full bucket if it comes back: the lenient side, chosen because the alternative, refusing
//! keys the table cannot hold, would let a flood of new addresses lock out everyone else. Two
//! choices let the table fill to about 96 % before a key still limited has to go, one bucket to
//! 86 % (keys spread over buckets unevenly). A check reads at most two buckets of 128 contiguous
//! bytes: no rehashing, no sweep stalling one request for a whole table, no growth under attack.
//!
//! Keys are hashed with a random seed drawn per limiter (std's SipHash `RandomState`), so that a
//! client cannot choose keys that share buckets and evict each other (or someone else). Two keys
//! with one 64-bit hash would share an entry: at a million keys, odds of 3 in 10^8.
//!
//! This table is one replica's: behind N replicas that share no state a key gets up to N times
//! the rate. With `[shared_state]` the buckets live in Redis instead (`shared`), and this table is
//! the fallback while Redis does not answer, at the replica's share of the rate.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys a limiter tracks when the configuration does not say: a million, 16 MB.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Slots in one bucket: its 8 keys fill one cache line and its 8 TATs the next.
const WAYS: usize = 8;

/// Locks the table is split under: two requests contend only when their keys share one of 64.
const SHARDS: usize = 64;

/// Nanoseconds are counted from [`TIME_ZERO`] before the limiter was built, so that an instant read
/// just before it (a request that arrived while it was being built) keeps its order: 2^60 ns,
/// 36 years.
const TIME_ZERO: u64 = 1 << 60;

/// The slowest rate: one request per 2^52 ns (52 days); slower is the same for any client.
const MAX_INTERVAL: u64 = 1 << 52;

/// The longest burst span, `(burst - 1)` intervals: 2^62 ns (146 years), which leaves any burst
/// whole at one request per second or faster. With time zero, span and interval below these,
/// a TAT stays under 2^64 ns for more than a century of uptime: no overflow to guard against.
const MAX_SPAN: u64 = 1 << 62;

/// A GCRA rate limiter over many keys; see the module docs.
pub struct RateLimiter {
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of now a key's TAT may run and still let a request pass: `(burst - 1)`
    /// intervals.
    slack: u64,
    /// The instant counted as [`TIME_ZERO`] nanoseconds.
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    /// Slots per bucket: [`WAYS`], or fewer when `max_keys` is smaller.
    ways: usize,
    /// Slots in all: `max_keys` rounded down to whole buckets.
    capacity: usize,
    /// Keys dropped while still limited.
    evictions: AtomicU64,
}

/// One lock's part of the table. Bucket `b` is `slots[b * 2 * ways ..][.. 2 * ways]`: its keys
/// (hashes, 0 for an empty slot), then their TATs in the same order, so that one bucket is one
/// stretch of memory.
struct Shard {
    buckets: usize,
    slots: Vec<u64>,
}

impl std::fmt::Debug for RateLimiter {
    /// The table would be megabytes of numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval", &Duration::from_nanos(self.interval))
            .field("slack", &Duration::from_nanos(self.slack))
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter letting each key send `burst` requests at once and `per_second` on average,
    /// tracking at most `max_keys` keys (at least one).
    ///
    /// The configuration checks that `per_second` is positive and finite; were it not, the limiter
    /// lets each key have its burst and then next to nothing (the slowest rate), rather than
    /// panic. `burst` 0 counts as 1.
    pub fn new(per_second: f64, burst: u32, max_keys: usize) -> RateLimiter {
        let interval = if per_second.is_finite() && per_second > 0.0 {
            (1e9 / per_second).round().clamp(1.0, MAX_INTERVAL as f64) as u64
        } else {
            MAX_INTERVAL
        };
        let extra = u128::from(burst.max(1) - 1) * u128::from(interval);
        let slack = extra.min(u128::from(MAX_SPAN)) as u64;
        let max_keys = max_keys.max(1);
        let ways = WAYS.min(max_keys);
        let buckets = max_keys / ways;
        let shards = SHARDS.min(buckets);
        RateLimiter {
            interval,
            slack,
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..shards)
                .map(|i| {
                    // The remainder spread over the first shards: no bucket lost to rounding.
                    let buckets = buckets / shards + usize::from(i < buckets % shards);
                    Mutex::new(Shard {
                        buckets,
                        // Zeroed memory: pages the allocator maps in fresh are only touched
                        // (resident) once keys land in them.
                        slots: vec![0; buckets * 2 * ways],
                    })
                })
                .collect(),
            ways,
            capacity: buckets * ways,
            evictions: AtomicU64::new(0),
        }
    }

    /// Counts one request of `key` at `now`: `Ok` if it may pass, else how long until one would
    /// (for `Retry-After`). A refused request takes nothing from the bucket.
    pub fn check(&self, key: &[u8], now: Instant) -> Result<(), Duration> {
        let hash = self.hasher.hash_one(key).max(1);
        let now = self.nanos(now);
        let shard = &self.shards[reduce(hash, self.shards.len())];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let Shard { buckets, slots } = &mut *shard;
        // The shard took the high bits of the hash; each bucket choice takes other ones.
        let width = 2 * self.ways;
        let first = Bucket(reduce(hash.rotate_left(21), *buckets) * width, self.ways);
        let second = Bucket(reduce(hash.rotate_left(42), *buckets) * width, self.ways);
        let tat = match first.find(slots, hash).or_else(|| second.find(slots, hash)) {
            Some(tat) => tat,
            None => self.make_room(slots, first, second, hash, now),
        };
        let ahead = slots[tat].max(now) - now;
        if ahead > self.slack {
            return Err(Duration::from_nanos(ahead - self.slack));
        }
        slots[tat] = now + ahead + self.interval;
        Ok(())
    }

    /// Puts `hash` in the bucket with more free slots, or in place of the oldest of both when
    /// neither has one; returns the index of its TAT, set to `now` (a full bucket).
    fn make_room(
        &self,
        slots: &mut [u64],
        first: Bucket,
        second: Bucket,
        hash: u64,
        now: u64,
    ) -> usize {
        let bucket = if second.free(slots, now) > first.free(slots, now) {
            second
        } else {
            first
        };
        let mut tat = bucket.oldest(slots);
        if slots[tat] > now {
            // Both full of keys still limited.
            let other = second.oldest(slots);
            if slots[other] < slots[tat] {
                tat = other;
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        slots[tat - bucket.1] = hash;
        slots[tat] = now;
        tat
    }

    /// `at` in nanoseconds from a time zero 36 years before the limiter was built.
    fn nanos(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.epoch) {
            Some(after) => TIME_ZERO.saturating_add(after.as_nanos() as u64),
            None => TIME_ZERO.saturating_sub(self.epoch.duration_since(at).as_nanos() as u64),
        }
    }

    /// How many keys the table can hold: `max_keys` rounded down to whole buckets.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots in use, expired ones included. Reads the whole table: for tests and occasional
    /// statistics, not for the request path.
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                let width = 2 * self.ways;
                (0..shard.buckets)
                    .map(|b| Bucket(b * width, self.ways).keys(&shard.slots))
                    .map(|keys| keys.iter().filter(|&&k| k != 0).count())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Keys dropped to make room while still limited, each of which got a full bucket back: how
    /// often the table was too small for the keys in play.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

/// One bucket of a shard: where it starts in `slots`, and its number of ways.
#[derive(Clone, Copy)]
struct Bucket(usize, usize);

impl Bucket {
    fn keys(self, slots: &[u64]) -> &[u64] {
        &slots[self.0..self.0 + self.1]
    }

    fn tats(self, slots: &[u64]) -> &[u64] {
        &slots[self.0 + self.1..self.0 + 2 * self.1]
    }

    /// The index in `slots` of the TAT of `hash`, if this bucket holds it.
    fn find(self, slots: &[u64], hash: u64) -> Option<usize> {
        let way = self.keys(slots).iter().position(|&k| k == hash)?;
        Some(self.0 + self.1 + way)
    }

    /// Slots whose bucket is full again (empty ones have TAT 0).
    fn free(self, slots: &[u64], now: u64) -> usize {
        self.tats(slots).iter().filter(|&&tat| tat <= now).count()
    }

    /// The index in `slots` of the smallest TAT, the first of them on a tie.
    fn oldest(self, slots: &[u64]) -> usize {
        let tats = self.tats(slots);
        let mut best = 0;
        for (way, &tat) in tats.iter().enumerate() {
            if tat < tats[best] {
                best = way;
            }
        }
        self.0 + self.1 + best
    }
}

/// `hash` mapped onto `0..n` by its high bits (Lemire's multiply-shift, no division).
fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Requests of `key` at `at` until one is refused: how many passed, and the wait it got.
    fn drain(limiter: &RateLimiter, key: &[u8], at: Instant) -> (u32, Duration) {
        let mut passed = 0;
        loop {
            match limiter.check(key, at) {
                Ok(()) => passed += 1,
                Err(wait) => return (passed, wait),
            }
            assert!(passed < 1_000_000, "never refused");
        }
    }

    #[test]
    fn a_burst_passes_then_the_wait_is_one_interval() {
        let limiter = RateLimiter::new(10.0, 5, 1_000);
        let t0 = Instant::now();
        assert_eq!(drain(&limiter, b"client", t0), (5, ms(100)));
        // Partway through the interval the wait is what is left of it.
        assert_eq!(limiter.check(b"client", t0 + ms(30)), Err(ms(70)));
    }

    #[test]
    fn the_bucket_refills_with_time() {
        let limiter = RateLimiter::new(10.0, 5, 1_000);
        let t0 = Instant::now();
        drain(&limiter, b"k", t0);
        assert_eq!(drain(&limiter, b"k", t0 + ms(100)), (1, ms(100)));
        assert_eq!(drain(&limiter, b"k", t0 + ms(350)), (2, ms(50)));
        // Long idle: the bucket is full again, and no fuller than `burst`.
        assert_eq!(drain(&limiter, b"k", t0 + ms(60_000)), (5, ms(100)));
    }

    #[test]
    fn the_sustained_rate_is_per_second() {
        let limiter = RateLimiter::new(10.0, 5, 1_000);
        let t0 = Instant::now();
        // One request a millisecond for ten seconds: the burst, then one per 100 ms.
        let passed = (0..10_000)
            .filter(|&i| limiter.check(b"k", t0 + ms(i)).is_ok())
            .count();
        assert_eq!(passed, 5 + 99);
        // At exactly the rate, nothing is ever refused.
        let paced = RateLimiter::new(10.0, 1, 1_000);
        assert!((0..1_000).all(|i| paced.check(b"k", t0 + ms(100 * i)).is_ok()));
    }

    #[test]
    fn rates_below_one_per_second_work() {
        let limiter = RateLimiter::new(0.5, 1, 1_000);
        let t0 = Instant::now();
        assert_eq!(drain(&limiter, b"k", t0), (1, ms(2_000)));
        let third = RateLimiter::new(3.0, 1, 1_000);
        assert_eq!(
            drain(&third, b"k", t0),
            (1, Duration::from_nanos(333_333_333))
        );
    }

    #[test]
    fn keys_are_limited_apart() {
        let limiter = RateLimiter::new(1.0, 2, 1_000);
        let t0 = Instant::now();
        assert_eq!(drain(&limiter, b"10.0.0.1", t0).0, 2);
        assert_eq!(drain(&limiter, b"10.0.0.2", t0).0, 2);
        assert_eq!(drain(&limiter, b"10.0.0.10", t0).0, 2);
        assert_eq!(limiter.tracked_keys(), 3);
    }

    #[test]
    fn a_nonsensical_rate_allows_the_burst_and_then_nothing() {
        let t0 = Instant::now();
        for per_second in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            let limiter = RateLimiter::new(per_second, 3, 100);
            let (passed, wait) = drain(&limiter, b"k", t0);
            assert_eq!(passed, 3, "{per_second}");
            assert!(wait > Duration::from_secs(50 * 86_400), "{per_second}");
        }
        let zero_burst = RateLimiter::new(1.0, 0, 100);
        assert_eq!(drain(&zero_burst, b"k", t0), (1, ms(1_000)));
        let huge = RateLimiter::new(f64::INFINITY, u32::MAX, 100);
        assert!((0..1_000).all(|_| huge.check(b"k", t0).is_ok()));
    }

    #[test]
    fn memory_stays_bounded_with_twice_as_many_keys() {
        for max_keys in [1_000, 100, 8, 5, 1] {
            // 1,000 s to refill: no key expires during the test.
            let limiter = RateLimiter::new(0.001, 1, max_keys);
            let capacity = limiter.capacity();
            assert!(
                capacity <= max_keys && capacity + 8 > max_keys,
                "{max_keys}"
            );
            let t0 = Instant::now();
            for i in 0..2 * max_keys as u64 {
                // Every key is new, so it passes.
                assert_eq!(limiter.check(&i.to_le_bytes(), t0 + ms(i)), Ok(()));
                assert!(limiter.tracked_keys() <= capacity, "{max_keys}: after {i}");
            }
            assert!(limiter.evictions() >= max_keys as u64, "{max_keys}");
        }
    }

    #[test]
    fn two_choices_fill_the_table_before_evicting() {
        let limiter = RateLimiter::new(0.001, 1, 1 << 16);
        let t0 = Instant::now();
        let fill = |keys: std::ops::Range<u64>| {
            for i in keys {
                assert_eq!(limiter.check(&i.to_le_bytes(), t0), Ok(()));
            }
        };
        // Four fifths full: hardly a key lost (one bucket of 8 per key would lose some 7 %).
        fill(0..(1 << 16) * 4 / 5);
        let early = limiter.evictions();
        // Full: about 96 % of the slots in use (86 % with one bucket).
        fill((1 << 16) * 4 / 5..1 << 16);
        let used = limiter.tracked_keys() as f64 / limiter.capacity() as f64;
        eprintln!("evicted at 80 %: {early}; in use when full: {used:.4}");
        assert!(early < (1 << 16) / 200, "{early}");
        assert!(used > 0.93, "{used}");
    }

    #[test]
    fn a_full_bucket_reuses_expired_slots_before_evicting_the_oldest() {
        // Eight slots, one bucket: every key competes for it.
        let limiter = RateLimiter::new(1.0, 1, 8);
        assert_eq!(limiter.capacity(), 8);
        let t0 = Instant::now();
        let key = |name: &str| name.as_bytes().to_vec();
        // k0..k7 at 0, 100, …, 700 ms: their buckets are full again at 1.0, 1.1, …, 1.7 s.
        for i in 0..8 {
            assert!(
                limiter
                    .check(&key(&format!("k{i}")), t0 + ms(100 * i))
                    .is_ok()
            );
        }
        // At 1.25 s, k0..k2 have expired: three new keys take their slots, nothing is evicted.
        for new in ["x", "y", "z"] {
            assert!(limiter.check(&key(new), t0 + ms(1_250)).is_ok());
        }
        assert_eq!(limiter.evictions(), 0);
        assert_eq!(limiter.check(&key("k7"), t0 + ms(1_250)), Err(ms(450)));
        // Now all eight are live; the next new key evicts the oldest, k3 (full again at 1.3 s).
        assert!(limiter.check(&key("w"), t0 + ms(1_260)).is_ok());
        assert_eq!(limiter.evictions(), 1);
        assert_eq!(limiter.check(&key("k4"), t0 + ms(1_270)), Err(ms(130)));
        // k3 was forgotten, so it comes back with a full bucket: lenient, never stricter.
        assert!(limiter.check(&key("k3"), t0 + ms(1_270)).is_ok());
        assert_eq!(limiter.tracked_keys(), 8);
    }

    #[test]
    fn concurrent_requests_of_one_key_share_one_bucket() {
        let limiter = Arc::new(RateLimiter::new(1.0, 100, 1_000));
        let at = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    (0..1_000)
                        .filter(|_| limiter.check(b"shared", at).is_ok())
                        .count()
                })
            })
            .collect();
        let passed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(passed, 100);
    }

    #[test]
    fn instants_from_before_the_limiter_was_built_keep_their_order() {
        let before = Instant::now();
        std::thread::sleep(ms(2));
        let limiter = RateLimiter::new(10.0, 1, 100);
        assert!(limiter.check(b"k", before).is_ok());
        assert_eq!(limiter.check(b"k", before + ms(40)), Err(ms(60)));
        assert!(limiter.check(b"k", before + ms(100)).is_ok());
    }
}
