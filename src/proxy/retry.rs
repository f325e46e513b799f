//! When a failed attempt may be sent to another backend, and how many retries the pool can take.
//!
//! Safety first: a request is sent again only if that cannot run it twice against the client's
//! intent. Any request may be retried when it provably never left (connect failure, or hyper
//! handed it back unsent). An idempotent request (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) may also
//! be retried after it was sent, if its body was empty or small enough to be kept.
//!
//! The budget keeps retries to a share of recent traffic: every request deposits
//! `budget_percent`/100 of a token, every retry takes one whole token, and at the start of each
//! second the bucket is topped up to `budget_min_per_second` so that quiet services can still
//! retry. Savings are capped (at the floor, or [`BURST`] tokens) so a long calm spell cannot fund a
//! retry storm.

use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;

use crate::config::RetryConfig;
use crate::upstream::now_ms;

/// Most whole tokens the budget saves up beyond its per-second floor.
const BURST: u64 = 10;
const MILLI: u64 = 1000;

#[derive(Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_status: Vec<u16>,
    pub on_timeout: bool,
    pub max_body_buffer: u64,
    budget: RetryBudget,
    stats: std::sync::Arc<super::ProxyStats>,
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig, stats: std::sync::Arc<super::ProxyStats>) -> RetryPolicy {
        RetryPolicy {
            attempts: config.attempts.max(1),
            on_status: config.on_status.clone(),
            on_timeout: config.on_timeout,
            max_body_buffer: config.max_body_buffer,
            budget: RetryBudget::new(config.budget_percent, config.budget_min_per_second),
            stats,
        }
    }

    pub fn enabled(&self) -> bool {
        self.attempts > 1
    }

    /// Counts a new request towards the budget.
    pub fn note_request(&self) {
        if self.enabled() {
            self.budget.deposit();
        }
    }

    /// Takes one retry from the budget; false when it is spent.
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

pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A token bucket in thousandths of a token, lock-free.
#[derive(Debug)]
pub struct RetryBudget {
    deposit: u64,
    floor: u64,
    cap: u64,
    tokens: AtomicU64,
    second: AtomicU64,
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32) -> RetryBudget {
        let floor = u64::from(min_per_second) * MILLI;
        RetryBudget {
            deposit: u64::from(percent) * MILLI / 100,
            floor,
            cap: floor.max(BURST * MILLI),
            tokens: AtomicU64::new(floor),
            second: AtomicU64::new(now_ms() / 1000),
        }
    }

    // Relaxed throughout: the bucket is a rate limiter, and a retry more or less under a race
    // does not matter; no other memory is published through it.
    pub fn deposit(&self) {
        if self.deposit == 0 {
            return;
        }
        let after = self.tokens.fetch_add(self.deposit, Ordering::Relaxed) + self.deposit;
        if after > self.cap {
            self.tokens.fetch_min(self.cap, Ordering::Relaxed);
        }
    }

    pub fn withdraw(&self) -> bool {
        let second = now_ms() / 1000;
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.tokens.fetch_max(self.floor, Ordering::Relaxed);
        }
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(MILLI)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_share_of_requests_beyond_the_floor() {
        let budget = RetryBudget::new(20, 0);
        assert!(!budget.withdraw(), "no floor, no requests: no retry");
        for _ in 0..50 {
            budget.deposit();
        }
        // 50 requests at 20 % fund 10 retries.
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn savings_are_capped() {
        let budget = RetryBudget::new(100, 0);
        for _ in 0..10_000 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted as u64, BURST);
    }

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let budget = RetryBudget::new(20, 3);
        let granted = (0..10).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 3);
    }
}
