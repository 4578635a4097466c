#![doc = include_str!("../README.md")]

pub use alloc_core::*;

/// The jemalloc inner allocator (the `jemalloc` feature, on by default).
#[cfg(feature = "jemalloc")]
pub use alloc_jemalloc::Jemalloc;

/// Statistics beyond the core figures: snapshots and diffs for tests, assertion macros, and the
/// table, JSON and Prometheus exporters (the `alloc-stats` crate).
pub use alloc_stats as stats;
pub use alloc_stats::{assert_allocations, assert_max_live, assert_no_leaks};

/// jemalloc's levers: statistics, purges, decay, background threads, compaction, and the two
/// policies that pull them automatically: the soft-limit responder (`GOMEMLIMIT`) and the GC
/// percent (`GOGC`) (the `jemalloc` feature).
///
/// ```
/// let before = memgov::jemalloc::stats().unwrap();
/// let report = memgov::jemalloc::compact().unwrap();
/// println!("fragmentation {:.2}, compaction gave back {} bytes in {:?}",
///     before.fragmentation(), report.reclaimed(), report.took);
/// ```
#[cfg(feature = "jemalloc")]
pub mod jemalloc {
    pub use alloc_core::{
        effective_gc_percent, gc_percent, gc_percent_bound, gc_percent_stats, responder_stats,
        set_gc_percent, start_responder, stop_responder, GcPercentStats, PressureSource,
        ResponderPolicy, ResponderStats, GC_PERCENT_FLOOR, GC_PERCENT_INTERVAL,
    };
    /// Untyped `mallctl` access, for controls the typed functions do not cover.
    pub use alloc_jemalloc::raw;
    pub use alloc_jemalloc::{
        arena_count, arena_decay, arena_initialized, background_threads, compact, decay, decay_all,
        default_dirty_decay_ms, default_muzzy_decay_ms, extent_hook_stats, flush_thread_cache,
        hook_arenas, max_background_threads, page_size, purge_all, refresh,
        running_background_threads, set_arena_decay, set_background_threads, set_decay,
        set_default_dirty_decay_ms, set_default_muzzy_decay_ms, set_max_background_threads,
        startup_dirty_decay_ms, startup_muzzy_decay_ms, stats, stats_read, ArenaPages,
        CompactReport, CtlError, Decay, ExtentHookStats, JemallocStats, ARENAS_ALL,
    };
}
