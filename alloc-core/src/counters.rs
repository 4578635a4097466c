//! Shared counters: one cache-padded record per component and one for the whole process.
//!
//! These are written only when a thread flushes its batched deltas (see `thread.rs`), never once
//! per allocation. `live` is signed: a thread may flush the free of a block before the allocating
//! thread has flushed its allocation, so the shared value can dip below zero for a moment. Every
//! reader clamps at zero and adds the pending per-thread deltas, which makes the figures exact
//! once threads are quiet.

use crate::registry::CAPACITY;
use crossbeam_utils::CachePadded;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicI64, AtomicU64};

/// A batch of counter changes for one component.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Delta {
    /// Change in live (requested) bytes.
    pub live: i64,
    /// Highest value `live` reached during the batch (relative to its start, so `>= 0`).
    pub high: i64,
    /// Bytes allocated: new blocks plus realloc growth.
    pub allocated: u64,
    pub allocs: u64,
    pub frees: u64,
    pub reallocs: u64,
    /// Change in bytes the tags added to requests made of the inner allocator.
    pub tag: i64,
}

/// The shared record of one component, or of the whole process.
pub(crate) struct Shared {
    pub live: AtomicI64,
    pub peak: AtomicI64,
    pub allocated: AtomicU64,
    pub allocs: AtomicU64,
    pub frees: AtomicU64,
    pub reallocs: AtomicU64,
    pub tag: AtomicI64,
}

impl Shared {
    const fn new() -> Shared {
        Shared {
            live: AtomicI64::new(0),
            peak: AtomicI64::new(0),
            allocated: AtomicU64::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
            tag: AtomicI64::new(0),
        }
    }

    /// Adds a batch. Five to seven atomic adds: this runs once per flush, not per allocation.
    pub fn apply(&self, d: &Delta) {
        let before = self.live.fetch_add(d.live, Relaxed);
        if d.high > 0 {
            // `before` is negative only when frees were flushed ahead of the allocations they
            // undo, which are still pending on other threads; the true live value was >= 0.
            self.peak
                .fetch_max(before.max(0).saturating_add(d.high), Relaxed);
        }
        if d.allocated != 0 {
            self.allocated.fetch_add(d.allocated, Relaxed);
        }
        if d.allocs != 0 {
            self.allocs.fetch_add(d.allocs, Relaxed);
        }
        if d.frees != 0 {
            self.frees.fetch_add(d.frees, Relaxed);
        }
        if d.reallocs != 0 {
            self.reallocs.fetch_add(d.reallocs, Relaxed);
        }
        if d.tag != 0 {
            self.tag.fetch_add(d.tag, Relaxed);
        }
    }

    pub fn load(&self) -> Delta {
        Delta {
            live: self.live.load(Relaxed),
            high: self.peak.load(Relaxed),
            allocated: self.allocated.load(Relaxed),
            allocs: self.allocs.load(Relaxed),
            frees: self.frees.load(Relaxed),
            reallocs: self.reallocs.load(Relaxed),
            tag: self.tag.load(Relaxed),
        }
    }
}

static COMPONENTS: [CachePadded<Shared>; CAPACITY] =
    [const { CachePadded::new(Shared::new()) }; CAPACITY];
static GLOBAL: CachePadded<Shared> = CachePadded::new(Shared::new());

/// Folds a batch into the component's and the global record.
#[inline]
pub(crate) fn apply(component: u16, d: &Delta) {
    apply_component(component, d);
    GLOBAL.apply(d);
}

/// Folds a batch into the component's record only; the caller folds the sum of its batches into
/// the global record with [`apply_global`].
#[inline]
pub(crate) fn apply_component(component: u16, d: &Delta) {
    if let Some(shared) = COMPONENTS.get(component as usize) {
        shared.apply(d);
    }
}

/// Folds the sum of several components' batches into the global record.
pub(crate) fn apply_global(d: &Delta) {
    GLOBAL.apply(d);
}

impl Delta {
    /// Appends `next` to this batch, as if its operations had come after this batch's.
    pub(crate) fn then(&mut self, next: &Delta) {
        self.high = self.high.max(self.live + next.high);
        self.live += next.live;
        self.allocated += next.allocated;
        self.allocs += next.allocs;
        self.frees += next.frees;
        self.reallocs += next.reallocs;
        self.tag += next.tag;
    }
}

// A sequence lock over flushes. A flush moves a batch from a thread's block into the shared
// records; a reader that adds the shared records to the blocks' pending batches must not see a
// batch in both places, or in neither. Flushes are rare (one per 1024 operations of a kind per
// thread and component), so readers simply retry while one is in progress.
static FLUSHES_STARTED: AtomicU64 = AtomicU64::new(0);
static FLUSHES_DONE: AtomicU64 = AtomicU64::new(0);

/// Marks the start of a flush (before any of its stores).
pub(crate) fn flush_begin() {
    FLUSHES_STARTED.fetch_add(1, Relaxed);
    fence(Release);
}

/// Marks the end of a flush (after all of its stores).
pub(crate) fn flush_end() {
    FLUSHES_DONE.fetch_add(1, Release);
}

/// In a forked child, where only the forking thread lives on: a flush another thread had begun
/// at the fork will never end, so readers stop waiting for it (its stores may be half made: the
/// figures are off by what that batch held). Atomic loads and stores only (async-signal-safe).
pub(crate) fn forget_flushes() {
    FLUSHES_DONE.store(FLUSHES_STARTED.load(Relaxed), Release);
}

/// Runs `read` until it ran with no flush in progress or starting meanwhile (at most 10 000 tries;
/// then the last result stands). Never allocates.
pub(crate) fn consistent<T>(read: impl FnMut() -> T) -> T {
    consistent_within(10_000, read)
}

/// [`consistent`] with at most `tries` tries.
pub(crate) fn consistent_within<T>(tries: u32, mut read: impl FnMut() -> T) -> T {
    for _ in 0..tries {
        let started = FLUSHES_STARTED.load(Acquire);
        if FLUSHES_DONE.load(Acquire) != started {
            std::hint::spin_loop();
            continue;
        }
        let value = read();
        fence(Acquire);
        if FLUSHES_STARTED.load(Relaxed) == started {
            return value;
        }
    }
    read()
}

pub(crate) fn component(component: u16) -> Option<&'static Shared> {
    COMPONENTS.get(component as usize).map(|c| &**c)
}

pub(crate) fn global() -> &'static Shared {
    &GLOBAL
}
