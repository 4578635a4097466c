//! jemalloc backend for memgov.
//!
//! This crate holds everything memgov knows about jemalloc. For now that is:
//!
//! * [`Jemalloc`], the inner allocator: a zero-sized `GlobalAlloc` that forwards all four methods
//!   (`alloc`, `alloc_zeroed`, `realloc`, `dealloc`) to jemalloc, so jemalloc keeps its calloc path
//!   and can grow a block in place;
//! * [`usable_size`], jemalloc's size-class rounding computed without calling into jemalloc, which
//!   memgov uses to put its component tag in the slack at the end of a block.
//!
//! * typed `mallctl` controls ([`set_decay`], [`purge_all`], [`set_background_threads`], ...),
//!   statistics ([`stats()`]) and compaction ([`compact`]). Only the `raw` module calls `mallctl`.
//! * extent-hook wrappers ([`hook_arenas`]) that tell memgov which address ranges jemalloc has
//!   given back, so that memgov can give back its own tag-table pages for them.
//!
//! # Configuring jemalloc at startup
//! jemalloc reads its options once, when it starts: from the `_RJEM_MALLOC_CONF` environment
//! variable (tikv-jemalloc-sys prefixes jemalloc's symbols, so it is not `MALLOC_CONF`), and from
//! a `_rjem_malloc_conf` symbol a program may define. For example
//! `_RJEM_MALLOC_CONF=dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true,narenas:4`.
//! memgov's runtime settings (`MEMGOV_DECAY`, `MEMGOV_BACKGROUND_THREADS`, the soft-limit responder,
//! and the functions here) are applied after startup and override those options for every arena
//! that exists then and every arena created later; options memgov does not touch (`narenas`,
//! `tcache_max`, ...) keep their startup values.
//!
//! ```
//! use std::alloc::{GlobalAlloc, Layout};
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! // SAFETY: the layout has a non-zero size; the block is freed with the same layout.
//! unsafe {
//!     let p = alloc_jemalloc::Jemalloc.alloc(layout);
//!     assert!(!p.is_null());
//!     alloc_jemalloc::Jemalloc.dealloc(p, layout);
//! }
//! assert_eq!(alloc_jemalloc::usable_size(100, 8), 112);
//! ```

mod ctl;
mod error;
mod extent_hooks;
pub mod raw;
mod size_class;
mod stats;

pub use ctl::{
    arena_count, arena_decay, arena_initialized, background_threads, decay, decay_all,
    default_dirty_decay_ms, default_muzzy_decay_ms, flush_thread_cache, max_background_threads,
    page_size, purge_all, running_background_threads, set_arena_decay, set_background_threads,
    set_decay, set_default_dirty_decay_ms, set_default_muzzy_decay_ms, set_max_background_threads,
    startup_dirty_decay_ms, startup_muzzy_decay_ms, Decay, ARENAS_ALL,
};
pub use error::CtlError;
pub use extent_hooks::{
    extent_hook_stats, hook_arenas, set_pages_released_listener, ExtentHookStats, PagesReleased,
    WRAPPER_SLOTS,
};
pub use size_class::{
    slack, small_alignment, small_slack, usable_size, usable_size_const, QUANTUM, SMALL_SLACK,
    SMALL_SLACK_LIMIT,
};
pub use stats::{compact, refresh, stats, stats_read, ArenaPages, CompactReport, JemallocStats};

/// This crate's own locks (the statistics epoch's and the one [`hook_arenas`] takes), held
/// together: a `pthread_atfork` prepare handler takes them so that no other thread holds one
/// when the process forks, and the parent and child handlers drop the guard. Otherwise a fork
/// while another thread read jemalloc's statistics would leave the lock held for ever in the
/// child. memgov's fork handler takes it; a program with its own handler need not.
///
/// ```
/// let guard = alloc_jemalloc::ForkGuard::lock();
/// drop(guard);
/// alloc_jemalloc::refresh().unwrap();
/// ```
#[must_use = "the locks are released when the guard is dropped"]
pub struct ForkGuard {
    _epoch: std::sync::MutexGuard<'static, ()>,
    _install: std::sync::MutexGuard<'static, ()>,
}

impl ForkGuard {
    /// Takes the locks, waiting for any other thread that holds one. A thread that already
    /// holds one of them (it is inside [`stats()`], say) must not call this: it would wait for
    /// ever.
    pub fn lock() -> ForkGuard {
        ForkGuard {
            _epoch: stats::lock_epoch_for_fork(),
            _install: extent_hooks::lock_install_for_fork(),
        }
    }
}

use std::alloc::{GlobalAlloc, Layout};

/// The jemalloc inner allocator.
///
/// A thin, zero-sized wrapper over `tikv_jemallocator::Jemalloc`. It exists so that memgov can
/// describe jemalloc's size classes to the governor (a trait impl on a type of our own).
///
/// ```
/// #[global_allocator]
/// static RAW: alloc_jemalloc::Jemalloc = alloc_jemalloc::Jemalloc;
/// let v = vec![1u8; 10];
/// assert_eq!(v.len(), 10);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Jemalloc;

impl Jemalloc {
    /// jemalloc's `malloc` (or `calloc` when `zeroed`) of `size` bytes, with no alignment flags:
    /// what [`alloc`](GlobalAlloc::alloc) does for a small alignment, without its tests of the
    /// layout.
    ///
    /// # Safety
    /// `size` is non-zero and `small_alignment(size, align)` holds for the alignment the block
    /// needs: then jemalloc's class for `size` is aligned enough (every class is 8-aligned, and
    /// every class above 8 bytes 16-aligned). The block goes back through
    /// [`dealloc_small`](Self::dealloc_small) with the same `size`, or through
    /// [`GlobalAlloc::dealloc`] with a layout of that size and alignment.
    #[inline(always)]
    pub unsafe fn alloc_small(size: usize, zeroed: bool) -> *mut u8 {
        // SAFETY: plain jemalloc entry points; the caller's contract makes the result aligned.
        unsafe {
            if zeroed {
                tikv_jemalloc_sys::calloc(1, size).cast()
            } else {
                tikv_jemalloc_sys::malloc(size).cast()
            }
        }
    }

    /// jemalloc's `sdallocx` with no flags: [`dealloc`](GlobalAlloc::dealloc) for a small
    /// alignment, without its tests of the layout.
    ///
    /// # Safety
    /// `ptr` is a live block from jemalloc for a request of `size` bytes at an alignment
    /// `small_alignment(size, align)` accepts (at such alignments jemalloc's class for `size` is
    /// the class of the request, so the size alone names it).
    #[inline(always)]
    pub unsafe fn dealloc_small(ptr: *mut u8, size: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { tikv_jemalloc_sys::sdallocx(ptr.cast(), size, 0) }
    }
}

// SAFETY: every method forwards to tikv_jemallocator::Jemalloc, which upholds the GlobalAlloc
// contract; the caller's contract is passed through unchanged.
unsafe impl GlobalAlloc for Jemalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract for `layout`.
        unsafe { tikv_jemallocator::Jemalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc::alloc_zeroed's contract for `layout`.
        unsafe { tikv_jemallocator::Jemalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence from jemalloc) with `layout`.
        unsafe { tikv_jemallocator::Jemalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the caller checked `new_size`.
        unsafe { tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks from `alloc_small` are aligned as `small_alignment` promises, and blocks of such
    /// layouts go back through `dealloc_small` whichever call made them: `alloc_small`, or the
    /// `GlobalAlloc` methods (which ask `mallocx` for an alignment above the size).
    #[test]
    fn small_blocks_round_trip_through_either_entry_point() {
        for align in [1usize, 2, 4, 8, 16] {
            for size in (1..600).chain([1023, 1024, 4095, 4096, 14_336, 14_337, 16_383]) {
                if !small_alignment(size, align) {
                    continue;
                }
                let layout = Layout::from_size_align(size, align).unwrap();
                for zeroed in [false, true] {
                    // SAFETY: non-zero size at an alignment small_alignment accepts.
                    let p = unsafe { Jemalloc::alloc_small(size, zeroed) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    if zeroed {
                        // SAFETY: `size` bytes just allocated and zeroed.
                        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                        assert!(bytes.iter().all(|&b| b == 0));
                    }
                    // SAFETY: the block just made for `size` bytes at `align`.
                    unsafe { Jemalloc::dealloc_small(p, size) };
                }
                // SAFETY: a valid non-zero layout.
                let p = unsafe { Jemalloc.alloc(layout) };
                assert!(!p.is_null());
                // SAFETY: the block just made for `layout`.
                unsafe { Jemalloc::dealloc_small(p, size) };
            }
        }
    }
}
