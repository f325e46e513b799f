//! When a failed attempt may be sent to another backend, and how many retries the pool can take.
//!
//! Safety first: a request is sent again only if that cannot run it twice against the client's
//! intent. Any request may be retried when it provably never left (connect failure, a full queue,
//! a pooled connection found closed before anything was written). An idempotent request (GET,
//! HEAD, OPTIONS, PUT, DELETE, TRACE) may also be retried after it was sent, if its body was
//! empty or small enough to be kept.
//!
//! The budget bounds the extra work retries put on backends: retries of requests that were sent
//! may add at most `budget_percent` of the requests of the last [`WINDOW_SECS`] seconds, plus
//! `budget_min_per_second` for each second of that window, so that quiet services can still
//! retry (Finagle's retry budget). A window rather than a small bucket: a backend that dies
//! refuses as many requests at once as there are clients in flight, and that burst is well within
//! a share of ten seconds of traffic. A request that was never sent is sent elsewhere without
//! spending budget: it adds no work anywhere, and `attempts` bounds it anyway.

use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;

use crate::config::RetryConfig;
use crate::upstream::{ms_at, now_ms};

/// Seconds of traffic the budget looks back over.
const WINDOW_SECS: u64 = 10;

#[derive(Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_status: Vec<u16>,
    pub on_timeout: bool,
    pub max_body_buffer: u64,
    /// Shared by the pool's policy and the routes' own policies for it: a route's `retry` changes
    /// when a request is retried, not how much extra work the pool's backends take.
    budget: std::sync::Arc<RetryBudget>,
    stats: std::sync::Arc<super::ProxyStats>,
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig, stats: std::sync::Arc<super::ProxyStats>) -> RetryPolicy {
        RetryPolicy {
            attempts: config.attempts.max(1),
            on_status: config.on_status.clone(),
            on_timeout: config.on_timeout,
            max_body_buffer: config.max_body_buffer,
            budget: std::sync::Arc::new(RetryBudget::new(
                config.budget_percent,
                config.budget_min_per_second,
            )),
            stats,
        }
    }

    /// A route's policy for a pool: its own rules, the pool's budget.
    pub fn sharing_budget(config: &RetryConfig, pool: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            budget: pool.budget.clone(),
            ..RetryPolicy::new(config, pool.stats.clone())
        }
    }

    pub fn enabled(&self) -> bool {
        self.attempts > 1
    }

    /// Counts a new request, arrived at `at`, towards the budget.
    pub fn note_request(&self, at: std::time::Instant) {
        if self.enabled() {
            self.budget.deposit(ms_at(at) / 1000);
        }
    }

    /// Takes one retry of a request that was sent from the budget; false when it is spent.
    pub fn allow_retry(&self) -> bool {
        let allowed = self.budget.withdraw();
        if !allowed {
            self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("retry budget exhausted: failing the request instead of retrying");
        }
        allowed
    }

    pub fn retries_status(&self, status: u16) -> bool {
        !self.on_status.is_empty() && self.on_status.contains(&status)
    }
}

/// How far a failed attempt got, as the retry decision sees it: [`crate::upstream::Progress`]
/// without the body it may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Nothing reached the backend.
    Unsent,
    /// Sent; the connection ended (or carried no response head) before an answer.
    NoAnswer,
    /// Sent; no response head within `timeouts.response`.
    NoAnswerInTime,
    /// Not to be sent again (an answer alb cannot forward, the client's own body failed).
    Final,
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Send it to another backend as it is: it never left, so it adds no work anywhere and
    /// spends neither budget nor an attempt.
    Resend,
    /// Send it again to another backend: one more attempt, if the budget allows.
    Retry,
    /// Answer the client with this failure.
    Fail,
}

/// **What comes after a failed attempt is decided here and only here**, from how far it got and
/// nothing else: what never left goes elsewhere as it is; what was sent goes again only when it
/// may run twice (`replayable`: idempotent, its body kept), attempts remain (`more`), and, for a
/// timeout, `retry.on_timeout` allows it.
pub fn after_failure(
    reached: Reached,
    replayable: bool,
    more: bool,
    policy: &RetryPolicy,
) -> AfterFailure {
    let sent_again = match reached {
        Reached::Unsent if policy.enabled() => return AfterFailure::Resend,
        Reached::Unsent => true,
        Reached::NoAnswer => replayable,
        Reached::NoAnswerInTime => replayable && policy.on_timeout,
        Reached::Final => false,
    };
    if sent_again && more {
        AfterFailure::Retry
    } else {
        AfterFailure::Fail
    }
}

/// Whether a backend's answer with `status` is sent to another backend instead of the client
/// (`retry.on_status`): only a request that may run twice, with attempts and another backend
/// left. The budget is asked after.
pub fn retries_answer(
    status: u16,
    replayable: bool,
    more: bool,
    other_backend: bool,
    policy: &RetryPolicy,
) -> bool {
    more && replayable && other_backend && policy.retries_status(status)
}

pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Requests and retries over a sliding window of whole seconds, lock-free.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    floor: u64,
    requests: WindowedCount,
    retries: WindowedCount,
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            percent: u64::from(percent),
            floor: u64::from(min_per_second) * WINDOW_SECS,
            requests: WindowedCount::default(),
            retries: WindowedCount::default(),
        }
    }

    /// One request in `second` (of [`now_ms`]).
    pub fn deposit(&self, second: u64) {
        if self.percent > 0 {
            self.requests.add(second);
        }
    }

    /// One more retry, if the window's retries stay within its share of requests.
    pub fn withdraw(&self) -> bool {
        let second = now_ms() / 1000;
        let allowed = self.requests.sum(second) * self.percent / 100 + self.floor;
        if self.retries.sum(second) >= allowed {
            return false;
        }
        self.retries.add(second);
        true
    }
}

/// Events per second for the last [`WINDOW_SECS`] seconds: one slot per second, reused (and
/// cleared) when its second comes round again.
#[derive(Debug, Default)]
struct WindowedCount {
    counts: [AtomicU64; WINDOW_SECS as usize],
    /// The second each slot counts (plus one, so that zero means never used).
    seconds: [AtomicU64; WINDOW_SECS as usize],
}

// Relaxed throughout: the budget is a rate limiter, and a retry more or less under a race (two
// threads clearing a slot that comes round, say) does not matter; no other memory is published
// through it.
impl WindowedCount {
    fn add(&self, second: u64) {
        let slot = (second % WINDOW_SECS) as usize;
        let stamp = second + 1;
        if self.seconds[slot].load(Ordering::Relaxed) != stamp
            && self.seconds[slot].swap(stamp, Ordering::Relaxed) != stamp
        {
            self.counts[slot].store(0, Ordering::Relaxed);
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Events in the window ending with `second`.
    fn sum(&self, second: u64) -> u64 {
        let oldest = (second + 1).saturating_sub(WINDOW_SECS - 1);
        (0..WINDOW_SECS as usize)
            .filter(|&slot| self.seconds[slot].load(Ordering::Relaxed) >= oldest)
            .map(|slot| self.counts[slot].load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, on_timeout: bool, on_status: &[u16]) -> RetryPolicy {
        let config = RetryConfig {
            attempts,
            on_timeout,
            on_status: on_status.to_vec(),
            ..RetryConfig::default()
        };
        RetryPolicy::new(&config, std::sync::Arc::default())
    }

    #[test]
    fn what_follows_a_failed_attempt() {
        use AfterFailure::{Fail, Resend, Retry};
        use Reached::{Final, NoAnswer, NoAnswerInTime, Unsent};
        // (how far it got, replayable, more attempts, attempts, on_timeout) -> what follows
        let table = [
            // Never sent: elsewhere as it is, whatever the method or body, while retries are on.
            (Unsent, false, false, 3, false, Resend),
            (Unsent, true, true, 3, false, Resend),
            // Retries off (attempts = 1): nothing is sent twice, nor elsewhere.
            (Unsent, true, false, 1, false, Fail),
            (NoAnswer, true, false, 1, true, Fail),
            // Sent without an answer: again only if it may run twice and attempts remain.
            (NoAnswer, true, true, 3, false, Retry),
            (NoAnswer, false, true, 3, false, Fail),
            (NoAnswer, true, false, 3, false, Fail),
            // No answer in time: the same, and only with on_timeout.
            (NoAnswerInTime, true, true, 3, true, Retry),
            (NoAnswerInTime, true, true, 3, false, Fail),
            (NoAnswerInTime, false, true, 3, true, Fail),
            // Final: never again.
            (Final, true, true, 3, true, Fail),
        ];
        for (reached, replayable, more, attempts, on_timeout, expected) in table {
            let policy = policy(attempts, on_timeout, &[]);
            assert_eq!(
                after_failure(reached, replayable, more, &policy),
                expected,
                "{reached:?} replayable={replayable} more={more} attempts={attempts} \
                 on_timeout={on_timeout}"
            );
        }
    }

    #[test]
    fn an_answer_goes_elsewhere_only_when_listed_replayable_and_somewhere_is_left() {
        let listed = policy(3, false, &[503]);
        assert!(retries_answer(503, true, true, true, &listed));
        assert!(!retries_answer(500, true, true, true, &listed));
        assert!(!retries_answer(503, false, true, true, &listed));
        assert!(!retries_answer(503, true, false, true, &listed));
        assert!(!retries_answer(503, true, true, false, &listed));
        assert!(!retries_answer(
            503,
            true,
            true,
            true,
            &policy(3, false, &[])
        ));
    }

    #[test]
    fn retries_follow_the_share_of_requests_beyond_the_floor() {
        let budget = RetryBudget::new(20, 0);
        assert!(!budget.withdraw(), "no floor, no requests: no retry");
        for _ in 0..50 {
            budget.deposit(now_ms() / 1000);
        }
        // 50 requests at 20 % fund 10 retries.
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 10);
    }

    /// A dead backend refuses a burst as large as the concurrency at once: the budget covers a
    /// burst up to its share of the window, not a fixed handful.
    #[test]
    fn a_burst_within_the_share_of_the_window_is_covered() {
        let budget = RetryBudget::new(20, 10);
        for _ in 0..10_000 {
            budget.deposit(now_ms() / 1000);
        }
        let granted = (0..5_000).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 2_000 + 100);
    }

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let budget = RetryBudget::new(20, 3);
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 3 * WINDOW_SECS as usize);
    }

    #[test]
    fn the_window_forgets_old_seconds() {
        let count = WindowedCount::default();
        for second in 0..30 {
            count.add(second);
            count.add(second);
        }
        assert_eq!(count.sum(29), 2 * WINDOW_SECS);
        assert_eq!(count.sum(29 + WINDOW_SECS), 0);
        assert_eq!(count.sum(29 + 3), 2 * (WINDOW_SECS - 3));
    }
}
