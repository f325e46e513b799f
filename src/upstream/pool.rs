//! Idle keep-alive connections to one backend.
//!
//! A connection is checked out for exactly one request and checked back in when that request's
//! response body has been read to its end, which is when HTTP/1.1 lets the connection carry the next
//! request. This is cheaper than a generic client pool: no pool key to hash, no task spawned per
//! request to wait for readiness, and the lock is per backend and held for a push or a pop only.

use std::sync::Mutex;

use hyper::client::conn::http1::SendRequest;

use crate::proxy::RequestBody;

/// The sending half of one upstream connection.
pub type UpstreamSender = SendRequest<RequestBody>;

/// Most idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// Most idle entries looked at per checkout, so a pool full of dead connections costs little.
const MAX_SCAN: usize = 8;

#[derive(Debug, Default)]
pub struct ConnectionPool {
    idle: Mutex<Vec<UpstreamSender>>,
}

impl ConnectionPool {
    /// Takes the most recently used idle connection that can send a request now. LIFO keeps a few
    /// connections hot and lets the rest age out on the backend's side.
    pub fn checkout(&self) -> Option<UpstreamSender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = idle.len();
        let stop = i.saturating_sub(MAX_SCAN);
        while i > stop {
            i -= 1;
            if idle[i].is_ready() {
                return Some(idle.swap_remove(i));
            }
            if idle[i].is_closed() {
                // The backend closed it while idle.
                drop(idle.swap_remove(i));
            }
            // Otherwise its connection task has not yet noticed the previous exchange ended: it
            // stays for the next checkout.
        }
        None
    }

    pub fn checkin(&self, sender: UpstreamSender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
