//! `GOGC` for jemalloc: a bound on the freed memory jemalloc keeps, in proportion to the live
//! heap.
//!
//! Go's collector lets the heap grow to `live × (1 + GOGC/100)` before it collects, and never
//! aims below 4 MiB: with the default `GOGC=100`, a program holding 1 GiB of live data may take
//! up to 2 GiB. A Rust program has no garbage to collect, but it pays the same kind of overhead
//! in another form: pages its allocator keeps after they were freed. jemalloc keeps them dirty,
//! then muzzy, until their decay time passes (10 s by default), so a burst that frees 500 MiB
//! leaves the process 500 MiB bigger for seconds, whatever its live heap.
//!
//! With a GC percent set ([`set_gc_percent`], or `MEMGOV_GOGC`), a task on memgov's monitor
//! thread samples jemalloc every [`GC_PERCENT_INTERVAL`] and, when the pages kept (dirty and
//! muzzy) exceed `live × percent / 100` and [`GC_PERCENT_FLOOR`], purges every arena: what
//! jemalloc keeps for reuse stays within that proportion of what the program uses, as Go's heap
//! stays within `GOGC` percent of its live data. `0` keeps nothing past the floor; `None` (`off`,
//! the default) leaves it to jemalloc's decay.
//!
//! Under pressure the percent tightens, as seed 003's dynamic GC percentage does: while the
//! process's pressure level is Warning the task works to half the percent set, at Critical to a
//! quarter ([`effective_gc_percent`]; the fractions [`adaptive_size`](crate::adaptive_size) scales
//! a buffer by).
//!
//! It complements the soft-limit responder (`GOMEMLIMIT`, [`start_responder`](crate::start_responder)),
//! which acts on the distance to a limit, as `GOMEMLIMIT` complements `GOGC`.

use crate::monitor;
use crate::pressure::{self, Level};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

/// How often the GC percent's task samples jemalloc.
pub const GC_PERCENT_INTERVAL: Duration = Duration::from_millis(100);

/// Pages kept below this many bytes are never purged, whatever the live heap: Go's 4 MiB
/// minimum heap target, which keeps a small program from purging on every sample.
pub const GC_PERCENT_FLOOR: u64 = 4 << 20;

/// The percent, `OFF` for none.
static PERCENT: AtomicU64 = AtomicU64::new(OFF);
const OFF: u64 = u64::MAX;
/// Whether the sampling task is registered (it stays, and does nothing while the percent is off).
static TASK: AtomicBool = AtomicBool::new(false);
static SAMPLES: AtomicU64 = AtomicU64::new(0);
static PURGES: AtomicU64 = AtomicU64::new(0);
static PURGED: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static LAST_LIVE: AtomicU64 = AtomicU64::new(0);
static LAST_KEPT: AtomicU64 = AtomicU64::new(0);
static LAST_EFFECTIVE: AtomicU64 = AtomicU64::new(OFF);

/// What the GC percent's task has seen and done ([`gc_percent_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcPercentStats {
    /// The percent now; `None` when off.
    pub percent: Option<u32>,
    /// Samples taken while a percent was set.
    pub samples: u64,
    /// Purges made because the pages kept passed the bound.
    pub purges: u64,
    /// Resident bytes those purges gave back, as measured around them.
    pub purged_bytes: u64,
    /// Samples or purges that failed (each is otherwise ignored: the task goes on).
    pub errors: u64,
    /// jemalloc's allocated bytes at the last sample.
    pub last_live_bytes: u64,
    /// The dirty and muzzy bytes jemalloc kept at the last sample.
    pub last_kept_bytes: u64,
    /// The percent the last sample worked to ([`effective_gc_percent`] of the percent and the
    /// process's level then); `None` before the first sample.
    pub last_effective_percent: Option<u32>,
}

/// Sets the GC percent (the Rust twin of Go's `debug.SetGCPercent`): from now on, the freed
/// pages jemalloc keeps are purged whenever they exceed `percent` percent of the live heap (and
/// [`GC_PERCENT_FLOOR`]); `None` switches that off. Returns the previous setting.
///
/// ```
/// let previous = alloc_core::set_gc_percent(Some(100));
/// assert_eq!(alloc_core::gc_percent(), Some(100));
/// alloc_core::set_gc_percent(previous);
/// ```
pub fn set_gc_percent(percent: Option<u32>) -> Option<u32> {
    crate::config::ensure_init();
    store_gc_percent(percent)
}

/// [`set_gc_percent`] without reading the environment first (the environment reader sets it).
pub(crate) fn store_gc_percent(percent: Option<u32>) -> Option<u32> {
    let previous = PERCENT.swap(percent.map_or(OFF, u64::from), Relaxed);
    if percent.is_some() && !TASK.swap(true, Relaxed) {
        monitor::every_internal(GC_PERCENT_INTERVAL, tick);
    }
    decode(previous)
}

fn decode(stored: u64) -> Option<u32> {
    u32::try_from(stored).ok()
}

/// The GC percent now; `None` when off.
pub fn gc_percent() -> Option<u32> {
    decode(PERCENT.load(Relaxed))
}

/// What the GC percent's task has seen and done.
///
/// ```
/// let s = alloc_core::gc_percent_stats();
/// assert!(s.purges <= s.samples);
/// ```
pub fn gc_percent_stats() -> GcPercentStats {
    GcPercentStats {
        percent: gc_percent(),
        samples: SAMPLES.load(Relaxed),
        purges: PURGES.load(Relaxed),
        purged_bytes: PURGED.load(Relaxed),
        errors: ERRORS.load(Relaxed),
        last_live_bytes: LAST_LIVE.load(Relaxed),
        last_kept_bytes: LAST_KEPT.load(Relaxed),
        last_effective_percent: decode(LAST_EFFECTIVE.load(Relaxed)),
    }
}

/// The percent the task works to at the process's pressure `level`: `percent` at Normal, half
/// of it at Warning, a quarter at Critical (rounded down).
///
/// ```
/// use alloc_core::{effective_gc_percent, Level};
/// assert_eq!(effective_gc_percent(100, Level::Normal), 100);
/// assert_eq!(effective_gc_percent(100, Level::Warning), 50);
/// assert_eq!(effective_gc_percent(100, Level::Critical), 25);
/// ```
pub fn effective_gc_percent(percent: u32, level: Level) -> u32 {
    match level {
        Level::Normal => percent,
        Level::Warning => percent / 2,
        Level::Critical => percent / 4,
    }
}

/// The most bytes of freed pages kept for a live heap of `live` bytes at `percent`.
///
/// ```
/// use alloc_core::{gc_percent_bound, GC_PERCENT_FLOOR};
/// assert_eq!(gc_percent_bound(1 << 30, 100), 1 << 30);
/// assert_eq!(gc_percent_bound(1 << 30, 50), 1 << 29);
/// assert_eq!(gc_percent_bound(1 << 20, 100), GC_PERCENT_FLOOR);
/// ```
pub fn gc_percent_bound(live: u64, percent: u32) -> u64 {
    let proportional = u128::from(live) * u128::from(percent) / 100;
    u64::try_from(proportional)
        .unwrap_or(u64::MAX)
        .max(GC_PERCENT_FLOOR)
}

/// One sample, on the monitor thread.
fn tick() {
    let Some(percent) = gc_percent() else { return };
    SAMPLES.fetch_add(1, Relaxed);
    let stats = match alloc_jemalloc::stats() {
        Ok(s) => s,
        Err(_) => {
            ERRORS.fetch_add(1, Relaxed);
            return;
        }
    };
    let kept = stats.dirty + stats.muzzy;
    let percent = effective_gc_percent(percent, pressure::pressure());
    LAST_LIVE.store(stats.allocated, Relaxed);
    LAST_KEPT.store(kept, Relaxed);
    LAST_EFFECTIVE.store(u64::from(percent), Relaxed);
    if kept <= gc_percent_bound(stats.allocated, percent) {
        return;
    }
    if alloc_jemalloc::purge_all().is_err() {
        ERRORS.fetch_add(1, Relaxed);
        return;
    }
    PURGES.fetch_add(1, Relaxed);
    match alloc_jemalloc::refresh().and_then(|()| alloc_jemalloc::stats_read("stats.resident")) {
        Ok(after) => {
            PURGED.fetch_add(stats.resident.saturating_sub(after), Relaxed);
        }
        Err(_) => {
            ERRORS.fetch_add(1, Relaxed);
        }
    }
}
