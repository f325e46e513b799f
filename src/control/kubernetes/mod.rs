//! Kubernetes discovery: a Service's endpoints read from its EndpointSlices through the API
//! server, which carry what DNS cannot (ready, serving and terminating, the zone of each
//! endpoint), and change as soon as a pod does rather than when a TTL runs out.
//!
//! One task per Service lists its slices (label `kubernetes.io/service-name`), then watches them
//! from the list's resourceVersion, and publishes the merged endpoint list after every change.
//! What it does when things go wrong is what keeps a pool usable:
//! - a watch that ends (the API server's `timeoutSeconds`, a restart, a dropped connection)
//!   resumes from the last resourceVersion seen (bookmarks keep it fresh): no list, no gap;
//! - a resourceVersion too old for the API server (410 Gone) means events were missed: the task
//!   lists again and the list replaces every slice;
//! - any failure keeps the last published list (an API server outage never empties a pool) and
//!   is retried with a bounded, jittered exponential backoff (so a fleet of albs does not
//!   hammer a recovering API server in step), warned once per streak of failures.
//!
//! `client` speaks HTTP to the API server; `slices` reads EndpointSlices and merges them.

mod client;
mod slices;

use std::fmt::Write as _;
use std::time::Duration;

use tokio::sync::watch as channel;
use tokio::time::Instant;

pub use client::{ApiServer, KubeError};
pub use slices::{Endpoint, MAX_ENDPOINTS, PortRef, ServiceRef};

use slices::{List, Slices, WatchEvent};

/// Largest list answer: a Service at [`MAX_ENDPOINTS`] is ~2 MiB of slices with their
/// managedFields.
const MAX_LIST: usize = 16 * 1024 * 1024;
/// Largest watch event: one slice (at most 1000 endpoints by the API) is well under 1 MiB.
const MAX_LINE: usize = 4 * 1024 * 1024;
/// A whole list, head and body.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
/// The API server sends a bookmark about once a minute to a watch that asks for them; two
/// missed mean the connection is gone (half-open after the API server's node died), and
/// resuming costs one request.
const WATCH_IDLE: Duration = Duration::from_secs(130);
/// A watch asks the API server to end it after 5 to 6 minutes (spread, as client-go does, so
/// that a fleet's watches do not all come back at once), and gives it this long more.
const WATCH_SECONDS: u64 = 300;
const WATCH_GRACE: Duration = Duration::from_secs(30);
/// A watch that ends sooner than this without an event did not work: the next is backed off.
const WATCH_PRODUCTIVE: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest resourceVersion kept: it goes into every watch's URL.
const MAX_RESOURCE_VERSION: usize = 256;

/// Watches every EndpointSlice of the Service (label selector
/// `kubernetes.io/service-name=SERVICE`), merged across slices, and publishes the full merged
/// endpoint list (sorted by address, one entry per address) after each change; `None` until the
/// first successful list. Runs until the receiver is dropped or the task aborted.
pub fn watch(
    api: ApiServer,
    service: ServiceRef,
) -> (
    channel::Receiver<Option<Vec<Endpoint>>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = channel::channel(None);
    let task = tokio::spawn(async move {
        let mut watcher = Watcher::new(&api, &service, &tx);
        tokio::select! {
            _ = tx.closed() => {}
            _ = watcher.run() => {}
        }
    });
    (rx, task)
}

/// One Service's watch: its slices, where it is in their history, and how it is doing.
struct Watcher<'a> {
    api: &'a ApiServer,
    service: &'a ServiceRef,
    tx: &'a channel::Sender<Option<Vec<Endpoint>>>,
    /// The list request's path and query; a watch adds to it.
    path: String,
    slices: Slices,
    /// The last resourceVersion seen; None until a list succeeded, and after a 410.
    version: Option<String>,
    /// Failed or unproductive attempts in a row; the backoff grows with it.
    attempts: u32,
    /// In a streak of failures, warned at its start.
    failing: bool,
    /// (endpoints, ready) last logged.
    counted: Option<(usize, usize)>,
}

/// How one watch ended.
enum WatchEnd {
    /// The API server closed it: resume from the last resourceVersion.
    Closed,
    /// Its resourceVersion expired: list again.
    Gone,
}

impl<'a> Watcher<'a> {
    fn new(
        api: &'a ApiServer,
        service: &'a ServiceRef,
        tx: &'a channel::Sender<Option<Vec<Endpoint>>>,
    ) -> Watcher<'a> {
        // Namespace and Service are DNS labels (checked by ServiceRef's parser), safe in a path
        // as they are; the selector's `/` and `=` are encoded.
        let path = format!(
            "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices\
             ?labelSelector=kubernetes.io%2Fservice-name%3D{}",
            encode(&service.namespace),
            encode(&service.service)
        );
        Watcher {
            api,
            service,
            tx,
            path,
            slices: Slices::new(service),
            version: None,
            attempts: 0,
            failing: false,
            counted: None,
        }
    }

    async fn run(&mut self) {
        loop {
            if self.version.is_none() {
                match self.list().await {
                    Ok(()) => self.recovered(),
                    Err(error) => {
                        self.failed("list", &error);
                        self.back_off().await;
                        continue;
                    }
                }
            }
            let started = Instant::now();
            let mut events = 0;
            let ended = self.watch_once(&mut events).await;
            let productive = events > 0 || started.elapsed() >= WATCH_PRODUCTIVE;
            if productive {
                self.attempts = 0;
            }
            match ended {
                Ok(WatchEnd::Closed) if productive => self.recovered(),
                Ok(WatchEnd::Closed) => {
                    tracing::debug!(service = %self.service, "kubernetes: the watch ended at once");
                    self.back_off().await;
                }
                Ok(WatchEnd::Gone) => {
                    tracing::info!(
                        service = %self.service,
                        "kubernetes: resourceVersion expired, listing the slices again"
                    );
                    self.version = None;
                    if !productive {
                        self.back_off().await;
                    }
                }
                Err(error) => {
                    self.failed("watch", &error);
                    self.back_off().await;
                }
            }
        }
    }

    async fn list(&mut self) -> Result<(), KubeError> {
        let read = async {
            let answer = self.api.get(&self.path).await?;
            answer.read_all(MAX_LIST, LIST_TIMEOUT).await
        };
        let body = tokio::time::timeout(LIST_TIMEOUT, read)
            .await
            .map_err(|_| KubeError::Timeout(LIST_TIMEOUT))??;
        let list: List = serde_json::from_slice(&body)?;
        let version = list.resource_version().map(str::to_string);
        self.slices.replace_all(list.items.unwrap_or_default());
        self.publish();
        // A list without a resourceVersion cannot be watched from: the next round lists again.
        self.version = version.filter(|v| !v.is_empty() && v.len() <= MAX_RESOURCE_VERSION);
        Ok(())
    }

    /// One watch from the current resourceVersion, applying its events as they come.
    async fn watch_once(&mut self, events: &mut u32) -> Result<WatchEnd, KubeError> {
        let Some(version) = self.version.as_deref() else {
            return Ok(WatchEnd::Gone);
        };
        let seconds = WATCH_SECONDS + fastrand::u64(0..=WATCH_SECONDS / 5);
        let path = format!(
            "{}&watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={seconds}",
            self.path,
            encode(version)
        );
        let deadline = Instant::now() + Duration::from_secs(seconds) + WATCH_GRACE;
        // The head comes within the client's own deadline.
        let mut lines = match self.api.get(&path).await {
            Ok(answer) => answer.lines(MAX_LINE, WATCH_IDLE),
            Err(KubeError::Gone(_)) => return Ok(WatchEnd::Gone),
            Err(error) => return Err(error),
        };
        loop {
            let line = match tokio::time::timeout_at(deadline, lines.next()).await {
                // Past its own timeoutSeconds and grace: the API server forgot to end it.
                Err(_) => return Ok(WatchEnd::Closed),
                Ok(Ok(None)) => return Ok(WatchEnd::Closed),
                Ok(Ok(Some(line))) => line,
                Ok(Err(error)) => return Err(error),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event: WatchEvent = serde_json::from_slice(&line)?;
            // An ERROR is no sign the watch works: an API server answering every watch with
            // one must meet a growing backoff.
            if event.kind != "ERROR" {
                *events += 1;
            }
            if let Some(end) = self.apply(event)? {
                return Ok(end);
            }
            if !lines.has_line() {
                self.publish();
            }
        }
    }

    /// Applies one event; Some when it ends the watch.
    fn apply(&mut self, event: WatchEvent) -> Result<Option<WatchEnd>, KubeError> {
        let object = event.object;
        match event.kind.as_str() {
            "ERROR" => {
                let message = object.message.unwrap_or_default();
                return match object.code {
                    Some(410) => Ok(Some(WatchEnd::Gone)),
                    code => Err(KubeError::Status {
                        status: code
                            .and_then(|c| http::StatusCode::from_u16(c).ok())
                            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
                        message,
                    }),
                };
            }
            kind @ ("ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK") => {
                if let Some(version) = object
                    .resource_version()
                    .filter(|v| !v.is_empty() && v.len() <= MAX_RESOURCE_VERSION)
                {
                    self.version = Some(version.to_string());
                }
                match kind {
                    "ADDED" | "MODIFIED" => self.slices.upsert(object),
                    "DELETED" => {
                        if let Some(name) = object.name() {
                            self.slices.remove(name);
                        }
                    }
                    _ => {}
                }
            }
            other => {
                tracing::debug!(service = %self.service, event = other, "kubernetes: unknown watch event ignored");
            }
        }
        Ok(None)
    }

    /// Sends the merged list if it changed; logs when the number of endpoints did.
    fn publish(&mut self) {
        let merged = self.slices.merged();
        let counts = (merged.len(), merged.iter().filter(|e| e.ready).count());
        if self.counted != Some(counts) {
            self.counted = Some(counts);
            tracing::info!(
                service = %self.service, endpoints = counts.0, ready = counts.1,
                "kubernetes: endpoints changed"
            );
        }
        self.tx.send_if_modified(|current| {
            if current.as_ref() == Some(&merged) {
                return false;
            }
            *current = Some(merged);
            true
        });
    }

    fn failed(&mut self, what: &str, error: &KubeError) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(
                service = %self.service, %error,
                "kubernetes: {what} failed; keeping the last endpoints and retrying"
            );
        } else {
            tracing::debug!(service = %self.service, %error, "kubernetes: {what} failed again");
        }
    }

    fn recovered(&mut self) {
        if std::mem::replace(&mut self.failing, false) {
            tracing::info!(service = %self.service, "kubernetes: watching the slices again");
        }
    }

    async fn back_off(&mut self) {
        let delay = backoff(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// The wait before attempt `attempts + 1`: doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`],
/// drawn from its upper half.
fn backoff(attempts: u32) -> Duration {
    let full = BACKOFF_MIN
        .saturating_mul(1u32 << attempts.min(16))
        .min(BACKOFF_MAX);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Percent-encodes all but RFC 3986's unreserved characters: a resourceVersion is opaque, and
/// an API server must not be able to add parameters to alb's next request through it.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds() {
        for attempts in [0, 1, 5, 6, 40, u32::MAX] {
            let full = BACKOFF_MIN
                .saturating_mul(1 << attempts.min(16))
                .min(BACKOFF_MAX);
            for _ in 0..100 {
                let delay = backoff(attempts);
                assert!(delay >= full / 2 && delay <= full, "{attempts}: {delay:?}");
            }
        }
        assert!(backoff(0) <= BACKOFF_MIN);
        assert!(backoff(100) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn resource_versions_cannot_add_parameters() {
        assert_eq!(encode("12345"), "12345");
        assert_eq!(encode("1&watch=0 x"), "1%26watch%3D0%20x");
    }
}
