//! [`Governor`], the one `GlobalAlloc` implementation.

use crate::abort_line;
use crate::budget;
use crate::histogram;
use crate::registry::{ComponentId, CAPACITY};
use crate::tag::{self, Place, SizeClasses};
use crate::thread::{self, Op, ThreadState};
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
/// carries a 2-byte component tag: after the requested bytes (in the size class's slack), or, for
/// a request that fills its jemalloc class, in a shadow table indexed by the block's address (see
/// the README's design section).
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

/// Requests at or beyond this size or alignment fail (return null) without reaching the inner
/// allocator: no machine can satisfy them, and staying below keeps `size + TAG_BYTES` rounded up to
/// `align` inside `isize::MAX`.
const LIMIT: usize = 1 << (usize::BITS - 2);

#[inline(always)]
fn out_of_range(size: usize, align: usize) -> bool {
    // LIMIT is a power of two, so this is `size >= LIMIT || align >= LIMIT` in one compare.
    (size | align) >= LIMIT
}

/// The inner layout for a request of `size` bytes at `align` with its tag at `place`.
#[inline(always)]
fn inner_layout(size: usize, align: usize, place: Place) -> Layout {
    // SAFETY: `align` came from a Layout (a power of two) and `size + extra` rounded up to `align`
    // stays below isize::MAX because both are below LIMIT (checked by every caller).
    unsafe { Layout::from_size_align_unchecked(size + place.extra(), align) }
}

/// Reads a block's tag: `None` for a value no component can have (counted by the caller).
///
/// # Safety
/// `ptr` is a live block handed out by the governor for a request of `size` bytes with its tag at
/// `place`.
#[inline(always)]
unsafe fn read_owner(ptr: *const u8, size: usize, place: Place) -> Option<u16> {
    // SAFETY: forwarded from the caller.
    unsafe { place.read(ptr, size) }.filter(|&comp| (comp as usize) < CAPACITY)
}

/// Reads a block's tag, counting values no component can have.
///
/// # Safety
/// As [`read_owner`].
#[inline(always)]
unsafe fn owner(ptr: *const u8, size: usize, place: Place) -> Option<u16> {
    // SAFETY: forwarded from the caller.
    let owner = unsafe { read_owner(ptr, size, place) };
    if owner.is_none() {
        corrupt_tag();
    }
    owner
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

/// The calling thread's state; `None` only if its thread-local is gone, and then every operation
/// goes straight to the shared counters.
type St = Option<&'static ThreadState>;

#[inline(always)]
fn current(st: St) -> u16 {
    st.map_or(0, ThreadState::current)
}

#[inline(always)]
fn admit(st: St, comp: u16, size: usize) -> bool {
    match st {
        Some(st) => st.admit(comp, size),
        None => thread::admit_direct(comp, size as u64),
    }
}

/// Where a new block goes when a hard limit refused it to `comp` on the calling thread: nowhere
/// (`None`, the caller returns null) unless the thread is panicking. Then a component's limit
/// sends the block to "unscoped" instead (charged and tagged there, so every limit still holds
/// and the free is credited where the bytes were counted), so that the panic can box its message
/// and unwind; and when that is refused too (the process's limit, past the emergency reserve),
/// the process aborts at once ([`abort_line::abort_if_unwinding`]).
#[cold]
#[inline(never)]
fn admit_while_unwinding(st: St, comp: u16, size: usize) -> Option<u16> {
    if !std::thread::panicking() {
        return None;
    }
    let unscoped = ComponentId::UNSCOPED.0;
    if comp != unscoped && admit(st, unscoped, size) {
        return Some(unscoped);
    }
    abort_line::abort_if_unwinding();
    None
}

#[inline(always)]
fn refund(st: St, comp: u16, size: usize) {
    match st {
        Some(st) => st.refund(comp, size),
        None => thread::uncharge_direct(comp, size as u64),
    }
}

#[inline(always)]
fn record_alloc(st: St, comp: u16, size: usize, trailer: bool) {
    match st {
        Some(st) => st.record_alloc(comp, size, trailer),
        None => thread::record_direct(
            comp,
            Op::Alloc {
                size: size as u64,
                trailer,
            },
        ),
    }
}

#[inline(always)]
fn record_free(st: St, comp: u16, size: usize, trailer: bool) {
    match st {
        Some(st) => st.record_free(comp, size, trailer),
        None => thread::record_direct(
            comp,
            Op::Free {
                size: size as u64,
                trailer,
            },
        ),
    }
}

#[inline(always)]
fn record_realloc(st: St, comp: u16, old: usize, new: usize, tag: i64) {
    match st {
        Some(st) => st.record_realloc(comp, old, new, tag),
        None => thread::record_direct(
            comp,
            Op::Realloc {
                old: old as u64,
                new: new as u64,
                tag,
            },
        ),
    }
}

impl<A: GlobalAlloc + SizeClasses> Governor<A> {
    /// `alloc` and `alloc_zeroed`: [`allocate`](Self::allocate), counting the size while
    /// histograms are on.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn allocate_any(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // One load of the epoch serves both the switch and the fast half's compare: histograms
        // off cost a test and a predictable branch.
        let epoch = budget::limit_epoch();
        // SAFETY: forwarded contract.
        unsafe {
            if epoch & budget::HISTOGRAMS_BIT != 0 {
                if zeroed {
                    self.allocate_counted::<true>(layout, epoch)
                } else {
                    self.allocate_counted::<false>(layout, epoch)
                }
            } else {
                if zeroed {
                    self.allocate_plain::<true>(layout, epoch)
                } else {
                    self.allocate_plain::<false>(layout, epoch)
                }
            }
        }
    }

    /// [`allocate`](Self::allocate) without histograms, out of line so that the switch above
    /// comes before the registers it saves.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(never)]
    unsafe fn allocate_plain<const ZEROED: bool>(&self, layout: Layout, epoch: u64) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.allocate::<false>(layout, ZEROED, epoch) }
    }

    /// An allocation: admit against the budgets and record, allocate, tag.
    ///
    /// The fast half spends the thread's credit and records the allocation before calling the
    /// inner allocator, so that only the tag is left to write after it; anything unusual (a
    /// credit running short, a flush due, the limit epoch moved or histograms switched since
    /// `epoch` was loaded, no thread block) goes to
    /// [`allocate_declined`](Self::allocate_declined). `COUNTED` is the same path with the size
    /// counted in the histograms, taken while they are on. `epoch` is the limit epoch as the
    /// caller loaded it.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn allocate<const COUNTED: bool>(
        &self,
        layout: Layout,
        zeroed: bool,
        epoch: u64,
    ) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // `place_fast` answers only for requests within LIMIT; the slow path checks the others.
        let Some(place) = tag::place_fast(&self.inner, size, align, LIMIT) else {
            // SAFETY: forwarded contract.
            return unsafe { self.allocate_slow(layout, zeroed) };
        };
        // A copy of the rest per kind of place (and per `zeroed`), so that each knows its kind as
        // a constant: no trailer flag to compute into the counts, no test after the inner call.
        // SAFETY: forwarded contract; `place` is the place of `layout` from `place_fast`.
        unsafe {
            match (place, zeroed) {
                (Place::Trailer, false) => {
                    self.allocate_placed::<COUNTED, true, false>(layout, epoch, place)
                }
                (Place::Trailer, true) => {
                    self.allocate_placed::<COUNTED, true, true>(layout, epoch, place)
                }
                (Place::Shadow { .. }, false) => {
                    self.allocate_placed::<COUNTED, false, false>(layout, epoch, place)
                }
                (Place::Shadow { .. }, true) => {
                    self.allocate_placed::<COUNTED, false, true>(layout, epoch, place)
                }
            }
        }
    }

    /// [`allocate_at`](Self::allocate_at), out of line where the inner allocator's classes are
    /// known: the place lookup then saves no registers and jumps to a copy that saves only those
    /// it needs across the inner call (the trailer's copy fewer than the shadow table's). Over
    /// other allocators every tag is a trailer and there is one copy, kept inline.
    ///
    /// # Safety
    /// As [`allocate_at`](Self::allocate_at).
    #[inline(always)]
    unsafe fn allocate_placed<const COUNTED: bool, const TRAILER: bool, const ZEROED: bool>(
        &self,
        layout: Layout,
        epoch: u64,
        place: Place,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if A::KNOWN {
                self.allocate_apart::<COUNTED, TRAILER, ZEROED>(layout, epoch, place)
            } else {
                self.allocate_at::<COUNTED, TRAILER, ZEROED>(layout, epoch, place)
            }
        }
    }

    /// [`allocate_at`](Self::allocate_at) as a function of its own.
    ///
    /// # Safety
    /// As [`allocate_at`](Self::allocate_at).
    #[inline(never)]
    unsafe fn allocate_apart<const COUNTED: bool, const TRAILER: bool, const ZEROED: bool>(
        &self,
        layout: Layout,
        epoch: u64,
        place: Place,
    ) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.allocate_at::<COUNTED, TRAILER, ZEROED>(layout, epoch, place) }
    }

    /// [`allocate`](Self::allocate) once its tag's place is known: `TRAILER` says whether `place`
    /// is a trailer, `ZEROED` whether the block is to be zeroed (`alloc_zeroed`).
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`; `place` is the place `tag::place_fast` gave for `layout`.
    #[inline(always)]
    unsafe fn allocate_at<const COUNTED: bool, const TRAILER: bool, const ZEROED: bool>(
        &self,
        layout: Layout,
        epoch: u64,
        place: Place,
    ) -> *mut u8 {
        let zeroed = ZEROED;
        let (size, align) = (layout.size(), layout.align());
        let st = thread::state();
        let comp = current(st);
        match st {
            Some(st) if st.try_alloc::<COUNTED>(comp, size, TRAILER, epoch) => {}
            // SAFETY: forwarded contract.
            _ if COUNTED => return unsafe { self.allocate_slow(layout, zeroed) },
            // SAFETY: forwarded contract.
            _ => return unsafe { self.allocate_declined(layout, zeroed) },
        }
        // SAFETY: as in `allocate_slow`; `place_fast` answered for `layout`.
        let ptr = unsafe {
            self.inner
                .alloc_small(inner_layout(size, align, place), zeroed)
        };
        if ptr.is_null() {
            if let Some(st) = st {
                st.undo_alloc(comp, size, TRAILER);
            }
            return ptr;
        }
        if TRAILER {
            // SAFETY: the block was made for `layout` with its tag in a trailer.
            unsafe { Place::Trailer.write(ptr, size, comp) };
        } else if let Some(place) = Place::from_shift(place.shift()) {
            // The place is found again from its shift (so that the table pointer need not be
            // kept across the call); `place_fast` gave it, so the shadow tables are published,
            // and stay so.
            // SAFETY: the block was made for `layout` with its tag at `place`.
            unsafe { place.write(ptr, size, comp) };
        }
        if let (true, Some(st)) = (COUNTED, st) {
            st.count_alloc_size(comp, size);
        }
        ptr
    }

    /// Where the fast half declined: the same fast path counting sizes while histograms are on,
    /// else (and whenever that declines too) the whole operation one step at a time.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[cold]
    #[inline(never)]
    unsafe fn allocate_declined(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if histogram::histograms_enabled() {
                let epoch = budget::limit_epoch();
                if zeroed {
                    self.allocate_counted::<true>(layout, epoch)
                } else {
                    self.allocate_counted::<false>(layout, epoch)
                }
            } else {
                self.allocate_slow(layout, zeroed)
            }
        }
    }

    /// An allocation while histograms are on: the fast path that counts sizes. `epoch` is the
    /// limit epoch as the caller loaded it.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[cold]
    #[inline(never)]
    unsafe fn allocate_counted<const ZEROED: bool>(&self, layout: Layout, epoch: u64) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.allocate::<true>(layout, ZEROED, epoch) }
    }

    /// The whole of an allocation, one step at a time: admit, allocate, tag, record.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[cold]
    #[inline(never)]
    unsafe fn allocate_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if out_of_range(size, align) {
            return ptr::null_mut();
        }
        let place = tag::place(&self.inner, size, align);
        let st = thread::state();
        let mut comp = current(st);
        if !admit(st, comp, size) {
            match admit_while_unwinding(st, comp, size) {
                Some(fallback) => comp = fallback,
                None => return ptr::null_mut(),
            }
        }
        // SAFETY: the inner layout has a non-zero size (a zero-size request is placed as a trailer,
        // since every class has slack over zero bytes).
        let ptr =
            unsafe { tag::alloc_or_zeroed(&self.inner, inner_layout(size, align, place), zeroed) };
        if ptr.is_null() {
            refund(st, comp, size);
            return ptr;
        }
        // SAFETY: the block was made for `layout` with its tag at `place`.
        unsafe { place.write(ptr, size, comp) };
        record_alloc(st, comp, size, place.extra() != 0);
        ptr
    }

    /// A realloc whose growth its block's component refused on a panicking thread: the block
    /// moves to `unscoped` (its `new_size` bytes admitted there already), so that the panic can
    /// unwind and every limit still holds. A new block, the contents copied, the old one freed and
    /// credited to its owner.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `owner` is the block's tag as read.
    #[cold]
    #[inline(never)]
    unsafe fn move_while_unwinding(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        owner: Option<u16>,
        unscoped: u16,
    ) -> *mut u8 {
        let (old_size, align) = (layout.size(), layout.align());
        let old_place = tag::place(&self.inner, old_size, align);
        let new_place = tag::place(&self.inner, new_size, align);
        let st = thread::state();
        // SAFETY: the inner layout has a non-zero size (see `allocate_slow`); `new_size` and
        // `align` are within LIMIT (checked by `realloc`).
        let new_ptr = unsafe { self.inner.alloc(inner_layout(new_size, align, new_place)) };
        if new_ptr.is_null() {
            refund(st, unscoped, new_size);
            abort_line::abort_if_unwinding();
            return new_ptr;
        }
        // SAFETY: both blocks are live and distinct; the new one holds at least `new_size` bytes,
        // which is more than `old_size` (this is growth).
        unsafe { ptr::copy_nonoverlapping(ptr, new_ptr, old_size.min(new_size)) };
        // SAFETY: the new block was made for (new_size, align) with its tag at `new_place`.
        unsafe { new_place.write(new_ptr, new_size, unscoped) };
        record_alloc(st, unscoped, new_size, new_place.extra() != 0);
        if let Some(comp) = owner {
            record_free(st, comp, old_size, old_place.extra() != 0);
        }
        // SAFETY: the old block came from the inner allocator with exactly this inner layout.
        unsafe {
            self.inner
                .dealloc(ptr, inner_layout(old_size, align, old_place))
        };
        new_ptr
    }

    /// The whole of a free whose fast half declined: read the tag, record, free.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[cold]
    #[inline(never)]
    unsafe fn deallocate_slow(&self, ptr: *mut u8, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        let place = tag::place(&self.inner, size, align);
        // SAFETY: the caller passes a live block from this allocator with its layout.
        if let Some(comp) = unsafe { owner(ptr, size, place) } {
            record_free(thread::state(), comp, size, place.extra() != 0);
        }
        // SAFETY: the block came from the inner allocator with exactly this inner layout.
        unsafe { self.inner.dealloc(ptr, inner_layout(size, align, place)) };
    }
}

// SAFETY: every block handed out comes from the inner allocator with the caller's layout extended
// by the tag's extra bytes (same alignment), and goes back to it with that same layout: the tag's
// place is a pure function of the caller's layout, which the caller passes back unchanged. The
// caller's bytes are never touched, only the trailer beyond them or a shadow entry.
unsafe impl<A: GlobalAlloc + SizeClasses> GlobalAlloc for Governor<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.allocate_any(layout, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.allocate_any(layout, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        // The block was allocated with this layout, so it is in range and its tag is at `place`.
        // Each kind of place has its own copy of the fast half, which knows its kind as a
        // constant (see `allocate`).
        let fast = |place: Place, trailer: bool| {
            // SAFETY: the caller passes a live block from this allocator with its layout.
            let comp = unsafe { read_owner(ptr, size, place) }?;
            let st = thread::state()?;
            st.try_free(comp, size, trailer).then_some(place)
        };
        let fast = match tag::place_fast(&self.inner, size, align, LIMIT) {
            Some(Place::Trailer) => fast(Place::Trailer, true),
            Some(place) => fast(place, false),
            None => None,
        };
        let Some(place) = fast else {
            // SAFETY: forwarded contract; nothing was recorded.
            return unsafe { self.deallocate_slow(ptr, layout) };
        };
        // SAFETY: the block came from the inner allocator with exactly this inner layout, for a
        // request `place_fast` answered for.
        unsafe {
            self.inner
                .dealloc_small(ptr, inner_layout(size, align, place))
        };
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_size, align) = (layout.size(), layout.align());
        if out_of_range(new_size, align) {
            return ptr::null_mut();
        }
        let old_place = tag::place(&self.inner, old_size, align);
        let new_place = tag::place(&self.inner, new_size, align);
        let st = thread::state();
        // SAFETY: the caller passes a live block from this allocator with its layout.
        let owner = unsafe { owner(ptr, old_size, old_place) };
        // A block whose tag was unreadable was credited to no one: it joins the current component
        // as if it were new.
        let (comp, charged) = match owner {
            Some(comp) => (comp, new_size.saturating_sub(old_size)),
            None => (current(st), new_size),
        };
        if charged > 0 && !admit(st, comp, charged) {
            // The line printed if this ends in an abort names the size asked for.
            abort_line::remember_realloc(charged, old_size, new_size);
            // Growth stays in the block's component, except on a panicking thread: there the block
            // moves to "unscoped" as a new block would go ([`admit_while_unwinding`], which aborts
            // when that is refused too).
            return match admit_while_unwinding(st, comp, new_size) {
                // SAFETY: forwarded contract; `new_size` bytes are admitted to `unscoped`.
                Some(unscoped) => unsafe {
                    self.move_while_unwinding(ptr, layout, new_size, owner, unscoped)
                },
                None => ptr::null_mut(),
            };
        }
        let new_inner = new_size + new_place.extra();
        // SAFETY: the block came from the inner allocator with the old inner layout; `new_inner` is
        // non-zero and, rounded up to `align`, below isize::MAX.
        let new_ptr = unsafe {
            self.inner
                .realloc(ptr, inner_layout(old_size, align, old_place), new_inner)
        };
        if new_ptr.is_null() {
            // The old block, and its tag, are untouched.
            if charged > 0 {
                refund(st, comp, charged);
            }
            return new_ptr;
        }
        // SAFETY: the new block was made for (new_size, align) with its tag at `new_place`.
        unsafe { new_place.write(new_ptr, new_size, comp) };
        match owner {
            Some(_) => {
                let tag = new_place.extra() as i64 - old_place.extra() as i64;
                record_realloc(st, comp, old_size, new_size, tag);
            }
            None => record_alloc(st, comp, new_size, new_place.extra() != 0),
        }
        new_ptr
    }
}
