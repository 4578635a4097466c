//! Waiting for memgov's monitor thread, for tests of what it does on its own.

use std::thread;
use std::time::{Duration, Instant};

/// How long a wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Polls `done` every 2 ms until it holds; panics after [`PATIENCE`].
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Hands this thread's credit back and waits until the monitor has sampled every budget twice
/// since (its round counter moves at the start of a round: two moves mean one whole round, with
/// its level changes delivered, began and ended after the credit came back).
pub fn settle() {
    memgov::flush_thread();
    let seen = memgov::monitor_stats().samples;
    wait_until("two monitor samples", || {
        memgov::monitor_stats().samples >= seen + 2
    });
}
