//! jemalloc's statistics, and compaction.

use crate::ctl::{self, ARENAS_ALL};
use crate::error::CtlError;
use crate::raw;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Advances jemalloc's statistics epoch, so that the next reads are fresh.
///
/// The epoch is process-wide: reads after a refresh see the snapshot of whichever refresh came
/// last, from any thread. [`stats`] reads its many figures from one snapshot; to read several
/// figures yourself, use it rather than `refresh` and [`stats_read`].
///
/// # Errors
/// [`CtlError`] when jemalloc refuses.
pub fn refresh() -> Result<(), CtlError> {
    let _one_at_a_time = lock_epoch();
    advance_epoch()
}

/// Serialises this crate's refreshes with [`stats`]'s reads, so that no refresh made through
/// this crate (memgov's responder samples every 50 ms) lands between two of them.
static EPOCH: Mutex<()> = Mutex::new(());

/// Takes the statistics epoch lock (for [`crate::ForkGuard`]).
pub(crate) fn lock_epoch_for_fork() -> MutexGuard<'static, ()> {
    lock_epoch()
}

fn lock_epoch() -> MutexGuard<'static, ()> {
    // The guarded data is `()`: a panic while it was held left nothing half-done.
    EPOCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn advance_epoch() -> Result<(), CtlError> {
    // SAFETY: `epoch` is a uint64_t; writing any value advances it.
    unsafe { raw::write::<u64>("epoch", 1) }
}

/// The current statistics epoch (reading it advances nothing).
fn current_epoch() -> Result<u64, CtlError> {
    // SAFETY: `epoch` is a uint64_t.
    unsafe { raw::read::<u64>("epoch") }
}

/// How many times [`stats`] reads again when a refresh from outside this crate (a direct
/// `mallctl("epoch")`) lands among its reads.
const SNAPSHOT_TRIES: usize = 8;

/// Reads one `size_t` statistic by name (after [`refresh`]).
///
/// # Errors
/// [`CtlError`] for an unknown name.
///
/// ```
/// alloc_jemalloc::refresh().unwrap();
/// let resident = alloc_jemalloc::stats_read("stats.resident").unwrap();
/// # let _ = resident;
/// ```
pub fn stats_read(name: &str) -> Result<u64, CtlError> {
    // SAFETY: the `stats.*` byte and page counters are size_t.
    unsafe { raw::read::<usize>(name) }.map(|v| v as u64)
}

/// One arena's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArenaPages {
    /// The arena's index.
    pub index: u32,
    /// Pages backing live allocations.
    pub active: u64,
    /// Freed pages still holding data, not yet returned to the system.
    pub dirty: u64,
    /// Freed pages advised away lazily, not yet purged.
    pub muzzy: u64,
}

/// jemalloc's process-wide statistics.
///
/// ```
/// let s = alloc_jemalloc::stats().unwrap();
/// assert!(s.active >= s.allocated);
/// assert!(s.fragmentation() >= 1.0 || s.allocated == 0);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct JemallocStats {
    /// Bytes allocated by the application.
    pub allocated: u64,
    /// Bytes in active pages (a multiple of the page size, at least `allocated` in a process
    /// that did not allocate during the refresh: jemalloc gathers a snapshot arena by arena,
    /// so while other threads allocate, `allocated` can come out slightly above `active`).
    pub active: u64,
    /// Bytes in physically resident data pages jemalloc maps (metadata included).
    pub resident: u64,
    /// Bytes in active extents mapped by jemalloc.
    pub mapped: u64,
    /// Bytes retained: virtual memory kept mapped but not resident.
    pub retained: u64,
    /// Bytes of jemalloc's own metadata.
    pub metadata: u64,
    /// Bytes in dirty pages, all arenas.
    pub dirty: u64,
    /// Bytes in muzzy pages, all arenas.
    pub muzzy: u64,
    /// Per-arena page counts, for initialised arenas.
    pub arenas: Vec<ArenaPages>,
}

impl JemallocStats {
    /// `active / allocated`: how much of the active memory is not handed out (1.0 = none).
    pub fn fragmentation(&self) -> f64 {
        if self.allocated == 0 {
            1.0
        } else {
            self.active as f64 / self.allocated as f64
        }
    }

    /// `resident / active`: resident memory that holds no live data, relative to what does.
    pub fn resident_ratio(&self) -> f64 {
        if self.active == 0 {
            1.0
        } else {
            self.resident as f64 / self.active as f64
        }
    }
}

/// Refreshes and reads jemalloc's statistics, every figure from the same snapshot.
///
/// Refreshes through this crate wait while it reads. A refresh from elsewhere (a direct
/// `mallctl("epoch")`) that lands among the reads makes it read again, up to 8 times; only a
/// program that refreshes that way without pause can get figures from two snapshots.
///
/// # Errors
/// [`CtlError`] when a statistic cannot be read (jemalloc built without statistics).
pub fn stats() -> Result<JemallocStats, CtlError> {
    let _one_at_a_time = lock_epoch();
    advance_epoch()?;
    let mut tries = 1;
    loop {
        let epoch = current_epoch()?;
        let read = read_snapshot()?;
        if current_epoch()? == epoch || tries == SNAPSHOT_TRIES {
            return Ok(read);
        }
        tries += 1;
    }
}

/// Every figure of [`JemallocStats`] from the current snapshot.
fn read_snapshot() -> Result<JemallocStats, CtlError> {
    let page = ctl::page_size()? as u64;
    let mut arenas = Vec::new();
    for i in 0..ctl::arena_count()? {
        if !ctl::arena_initialized_at_last_refresh(i).unwrap_or(false) {
            continue;
        }
        let pages = |what: &str| stats_read(&format!("stats.arenas.{i}.{what}"));
        arenas.push(ArenaPages {
            index: i,
            active: pages("pactive")?,
            dirty: pages("pdirty")?,
            muzzy: pages("pmuzzy")?,
        });
    }
    Ok(JemallocStats {
        allocated: stats_read("stats.allocated")?,
        active: stats_read("stats.active")?,
        resident: stats_read("stats.resident")?,
        mapped: stats_read("stats.mapped")?,
        retained: stats_read("stats.retained")?,
        metadata: stats_read("stats.metadata")?,
        dirty: stats_read(&format!("stats.arenas.{ARENAS_ALL}.pdirty"))? * page,
        muzzy: stats_read(&format!("stats.arenas.{ARENAS_ALL}.pmuzzy"))? * page,
        arenas,
    })
}

/// What [`compact`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// jemalloc's resident bytes before.
    pub resident_before: u64,
    /// jemalloc's resident bytes after.
    pub resident_after: u64,
    /// How long the flush and purge took.
    pub took: Duration,
}

impl CompactReport {
    /// Resident bytes given back.
    pub fn reclaimed(&self) -> u64 {
        self.resident_before.saturating_sub(self.resident_after)
    }
}

/// Returns every unused page to the system now: flushes the calling thread's cache, then purges
/// every arena. The Rust twin of Go's `debug.FreeOSMemory()`.
///
/// # Errors
/// [`CtlError`] when a control fails.
///
/// ```
/// let report = alloc_jemalloc::compact().unwrap();
/// assert!(report.resident_after <= report.resident_before + (1 << 20));
/// ```
pub fn compact() -> Result<CompactReport, CtlError> {
    refresh()?;
    let resident_before = stats_read("stats.resident")?;
    let start = Instant::now();
    // No thread cache (a thread that never allocated through jemalloc) is not an error here.
    let _ = ctl::flush_thread_cache();
    ctl::purge_all()?;
    let took = start.elapsed();
    refresh()?;
    Ok(CompactReport {
        resident_before,
        resident_after: stats_read("stats.resident")?,
        took,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serial with the test below, whose thread allocates and refreshes meanwhile.
    #[test]
    #[serial_test::serial(jemalloc_stats)]
    fn stats_are_consistent() {
        let s = stats().unwrap();
        // Not `active >= allocated`: the other tests of this binary allocate meanwhile, and
        // jemalloc gathers the snapshot arena by arena (it failed 1 run in 250 on 16 cores).
        assert!(s.allocated > 0 && s.active > 0, "{s:?}");
        assert!(s.mapped >= s.active, "{s:?}");
        assert!(s.resident >= s.metadata, "{s:?}");
        assert!(!s.arenas.is_empty());
        let pages: u64 = s.arenas.iter().map(|a| a.dirty).sum();
        assert_eq!(pages * ctl::page_size().unwrap() as u64, s.dirty);
    }

    /// jemalloc's statistics epoch is process-wide: a refresh by another thread (memgov's
    /// responder samples every 50 ms) between two reads mixed two snapshots.
    #[test]
    #[serial_test::serial(jemalloc_stats)]
    fn stats_stay_consistent_while_another_thread_refreshes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::alloc::{GlobalAlloc, Layout};
                // This crate's tests run over the system allocator: dirty jemalloc's pages directly.
                let layouts: Vec<Layout> = (0..64)
                    .map(|i| Layout::from_size_align(4096 << (i % 6), 8).unwrap())
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: non-zero sizes; each block is freed with its own layout.
                    unsafe {
                        let held: Vec<*mut u8> =
                            layouts.iter().map(|&l| crate::Jemalloc.alloc(l)).collect();
                        for (p, &l) in held.into_iter().zip(&layouts) {
                            crate::Jemalloc.dealloc(p, l);
                        }
                    }
                    refresh().unwrap();
                }
            });
            let page = ctl::page_size().unwrap() as u64;
            for _ in 0..2000 {
                let s = stats().unwrap();
                let pages: u64 = s.arenas.iter().map(|a| a.dirty).sum();
                // Only figures of one snapshot are compared: jemalloc takes a snapshot arena by
                // arena while this thread's neighbour allocates, so `active >= allocated` (as
                // documented) need not hold in it.
                if pages * page != s.dirty {
                    stop.store(true, Ordering::Relaxed);
                    panic!(
                        "mixed snapshots: arenas' dirty {} bytes, {s:?}",
                        pages * page
                    );
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    #[test]
    fn compaction_reports_what_it_did() {
        let r = compact().unwrap();
        assert!(r.took < Duration::from_secs(10));
        assert_eq!(
            r.reclaimed(),
            r.resident_before.saturating_sub(r.resident_after)
        );
    }
}
