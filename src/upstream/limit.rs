//! A backend's `max_connections`: at most that many requests in flight to it, a bounded queue of
//! waiting requests behind them, and a deadline for waiting (HAProxy's server `maxconn` + queue).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("backend at its connection limit and its queue is full")]
    Full,
    #[error("waited {0:?} for a free connection to the backend")]
    Timeout(Duration),
}

#[derive(Debug)]
pub struct ConnectionLimit {
    max: u32,
    slots: Arc<Semaphore>,
    queue: usize,
    waiting: AtomicUsize,
}

impl ConnectionLimit {
    pub fn new(max: u32, queue: usize) -> ConnectionLimit {
        ConnectionLimit {
            max,
            slots: Arc::new(Semaphore::new(max as usize)),
            queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot for one request: at once if one is free, else after waiting in the queue. The
    /// wait may be cancelled at any point (a request deadline, a client gone): the place in the
    /// queue is held by a [`QueuePlace`], whose drop gives it back.
    pub async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, QueueError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let _place = QueuePlace::take(&self.waiting, self.queue).ok_or(QueueError::Full)?;
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(QueueError::Timeout(wait)),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// One request's place in a backend's queue. Every count of waiting requests is taken by
/// [`QueuePlace::take`] and given back by its `Drop`, and nowhere else, so a wait that is
/// cancelled (its future dropped mid-await) cannot leak a place.
struct QueuePlace<'a> {
    waiting: &'a AtomicUsize,
}

impl<'a> QueuePlace<'a> {
    /// A place if fewer than `queue` requests wait. Relaxed: the count bounds the queue
    /// approximately; a few extra waiters under a race are harmless.
    fn take(waiting: &'a AtomicUsize, queue: usize) -> Option<QueuePlace<'a>> {
        let place = QueuePlace { waiting };
        (waiting.fetch_add(1, Ordering::Relaxed) < queue).then_some(place)
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that gives up while queued (its deadline passed, its client left) must give its
    /// place back: two such requests used to fill a queue of two for good.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_gives_its_place_back() {
        let limit = ConnectionLimit::new(1, 2);
        let _busy = limit.acquire(Duration::from_secs(1)).await.unwrap();
        for _ in 0..5 {
            let waiting = limit.acquire(Duration::from_secs(60));
            let cancelled = tokio::time::timeout(Duration::from_millis(10), waiting).await;
            assert!(cancelled.is_err());
            assert_eq!(limit.waiting(), 0);
        }
        let queued = limit.acquire(Duration::from_millis(50)).await;
        assert_eq!(
            queued.unwrap_err(),
            QueueError::Timeout(Duration::from_millis(50))
        );
        assert_eq!(limit.waiting(), 0);
    }
}
