//! Per-thread state: the current component, the scope stack and the batched counter deltas.
//!
//! # Batching
//! Each thread owns a [`Block`] of [`SLOTS`] pending-delta slots, direct-mapped by component id.
//! The allocation path only does relaxed loads and stores on its own block (no atomic
//! read-modify-write, no shared cache line). A slot is folded into the shared counters (a flush)
//! when it has seen [`FLUSH_OPS`] operations, when its pending live delta passes
//! [`FLUSH_BYTES`], when another component needs the slot, when the thread calls
//! [`flush_thread`](crate::flush_thread), and when the thread exits.
//!
//! So the shared view lags the truth by at most `SLOTS * FLUSH_BYTES` live bytes and
//! `SLOTS * FLUSH_OPS` operations per running thread. Readers ([`crate::snapshot`] and friends) add
//! every thread's pending deltas, because blocks live in memory any thread can read: once threads
//! are quiet, what they read is exact.
//!
//! # Teardown
//! The thread-local is `const`-initialised and has no destructor, so it can be reached from any
//! other thread-local's destructor. Blocks come from `mmap`, never from the allocator being
//! governed, and are recycled: at thread exit a pthread-key destructor (which runs after Rust's
//! thread-local destructors) flushes the block and hands it back. Allocations after that (or before
//! the block exists, or while it is being set up) go straight to the shared counters.

use crate::counters::{self, Delta};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicUsize};

/// Pending-delta slots per thread.
pub const SLOTS: usize = 16;
/// A slot is flushed after this many operations.
pub const FLUSH_OPS: u64 = 1024;
/// A slot is flushed once its pending live delta exceeds this many bytes either way.
pub const FLUSH_BYTES: u64 = 128 * 1024;
/// How deeply component scopes may nest on one thread.
pub const MAX_DEPTH: usize = 64;

/// One allocation-path operation, as recorded. `tag` is the bytes the tag added to the inner
/// request (or the change in them, for a realloc).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Alloc { size: u64, tag: i64 },
    Free { size: u64, tag: i64 },
    Realloc { old: u64, new: u64, tag: i64 },
}

const PHASE_NEW: u8 = 0;
const PHASE_INIT: u8 = 1;
const PHASE_READY: u8 = 2;
const PHASE_EXITED: u8 = 3;

/// One component's pending deltas on one thread. Written only by the owning thread (relaxed
/// load + store, which compile to plain moves); read by any thread.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    /// Component id + 1; 0 = empty.
    comp: AtomicU64,
    /// Bytes allocated in this batch (new blocks and realloc growth).
    alloc_bytes: AtomicU64,
    /// Bytes freed in this batch (freed blocks and realloc shrinkage).
    free_bytes: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
    /// Highest `alloc_bytes - free_bytes` seen in this batch.
    high: AtomicI64,
    /// Change in tag bytes asked of the inner allocator on top of the requests.
    tag_bytes: AtomicI64,
}

#[inline(always)]
fn bump(a: &AtomicU64, v: u64) -> u64 {
    let n = a.load(Relaxed).wrapping_add(v);
    a.store(n, Relaxed);
    n
}

impl Slot {
    /// Records an allocation; true when the slot should be flushed.
    #[inline(always)]
    fn alloc(&self, size: u64, tag: i64) -> bool {
        let allocated = bump(&self.alloc_bytes, size);
        let live = allocated.wrapping_sub(self.free_bytes.load(Relaxed)) as i64;
        if live > self.high.load(Relaxed) {
            self.high.store(live, Relaxed);
        }
        self.tag_bytes
            .store(self.tag_bytes.load(Relaxed) + tag, Relaxed);
        bump(&self.allocs, 1) >= FLUSH_OPS || allocated > FLUSH_BYTES
    }

    /// Records a free; true when the slot should be flushed.
    #[inline(always)]
    fn free(&self, size: u64, tag: i64) -> bool {
        let freed = bump(&self.free_bytes, size);
        self.tag_bytes
            .store(self.tag_bytes.load(Relaxed) - tag, Relaxed);
        bump(&self.frees, 1) >= FLUSH_OPS || freed > FLUSH_BYTES
    }

    /// Records a realloc from `old` to `new` bytes; true when the slot should be flushed.
    #[inline(always)]
    fn realloc(&self, old: u64, new: u64, tag: i64) -> bool {
        let moved = if new >= old {
            let allocated = bump(&self.alloc_bytes, new - old);
            let live = allocated.wrapping_sub(self.free_bytes.load(Relaxed)) as i64;
            if live > self.high.load(Relaxed) {
                self.high.store(live, Relaxed);
            }
            allocated
        } else {
            bump(&self.free_bytes, old - new)
        };
        self.tag_bytes
            .store(self.tag_bytes.load(Relaxed) + tag, Relaxed);
        bump(&self.reallocs, 1) >= FLUSH_OPS || moved > FLUSH_BYTES
    }

    #[inline(always)]
    fn record(&self, op: Op) -> bool {
        match op {
            Op::Alloc { size, tag } => self.alloc(size, tag),
            Op::Free { size, tag } => self.free(size, tag),
            Op::Realloc { old, new, tag } => self.realloc(old, new, tag),
        }
    }

    /// The pending delta, as a reader sees it.
    fn read(&self) -> Delta {
        let allocated = self.alloc_bytes.load(Relaxed);
        Delta {
            live: allocated.wrapping_sub(self.free_bytes.load(Relaxed)) as i64,
            high: self.high.load(Relaxed),
            allocated,
            allocs: self.allocs.load(Relaxed),
            frees: self.frees.load(Relaxed),
            reallocs: self.reallocs.load(Relaxed),
            tag: self.tag_bytes.load(Relaxed),
        }
    }

    /// Owner only: folds the pending delta into the shared counters and zeroes it.
    fn flush(&self) {
        let comp = self.comp.load(Relaxed);
        if comp == 0 {
            return;
        }
        let d = self.read();
        for a in [
            &self.alloc_bytes,
            &self.free_bytes,
            &self.allocs,
            &self.frees,
            &self.reallocs,
        ] {
            a.store(0, Relaxed);
        }
        self.high.store(0, Relaxed);
        self.tag_bytes.store(0, Relaxed);
        counters::apply((comp - 1) as u16, &d);
    }
}

/// A thread's pending deltas. Never freed: recycled through `in_use`.
#[repr(align(128))]
struct Block {
    slots: [Slot; SLOTS],
    in_use: AtomicBool,
    /// Next block in the append-only list of every block; immutable once published.
    next: *const Block,
}

/// Head of the list of every block ever made.
static BLOCKS: AtomicPtr<Block> = AtomicPtr::new(ptr::null_mut());
/// Blocks currently owned by a live thread.
static BLOCKS_IN_USE: AtomicUsize = AtomicUsize::new(0);
/// Blocks made (each made once and recycled).
static BLOCKS_MADE: AtomicUsize = AtomicUsize::new(0);
/// The pthread key whose destructor flushes a block at thread exit, plus one (0 = not made yet).
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

fn blocks() -> impl Iterator<Item = &'static Block> {
    let mut p = BLOCKS.load(Acquire) as *const Block;
    std::iter::from_fn(move || {
        // SAFETY: blocks are never freed or moved once published, and `next` is written before
        // the Release store that publishes a block.
        let block = unsafe { p.as_ref()? };
        p = block.next;
        Some(block)
    })
}

/// Claims a free block or makes new ones with `mmap`. Cold; never calls the governed allocator.
#[cold]
#[inline(never)]
fn claim_block() -> *const Block {
    for block in blocks() {
        if !block.in_use.load(Relaxed)
            && block
                .in_use
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
        {
            BLOCKS_IN_USE.fetch_add(1, Relaxed);
            return block;
        }
    }
    const CHUNK: usize = 64 * 1024;
    let count = CHUNK / std::mem::size_of::<Block>();
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let mem = unsafe {
        libc::mmap(
            ptr::null_mut(),
            CHUNK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return ptr::null();
    }
    let first = mem.cast::<Block>();
    // SAFETY: the mapping is zero-filled, page-aligned (so 128-aligned) and holds `count` blocks;
    // an all-zero Block is valid (atomics at zero, null `next`). Nothing else sees these blocks
    // until the compare-exchange below publishes them.
    unsafe {
        for i in 0..count - 1 {
            (*first.add(i)).next = first.add(i + 1);
        }
        (*first).in_use.store(true, Relaxed);
        let last = first.add(count - 1);
        let mut head = BLOCKS.load(Relaxed);
        loop {
            (*last).next = head;
            match BLOCKS.compare_exchange_weak(head, first, AcqRel, Relaxed) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }
    BLOCKS_MADE.fetch_add(count, Relaxed);
    BLOCKS_IN_USE.fetch_add(1, Relaxed);
    first
}

fn exit_key() -> Option<libc::pthread_key_t> {
    let k = EXIT_KEY.load(Acquire);
    if k != 0 {
        return Some((k - 1) as libc::pthread_key_t);
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an `extern "C"` fn with the right
    // signature. pthread_key_create does not allocate with malloc.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
        return None;
    }
    match EXIT_KEY.compare_exchange(0, key as usize + 1, AcqRel, Acquire) {
        Ok(_) => Some(key),
        Err(winner) => {
            // SAFETY: `key` was created above and never used.
            unsafe { libc::pthread_key_delete(key) };
            Some((winner - 1) as libc::pthread_key_t)
        }
    }
}

/// Runs at thread exit, after Rust's thread-local destructors: flushes and releases the block.
extern "C" fn thread_exit(block: *mut libc::c_void) {
    let _ = STATE.try_with(|st| {
        st.block.set(ptr::null());
        st.phase.set(PHASE_EXITED);
    });
    // SAFETY: the value stored under the key is this thread's claimed block (see `init_block`);
    // blocks are never freed.
    if let Some(block) = unsafe { block.cast::<Block>().cast_const().as_ref() } {
        release(block);
    }
}

fn release(block: &Block) {
    for slot in &block.slots {
        slot.flush();
        slot.comp.store(0, Relaxed);
    }
    BLOCKS_IN_USE.fetch_sub(1, Relaxed);
    block.in_use.store(false, Release);
}

/// The thread-local state. `const`-initialised and without `Drop`.
pub(crate) struct ThreadState {
    current: Cell<u16>,
    block: Cell<*const Block>,
    phase: Cell<u8>,
    depth: Cell<u8>,
    alive: Cell<u64>,
    stack: [Cell<u16>; MAX_DEPTH],
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            current: Cell::new(0),
            block: Cell::new(ptr::null()),
            phase: Cell::new(PHASE_NEW),
            depth: Cell::new(0),
            alive: Cell::new(0),
            stack: [const { Cell::new(0) }; MAX_DEPTH],
        }
    };
}

/// Runs `f` with this thread's state; `None` only if the platform has torn the thread-local
/// down, which a `const` thread-local without `Drop` never is on the platforms we support.
#[inline(always)]
pub(crate) fn with_state<R>(f: impl FnOnce(&ThreadState) -> R) -> Option<R> {
    state().map(f)
}

/// This thread's state. The closure is tiny so that `try_with` always inlines to a plain
/// thread-pointer-relative address.
#[inline(always)]
pub(crate) fn state() -> Option<&'static ThreadState> {
    // SAFETY: the state is a `const`-initialised thread-local without destructor: it lives as long
    // as the calling thread, and the reference never leaves it (ThreadState is !Sync, so the
    // reference is !Send).
    STATE
        .try_with(|st| unsafe { &*(st as *const ThreadState) })
        .ok()
}

/// The calling thread's current component id.
#[inline]
pub(crate) fn current() -> u16 {
    with_state(|st| st.current.get()).unwrap_or(0)
}

impl ThreadState {
    /// The current component id.
    #[inline(always)]
    pub fn current(&self) -> u16 {
        self.current.get()
    }

    /// Records an allocation-path operation on `comp`.
    #[inline(always)]
    fn slot(&self, comp: u16) -> Option<&Slot> {
        let block = self.block.get();
        if block.is_null() {
            return None;
        }
        // SAFETY: a non-null `block` is this thread's claimed block, valid forever.
        let slot = unsafe { &(*block).slots[comp as usize % SLOTS] };
        (slot.comp.load(Relaxed) == u64::from(comp) + 1).then_some(slot)
    }

    /// Records an allocation of `size` bytes (plus `tag` bytes of tag) in `comp`.
    #[inline(always)]
    pub fn record_alloc(&self, comp: u16, size: usize, tag: usize) {
        match self.slot(comp) {
            Some(slot) => {
                if slot.alloc(size as u64, tag as i64) {
                    flush_slot(slot);
                }
            }
            None => self.record_slow(
                comp,
                Op::Alloc {
                    size: size as u64,
                    tag: tag as i64,
                },
            ),
        }
    }

    /// Records a free of `size` bytes (plus `tag` bytes of tag) from `comp`.
    #[inline(always)]
    pub fn record_free(&self, comp: u16, size: usize, tag: usize) {
        match self.slot(comp) {
            Some(slot) => {
                if slot.free(size as u64, tag as i64) {
                    flush_slot(slot);
                }
            }
            None => self.record_slow(
                comp,
                Op::Free {
                    size: size as u64,
                    tag: tag as i64,
                },
            ),
        }
    }

    /// Records a realloc in `comp`.
    #[inline(always)]
    pub fn record_realloc(&self, comp: u16, old: usize, new: usize, tag: i64) {
        match self.slot(comp) {
            Some(slot) => {
                if slot.realloc(old as u64, new as u64, tag) {
                    flush_slot(slot);
                }
            }
            None => self.record_slow(
                comp,
                Op::Realloc {
                    old: old as u64,
                    new: new as u64,
                    tag,
                },
            ),
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn record_slow(&self, comp: u16, op: Op) {
        if self.phase.get() == PHASE_NEW {
            self.init_block();
        }
        let block = self.block.get();
        // SAFETY: a non-null `block` is this thread's claimed block, valid forever.
        match unsafe { block.as_ref() } {
            Some(block) => {
                let slot = &block.slots[comp as usize % SLOTS];
                slot.flush();
                slot.comp.store(u64::from(comp) + 1, Relaxed);
                if slot.record(op) {
                    slot.flush();
                }
            }
            None => record_direct(comp, op),
        }
    }

    fn init_block(&self) {
        // Anything the set-up below allocates (pthread_setspecific may, for high keys) re-enters
        // the allocator and, seeing PHASE_INIT, goes straight to the shared counters.
        self.phase.set(PHASE_INIT);
        let block = claim_block();
        if block.is_null() {
            self.phase.set(PHASE_EXITED);
            return;
        }
        let registered = exit_key()
            // SAFETY: `key` is a live pthread key; the value is this thread's block.
            .map(|key| unsafe { libc::pthread_setspecific(key, block.cast()) } == 0)
            .unwrap_or(false);
        if !registered {
            // Without an exit hook the block would never be flushed: give it back and count
            // directly instead.
            // SAFETY: we just claimed it; blocks are never freed.
            release(unsafe { &*block });
            self.phase.set(PHASE_EXITED);
            return;
        }
        self.block.set(block);
        self.phase.set(PHASE_READY);
    }

    /// Flushes every slot of this thread into the shared counters.
    pub fn flush(&self) {
        // SAFETY: a non-null `block` is this thread's claimed block, valid forever.
        if let Some(block) = unsafe { self.block.get().as_ref() } {
            for slot in &block.slots {
                slot.flush();
            }
        }
    }

    /// Pushes a scope; `None` when [`MAX_DEPTH`] scopes are already open.
    pub fn push_scope(&self, comp: u16) -> Option<u8> {
        let depth = self.depth.get();
        if depth as usize >= MAX_DEPTH {
            return None;
        }
        self.stack[depth as usize].set(comp);
        self.alive.set(self.alive.get() | (1 << depth));
        self.depth.set(depth + 1);
        self.current.set(comp);
        Some(depth)
    }

    /// Closes the scope at `level`. Scopes closed out of order stay on the stack, inert, until
    /// every scope above them is closed too; the current component is always the innermost open one.
    pub fn pop_scope(&self, level: u8) {
        let alive = self.alive.get() & !(1u64 << level);
        let mut depth = self.depth.get();
        while depth > 0 && alive & (1 << (depth - 1)) == 0 {
            depth -= 1;
        }
        self.alive.set(alive);
        self.depth.set(depth);
        self.current.set(if depth == 0 {
            0
        } else {
            self.stack[depth as usize - 1].get()
        });
    }

    /// Open scopes on this thread (closed-out-of-order ones still waiting included).
    pub fn depth(&self) -> usize {
        self.depth.get() as usize
    }
}

#[cold]
#[inline(never)]
fn flush_slot(slot: &Slot) {
    slot.flush();
}

/// Applies one operation straight to the shared counters (no block on this thread).
#[cold]
#[inline(never)]
pub(crate) fn record_direct(comp: u16, op: Op) {
    let d = match op {
        Op::Alloc { size, tag } => Delta {
            live: size as i64,
            high: size as i64,
            allocated: size,
            allocs: 1,
            tag,
            ..Delta::default()
        },
        Op::Free { size, tag } => Delta {
            live: -(size as i64),
            frees: 1,
            tag: -tag,
            ..Delta::default()
        },
        Op::Realloc { old, new, tag } => {
            let live = new as i64 - old as i64;
            Delta {
                live,
                high: live.max(0),
                allocated: new.saturating_sub(old),
                reallocs: 1,
                tag,
                ..Delta::default()
            }
        }
    };
    counters::apply(comp, &d);
}

/// The sum of every thread's pending delta for `comp` (or for every component when `None`).
pub(crate) fn pending(comp: Option<u16>) -> Delta {
    let mut sum = Delta::default();
    for block in blocks() {
        if !block.in_use.load(Acquire) {
            continue;
        }
        for slot in &block.slots {
            let c = slot.comp.load(Relaxed);
            if c == 0 || comp.is_some_and(|comp| u64::from(comp) + 1 != c) {
                continue;
            }
            let d = slot.read();
            sum.live += d.live;
            sum.high = sum.high.max(d.high);
            sum.allocated += d.allocated;
            sum.allocs += d.allocs;
            sum.frees += d.frees;
            sum.reallocs += d.reallocs;
            sum.tag += d.tag;
        }
    }
    sum
}

/// Threads that currently own a block, and blocks ever made.
pub(crate) fn block_counts() -> (usize, usize) {
    (BLOCKS_IN_USE.load(Relaxed), BLOCKS_MADE.load(Relaxed))
}
