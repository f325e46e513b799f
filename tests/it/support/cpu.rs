//! The machine's CPU, shared by the tests that run side by side in this one process. A few tests
//! assert how alb behaves under load it generates itself (the shares of a fast and a slow
//! backend, failures while backends die): they run alone, since any other test running beside
//! them changes the latencies they measure. Every other async test holds a shared claim while it
//! runs. Each test takes exactly one claim, first thing, so claims cannot deadlock.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static CPU: RwLock<()> = RwLock::const_new(());

/// A claim held beside other tests.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    CPU.read().await
}

/// The CPU to this test alone, once the tests running now are done.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    CPU.write().await
}
