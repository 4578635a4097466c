//! Per-thread state: the current component, the scope stack, the batched statistics and the
//! budget credit.
//!
//! # Batching
//! Each thread owns a [`Block`]: one 64-byte record per component (indexed by component id, so
//! there is nothing to look up or evict) and a list of the records in use. The allocation path does
//! relaxed loads and stores on its own block only: no atomic read-modify-write, no shared cache
//! line. A record's statistics are folded into the shared counters (a flush) every [`FLUSH_OPS`]
//! allocations, frees or reallocs, once its batch's live bytes moved [`FLUSH_BYTES`] (so the
//! shared counters lag by less than `FLUSH_BYTES + MAX_CREDIT` of live bytes per thread and
//! component, whatever the block sizes), when the thread calls
//! [`flush_thread`](crate::flush_thread), and when it exits. Readers ([`crate::snapshot`] and
//! friends) add every thread's pending statistics, because blocks live in memory any thread can
//! read: once threads are quiet, what they read is exact.
//!
//! Budgets do not wait for a flush: each record also holds the thread's credit for the component
//! (and the block its credit for the process), spent and refilled as described in `budget.rs`. So
//! the charged bytes that limits and pressure levels are computed from exceed the live bytes by at
//! most [`MAX_CREDIT`] per thread and component, and never fall below
//! them.
//!
//! # Teardown
//! The thread-local is `const`-initialised and has no destructor, so it can be reached from any
//! other thread-local's destructor. Blocks come from `mmap`, never from the allocator being
//! governed, and are recycled: at thread exit a pthread-key destructor (which runs after Rust's
//! thread-local destructors) flushes the block, returns its credit and hands it back. Operations
//! after that (or before the block exists, or while it is being set up) go straight to the shared
//! counters and charge budgets exactly.

use crate::budget::{self, Scope, CREDIT_CHUNK, MAX_CREDIT};
use crate::counters::{self, Delta};
use crate::emergency_reserve;
use crate::histogram;
use crate::pressure;
use crate::registry::{ComponentId, CAPACITY};
use crate::tag::TAG_BYTES;
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU16, AtomicU64, AtomicUsize};

/// A thread flushes its pending statistics for a component every this many operations of one kind.
pub const FLUSH_OPS: u64 = 1024;
/// A thread also flushes its pending statistics as soon as an operation that takes the slow half
/// finds that a batch's live bytes (one component's, or every component's together) moved this
/// far, either way, since the batch began. Between two slow operations a batch's live bytes move
/// by less than [`MAX_CREDIT`] (the fast half only spends or takes back credit, which stays
/// between 0 and `MAX_CREDIT`), so a batch's live bytes stay within
/// `FLUSH_BYTES + MAX_CREDIT` (1.25 MiB) of zero, either way, whatever its blocks' sizes.
pub const FLUSH_BYTES: u64 = 1 << 20;
/// How deeply component scopes may nest on one thread.
pub const MAX_DEPTH: usize = 64;

/// One allocation-path operation, as recorded. `trailer` says whether the block's tag is a trailer
/// (which adds `TAG_BYTES` to the inner request); `tag` is the change in trailer bytes of a realloc.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Alloc { size: u64, trailer: bool },
    Free { size: u64, trailer: bool },
    Realloc { old: u64, new: u64, tag: i64 },
}

const PHASE_NEW: u8 = 0;
const PHASE_INIT: u8 = 1;
const PHASE_READY: u8 = 2;
const PHASE_EXITED: u8 = 3;

/// The low half of a packed count is the number of operations; the high half how many of them
/// were on blocks with a trailer tag. A batch holds far fewer than 2^32 operations.
const TRAILER_ONE: u64 = 1 << 32;
const COUNT_MASK: u64 = TRAILER_ONE - 1;

/// One component's pending deltas on one thread, and the thread's credit for the component's
/// budget. Written only by the owning thread (relaxed load + store, which compile to plain moves);
/// read by any thread.
#[derive(Default)]
#[repr(C, align(64))]
struct Record {
    /// Bytes allocated in this batch (new blocks and realloc growth).
    allocated: AtomicU64,
    /// `base - credit` is the batch's live delta: every byte that goes live is spent from
    /// `credit`, and every byte freed comes back to it. Charging credit or handing it back
    /// changes nothing live, so it moves `base` (and `low`) with `credit` ([`Record::move_credit`]);
    /// a flush resets `base` to `credit`. So a free costs no byte counter of its own.
    base: AtomicI64,
    /// Packed: allocations | blocks that gained a trailer tag << 32.
    allocs: AtomicU64,
    /// Packed: frees | blocks that lost a trailer tag << 32.
    frees: AtomicU64,
    reallocs: AtomicU64,
    /// The lowest `credit` after an allocation in this batch, moved with `base`: `base - low` is
    /// the batch's highest live delta (its contribution to the peak).
    low: AtomicI64,
    /// Bytes this thread has charged to the component's budget and not yet spent.
    credit: AtomicI64,
    /// 1 while the record is on its block's dirty list.
    listed: AtomicU64,
}

#[inline(always)]
fn bump(a: &AtomicU64, v: u64) -> u64 {
    let n = a.load(Relaxed).wrapping_add(v);
    a.store(n, Relaxed);
    n
}

/// True when a count that was `before` should send the operation down the slow half: the first
/// operation of its kind in a batch (to list the record) and every `FLUSH_OPS`-th (to flush).
#[inline(always)]
fn settle_due(before: u64) -> bool {
    (before.wrapping_add(1) & (FLUSH_OPS - 1)) <= 1
}

impl Record {
    /// The pending delta, as a reader sees it.
    fn read(&self) -> Delta {
        let allocated = self.allocated.load(Relaxed);
        let (allocs, frees) = (self.allocs.load(Relaxed), self.frees.load(Relaxed));
        let trailers = (allocs >> 32) as i64 - (frees >> 32) as i64;
        // `base` on both sides of `credit`: `move_credit` changes both, and the lower of the two
        // readings never makes the live delta look larger than it is (see there).
        // `low` too is read before the second `base`: a return lowers it after `base` (Release).
        let before = self.base.load(Acquire);
        let credit = self.credit.load(Acquire);
        let low = self.low.load(Acquire);
        let base = before.min(self.base.load(Acquire));
        Delta {
            live: base.wrapping_sub(credit),
            high: base.wrapping_sub(low),
            allocated,
            allocs: allocs & COUNT_MASK,
            frees: frees & COUNT_MASK,
            reallocs: self.reallocs.load(Relaxed),
            tag: trailers * TAG_BYTES as i64,
        }
    }

    /// Owner only: zeroes the statistics (not the credit) and returns what they held.
    fn take(&self) -> Delta {
        let d = self.read();
        for a in [&self.allocated, &self.allocs, &self.frees, &self.reallocs] {
            a.store(0, Relaxed);
        }
        let credit = self.credit.load(Relaxed);
        self.base.store(credit, Relaxed);
        self.low.store(credit, Relaxed);
        d
    }

    /// Owner only: credit charged to the budget (`by > 0`) or handed back to it (`by < 0`).
    /// Nothing goes live or dies, so `base` and `low` move with it.
    ///
    /// A reader racing this must never see a live delta larger than the truth (a watcher holds
    /// live bytes against a hard limit). It reads `base`, then `credit`, then `base` again and
    /// keeps the lower `base`. So a charge stores `credit` first and `base` last (Release): a
    /// reader that sees the raised `base` sees the raised `credit`. A return stores `base` first
    /// and `credit` last (Release): a reader that sees the lowered `credit` then reads the
    /// lowered `base`. Either way the reader sees both changes or undercounts for an instant.
    /// The same holds for the high (`base - low`): `low` rises before `base` and falls after it.
    fn move_credit(&self, by: i64) {
        let (credit, base, low) = (
            self.credit.load(Relaxed),
            self.base.load(Relaxed),
            self.low.load(Relaxed),
        );
        if by >= 0 {
            self.low.store(low.wrapping_add(by), Relaxed);
            self.credit.store(credit.wrapping_add(by), Relaxed);
            self.base.store(base.wrapping_add(by), Release);
        } else {
            // `low` falls after `base` (Release), as `credit` does: a reader that sees the lowered
            // `low` reads the lowered `base` after it, so the high never looks larger than it is.
            self.base.store(base.wrapping_add(by), Relaxed);
            self.low.store(low.wrapping_add(by), Release);
            self.credit.store(credit.wrapping_add(by), Release);
        }
    }

    /// Owner only: notes the credit left after an allocation spent from it (for the peak).
    #[inline(always)]
    fn note_low(&self, credit: i64) {
        if credit < self.low.load(Relaxed) {
            self.low.store(credit, Relaxed);
        }
    }
}

/// A thread's pending deltas and budget credit. Never freed: recycled through `in_use`.
#[repr(C, align(128))]
struct Block {
    /// Bytes this thread has charged to the process budget and not yet spent.
    credit: AtomicI64,
    /// `base - credit` is the live delta of the block's batch, every component together, as
    /// [`Record::base`] is for one component: charging or returning process credit moves it
    /// (and `low`) with `credit` ([`Block::move_credit`]); a flush resets it to `credit`.
    base: AtomicI64,
    /// The lowest `credit` after an allocation in this batch, moved with `base`: `base - low` is
    /// the highest live delta of the thread, every component together (its contribution to the
    /// process-wide peak, which the components' own highs cannot give: they may have peaked at
    /// different times, or together).
    low: AtomicI64,
    /// The limit epoch ([`budget::LIMIT_EPOCH`]) the credits were charged under. A limit change
    /// makes every thread hand its credit back before it spends any more.
    epoch: AtomicU64,

    /// How many entries of `dirty` are valid.
    dirty_len: AtomicUsize,
    /// Components whose record holds a pending delta or credit.
    dirty: [AtomicU16; CAPACITY],
    in_use: AtomicBool,
    /// Set in a forked child on every block in use by a thread that did not come along (see
    /// [`mark_orphans_in_child`]); such a block is released at the child's first use of the API.
    orphaned: AtomicBool,
    /// Next block in the append-only list of every block; immutable once published.
    next: *const Block,
    /// The size histograms of this block's threads, made on the first recorded allocation; kept
    /// across reuse and never unmapped, so readers add every block's.
    hist: AtomicPtr<histogram::Counts>,
    records: [Record; CAPACITY],
}

impl Block {
    #[inline(always)]
    fn record(&self, comp: u16) -> &Record {
        // CAPACITY is a power of two and every id is below it; the mask keeps this branch-free.
        &self.records[comp as usize & (CAPACITY - 1)]
    }

    /// Owner only: process credit charged (`by > 0`) or handed back (`by < 0`). Nothing goes live
    /// or dies, so `base` and `low` move with it.
    /// A reader racing this may see a high below the truth for an instant, never above (see
    /// [`high`](Self::high)): `low` rises before `base`, and `base` falls before `low`.
    fn move_credit(&self, by: i64) {
        let (base, low) = (self.base.load(Relaxed), self.low.load(Relaxed));
        if by >= 0 {
            self.low.store(low.wrapping_add(by), Relaxed);
            self.base.store(base.wrapping_add(by), Release);
        } else {
            self.base.store(base.wrapping_add(by), Relaxed);
            self.low.store(low.wrapping_add(by), Release);
        }
        self.credit
            .store(self.credit.load(Relaxed).wrapping_add(by), Relaxed);
    }

    /// Owner only: notes the process credit left after an allocation spent from it (for the
    /// process-wide peak).
    #[inline(always)]
    fn note_low(&self, credit: i64) {
        if credit < self.low.load(Relaxed) {
            self.low.store(credit, Relaxed);
        }
    }

    /// The highest live delta of the block's batch, every component together.
    /// Any thread: `base` on both sides of `low`, keeping the lower, as [`Record::read`] does, so
    /// that a racing [`move_credit`](Self::move_credit) never makes it look higher than it is.
    fn high(&self) -> i64 {
        let before = self.base.load(Acquire);
        let low = self.low.load(Acquire);
        let base = before.min(self.base.load(Acquire));
        base.wrapping_sub(low).max(0)
    }

    /// Owner only: puts `comp` on the dirty list if it is not there yet.
    fn list(&self, comp: u16) {
        let r = self.record(comp);
        if r.listed.load(Relaxed) == 0 {
            r.listed.store(1, Relaxed);
            let n = self.dirty_len.load(Relaxed);
            self.dirty[n % CAPACITY].store(comp, Relaxed);
            self.dirty_len.store(n + 1, Release);
        }
    }

    /// Owner only, after a slow-half operation on `comp`: flushes when the batch's live bytes,
    /// `comp`'s or the thread's total, moved [`FLUSH_BYTES`] or more since it began.
    #[inline(always)]
    fn flush_if_far(&self, comp: u16) {
        let far = |base: &AtomicI64, credit: &AtomicI64| {
            let delta = base.load(Relaxed).wrapping_sub(credit.load(Relaxed));
            delta.unsigned_abs() >= FLUSH_BYTES
        };
        let r = self.record(comp);
        if far(&r.base, &r.credit) || far(&self.base, &self.credit) {
            self.flush_far(comp);
        }
    }

    #[cold]
    #[inline(never)]
    fn flush_far(&self, comp: u16) {
        self.list(comp);
        self.flush();
    }

    /// Owner only: the slow half of an operation whose count was `before`.
    #[cold]
    #[inline(never)]
    fn settle(&self, comp: u16, before: u64) {
        self.list(comp);
        if (before & COUNT_MASK) + 1 >= FLUSH_OPS {
            self.flush();
        }
    }

    /// Owner only: folds every pending delta into the shared counters. Records still holding
    /// credit stay listed.
    fn flush(&self) {
        counters::flush_begin();
        let n = self.dirty_len.load(Relaxed).min(CAPACITY);
        let mut total = Delta::default();
        let mut kept = 0;
        for i in 0..n {
            let comp = self.dirty[i].load(Relaxed);
            let r = self.record(comp);
            let d = r.take();
            counters::apply_component(comp, &d);
            total.then(&d);
            if r.credit.load(Relaxed) != 0 {
                // `kept <= i < CAPACITY`; the mask only spares the allocation path a bounds
                // check the compiler cannot prove away (and its panic).
                self.dirty[kept & (CAPACITY - 1)].store(comp, Relaxed);
                kept += 1;
            } else {
                r.listed.store(0, Relaxed);
            }
        }
        // The thread's own high, every component together: composing the records' highs in list
        // order would guess at how their operations interleaved.
        total.high = self.high();
        let credit = self.credit.load(Relaxed);
        self.base.store(credit, Relaxed);
        self.low.store(credit, Relaxed);
        counters::apply_global(&total);
        self.dirty_len.store(kept, Release);
        counters::flush_end();
    }

    /// Owner only: flushes and hands every credit back to the budgets (thread exit).
    fn return_all_credit(&self) {
        self.flush();
        let n = self.dirty_len.load(Relaxed).min(CAPACITY);
        for i in 0..n {
            let comp = self.dirty[i].load(Relaxed);
            let r = self.record(comp);
            let credit = r.credit.load(Relaxed);
            r.move_credit(credit.wrapping_neg());
            budget::component_entity(comp).uncharge(credit);
            r.listed.store(0, Relaxed);
        }
        self.dirty_len.store(0, Release);
        let credit = self.credit.load(Relaxed);
        self.move_credit(credit.wrapping_neg());
        let credit = emergency_reserve::keep(credit);
        budget::process_entity().uncharge(credit);
    }

    /// Owner only: spends `size` bytes of credit for `comp` and the process; charges more to the
    /// shared budgets when a credit runs out. False when a hard limit refuses.
    #[inline(always)]
    fn admit(&self, comp: u16, size: u64) -> bool {
        let r = self.record(comp);
        let c = r.credit.load(Relaxed).wrapping_sub(size as i64);
        let g = self.credit.load(Relaxed).wrapping_sub(size as i64);
        let stale = self.epoch.load(Relaxed) != budget::credit_epoch();
        if ((c | g) < 0) | stale {
            return self.admit_slow(comp, size);
        }
        r.credit.store(c, Relaxed);
        self.credit.store(g, Relaxed);
        true
    }

    #[cold]
    #[inline(never)]
    fn admit_slow(&self, comp: u16, size: u64) -> bool {
        let strict = self.refresh();
        let chunk = if strict { 0 } else { CREDIT_CHUNK };
        let Ok(size) = i64::try_from(size) else {
            budget::refused(comp, false, size);
            return false;
        };
        self.list(comp);
        let r = self.record(comp);
        let (c, g) = (r.credit.load(Relaxed), self.credit.load(Relaxed));
        let component = budget::component_entity(comp);
        let got_c = if c < size {
            let need = size - c;
            match component.charge(need, need.saturating_add(chunk)) {
                Some(got) => got,
                None => {
                    budget::refused(comp, false, size as u64);
                    return false;
                }
            }
        } else {
            0
        };
        let got_g = if g < size {
            let need = size - g;
            match budget::process_entity().charge(need, need.saturating_add(chunk)) {
                Some(got) => got,
                // The emergency reserve is already charged to the process.
                None if emergency_reserve::draw(need) => need,
                None => {
                    component.uncharge(got_c);
                    budget::refused(comp, true, size as u64);
                    return false;
                }
            }
        } else {
            0
        };
        r.move_credit(got_c);
        r.credit.store(c + got_c - size, Relaxed);
        self.move_credit(got_g);
        self.credit.store(g + got_g - size, Relaxed);
        if budget::ANY_LIMIT.load(Relaxed) {
            if got_c > 0 {
                pressure::evaluate(Scope::Component(ComponentId(comp)));
            }
            if got_g > 0 {
                pressure::evaluate(Scope::Process);
            }
        }
        true
    }

    /// Owner only: if limits changed since this block's credit was charged, or a budget is over
    /// its hard limit, gives every credit back. Returns whether a budget is over its limit (then
    /// the block keeps a stale epoch, so every operation comes back here and nothing is spent
    /// from credit).
    #[cold]
    #[inline(never)]
    fn refresh(&self) -> bool {
        let epoch = budget::credit_epoch();
        let strict = budget::strict();
        if self.epoch.load(Relaxed) != epoch || strict {
            self.return_all_credit();
            if !strict {
                self.epoch.store(epoch, Relaxed);
            }
        }
        strict
    }

    /// Owner only: gives `size` bytes of credit back for `comp` and the process.
    #[inline(always)]
    fn credit_back(&self, comp: u16, size: u64) {
        let r = self.record(comp);
        let c = r.credit.load(Relaxed).wrapping_add(size as i64);
        let g = self.credit.load(Relaxed).wrapping_add(size as i64);
        r.credit.store(c, Relaxed);
        self.credit.store(g, Relaxed);
        let stale = self.epoch.load(Relaxed) != budget::credit_epoch();
        if (c.max(g) > MAX_CREDIT) | stale {
            if stale {
                self.refresh();
            } else {
                self.return_excess(comp);
            }
        }
    }

    /// Owner only: returns credit above [`MAX_CREDIT`] to the shared budgets.
    #[cold]
    #[inline(never)]
    fn return_excess(&self, comp: u16) {
        self.list(comp);
        let r = self.record(comp);
        let c = r.credit.load(Relaxed);
        if c > MAX_CREDIT {
            r.move_credit(CREDIT_CHUNK - c);
            budget::component_entity(comp).uncharge(c - CREDIT_CHUNK);
            if budget::ANY_LIMIT.load(Relaxed) {
                pressure::evaluate(Scope::Component(ComponentId(comp)));
            }
        }
        let g = self.credit.load(Relaxed);
        if g > MAX_CREDIT {
            self.move_credit(CREDIT_CHUNK - g);
            budget::process_entity().uncharge(emergency_reserve::keep(g - CREDIT_CHUNK));
            if budget::ANY_LIMIT.load(Relaxed) {
                pressure::evaluate(Scope::Process);
            }
        }
    }

    /// Records one operation (any kind). The allocation path uses the specialised versions below.
    fn record_op(&self, comp: u16, op: Op) {
        match op {
            Op::Alloc { size, trailer } => self.alloc(comp, size, trailer),
            Op::Free { size, trailer } => self.free(comp, size, trailer),
            Op::Realloc { old, new, tag } => self.realloc(comp, old, new, tag),
        }
    }

    /// The fast half of an allocation: spends its credit and records it, all or nothing. False
    /// (nothing done) when anything needs the slow half: a credit runs short, the limits changed,
    /// the record is due to be listed or flushed, or histograms are on and `COUNTED` is false
    /// (with `COUNTED` true, it declines while they are off; the caller counts the size once
    /// the inner allocator has said yes).
    ///
    /// `epoch` is [`budget::LIMIT_EPOCH`] as the caller loaded it (with acquire ordering).
    #[inline(always)]
    fn try_alloc<const COUNTED: bool>(
        &self,
        r: &Record,
        size: u64,
        trailer: bool,
        epoch: u64,
    ) -> bool {
        let c = r.credit.load(Relaxed).wrapping_sub(size as i64);
        let g = self.credit.load(Relaxed).wrapping_sub(size as i64);
        let before = r.allocs.load(Relaxed);
        // A block's epoch never has the histogram bit (see `budget::LIMIT_EPOCH`), so one compare
        // tests both the limits and the histogram switch.
        let expected = self.epoch.load(Relaxed) | if COUNTED { budget::HISTOGRAMS_BIT } else { 0 };
        let stale = expected != epoch;
        if ((c | g) < 0) | stale | settle_due(before) {
            return false;
        }
        r.credit.store(c, Relaxed);
        self.credit.store(g, Relaxed);
        r.allocs
            .store(before + 1 + ((trailer as u64) << 32), Relaxed);
        bump(&r.allocated, size);
        r.note_low(c);
        self.note_low(g);
        true
    }

    /// Takes back an allocation recorded by [`try_alloc`](Self::try_alloc) that the inner
    /// allocator then refused. If a flush ran in between (only possible if the inner allocator
    /// re-entered the governor), the record no longer holds it, and it is recorded as a free.
    #[cold]
    #[inline(never)]
    fn undo_alloc(&self, comp: u16, size: u64, trailer: bool) {
        let r = self.record(comp);
        let one = 1 + ((trailer as u64) << 32);
        let allocs = r.allocs.load(Relaxed);
        let allocated = r.allocated.load(Relaxed);
        if allocs & COUNT_MASK >= 1 && allocs >> 32 >= trailer as u64 && allocated >= size {
            r.allocs.store(allocs - one, Relaxed);
            r.allocated.store(allocated - size, Relaxed);
            self.credit_back(comp, size);
        } else {
            self.free(comp, size, trailer);
        }
    }

    /// The fast half of a free: records it and gives its credit back, all or nothing. False
    /// (nothing done) when the slow half is needed: a credit grows past its cap, the limits
    /// changed, or the record is due to be listed or flushed.
    #[inline(always)]
    fn try_free(&self, comp: u16, size: u64, trailer: bool) -> bool {
        // Checked one at a time, so that few values are live at once: `dealloc` then saves 2
        // registers instead of 4.
        if self.epoch.load(Relaxed) != budget::credit_epoch() {
            return false;
        }
        let r = self.record(comp);
        let before = r.frees.load(Relaxed);
        if settle_due(before) {
            return false;
        }
        let c = r.credit.load(Relaxed).wrapping_add(size as i64);
        let g = self.credit.load(Relaxed).wrapping_add(size as i64);
        // Credits are never negative, and MAX_CREDIT is a power of two: `c | g` reaches it exactly
        // when one of them does (then the slow half returns what is above it).
        const _: () = assert!(MAX_CREDIT.count_ones() == 1);
        if (c | g) >= MAX_CREDIT {
            return false;
        }
        r.credit.store(c, Relaxed);
        self.credit.store(g, Relaxed);
        r.frees
            .store(before + 1 + ((trailer as u64) << 32), Relaxed);
        true
    }

    /// Records the statistics of an allocation (its credit was spent by `admit`).
    #[inline(always)]
    fn alloc(&self, comp: u16, size: u64, trailer: bool) {
        if histogram::ENABLED.load(Relaxed) {
            self.count_size(comp, 0, size);
        }
        let r = self.record(comp);
        bump(&r.allocated, size);
        r.note_low(r.credit.load(Relaxed));
        self.note_low(self.credit.load(Relaxed));
        let before = r.allocs.load(Relaxed);
        r.allocs
            .store(before + 1 + ((trailer as u64) << 32), Relaxed);
        if settle_due(before) {
            self.settle(comp, before);
        }
        self.flush_if_far(comp);
    }

    /// Owner only: counts a size in this thread's histograms (made on first use).
    #[inline(always)]
    fn count_size(&self, comp: u16, kind: usize, size: u64) {
        // SAFETY: a non-null `hist` is a mapping made for this block, never unmapped.
        match unsafe { self.hist.load(Acquire).as_ref() } {
            Some(h) => h.record(comp, kind, size),
            None => self.count_first_size(comp, kind, size),
        }
    }

    /// Owner only: makes this block's histograms and counts a size in them.
    #[cold]
    #[inline(never)]
    fn count_first_size(&self, comp: u16, kind: usize, size: u64) {
        let h = histogram::new_counts();
        if h.is_null() {
            return;
        }
        self.hist.store(h, Release);
        // SAFETY: the mapping just made, never unmapped.
        unsafe { &*h }.record(comp, kind, size);
    }

    /// Records a free and gives its bytes back as credit.
    #[inline(always)]
    fn free(&self, comp: u16, size: u64, trailer: bool) {
        let r = self.record(comp);
        let before = r.frees.load(Relaxed);
        r.frees
            .store(before + 1 + ((trailer as u64) << 32), Relaxed);
        self.credit_back(comp, size);
        if settle_due(before) {
            self.settle(comp, before);
        }
        self.flush_if_far(comp);
    }

    /// Records a realloc (growth was admitted beforehand; shrinkage comes back as credit).
    #[inline(always)]
    fn realloc(&self, comp: u16, old: u64, new: u64, tag: i64) {
        if histogram::ENABLED.load(Relaxed) {
            self.count_size(comp, 1, new);
        }
        let r = self.record(comp);
        if new >= old {
            bump(&r.allocated, new - old);
            r.note_low(r.credit.load(Relaxed));
            self.note_low(self.credit.load(Relaxed));
        } else {
            self.credit_back(comp, old - new);
        }
        if tag > 0 {
            bump(&r.allocs, TRAILER_ONE);
        } else if tag < 0 {
            bump(&r.frees, TRAILER_ONE);
        }
        let before = bump(&r.reallocs, 1) - 1;
        if settle_due(before) {
            self.settle(comp, before);
        }
        self.flush_if_far(comp);
    }
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

/// The epoch a newly claimed block starts at: the current one, unless a budget is over its hard
/// limit. Then a stale one (the one before, never current again), as `Block::refresh` leaves it:
/// otherwise the thread's frees would become credit its allocations spend while usage is still
/// over the limit.
fn starting_epoch() -> u64 {
    // The epoch first: a limit change marks a budget over before it moves the epoch on (Release),
    // so a thread that reads the new epoch sees the budget over.
    let epoch = budget::credit_epoch();
    if budget::strict() {
        epoch.wrapping_sub(budget::EPOCH_STEP)
    } else {
        epoch
    }
}

/// Claims a free block or makes a new one with `mmap`. Cold; never calls the governed allocator.
#[cold]
#[inline(never)]
fn claim_block() -> *const Block {
    let claimed = blocks().find(|b| {
        !b.in_use.load(Relaxed)
            && b.in_use
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
    });
    if let Some(block) = claimed {
        block.epoch.store(starting_epoch(), Relaxed);
        BLOCKS_IN_USE.fetch_add(1, Relaxed);
        return block;
    }
    let size = std::mem::size_of::<Block>();
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let mem = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return ptr::null();
    }
    let block = mem.cast::<Block>();
    // SAFETY: the mapping is zero-filled, page-aligned (so 128-aligned) and large enough for a
    // Block; an all-zero Block is valid (atomics at zero, null `next`). Nothing else sees it until
    // the compare-exchange below publishes it.
    unsafe {
        (*block).in_use.store(true, Relaxed);
        (*block).epoch.store(starting_epoch(), Relaxed);
        let mut head = BLOCKS.load(Relaxed);
        loop {
            (*block).next = head;
            match BLOCKS.compare_exchange_weak(head, block, AcqRel, Relaxed) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }
    BLOCKS_MADE.fetch_add(1, Relaxed);
    BLOCKS_IN_USE.fetch_add(1, Relaxed);
    block
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
        st.record.set(ptr::null());
        st.phase.set(PHASE_EXITED);
    });
    // SAFETY: the value stored under the key is this thread's claimed block (see `init_block`);
    // blocks are never freed.
    if let Some(block) = unsafe { block.cast::<Block>().cast_const().as_ref() } {
        release(block);
    }
}

fn release(block: &Block) {
    block.return_all_credit();
    BLOCKS_IN_USE.fetch_sub(1, Relaxed);
    block.in_use.store(false, Release);
}

/// In a forked child, where only the calling thread lives on: marks every block in use by
/// another thread as orphaned (its thread did not come along and will never release it). Atomic
/// loads and stores and a `const` thread-local read only (async-signal-safe), and only sound with
/// no other thread running.
pub(crate) fn mark_orphans_in_child() {
    let own = STATE.try_with(|st| st.block.get()).unwrap_or(ptr::null());
    for block in blocks() {
        if block.in_use.load(Relaxed) && !ptr::eq(block, own) {
            block.orphaned.store(true, Relaxed);
        }
    }
}

/// Releases the blocks [`mark_orphans_in_child`] marked, as their threads' exits would have:
/// their pending statistics are flushed (the memory they describe is the child's too) and their
/// credit goes back to the budgets. The calling thread acts as their owner, which no other
/// thread is: a thread started in the child claims only blocks not in use.
pub(crate) fn release_orphans() {
    for block in blocks() {
        if block.orphaned.swap(false, Relaxed) {
            release(block);
        }
    }
}

/// The thread-local state. `const`-initialised and without `Drop`.
pub(crate) struct ThreadState {
    current: Cell<u16>,
    block: Cell<*const Block>,
    /// The current component's record in `block` (null while `block` is): kept in step with
    /// `current` and `block`, so that the allocation path need not compute it.
    record: Cell<*const Record>,
    phase: Cell<u8>,
    depth: Cell<u8>,
    /// Whether this thread may draw on the emergency reserve ([`crate::use_emergency_reserve`]).
    emergency: Cell<bool>,
    alive: Cell<u64>,
    stack: [Cell<u16>; MAX_DEPTH],
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            current: Cell::new(0),
            block: Cell::new(ptr::null()),
            record: Cell::new(ptr::null()),
            phase: Cell::new(PHASE_NEW),
            depth: Cell::new(0),
            emergency: Cell::new(false),
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

/// Lets the calling thread draw on the emergency reserve from now on.
pub(crate) fn set_uses_emergency_reserve() {
    let _ = with_state(|st| st.emergency.set(true));
}

/// Whether the calling thread may draw on the emergency reserve.
pub(crate) fn uses_emergency_reserve() -> bool {
    with_state(|st| st.emergency.get()).unwrap_or(false)
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
    fn block(&self) -> Option<&'static Block> {
        // SAFETY: a non-null `block` is this thread's claimed block; blocks are never freed.
        unsafe { self.block.get().as_ref() }
    }

    /// Spends `size` bytes of budget for `comp` and the process; false when a hard limit refuses.
    #[inline(always)]
    pub fn admit(&self, comp: u16, size: usize) -> bool {
        match self.block() {
            Some(block) => block.admit(comp, size as u64),
            None => self.admit_slow(comp, size as u64),
        }
    }

    /// The fast half of an allocation of `size` bytes in `comp`: budget and statistics at once.
    /// False, with nothing done, when the caller must take the full path
    /// ([`admit`](Self::admit), then [`record_alloc`](Self::record_alloc)). `COUNTED` says
    /// whether the caller counts the size in the histograms: the fast half declines unless
    /// histograms are on exactly when it does.
    ///
    /// `epoch` is [`budget::limit_epoch`] as the caller read it.
    #[inline(always)]
    pub fn try_alloc<const COUNTED: bool>(
        &self,
        comp: u16,
        size: usize,
        trailer: bool,
        epoch: u64,
    ) -> bool {
        debug_assert_eq!(comp, self.current.get());
        let record = self.record.get();
        if record.is_null() {
            return false;
        }
        // SAFETY: a non-null `record` is the current component's record in this thread's block,
        // and then `block` is that block (`set_current` keeps them in step); blocks are never
        // freed.
        let (block, record) = unsafe { (&*self.block.get(), &*record) };
        block.try_alloc::<COUNTED>(record, size as u64, trailer, epoch)
    }

    /// Counts an allocation of `size` bytes in `comp`'s size histogram (after a
    /// [`try_alloc`](Self::try_alloc) with `COUNTED` and the inner allocator's yes).
    #[inline(always)]
    pub fn count_alloc_size(&self, comp: u16, size: usize) {
        if let Some(block) = self.block() {
            block.count_size(comp, 0, size as u64);
        }
    }

    /// Takes back a [`try_alloc`](Self::try_alloc) whose block the inner allocator refused.
    #[inline(always)]
    pub fn undo_alloc(&self, comp: u16, size: usize, trailer: bool) {
        if let Some(block) = self.block() {
            block.undo_alloc(comp, size as u64, trailer);
        }
    }

    /// The fast half of a free of `size` bytes from `comp`. False, with nothing done, when the
    /// caller must take the full path ([`record_free`](Self::record_free)).
    #[inline(always)]
    pub fn try_free(&self, comp: u16, size: usize, trailer: bool) -> bool {
        match self.block() {
            Some(block) => block.try_free(comp, size as u64, trailer),
            None => false,
        }
    }

    /// Gives back budget spent by [`admit`](Self::admit) for an allocation that did not happen.
    #[inline(always)]
    pub fn refund(&self, comp: u16, size: usize) {
        match self.block() {
            Some(block) => block.credit_back(comp, size as u64),
            None => uncharge_direct(comp, size as u64),
        }
    }

    /// Records an allocation of `size` bytes in `comp` (admitted beforehand).
    #[inline(always)]
    pub fn record_alloc(&self, comp: u16, size: usize, trailer: bool) {
        match self.block() {
            Some(block) => block.alloc(comp, size as u64, trailer),
            None => self.record_slow(
                comp,
                Op::Alloc {
                    size: size as u64,
                    trailer,
                },
            ),
        }
    }

    /// Records a free of `size` bytes from `comp`, giving the bytes back to its budget.
    #[inline(always)]
    pub fn record_free(&self, comp: u16, size: usize, trailer: bool) {
        match self.block() {
            Some(block) => block.free(comp, size as u64, trailer),
            None => self.record_slow(
                comp,
                Op::Free {
                    size: size as u64,
                    trailer,
                },
            ),
        }
    }

    /// Records a realloc in `comp` (`tag`: the change in trailer bytes; growth admitted
    /// beforehand, shrinkage given back to the budget).
    #[inline(always)]
    pub fn record_realloc(&self, comp: u16, old: usize, new: usize, tag: i64) {
        match self.block() {
            Some(block) => block.realloc(comp, old as u64, new as u64, tag),
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

    /// No block yet (first operation on this thread), or none to be had.
    #[cold]
    #[inline(never)]
    fn admit_slow(&self, comp: u16, size: u64) -> bool {
        if self.phase.get() == PHASE_NEW {
            self.init_block();
        }
        match self.block() {
            Some(block) => block.admit(comp, size),
            None => admit_direct(comp, size),
        }
    }

    /// No block yet (first operation on this thread), or none to be had.
    #[cold]
    #[inline(never)]
    pub(crate) fn record_slow(&self, comp: u16, op: Op) {
        if self.phase.get() == PHASE_NEW {
            self.init_block();
        }
        match self.block() {
            Some(block) => block.record_op(comp, op),
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
        self.set_current(self.current.get());
        self.phase.set(PHASE_READY);
    }

    /// Flushes this thread's statistics and returns its budget credit.
    pub fn flush(&self) {
        if let Some(block) = self.block() {
            block.return_all_credit();
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
        self.set_current(comp);
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
        self.set_current(if depth == 0 {
            0
        } else {
            self.stack[depth as usize - 1].get()
        });
    }

    /// Makes `comp` the current component, and its record the current record.
    fn set_current(&self, comp: u16) {
        self.current.set(comp);
        self.record.set(
            self.block()
                .map_or(ptr::null(), |b| b.record(comp) as *const Record),
        );
    }

    /// Open scopes on this thread (closed-out-of-order ones still waiting included).
    pub fn depth(&self) -> usize {
        self.depth.get() as usize
    }
}

/// Adds `bytes` of already-charged budget to the calling thread's credit for `comp` and the
/// process (a spent reservation); false when the thread has no block to hold it.
pub(crate) fn give_credit(comp: u16, bytes: u64) -> bool {
    let Some(block) = state().and_then(|st| {
        if st.phase.get() == PHASE_NEW {
            st.init_block();
        }
        st.block()
    }) else {
        return false;
    };
    if block.epoch.load(Relaxed) != budget::credit_epoch() {
        // Credit charged under an older epoch goes back now, and the block takes the current one:
        // otherwise the next allocation would hand the reservation back with it and charge
        // again, and another thread could take the bytes in between.
        block.refresh();
    }
    block.list(comp);
    block.record(comp).move_credit(bytes as i64);
    block.move_credit(bytes as i64);
    true
}

/// Charges `size` bytes straight to the budgets of `comp` and the process (no block on this
/// thread); false when a hard limit refuses.
#[cold]
#[inline(never)]
pub(crate) fn admit_direct(comp: u16, size: u64) -> bool {
    let Ok(bytes) = i64::try_from(size) else {
        budget::refused(comp, false, size);
        return false;
    };
    let component = budget::component_entity(comp);
    if component.charge(bytes, bytes).is_none() {
        budget::refused(comp, false, size);
        return false;
    }
    if budget::process_entity().charge(bytes, bytes).is_none() {
        component.uncharge(bytes);
        budget::refused(comp, true, size);
        return false;
    }
    if budget::ANY_LIMIT.load(Relaxed) {
        pressure::evaluate(Scope::Component(ComponentId(comp)));
        pressure::evaluate(Scope::Process);
    }
    true
}

/// Gives `size` bytes straight back to the budgets of `comp` and the process.
#[cold]
#[inline(never)]
pub(crate) fn uncharge_direct(comp: u16, size: u64) {
    budget::component_entity(comp).uncharge(size as i64);
    budget::process_entity().uncharge(size as i64);
    if budget::ANY_LIMIT.load(Relaxed) {
        pressure::evaluate(Scope::Component(ComponentId(comp)));
        pressure::evaluate(Scope::Process);
    }
}

/// Applies one operation straight to the shared counters (no block on this thread), giving freed
/// bytes back to the budgets.
#[cold]
#[inline(never)]
pub(crate) fn record_direct(comp: u16, op: Op) {
    if histogram::ENABLED.load(Relaxed) {
        match op {
            Op::Alloc { size, .. } => histogram::record_shared(comp, 0, size),
            Op::Realloc { new, .. } => histogram::record_shared(comp, 1, new),
            Op::Free { .. } => {}
        }
    }
    match op {
        Op::Free { size, .. } => uncharge_direct(comp, size),
        Op::Realloc { old, new, .. } if new < old => uncharge_direct(comp, old - new),
        _ => {}
    }
    let d = match op {
        Op::Alloc { size, trailer } => Delta {
            live: size as i64,
            high: size as i64,
            allocated: size,
            allocs: 1,
            tag: if trailer { TAG_BYTES as i64 } else { 0 },
            ..Delta::default()
        },
        Op::Free { size, trailer } => Delta {
            live: -(size as i64),
            frees: 1,
            tag: if trailer { -(TAG_BYTES as i64) } else { 0 },
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
    let mut add = |d: Delta| {
        sum.live += d.live;
        sum.high = sum.high.max(d.high);
        sum.allocated += d.allocated;
        sum.allocs += d.allocs;
        sum.frees += d.frees;
        sum.reallocs += d.reallocs;
        sum.tag += d.tag;
    };
    for block in blocks().filter(|b| b.in_use.load(Acquire)) {
        match comp {
            Some(comp) => add(block.record(comp).read()),
            None => {
                let n = block.dirty_len.load(Acquire).min(CAPACITY);
                for entry in &block.dirty[..n] {
                    // The thread's high is its block's, every component together.
                    add(Delta {
                        high: 0,
                        ..block.record(entry.load(Relaxed)).read()
                    });
                }
                add(Delta {
                    high: block.high(),
                    ..Delta::default()
                });
            }
        }
    }
    sum
}

/// The merged size histogram of `comp` (`kind` 0: allocations, 1: reallocs), over every block
/// (a block's counts stay with it after its thread exits) and the shared histograms of operations
/// made without one.
pub(crate) fn histogram(comp: u16, kind: usize) -> [u64; histogram::BUCKETS] {
    let all = blocks()
        .filter_map(|b| {
            // SAFETY: a non-null `hist` is a mapping never unmapped.
            unsafe { b.hist.load(Acquire).as_ref() }
        })
        .chain(histogram::shared());
    histogram::merged(comp, kind, all)
}

/// Threads that currently own a block, and blocks ever made.
pub(crate) fn block_counts() -> (usize, usize) {
    (BLOCKS_IN_USE.load(Relaxed), BLOCKS_MADE.load(Relaxed))
}
