//! Hears when jemalloc gives pages back: each arena's extent hooks are wrapped so that a
//! listener learns of every address range jemalloc purges, decommits or unmaps.
//!
//! memgov keeps some blocks' component tags in a table indexed by address (alloc-core's shadow
//! tables). Once jemalloc has given a range's pages back, no live block lies in it, so the table
//! entries for that range are dead and the table's pages for it can go back to the system too:
//! without this they stayed resident after the blocks were freed (1/8 of the memory of the
//! freed exact-class blocks under 1 KiB).
//!
//! The listener is set with [`set_pages_released_listener`], an atomic store that may run
//! anywhere, even on the allocation path. Wrapping an arena's hooks takes jemalloc's control lock,
//! so it runs off that path, in [`hook_arenas`] (which allocates nothing), called by
//! [`purge_all`](crate::purge_all), [`decay_all`](crate::decay_all) and
//! [`compact`](crate::compact) before they purge, and by memgov's monitor and its statistics
//! readers. Arenas jemalloc creates later are wrapped by the next such call; purges in an arena
//! before it is wrapped are not heard.
//!
//! Each wrapper forwards every hook to the hooks the arena had (jemalloc's defaults, or a
//! program's own), with the same arguments, and reports a range after the forwarded call
//! succeeds. A hook the arena did not have stays absent. One difference remains: jemalloc zeroes
//! a recycled extent for a large `alloc_zeroed` with `memset` when an arena's hooks are not its
//! defaults (with its defaults it may advise the pages away instead).
//!
//! ```
//! fn heard(_addr: usize, _len: usize) {}
//! alloc_jemalloc::set_pages_released_listener(heard);
//! let newly_wrapped = alloc_jemalloc::hook_arenas().unwrap();
//! assert!(alloc_jemalloc::extent_hook_stats().arenas_hooked >= newly_wrapped);
//! ```

use crate::raw::Mib;
use crate::CtlError;
use libc::{c_uint, c_void};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use tikv_jemalloc_sys::extent_hooks_t;

/// Called with each range `[addr, addr + len)` whose pages jemalloc has given back (purged,
/// decommitted or unmapped). It runs inside jemalloc, on whatever thread purges (an allocating
/// thread among them), with jemalloc's locks held: it must not allocate, block or panic.
pub type PagesReleased = fn(addr: usize, len: usize);

/// The listener, as a pointer (null: none).
static LISTENER: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// Sets the function that hears of released ranges, replacing any earlier one. Only an atomic
/// store: it may be called anywhere, the allocation path included. Arenas are wrapped by the next
/// [`hook_arenas`].
pub fn set_pages_released_listener(listener: PagesReleased) {
    LISTENER.store(listener as *mut (), Ordering::Release);
}

/// What the wrappers have done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExtentHookStats {
    /// Arenas whose hooks are wrapped.
    pub arenas_hooked: u32,
    /// Ranges reported to the listener.
    pub ranges_released: u64,
    /// Bytes in those ranges.
    pub bytes_released: u64,
    /// Times a sweep left an arena unwrapped because its hooks were of a kind past the
    /// [`WRAPPER_SLOTS`] distinct ones this module can wrap (each sweep counts such an arena
    /// again).
    pub arenas_skipped: u32,
    /// Calls of [`hook_arenas`] that failed (a control refused); the purges that call it go on
    /// regardless.
    pub failures: u64,
}

/// How many distinct original hook tables can be wrapped (jemalloc's defaults take one).
pub const WRAPPER_SLOTS: usize = 8;

static ARENAS_HOOKED: AtomicU32 = AtomicU32::new(0);
static ARENAS_SKIPPED: AtomicU32 = AtomicU32::new(0);
static RANGES_RELEASED: AtomicU64 = AtomicU64::new(0);
static BYTES_RELEASED: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// The wrappers' figures.
///
/// ```
/// let s = alloc_jemalloc::extent_hook_stats();
/// assert!(s.bytes_released >= s.ranges_released);
/// ```
pub fn extent_hook_stats() -> ExtentHookStats {
    ExtentHookStats {
        arenas_hooked: ARENAS_HOOKED.load(Ordering::Relaxed),
        ranges_released: RANGES_RELEASED.load(Ordering::Relaxed),
        bytes_released: BYTES_RELEASED.load(Ordering::Relaxed),
        arenas_skipped: ARENAS_SKIPPED.load(Ordering::Relaxed),
        failures: FAILURES.load(Ordering::Relaxed),
    }
}

/// One wrapper: the hook table jemalloc is given, and the table it wraps.
#[repr(C)]
struct Wrapper {
    /// First, so that the pointer jemalloc passes to each hook is a pointer to the wrapper.
    hooks: UnsafeCell<extent_hooks_t>,
    /// The wrapped table; null while the slot is free. Written once, under [`INSTALL`], before the
    /// wrapper is given to any arena.
    original: AtomicPtr<extent_hooks_t>,
}

// SAFETY: `hooks` is written only while the slot is free (no arena has it; under INSTALL) and is
// read-only once an arena has it; `original` is atomic.
unsafe impl Sync for Wrapper {}

const NO_HOOKS: extent_hooks_t = extent_hooks_t {
    alloc: None,
    dalloc: None,
    destroy: None,
    commit: None,
    decommit: None,
    purge_lazy: None,
    purge_forced: None,
    split: None,
    merge: None,
};

static WRAPPERS: [Wrapper; WRAPPER_SLOTS] = [const {
    Wrapper {
        hooks: UnsafeCell::new(NO_HOOKS),
        original: AtomicPtr::new(std::ptr::null_mut()),
    }
}; WRAPPER_SLOTS];

/// Serialises [`hook_arenas`] (off the allocation path).
static INSTALL: Mutex<()> = Mutex::new(());

/// Takes [`INSTALL`] (for [`crate::ForkGuard`]).
pub(crate) fn lock_install_for_fork() -> std::sync::MutexGuard<'static, ()> {
    INSTALL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wraps the hooks of every initialised arena not wrapped yet, so that the listener hears of
/// its purges; returns how many arenas it wrapped now. Does nothing while no listener is set.
///
/// It reaches the controls by MIB and takes a lock of its own, so it does not allocate (except
/// to build an error): callable wherever a program may block briefly, but never from an
/// allocator (jemalloc's control lock).
///
/// # Errors
/// [`CtlError`] when a control fails; arenas wrapped before the failure stay wrapped.
pub fn hook_arenas() -> Result<u32, CtlError> {
    if LISTENER.load(Ordering::Acquire).is_null() {
        return Ok(0);
    }
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    hook_arenas_locked().inspect_err(|_| {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    })
}

/// [`hook_arenas`]'s work, under [`INSTALL`].
fn hook_arenas_locked() -> Result<u32, CtlError> {
    let narenas = Mib::new(c"arenas.narenas")?;
    let initialized = Mib::new(c"arena.0.initialized")?;
    let hooks = Mib::new(c"arena.0.extent_hooks")?;
    // `arena.<i>.initialized` answers from jemalloc's view at the last epoch: without advancing
    // it, arenas created since (new threads, `arenas.create`) would read as absent and stay
    // unwrapped until something else refreshed the statistics.
    // SAFETY: `epoch` is a uint64_t; writing any value advances it.
    unsafe { Mib::new(c"epoch")?.exchange::<u64>(1) }?;
    // SAFETY: `arenas.narenas` is an unsigned.
    let count = unsafe { narenas.read::<u32>() }?;
    let mut wrapped = 0;
    for i in 0..count as usize {
        // SAFETY: `arena.<i>.initialized` is a bool.
        if !unsafe { initialized.with_index(1, i).read::<bool>() }? {
            continue;
        }
        let arena = hooks.with_index(1, i);
        // SAFETY: `arena.<i>.extent_hooks` is an `extent_hooks_t *`.
        let current = unsafe { arena.read::<*mut extent_hooks_t>() }?;
        if current.is_null() || is_wrapper(current) {
            continue;
        }
        let Some(wrapper) = wrapper_for(current) else {
            ARENAS_SKIPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // SAFETY: as above; the wrapper is a static, so it outlives every arena.
        let replaced = unsafe { arena.exchange(wrapper) }?;
        if replaced != current {
            // Someone changed the arena's hooks between the read and the write: put theirs back
            // and leave the arena to the next call.
            // SAFETY: as above.
            unsafe { arena.exchange(replaced) }?;
            continue;
        }
        wrapped += 1;
        ARENAS_HOOKED.fetch_add(1, Ordering::Relaxed);
    }
    Ok(wrapped)
}

fn is_wrapper(hooks: *mut extent_hooks_t) -> bool {
    WRAPPERS.iter().any(|w| w.hooks.get() == hooks)
}

/// The wrapper around `original`, made in a free slot if there is none yet. Caller holds
/// [`INSTALL`].
fn wrapper_for(original: *mut extent_hooks_t) -> Option<*mut extent_hooks_t> {
    if let Some(w) = WRAPPERS
        .iter()
        .find(|w| w.original.load(Ordering::Acquire) == original)
    {
        return Some(w.hooks.get());
    }
    let free = WRAPPERS
        .iter()
        .find(|w| w.original.load(Ordering::Acquire).is_null())?;
    // SAFETY: `original` is a hook table jemalloc handed out for a live arena; such tables must
    // stay valid for the arena's life (jemalloc's contract for extent hooks).
    let o = unsafe { &*original };
    let wrapped = extent_hooks_t {
        alloc: o.alloc.map(|_| alloc as _),
        dalloc: o.dalloc.map(|_| dalloc as _),
        destroy: o.destroy.map(|_| destroy as _),
        commit: o.commit.map(|_| commit as _),
        decommit: o.decommit.map(|_| decommit as _),
        purge_lazy: o.purge_lazy.map(|_| purge_lazy as _),
        purge_forced: o.purge_forced.map(|_| purge_forced as _),
        split: o.split.map(|_| split as _),
        merge: o.merge.map(|_| merge as _),
    };
    // SAFETY: the slot is free, so no arena reads its table; INSTALL keeps other writers out.
    unsafe { *free.hooks.get() = wrapped };
    free.original.store(original, Ordering::Release);
    Some(free.hooks.get())
}

/// The table `hooks` (one of ours) wraps.
///
/// # Safety
/// `hooks` is a wrapper's table, as jemalloc passes it to the hooks below.
#[inline]
unsafe fn original(hooks: *mut extent_hooks_t) -> *mut extent_hooks_t {
    // SAFETY: every table jemalloc has from us is the first field of a `Wrapper` (repr(C)).
    unsafe { &*hooks.cast::<Wrapper>() }
        .original
        .load(Ordering::Acquire)
}

/// Tells the listener that `[addr, addr + len)` has been given back.
fn released(addr: *mut c_void, len: usize) {
    let listener = LISTENER.load(Ordering::Acquire);
    if listener.is_null() || len == 0 {
        return;
    }
    // SAFETY: LISTENER holds only null or a `PagesReleased` stored by
    // `set_pages_released_listener`.
    let listener: PagesReleased =
        unsafe { std::mem::transmute::<*mut (), PagesReleased>(listener) };
    listener(addr as usize, len);
    RANGES_RELEASED.fetch_add(1, Ordering::Relaxed);
    BYTES_RELEASED.fetch_add(len as u64, Ordering::Relaxed);
}

// The hooks. Each is installed only where the wrapped table has the same hook (see
// `wrapper_for`), so `expect`-free `match`es below fall back to jemalloc's meaning of an absent
// hook (failure, or nothing) only if a table changed under us, which jemalloc's contract rules out.

unsafe extern "C" fn alloc(
    hooks: *mut extent_hooks_t,
    new_addr: *mut c_void,
    size: usize,
    alignment: usize,
    zero: *mut bool,
    commit: *mut bool,
    arena: c_uint,
) -> *mut c_void {
    // SAFETY: jemalloc calls this hook with one of our tables, and forwards its own arguments.
    unsafe {
        let o = original(hooks);
        match (*o).alloc {
            Some(f) => f(o, new_addr, size, alignment, zero, commit, arena),
            None => std::ptr::null_mut(),
        }
    }
}

unsafe extern "C" fn destroy(
    hooks: *mut extent_hooks_t,
    addr: *mut c_void,
    size: usize,
    committed: bool,
    arena: c_uint,
) {
    // SAFETY: as in `alloc`.
    unsafe {
        let o = original(hooks);
        if let Some(f) = (*o).destroy {
            f(o, addr, size, committed, arena);
        }
    }
    released(addr, size);
}

/// The hooks that return a success flag: each calls the wrapped table's hook of the same name
/// with the same arguments (an absent one fails, as jemalloc reads an absent hook), and those
/// marked `releases` report their range to the listener when they succeed.
macro_rules! forwarded_hooks {
    ($($hook:ident($($arg:ident: $ty:ty),*) $(releases $start:expr, $len:expr)?;)*) => {$(
        unsafe extern "C" fn $hook(
            hooks: *mut extent_hooks_t,
            $($arg: $ty,)*
            arena: c_uint,
        ) -> bool {
            // SAFETY: as in `alloc`.
            let failed = unsafe {
                let o = original(hooks);
                match (*o).$hook {
                    Some(f) => f(o, $($arg,)* arena),
                    None => true,
                }
            };
            $(if !failed {
                released($start, $len);
            })?
            failed
        }
    )*};
}

forwarded_hooks! {
    dalloc(addr: *mut c_void, size: usize, committed: bool) releases addr, size;
    commit(addr: *mut c_void, size: usize, offset: usize, length: usize);
    decommit(addr: *mut c_void, size: usize, offset: usize, length: usize)
        releases addr.cast::<u8>().wrapping_add(offset).cast(), length;
    purge_lazy(addr: *mut c_void, size: usize, offset: usize, length: usize)
        releases addr.cast::<u8>().wrapping_add(offset).cast(), length;
    purge_forced(addr: *mut c_void, size: usize, offset: usize, length: usize)
        releases addr.cast::<u8>().wrapping_add(offset).cast(), length;
    split(addr: *mut c_void, size: usize, size_a: usize, size_b: usize, committed: bool);
    merge(addr_a: *mut c_void, size_a: usize, addr_b: *mut c_void, size_b: usize, committed: bool);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static HEARD: AtomicUsize = AtomicUsize::new(0);

    fn count(_addr: usize, len: usize) {
        HEARD.fetch_add(len, Ordering::Relaxed);
    }

    /// An arena created since jemalloc's last `epoch` (which `arena.<i>.initialized` reports
    /// from) is wrapped by the next call, as the module docs promise.
    #[test]
    #[serial_test::serial]
    fn an_arena_created_since_the_last_refresh_is_wrapped() {
        set_pages_released_listener(count);
        crate::refresh().unwrap();
        hook_arenas().unwrap();
        // SAFETY: `arenas.create` reads an unsigned (the new arena's index).
        let arena = unsafe { crate::raw::read::<u32>("arenas.create") }.unwrap();
        hook_arenas().unwrap();
        // SAFETY: `arena.<i>.extent_hooks` is an `extent_hooks_t *`.
        let current = unsafe {
            crate::raw::read::<*mut extent_hooks_t>(&format!("arena.{arena}.extent_hooks"))
        }
        .unwrap();
        assert!(is_wrapper(current), "arena {arena} not wrapped");
    }

    /// Wrapped arenas keep allocating and purging, and their purges are heard.
    #[test]
    #[serial_test::serial]
    fn purges_of_wrapped_arenas_are_heard() {
        set_pages_released_listener(count);
        hook_arenas().unwrap();
        assert!(extent_hook_stats().arenas_hooked >= 1);
        // A second call finds nothing new to wrap in the arenas it has seen.
        let again = hook_arenas().unwrap();
        assert!(again <= 1, "{again}");
        let before = HEARD.load(Ordering::Relaxed);
        // 64 MiB in 64 KiB blocks through jemalloc, freed, then purged.
        let layout = std::alloc::Layout::from_size_align(64 << 10, 8).unwrap();
        let blocks: Vec<*mut u8> = (0..1024)
            .map(|_| {
                // SAFETY: a non-zero size.
                let p = unsafe { std::alloc::GlobalAlloc::alloc(&crate::Jemalloc, layout) };
                assert!(!p.is_null());
                // SAFETY: the block has `layout.size()` bytes.
                unsafe { p.write_bytes(1, layout.size()) };
                p
            })
            .collect();
        for p in blocks {
            // SAFETY: allocated above with `layout`.
            unsafe { std::alloc::GlobalAlloc::dealloc(&crate::Jemalloc, p, layout) };
        }
        crate::purge_all().unwrap();
        let heard = HEARD.load(Ordering::Relaxed) - before;
        assert!(heard >= 32 << 20, "heard of {heard} bytes");
        let s = extent_hook_stats();
        assert!(s.bytes_released >= heard as u64, "{s:?}");
        assert_eq!(s.arenas_skipped, 0);
    }
}
