//! Statistics for memgov: the home of allocation-size histograms, snapshot diffs for tests, leak
//! detection and exporters.
//!
//! This crate is a skeleton for now. The core figures (live, peak and running totals per
//! component) live in `alloc-core` and are re-exported by the `memgov` facade; what is planned
//! here builds on them:
//!
//! * per-component allocation-size histograms recorded without allocating on the allocation path;
//! * `snapshot()` / `diff()` and assertion macros for tests;
//! * a bounded history of samples and a leak detector;
//! * table, JSON and Prometheus exporters, and an optional HTTP endpoint.
//!
//! Today it offers one thing: the difference between two core snapshots.
//!
//! ```
//! let before = alloc_core::snapshot();
//! let after = alloc_core::snapshot();
//! let d = alloc_stats::live_delta(&before, &after, "unscoped");
//! # let _ = d;
//! ```

/// Change in live bytes of the component called `name` between two snapshots (0 if absent from
/// either).
pub fn live_delta(before: &alloc_core::Snapshot, after: &alloc_core::Snapshot, name: &str) -> i64 {
    let live = |s: &alloc_core::Snapshot| s.component(name).map_or(0, |c| c.live_bytes as i64);
    live(after) - live(before)
}
