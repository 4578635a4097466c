//! The component tag that travels with every block.
//!
//! Each block handed out by the governor carries a 2-byte trailer holding its component id, right
//! after the bytes the caller asked for: a request for `size` bytes asks the inner allocator for
//! `size + 2`. On free and realloc the caller passes the same layout back, so the trailer is found
//! at the same offset without any lookup, and the bytes are credited to the component that
//! allocated them, whichever thread or scope frees them.
//!
//! Why a trailer: jemalloc rounds every request up to a size class (8, 16, 32, 48, 64, 80, ...,
//! then four classes per doubling). For every size that is not itself a class, `size + 2` still fits
//! in the class `size` would have used, so the tag costs no memory at all. Only requests that are
//! exactly a class move to the next class; `benches/README.md` measures what that costs. A header
//! would cost `align` bytes on every block and would break in-place `realloc` alignment.

use std::alloc::Layout;

/// Bytes of tag appended to every block.
pub const TAG_BYTES: usize = 2;

/// The layout the inner allocator is asked for when the caller asks for `size` bytes at `align`.
/// `None` when the extended size would not be a valid layout.
#[inline(always)]
pub(crate) fn inner_layout(size: usize, align: usize) -> Option<Layout> {
    let want = size.checked_add(TAG_BYTES)?;
    // `align` comes from a valid Layout, so it is a non-zero power of two.
    if want > isize::MAX as usize - (align - 1) {
        return None;
    }
    // SAFETY: `align` is a power of two (it came from a Layout) and `want` rounded up to `align`
    // does not overflow isize, checked just above.
    Some(unsafe { Layout::from_size_align_unchecked(want, align) })
}

/// Writes the tag of a block of `size` requested bytes.
///
/// # Safety
/// `ptr` is a block of at least `size + TAG_BYTES` writable bytes.
#[inline(always)]
pub(crate) unsafe fn write(ptr: *mut u8, size: usize, component: u16) {
    // SAFETY: the caller guarantees `size + 2` writable bytes; the write is unaligned-safe.
    unsafe { ptr.add(size).cast::<u16>().write_unaligned(component) }
}

/// Reads the tag of a block of `size` requested bytes.
///
/// # Safety
/// `ptr` is a live block made by the governor for a request of `size` bytes.
#[inline(always)]
pub(crate) unsafe fn read(ptr: *const u8, size: usize) -> u16 {
    // SAFETY: the governor wrote the tag at this offset when it handed the block out.
    unsafe { ptr.add(size).cast::<u16>().read_unaligned() }
}
