//! Statistics for memgov beyond the core figures: snapshots and diffs for tests, assertion macros,
//! and exporters.
//!
//! * [`snapshot`] / [`StatsSnapshot::diff`]: what changed per component while some code ran.
//! * [`assert_no_leaks!`], [`assert_max_live!`], [`assert_allocations!`]: dhat-style assertions
//!   whose failure messages show the figures.
//! * [`to_table`], [`to_json`], [`to_prometheus`]: the figures for logs and dashboards.
//!
//! Allocation-size histograms, the sample history with leak detection, the health report and the
//! HTTP endpoint are not here yet.
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

pub use diff::{snapshot, ComponentDelta, Diff, StatsSnapshot};
pub use export::{to_json, to_prometheus, to_table};
