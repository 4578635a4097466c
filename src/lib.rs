#![doc = include_str!("../README.md")]

pub use alloc_core::*;

/// The jemalloc inner allocator (the `jemalloc` feature, on by default).
#[cfg(feature = "jemalloc")]
pub use alloc_jemalloc::Jemalloc;

/// Statistics beyond the core figures: histograms, snapshots for tests, leak detection and
/// exporters (in progress; see the `alloc-stats` crate).
pub use alloc_stats as stats;
