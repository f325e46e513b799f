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

    /// A slot for one request: at once if one is free, else after waiting in the queue.
    pub async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, QueueError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // Relaxed: the count bounds the queue approximately; a few extra waiters under a race
        // are harmless.
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(QueueError::Full);
        }
        let acquired = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match acquired {
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
