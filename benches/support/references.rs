//! Reference wrappers, not products: what any wrapper costs in the benches' harness, from a bare
//! forward to the least an allocator can do and still credit each free to the component that
//! allocated the block. `benches/README.md` says what each one shows.

use memgov::Jemalloc;
use std::alloc::{GlobalAlloc, Layout};

/// [`Forward`].
pub static FORWARD_JEMALLOC: Forward = Forward;
/// [`ThreadCounter`].
pub static THREAD_COUNTER_JEMALLOC: ThreadCounter = ThreadCounter;
/// [`TrailerTag`].
pub static TRAILER_TAG_JEMALLOC: TrailerTag = TrailerTag;
/// [`ShadowTag`].
pub static SHADOW_TAG_JEMALLOC: ShadowTag = ShadowTag;
/// [`GlobalCounter`].
pub static GLOBAL_COUNTER_JEMALLOC: GlobalCounter = GlobalCounter;

/// Reference point, not a product: a wrapper that forwards all four methods to jemalloc and does
/// nothing else. What one more allocator layer costs in this harness.
pub struct Forward;

// SAFETY: forwards every call unchanged.
unsafe impl GlobalAlloc for Forward {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }
}

/// Reference point, not a product: the cheapest accounting wrapper there is, a thread-local byte
/// count, no component and no tag. A floor for any allocator that counts per thread.
pub struct ThreadCounter;

thread_local! {
    static THREAD_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count(delta: u64) {
    let _ = THREAD_BYTES.try_with(|b| b.set(b.get().wrapping_add(delta)));
}

// SAFETY: forwards every call unchanged; the count is a side effect only.
unsafe impl GlobalAlloc for ThreadCounter {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as u64);
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as u64);
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count((new_size as u64).wrapping_sub(layout.size() as u64));
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count((layout.size() as u64).wrapping_neg());
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }
}

/// Reference point, not a product: about the least a wrapper can do and still credit every free
/// to the component that allocated the block, whichever thread frees it. A 2-byte trailer after
/// the requested bytes names the allocating component (read from a thread-local), the free reads
/// it back, and each thread keeps a byte count per component. No budgets, no peaks, no counts of
/// blocks, no shared view, and always a trailer (no shadow table: an exact-class request moves up
/// a class). A floor for any allocator that attributes with a tag.
pub struct TrailerTag;

/// The calling thread's current component and its byte counts per component.
struct TagState {
    current: std::cell::Cell<u16>,
    bytes: [std::cell::Cell<u64>; 16],
}

thread_local! {
    static TAG_STATE: TagState = const {
        TagState {
            current: std::cell::Cell::new(0),
            bytes: [const { std::cell::Cell::new(0) }; 16],
        }
    };
}

const TAG: usize = 2;

/// The inner layout: the request plus the trailer.
fn tagged(layout: Layout) -> Layout {
    // SAFETY: the benches' sizes are small; the alignment came from a Layout.
    unsafe { Layout::from_size_align_unchecked(layout.size() + TAG, layout.align()) }
}

/// Counts `delta` bytes against `comp`, or against the current component when `comp` is `None`;
/// returns the component counted.
fn tag_count(comp: Option<u16>, delta: u64) -> u16 {
    TAG_STATE
        .try_with(|st| {
            let comp = comp.unwrap_or_else(|| st.current.get());
            let b = &st.bytes[comp as usize & 15];
            b.set(b.get().wrapping_add(delta));
            comp
        })
        .unwrap_or(0)
}

/// Tags a block just made for `size` bytes with the current component and counts it there; a null
/// block (refused) passes through uncounted.
///
/// # Safety
/// A non-null `p` has `size + TAG` writable bytes.
unsafe fn tag_new(p: *mut u8, size: usize) -> *mut u8 {
    if !p.is_null() {
        let comp = tag_count(None, size as u64);
        // SAFETY: forwarded from the caller.
        unsafe { write_tag(p, size, comp) };
    }
    p
}

/// # Safety
/// `p` has `size + TAG` writable bytes.
unsafe fn write_tag(p: *mut u8, size: usize, comp: u16) {
    // SAFETY: forwarded from the caller.
    unsafe { p.add(size).cast::<u16>().write_unaligned(comp) }
}

/// # Safety
/// `p` is a live block tagged by `write_tag` for `size` bytes.
unsafe fn read_tag(p: *const u8, size: usize) -> u16 {
    // SAFETY: forwarded from the caller.
    unsafe { p.add(size).cast::<u16>().read_unaligned() }
}

// SAFETY: every block comes from jemalloc with the caller's layout grown by TAG bytes, and goes
// back with that same grown layout; only the trailer beyond the caller's bytes is written.
unsafe impl GlobalAlloc for TrailerTag {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract, with TAG more bytes.
        unsafe { tag_new(Jemalloc.alloc(tagged(layout)), layout.size()) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract, with TAG more bytes.
        unsafe { tag_new(Jemalloc.alloc_zeroed(tagged(layout)), layout.size()) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `alloc` with this layout.
        let comp = unsafe { read_tag(ptr, layout.size()) };
        // SAFETY: forwarded contract, with TAG more bytes on both sides.
        let p = unsafe { Jemalloc.realloc(ptr, tagged(layout), new_size + TAG) };
        if !p.is_null() {
            tag_count(
                Some(comp),
                (new_size as u64).wrapping_sub(layout.size() as u64),
            );
            // SAFETY: the new block has TAG bytes after the requested ones.
            unsafe { write_tag(p, new_size, comp) };
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        let comp = unsafe { read_tag(ptr, layout.size()) };
        tag_count(Some(comp), (layout.size() as u64).wrapping_neg());
        // SAFETY: forwarded contract, with TAG more bytes.
        unsafe { Jemalloc.dealloc(ptr, tagged(layout)) }
    }
}

/// Reference point, not a product: the trailer-tag reference with its tag in a shadow table
/// instead, so no request moves up a class. One `u16` per 8 bytes of address space (jemalloc's
/// smallest class), in a reservation of 32 TiB made on first use with `MAP_NORESERVE` (only the
/// pages written are ever backed), indexed by the block's address. Same thread-local counts per
/// component as the trailer-tag reference; no budgets, peaks, block counts or shared view. A floor
/// for an allocator that attributes with a tag and never changes the request.
pub struct ShadowTag;

/// The shadow table (null until made).
static SHADOW: std::sync::atomic::AtomicPtr<u16> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
/// log2 of the bytes of address space each entry covers.
const SHADOW_GRANULE_SHIFT: u32 = 3;
/// The table's size: an entry for every granule of a 47-bit address space.
const SHADOW_BYTES: usize = (1usize << (47 - SHADOW_GRANULE_SHIFT)) * 2;

/// The entry for the block at `p`.
#[inline(always)]
fn shadow_entry(p: *const u8) -> *mut u16 {
    let mut table = SHADOW.load(std::sync::atomic::Ordering::Acquire);
    if table.is_null() {
        table = make_shadow();
    }
    table.wrapping_add(p as usize >> SHADOW_GRANULE_SHIFT)
}

#[cold]
#[inline(never)]
fn make_shadow() -> *mut u16 {
    use std::sync::atomic::Ordering::{AcqRel, Acquire};
    // SAFETY: an anonymous private mapping at an address the kernel picks; nothing is aliased.
    let made = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SHADOW_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert!(
        made != libc::MAP_FAILED,
        "cannot reserve the bench's shadow table"
    );
    match SHADOW.compare_exchange(std::ptr::null_mut(), made.cast(), AcqRel, Acquire) {
        Ok(_) => made.cast(),
        Err(theirs) => {
            // SAFETY: the mapping made above, never shared.
            unsafe { libc::munmap(made, SHADOW_BYTES) };
            theirs
        }
    }
}

/// Tags a block just made for `size` bytes with the current component in the shadow table and
/// counts it there; a null block (refused) passes through uncounted.
fn shadow_new(p: *mut u8, size: usize) -> *mut u8 {
    if !p.is_null() {
        let comp = tag_count(None, size as u64);
        // SAFETY: the entry of any user-space address is inside the table's reservation.
        unsafe { shadow_entry(p).write(comp) };
    }
    p
}

// SAFETY: every call is forwarded unchanged; the tag lives outside the blocks, in the shadow
// table, whose entry for any user-space address is inside the reservation.
unsafe impl GlobalAlloc for ShadowTag {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        shadow_new(unsafe { Jemalloc.alloc(layout) }, layout.size())
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        shadow_new(unsafe { Jemalloc.alloc_zeroed(layout) }, layout.size())
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `shadow_new`; `ptr`'s entry was written when it was handed out.
        let comp = unsafe { shadow_entry(ptr).read() };
        // SAFETY: forwarded contract.
        let p = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            tag_count(
                Some(comp),
                (new_size as u64).wrapping_sub(layout.size() as u64),
            );
            // SAFETY: as in `shadow_new`.
            unsafe { shadow_entry(p).write(comp) };
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `realloc`.
        let comp = unsafe { shadow_entry(ptr).read() };
        tag_count(Some(comp), (layout.size() as u64).wrapping_neg());
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }
}

/// Reference point, not a product: the design of `cap` and of most Rust limit wrappers, one
/// process-wide atomic byte count checked against a hard limit. Each allocation adds its size
/// with one atomic read-modify-write and takes it back if that passed the limit (reserve with
/// rollback, so concurrent callers never pass it); each free subtracts. No component, no tag, no
/// counts. The limit here is never reached. Every thread writes the same cache line on every
/// operation, which is what the governor's per-thread batches avoid.
pub struct GlobalCounter;

/// The process's live bytes, as [`GlobalCounter`] counts them.
static GLOBAL_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// [`GlobalCounter`]'s hard limit: far above anything the benches allocate.
const GLOBAL_LIMIT: usize = 1 << 40;

/// Charges `size` bytes, or refuses (false, nothing charged) past [`GLOBAL_LIMIT`].
#[inline(always)]
fn global_charge(size: usize) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let before = GLOBAL_BYTES.fetch_add(size, Relaxed);
    if before + size > GLOBAL_LIMIT {
        GLOBAL_BYTES.fetch_sub(size, Relaxed);
        return false;
    }
    true
}

#[inline(always)]
fn global_uncharge(size: usize) {
    GLOBAL_BYTES.fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
}

/// A block from the inner allocator, or null (and its charge taken back) if it refused.
#[inline(always)]
fn global_charged(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        global_uncharge(size);
    }
    p
}

// SAFETY: every call is forwarded unchanged, or refused with null before reaching jemalloc.
unsafe impl GlobalAlloc for GlobalCounter {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !global_charge(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        global_charged(unsafe { Jemalloc.alloc(layout) }, layout.size())
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !global_charge(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        global_charged(unsafe { Jemalloc.alloc_zeroed(layout) }, layout.size())
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grow = new_size.saturating_sub(layout.size());
        if grow > 0 && !global_charge(grow) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        let p = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if p.is_null() {
            global_uncharge(grow);
        } else {
            global_uncharge(layout.size().saturating_sub(new_size));
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        global_uncharge(layout.size());
        // SAFETY: forwarded contract.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }
}
