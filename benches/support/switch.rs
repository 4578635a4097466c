//! A global allocator that is raw jemalloc or `Governor<Jemalloc>`, chosen once per process from
//! `ALLOCATOR_MODE` (`governed`, else raw) before the first allocation: the plain runners compare
//! the two on the same workload in child processes of one run, since a program has one global
//! allocator for life.

use memgov::{Governor, Jemalloc};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU8, Ordering};

/// The variable a child reads its mode from.
pub const MODE_VAR: &str = "ALLOCATOR_MODE";
/// Its value for the governor; anything else (or nothing) is raw jemalloc.
pub const GOVERNED_MODE: &str = "governed";
/// Its value for raw jemalloc.
pub const RAW_MODE: &str = "raw";

/// Raw jemalloc or the governor over it, the same one for the life of the process.
pub struct Switch;

static MODE: AtomicU8 = AtomicU8::new(0);
static GOVERNOR: Governor<Jemalloc> = Governor::with_inner(Jemalloc);
const RAW: u8 = 1;
const GOVERNED: u8 = 2;

fn mode() -> u8 {
    let m = MODE.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    // SAFETY: the name is a NUL-terminated literal; getenv returns null or a C string.
    let v = unsafe { libc::getenv(c"ALLOCATOR_MODE".as_ptr()) };
    // SAFETY: a non-null result of getenv points at a NUL-terminated string.
    let governed = !v.is_null() && unsafe { *v } == b'g' as libc::c_char;
    let m = if governed { GOVERNED } else { RAW };
    MODE.store(m, Ordering::Relaxed);
    m
}

/// Whether this process runs over the governor.
pub fn governed() -> bool {
    mode() == GOVERNED
}

// SAFETY: forwards to one of two allocators, the same one for the life of the process.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if governed() {
                GOVERNOR.alloc(l)
            } else {
                Jemalloc.alloc(l)
            }
        }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if governed() {
                GOVERNOR.alloc_zeroed(l)
            } else {
                Jemalloc.alloc_zeroed(l)
            }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract; the mode never changes, so the block goes back where it came from.
        unsafe {
            if governed() {
                GOVERNOR.dealloc(p, l)
            } else {
                Jemalloc.dealloc(p, l)
            }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if governed() {
                GOVERNOR.realloc(p, l, n)
            } else {
                Jemalloc.realloc(p, l, n)
            }
        }
    }
}
