//! The async runtime alb runs on, sized to the cores it may use.
//!
//! One core (`workers = 1`, or a process pinned to one CPU): a current-thread runtime, which has no
//! work stealing, no cross-thread wake-ups and no idle-worker parking, the cheapest way to run a
//! proxy on one core. More cores: a multi-thread runtime with one worker per core.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Builds the runtime for `workers` threads; 0 means one per CPU this process may run on (which
/// follows `taskset`/cgroup limits).
pub fn build(workers: usize) -> io::Result<Runtime> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if workers == 1 {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}
