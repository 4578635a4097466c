//! Statistics for memgov beyond the core figures: snapshots and diffs for tests, assertion macros,
//! and exporters.
//!
//! * [`snapshot`] / [`StatsSnapshot::diff`]: what changed per component while some code ran.
//! * [`assert_no_leaks!`], [`assert_max_live!`], [`assert_allocations!`]: dhat-style assertions
//!   whose failure messages show the figures.
//! * [`to_table`], [`to_json`], [`to_prometheus`]: the figures for logs and dashboards.
//! * [`start_history`] / [`history()`]: a bounded ring of samples taken by the monitor thread;
//!   [`detect_leaks`]: steady growth found by a least-squares fit; [`health()`]: one call that
//!   says how memory is doing, with recommendations.
//!
//! * `http` (feature `http`): `GET /metrics`, `GET /memory`, `GET /memory/health`,
//!   `POST /memory/compact` on a thread of its own.
//!
//! * [`size_histogram`] / [`realloc_histogram`]: allocation sizes per component (after
//!   [`alloc_core::set_histograms`]), merged into hdrhistogram for percentiles.
//!
//! ```
//! # #[global_allocator]
//! # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
//! let before = alloc_stats::snapshot();
//! {
//!     let _scope = alloc_core::component_scope("render");
//!     let page = "<p>".repeat(100);
//!     drop(page);
//! }
//! let d = before.diff();
//! alloc_stats::assert_no_leaks!(d, "render");
//! alloc_stats::assert_allocations!(d, "render", exactly = 1);
//! ```

#[doc(hidden)]
pub mod assertions;
mod diff;
mod export;
mod export_jemalloc;
mod health;
mod history;
#[cfg(feature = "http")]
pub mod http;
mod leaks;
mod sizes;

pub use diff::{snapshot, ComponentDelta, Diff, StatsSnapshot};
pub use export::{to_json, to_prometheus, to_table};
pub use health::{health, HealthReport, FRAGMENTATION_ALERT, WASTE_ALERT_BYTES};
pub use history::{history, start_history, stop_history, HistoryConfig, Sample};
pub use leaks::{detect_leaks, fit_line, LeakConfig, LeakFinding, LeakKind};
pub use sizes::{
    component_size_histogram, realloc_histogram, size_histogram, SizeHistogram, MAX_TRACKED_SIZE,
};
