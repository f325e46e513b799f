//! The Redis that alb replicas share (`[shared_state]`): one connection, whether it answers, and
//! the one script that takes tokens from a route's bucket there.
//!
//! A request never waits for the connection to be made and never waits longer than the budget
//! (`shared_state.timeout`) for an answer. While the store is marked down, callers do not ask it
//! at all and decide locally (`proxy::rate_limit`). A broken connection or an error marks it down
//! at once; answers later than the budget do after [`TIMEOUTS_TO_DOWN`] in a row (one slow
//! answer in a busy moment costs one local decision, not a reconnection). Marking it down logs
//! once and wakes a background task that reconnects with a growing pause (50 ms to 1 s) until
//! Redis answers a PING within the budget again, which is logged once too. So a slow or
//! partitioned Redis costs one budget to the few requests in flight at that moment, not to every
//! request while it lasts.
//!
//! The connection is the `redis` crate's multiplexed one: requests of every worker thread are
//! pipelined on it (no pool, no lock), and a clone of it is a handle. alb keeps it itself rather
//! than through the crate's `ConnectionManager`, whose reconnection runs inside the next request
//! and hides whether the store answers: the gauge and the fallback need to know.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use crate::config::SharedStateConfig;

/// GCRA over Redis: takes up to `ARGV[3]` tokens from the bucket `KEYS[1]`, whose value is its
/// theoretical arrival time (TAT) in microseconds of Redis's own clock (`TIME`, so that the
/// replicas' clocks do not matter), for a rate of one token per `ARGV[1]` µs and a burst whose
/// extra tokens span `ARGV[2]` µs. Returns `{granted, wait}`: the tokens taken (as many as the
/// bucket holds, up to the number asked) and, when none, the µs until one would be. The key
/// expires when the bucket is full again, so idle keys cost Redis nothing. Microseconds keep
/// every number exact in Lua's doubles (2^53 µs is 285 years); `%.0f` writes them without an
/// exponent.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local interval = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local ahead = tat - now
if ahead > slack then
  return {0, ahead - slack}
end
local granted = math.min(want, math.floor((slack - ahead) / interval) + 1)
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1)
return {granted, 0}
";

/// Longest a (re)connection may take, TLS handshake and `SCRIPT LOAD` included. Not on any
/// request's path: only the background task waits for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Answers later than the budget, in a row, that mark the store down.
pub const TIMEOUTS_TO_DOWN: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// What the store did, kept across reloads (in `ProxyStats`) for the metrics.
#[derive(Debug, Default)]
pub struct SharedStateStats {
    /// Whether the store answers now (`alb_shared_state_up`).
    pub up: AtomicBool,
    /// Scripts run in Redis (each one a round trip).
    pub round_trips: AtomicU64,
    /// Decisions made locally, by [`Fallback`].
    fallbacks: [AtomicU64; Fallback::ALL.len()],
}

impl SharedStateStats {
    pub fn fallbacks(&self, why: Fallback) -> u64 {
        self.fallbacks[why as usize].load(Ordering::Relaxed)
    }

    fn fell_back(&self, why: Fallback) {
        self.fallbacks[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a decision was made locally (label `reason` of `alb_shared_state_fallbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The store was marked down: not asked.
    Unavailable,
    /// No answer within the budget.
    Timeout,
    /// An error: the connection broke, or Redis refused the script.
    Error,
}

impl Fallback {
    pub const ALL: [Fallback; 3] = [Fallback::Unavailable, Fallback::Timeout, Fallback::Error];

    pub fn name(self) -> &'static str {
        match self {
            Fallback::Unavailable => "unavailable",
            Fallback::Timeout => "timeout",
            Fallback::Error => "error",
        }
    }
}

/// Tokens taken from a bucket in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// How many (0: the bucket is empty).
    pub tokens: u32,
    /// When none: how long until one would be.
    pub wait: Duration,
}

/// The store of one `[shared_state]`; see the module docs. Dropping it stops its background task
/// and closes the connection.
pub struct SharedStore {
    /// None for a URL the client refused (the config checks it first): never up.
    shared: Option<Arc<Inner>>,
    stats: Arc<SharedStateStats>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    client: redis::Client,
    /// Some while the store answers.
    connection: ArcSwapOption<MultiplexedConnection>,
    /// Woken when a request marks the store down.
    lost: tokio::sync::Notify,
    /// Answers later than the budget since the last one in time.
    late: AtomicU32,
    budget: Duration,
    /// `redis://host:port/db`, no credentials.
    display: String,
    script: redis::Script,
    stats: Arc<SharedStateStats>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("redis", &self.shared.as_ref().map(|s| &s.display))
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// The store for `config`, down until its background task has connected (started here on
    /// the current tokio runtime; without one the store stays down and every decision is local).
    pub fn start(config: &SharedStateConfig, stats: Arc<SharedStateStats>) -> SharedStore {
        stats.up.store(false, Ordering::Relaxed);
        if config.redis.starts_with("rediss:") {
            // The crate builds its TLS client with the process's default provider: make it
            // the one alb's own TLS uses (a no-op when one is installed already).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = match redis::Client::open(config.redis.as_str()) {
            Ok(client) => client,
            Err(e) => {
                // The config checked the URL; should it still be refused, stay local.
                tracing::error!(
                    "shared_state.redis {}: {e}; rate limits stay local",
                    config.display
                );
                return SharedStore {
                    shared: None,
                    stats,
                    task: None,
                };
            }
        };
        let shared = Arc::new(Inner {
            client,
            connection: ArcSwapOption::empty(),
            lost: tokio::sync::Notify::new(),
            late: AtomicU32::new(0),
            budget: config.timeout,
            display: config.display.clone(),
            script: redis::Script::new(TAKE),
            stats: stats.clone(),
        });
        let task = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn(keep_connected(shared.clone()))),
            Err(_) => {
                tracing::warn!("no runtime to connect to Redis from: rate limits stay local");
                None
            }
        };
        SharedStore {
            shared: Some(shared),
            stats,
            task,
        }
    }

    /// Whether the store answers: when not, callers decide locally without asking (and count
    /// it with [`SharedStore::unavailable`]).
    pub fn is_up(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.connection.load().is_some())
    }

    /// Counts a decision made locally because the store was down.
    pub fn unavailable(&self) {
        self.stats.fell_back(Fallback::Unavailable);
    }

    /// Takes up to `want` tokens from the bucket `key` (one token per `interval`, the burst's
    /// extra tokens spanning `slack`). `None` when the store did not answer within the budget:
    /// the caller decides locally (counted here, and the store marked down).
    pub async fn take(
        &self,
        key: &[u8],
        interval: Duration,
        slack: Duration,
        want: u32,
    ) -> Option<Grant> {
        let Some(inner) = &self.shared else {
            self.unavailable();
            return None;
        };
        let Some(current) = inner.connection.load_full() else {
            self.unavailable();
            return None;
        };
        let mut connection = MultiplexedConnection::clone(&current);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut invocation = inner.script.key(key);
        invocation
            .arg(micros(interval))
            .arg(u64::try_from(slack.as_micros()).unwrap_or(u64::MAX))
            .arg(want.max(1));
        inner.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(
            inner.budget,
            invocation.invoke_async::<(u32, u64)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok((tokens, wait))) => {
                inner.late.store(0, Ordering::Relaxed);
                Some(Grant {
                    tokens,
                    wait: Duration::from_micros(wait),
                })
            }
            Ok(Err(e)) if !e.is_timeout() => {
                inner.stats.fell_back(Fallback::Error);
                inner.lose(&current, &e.to_string());
                None
            }
            // The connection's own response timeout (set to the budget) or this one.
            Ok(Err(_)) | Err(_) => {
                inner.stats.fell_back(Fallback::Timeout);
                if inner.late.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_TO_DOWN {
                    let why = format!("{TIMEOUTS_TO_DOWN} answers later than {:?}", inner.budget);
                    inner.lose(&current, &why);
                }
                None
            }
        }
    }
}

impl Inner {
    /// Marks the store down when `failed` is still its connection (another request may have
    /// done it, or the task reconnected since): logged once, and the task woken to reconnect.
    fn lose(&self, failed: &Arc<MultiplexedConnection>, why: &str) {
        let previous = self.connection.compare_and_swap(failed, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, failed)) {
            self.stats.up.store(false, Ordering::Relaxed);
            tracing::warn!(
                "shared state: Redis at {} failed ({why}); route rate limits fall back to each \
                 replica's share until it answers again",
                self.display
            );
            self.lost.notify_one();
        }
    }

    /// A new connection with the script loaded, once it answers a PING within the budget.
    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.budget));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Loaded now, so that the first EVALSHA of a request does not meet NOSCRIPT (Redis
        // forgets scripts when it restarts).
        self.script
            .prepare_invoke()
            .load_async(&mut connection)
            .await?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        Ok(connection)
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The background task: connects, then waits until a request loses the connection, and again;
/// between failed attempts a pause that doubles from 50 ms to 1 s.
async fn keep_connected(inner: Arc<Inner>) {
    let mut pause = FIRST_PAUSE;
    // Whether the store was said to be down: each change is logged once (a failure seen by a
    // request is logged by `lose`; only the failures at start are left to this task).
    let mut said_down = false;
    loop {
        if inner.connection.load().is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, inner.connect()).await {
                Ok(Ok(connection)) => {
                    inner.late.store(0, Ordering::Relaxed);
                    inner.connection.store(Some(Arc::new(connection)));
                    inner.stats.up.store(true, Ordering::Relaxed);
                    tracing::info!(
                        "shared state: Redis at {} answers; route rate limits are shared",
                        inner.display
                    );
                    pause = FIRST_PAUSE;
                }
                failed => {
                    if !said_down {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no connection within {CONNECT_TIMEOUT:?}"),
                        };
                        tracing::warn!(
                            "shared state: Redis at {} does not answer ({why}); route rate \
                             limits fall back to each replica's share until it does",
                            inner.display
                        );
                        said_down = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
            }
        }
        inner.lost.notified().await;
        // `lose` logged the failure already.
        said_down = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_names_are_the_metric_labels() {
        let names: Vec<_> = Fallback::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["unavailable", "timeout", "error"]);
        for (i, f) in Fallback::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }

    #[tokio::test]
    async fn a_store_nobody_answers_is_down_and_never_waits() {
        // A port where connects are refused: the store never comes up.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let config = SharedStateConfig {
            redis: format!("redis://127.0.0.1:{port}"),
            display: format!("redis://127.0.0.1:{port}/0"),
            timeout: Duration::from_millis(10),
            replicas: 2,
            prefix: "alb".into(),
            lease: None,
        };
        let stats = Arc::new(SharedStateStats::default());
        let store = SharedStore::start(&config, stats.clone());
        assert!(!store.is_up());
        let started = std::time::Instant::now();
        let grant = store
            .take(b"k", Duration::from_millis(5), Duration::ZERO, 1)
            .await;
        assert_eq!(grant, None);
        assert!(started.elapsed() < Duration::from_millis(10));
        assert_eq!(stats.fallbacks(Fallback::Unavailable), 1);
        assert!(!stats.up.load(Ordering::Relaxed));
    }
}
