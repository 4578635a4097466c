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
//! Typed `mallctl` access (statistics, purge, decay, background threads) arrives with the
//! jemalloc-control work and will live here too.
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

mod size_class;

pub use size_class::{slack, usable_size, QUANTUM, SMALL_SLACK, SMALL_SLACK_LIMIT};

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
