//! Telling connections that the server stops: at once (SIGTERM), or with a last call for the
//! connections between requests (a handover, where the address stays served).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Tells idle connections to close and busy ones to close after their current response.
#[derive(Debug, Default)]
pub struct Shutdown {
    started: AtomicBool,
    notify: Notify,
    /// Set by [`Shutdown::start_with_last_call`]: how long a connection with no request under
    /// way may still bring one, answered with `connection: close`.
    last_call: OnceLock<Duration>,
}

impl Shutdown {
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Like [`Shutdown::start`], but a connection between requests (or accepted and not yet
    /// heard from) is not closed at once: for up to `grace` its next request is still served,
    /// with `connection: close`. For a handover, where the address stays served by the new
    /// process: closing an idle keep-alive connection at once races the client's next request,
    /// which would then fail although nothing went away.
    pub fn start_with_last_call(&self, grace: Duration) {
        let _ = self.last_call.set(grace);
        self.start();
    }

    pub(super) fn last_call(&self) -> Option<Duration> {
        self.last_call.get().copied()
    }

    /// Completes on [`Shutdown::start`]; enable it before checking [`Shutdown::is_started`].
    pub(super) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    pub(super) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}
