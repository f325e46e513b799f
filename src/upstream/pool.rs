//! Idle keep-alive connections to one backend.
//!
//! A connection is checked out for exactly one request and checked back in when that request's
//! response body has been read to its end, which is when HTTP/1.1 lets the connection carry the next
//! request. This is cheaper than a generic client pool: no pool key to hash, no task per
//! connection, and the lock is per backend and held for a push or a pop only.

use std::sync::Mutex;

use super::UpstreamConn;

/// Most idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// Most idle entries looked at per checkout, so a pool full of dead connections costs little.
const MAX_SCAN: usize = 8;

#[derive(Debug, Default)]
pub struct ConnectionPool {
    idle: Mutex<Vec<UpstreamConn>>,
}

impl ConnectionPool {
    /// Takes the most recently used idle connection that is still open. LIFO keeps a few
    /// connections hot and lets the rest age out on the backend's side. `certain`: look at the
    /// socket itself, not only at what the reactor reported (see [`UpstreamConn::is_closed_now`]).
    pub fn checkout(&self, certain: bool) -> Option<UpstreamConn> {
        for _ in 0..MAX_SCAN {
            // Popped under the lock, looked at outside it: the peek is a system call.
            let mut conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            let closed = if certain {
                conn.is_closed_now()
            } else {
                conn.is_stale()
            };
            if !closed {
                return Some(conn);
            }
            // The backend closed it while idle: dropped here.
        }
        None
    }

    pub fn checkin(&self, mut conn: UpstreamConn) {
        conn.shed_buffer();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
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
