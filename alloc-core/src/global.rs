//! [`Governor`], the one `GlobalAlloc` implementation.

use crate::registry::CAPACITY;
use crate::tag;
use crate::thread::{self, Op};
use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The inner allocator [`Governor::new`] uses: jemalloc with the `jemalloc` feature, else the
/// system allocator.
#[cfg(feature = "jemalloc")]
pub type DefaultInner = alloc_jemalloc::Jemalloc;
/// The inner allocator [`Governor::new`] uses: jemalloc with the `jemalloc` feature, else the
/// system allocator.
#[cfg(not(feature = "jemalloc"))]
pub type DefaultInner = std::alloc::System;

static CORRUPT_TAGS: AtomicU64 = AtomicU64::new(0);

/// The governing allocator: wraps an inner `GlobalAlloc` and tags every block with the component
/// that allocated it.
///
/// All four `GlobalAlloc` methods are forwarded to the inner allocator (a `realloc` stays a
/// `realloc`, so jemalloc can grow a block in place, and `alloc_zeroed` stays a calloc). Each block
/// carries a 2-byte component tag after the requested bytes (see the README's design section).
///
/// The accounting is process-wide: install one `Governor` as the global allocator.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: alloc_core::Governor<std::alloc::System> =
///     alloc_core::Governor::with_inner(std::alloc::System);
///
/// let _scope = alloc_core::component_scope("doc-example");
/// let v = vec![0u8; 1000];
/// let stats = alloc_core::component_stats("doc-example").unwrap();
/// assert_eq!(stats.live_bytes, 1000);
/// # drop(v);
/// ```
#[derive(Debug, Default)]
pub struct Governor<A = DefaultInner> {
    inner: A,
}

impl<A> Governor<A> {
    /// A governor over `inner`.
    ///
    /// ```
    /// static GLOBAL: alloc_core::Governor<std::alloc::System> =
    ///     alloc_core::Governor::with_inner(std::alloc::System);
    /// ```
    pub const fn with_inner(inner: A) -> Self {
        Governor { inner }
    }

    /// The inner allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

#[cfg(feature = "jemalloc")]
impl Governor<alloc_jemalloc::Jemalloc> {
    /// A governor over jemalloc.
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: alloc_core::Governor = alloc_core::Governor::new();
    /// ```
    pub const fn new() -> Self {
        Governor {
            inner: alloc_jemalloc::Jemalloc,
        }
    }
}

#[cfg(not(feature = "jemalloc"))]
impl Governor<std::alloc::System> {
    /// A governor over the system allocator (the `jemalloc` feature is off).
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: alloc_core::Governor = alloc_core::Governor::new();
    /// ```
    pub const fn new() -> Self {
        Governor {
            inner: std::alloc::System,
        }
    }
}

/// Tags a fresh block with the current component and records the allocation.
///
/// # Safety
/// `ptr` is a block of at least `size + TAG_BYTES` writable bytes.
#[inline(always)]
unsafe fn adopt(ptr: *mut u8, size: usize, inner: usize) {
    let recorded = thread::with_state(|st| {
        let comp = st.current();
        // SAFETY: forwarded from the caller.
        unsafe { tag::write(ptr, size, comp) };
        st.record(comp, Op::Alloc, size as i64, inner as i64);
    });
    if recorded.is_none() {
        // SAFETY: forwarded from the caller.
        unsafe { tag::write(ptr, size, 0) };
        thread::record_direct(0, Op::Alloc, size as i64, inner as i64);
    }
}

/// Reads a block's tag, rejecting values no component can have.
///
/// # Safety
/// `ptr` is a live block handed out by the governor for a request of `size` bytes.
#[inline(always)]
unsafe fn owner(ptr: *const u8, size: usize) -> Option<u16> {
    // SAFETY: forwarded from the caller.
    let comp = unsafe { tag::read(ptr, size) };
    if (comp as usize) < CAPACITY {
        Some(comp)
    } else {
        corrupt_tag();
        None
    }
}

#[cold]
#[inline(never)]
fn corrupt_tag() {
    CORRUPT_TAGS.fetch_add(1, Relaxed);
}

/// Tags that held no valid component when a block was freed: a sign that something wrote past
/// the end of a block. Those blocks are freed but credited to no component.
pub(crate) fn corrupt_tags() -> u64 {
    CORRUPT_TAGS.load(Relaxed)
}

#[inline(always)]
fn record(comp: u16, op: Op, live: i64, inner: i64) {
    if thread::with_state(|st| st.record(comp, op, live, inner)).is_none() {
        thread::record_direct(comp, op, live, inner);
    }
}

// SAFETY: every block handed out comes from the inner allocator with a layout that is the caller's
// layout extended by TAG_BYTES (same alignment), and is handed back to the inner allocator with
// that same extended layout. The caller's bytes are never touched; only the trailer beyond them.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Governor<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(inner) = tag::inner_layout(layout.size(), layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: `inner` has a non-zero size (at least TAG_BYTES).
        let ptr = unsafe { self.inner.alloc(inner) };
        if !ptr.is_null() {
            // SAFETY: the block has `inner.size()` = size + TAG_BYTES bytes.
            unsafe { adopt(ptr, layout.size(), inner.size()) };
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(inner) = tag::inner_layout(layout.size(), layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: `inner` has a non-zero size (at least TAG_BYTES).
        let ptr = unsafe { self.inner.alloc_zeroed(inner) };
        if !ptr.is_null() {
            // SAFETY: the block has `inner.size()` = size + TAG_BYTES bytes.
            unsafe { adopt(ptr, layout.size(), inner.size()) };
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let size = layout.size();
        // The block was allocated with this layout, so extending it succeeded then and does now.
        let Some(inner) = tag::inner_layout(size, layout.align()) else {
            return;
        };
        // SAFETY: the caller passes a live block from this allocator with its layout.
        if let Some(comp) = unsafe { owner(ptr, size) } {
            record(comp, Op::Free, -(size as i64), -(inner.size() as i64));
        }
        // SAFETY: the block came from the inner allocator with exactly `inner`.
        unsafe { self.inner.dealloc(ptr, inner) };
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_size, align) = (layout.size(), layout.align());
        let Some(old_inner) = tag::inner_layout(old_size, align) else {
            return ptr::null_mut();
        };
        let Some(new_inner) = tag::inner_layout(new_size, align) else {
            return ptr::null_mut();
        };
        // SAFETY: the caller passes a live block from this allocator with its layout.
        let comp = unsafe { owner(ptr, old_size) };
        // SAFETY: the block came from the inner allocator with `old_inner`; `new_inner.size()` is
        // non-zero and valid for `align` (checked by inner_layout).
        let new_ptr = unsafe { self.inner.realloc(ptr, old_inner, new_inner.size()) };
        if new_ptr.is_null() {
            // The old block, and its tag, are untouched.
            return new_ptr;
        }
        let comp_or_root = comp.unwrap_or(0);
        // SAFETY: the new block has `new_size + TAG_BYTES` bytes.
        unsafe { tag::write(new_ptr, new_size, comp_or_root) };
        match comp {
            Some(comp) => record(
                comp,
                Op::Realloc,
                new_size as i64 - old_size as i64,
                new_inner.size() as i64 - old_inner.size() as i64,
            ),
            // The old block was credited to no one; from now on it belongs to "unscoped".
            None => record(0, Op::Alloc, new_size as i64, new_inner.size() as i64),
        }
        new_ptr
    }
}
