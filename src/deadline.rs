//! A deadline that is cheap to move later: one timer for the life of a connection, re-armed only
//! when it fires early. Setting a deadline costs a clock read, not a timer-wheel update, so a
//! timeout per request on a busy keep-alive connection is nearly free (the wheel is touched about
//! once per timeout period instead of twice per request).
//!
//! **Every wait on a peer has a deadline, and this is how it is kept.** Each client connection
//! and each upstream connection owns one `Deadline`, set for whichever wait comes next (they
//! never overlap): a request head (`client_header`, `keepalive_idle`), a write to either peer
//! (`timeouts.write`, moved on by every byte taken, see `http1::write_all_within`), a backend's
//! response head (`timeouts.response`). A body being read, in either direction, has its own
//! (`client_body_idle`, `upstream_idle`). Writes and body reads use the idle clock
//! ([`Deadline::waited_too_long`], [`Deadline::progress`]): it starts when alb starts waiting and
//! stops when the peer moves, so that time spent waiting on the other side is never counted
//! against this one. Connects, health
//! probes and the final linger use a plain `tokio::time::timeout`: they are one-off waits.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// No deadline until the first [`Deadline::set`]: making one reads no clock and arms no timer.
#[derive(Debug, Default)]
pub struct Deadline {
    /// Armed with `at` (or an earlier instant) the first time a deadline is set.
    sleep: Option<Pin<Box<Sleep>>>,
    at: Option<Instant>,
    /// An idle clock runs (see [`Deadline::waited_too_long`]).
    idling: bool,
}

impl Deadline {
    /// Sets the deadline `limit` from now, replacing any earlier one.
    pub fn set(&mut self, limit: Duration) {
        self.idling = false;
        self.arm(limit);
    }

    /// For a wait that counts only while alb waits (a write, the next piece of a body): starts
    /// the clock the first time it is called since [`Deadline::progress`], then says whether
    /// `limit` has passed. A wait that is over at once reads no clock at all.
    pub fn waited_too_long(&mut self, limit: Duration, cx: &mut Context<'_>) -> bool {
        if !std::mem::replace(&mut self.idling, true) {
            self.arm(limit);
        }
        self.poll_passed(cx)
    }

    /// The peer moved: the idle clock stops until alb has to wait again.
    pub fn progress(&mut self) {
        self.idling = false;
    }

    fn arm(&mut self, limit: Duration) {
        let at = Instant::now() + limit;
        self.at = Some(at);
        match self.sleep.as_mut() {
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            // Moved only when it must fire sooner; a later deadline is checked when it fires.
            Some(sleep) if at < sleep.deadline() => sleep.as_mut().reset(at),
            Some(_) => {}
        }
    }

    /// Whether the deadline has passed; if not, the task is woken when it might have.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(sleep), Some(at)) = (self.sleep.as_mut(), self.at) else {
            return false;
        };
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= at {
                return true;
            }
            sleep.as_mut().reset(at);
        }
    }
}
