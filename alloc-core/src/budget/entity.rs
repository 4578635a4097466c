//! The budget protocol: one budget's charged bytes against its hard limit, and the limit changes
//! that race with charges (see the [parent module](super) for how credit uses it).
//!
//! This file is compiled twice: in the crate, against std's atomics, and in
//! `alloc-core/tests/loom_budget.rs`, against loom's, which model-checks it. So it takes
//! everything shared from its parent and nothing else from the crate: the atomic types and
//! `fence` from `super::sync`, and the process-wide state, [`LIMIT_EPOCH`] and [`OVER_LIMIT`],
//! from `super` (plain statics in the crate; in the model, loom's `lazy_static`, made afresh for
//! each execution, as loom requires).

use super::sync::{fence, spin_loop, AtomicBool, AtomicI64, AtomicU64, AtomicU8};
use super::{LIMIT_EPOCH, OVER_LIMIT};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Within this many bytes of a hard limit, threads charge exactly what they need.
pub const NEAR_LIMIT: i64 = 4 * 1024 * 1024;

/// What a limit field holds for "no limit".
pub(crate) const NONE: u64 = u64::MAX;

/// Without a hard limit, reservations may take a budget's charged bytes up to this (2^62). They
/// are not backed by memory, so nothing else keeps them from taking the counter past `i64::MAX`;
/// below this, the real allocations on top cannot.
const MAX_RESERVED: i64 = 1 << 62;

/// What a limit change adds to [`LIMIT_EPOCH`].
pub(crate) const EPOCH_STEP: u64 = 2;

/// How many times [`Entity::limit_pair`] reads again while a limit change is being written.
const LIMIT_READ_TRIES: usize = 64;

/// The shared budget state of one component, or of the process.
///
/// The parent module builds it (a `const` constructor, which loom's atomics cannot have), so the
/// fields it needs are visible there.
pub(crate) struct Entity {
    /// Live bytes plus the credit threads hold.
    pub charged: AtomicI64,
    /// The hard limit in bytes, or [`NONE`].
    pub(super) hard: AtomicU64,
    /// The soft limit in bytes, or [`NONE`].
    pub(super) soft: AtomicU64,
    /// Even while the limits are stable, odd while [`set_limits`](Self::set_limits) writes them:
    /// a sequence lock, so that a reader never pairs a new hard limit with an old soft one.
    pub(super) limits_seq: AtomicU64,
    /// The current pressure level (a `Level` as u8).
    pub level: AtomicU8,
    /// Allocations and reservations refused.
    pub failures: AtomicU64,
    /// True while charged bytes are above the hard limit (after the limit was lowered).
    pub(super) over: AtomicBool,
}

impl Entity {
    /// Charges between `need` and `want` bytes (`need <= want`) unless that would pass the hard
    /// limit; returns what was charged.
    pub fn charge(&self, need: i64, want: i64) -> Option<i64> {
        let limit = self.hard.load(Relaxed);
        if limit == NONE {
            self.charged.fetch_add(want, Relaxed);
            self.limit_moved_since(limit);
            return Some(want);
        }
        let hard = limit as i64;
        let mut cur = self.charged.load(Relaxed);
        loop {
            let room = hard.saturating_sub(cur);
            let amount = if room >= want.saturating_add(NEAR_LIMIT) {
                want
            } else if room >= need {
                need
            } else {
                return None;
            };
            match self
                .charged
                .compare_exchange_weak(cur, cur + amount, Relaxed, Relaxed)
            {
                Ok(_) => {
                    self.limit_moved_since(limit);
                    return Some(amount);
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Charges as much of `max` bytes as the hard limit has room for (all of it without a limit);
    /// returns what was charged.
    pub fn charge_up_to(&self, max: i64) -> i64 {
        let limit = self.hard.load(Relaxed);
        if limit == NONE {
            self.charged.fetch_add(max, Relaxed);
            self.limit_moved_since(limit);
            return max;
        }
        let hard = limit as i64;
        let mut cur = self.charged.load(Relaxed);
        loop {
            let amount = hard.saturating_sub(cur).clamp(0, max);
            if amount == 0 {
                return 0;
            }
            match self
                .charged
                .compare_exchange_weak(cur, cur + amount, Relaxed, Relaxed)
            {
                Ok(_) => {
                    self.limit_moved_since(limit);
                    return amount;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Charges exactly `bytes` for a reservation unless that would pass the hard limit (or, without
    /// one, [`MAX_RESERVED`]); true when charged.
    pub fn charge_reserved(&self, bytes: i64) -> bool {
        let hard = self.hard.load(Relaxed);
        let cap = if hard == NONE {
            MAX_RESERVED
        } else {
            hard as i64
        };
        let charged = self
            .charged
            .fetch_update(Relaxed, Relaxed, |cur| {
                cur.checked_add(bytes).filter(|&after| after <= cap)
            })
            .is_ok();
        if charged {
            self.limit_moved_since(hard);
        }
        charged
    }

    /// After a charge made against the hard limit `used`: if the limit has changed since, the
    /// change's own check of [`over`](Self::update_over) may have missed this charge, so it is
    /// checked again. With the fence in [`set_limits`](Self::set_limits), one of the two sees the
    /// other: the limit's store sees this charge, or this sees the new limit.
    #[inline]
    fn limit_moved_since(&self, used: u64) {
        fence(SeqCst);
        if self.hard.load(Relaxed) != used {
            self.update_over();
        }
    }

    /// Gives `bytes` of charge back.
    pub fn uncharge(&self, bytes: i64) {
        let after = self.charged.fetch_sub(bytes, Relaxed) - bytes;
        // Pairs with the fence in `update_over`: an update that counted these bytes still charged
        // and marked the budget over is either seen here, or sees them gone on its second look.
        fence(SeqCst);
        if self.over.load(Relaxed) && after <= self.hard.load(Relaxed).min(i64::MAX as u64) as i64 {
            self.update_over();
        }
    }

    /// Whether charged bytes are above the hard limit, as this thread sees them now.
    fn is_over(&self) -> bool {
        let hard = self.hard.load(Relaxed);
        hard != NONE && self.charged.load(Relaxed) > hard as i64
    }

    /// Makes `over` say whether charged bytes are above the hard limit, and keeps [`OVER_LIMIT`]
    /// in step. Finding the budget newly over moves [`LIMIT_EPOCH`] on: threads that took the
    /// epoch while no budget was over would go on spending credit; a new step sends them back to
    /// `refresh`, which sees the budget over.
    ///
    /// Updates race, and one may swap in what it saw after another swapped in something newer
    /// (a limit raised back while a charge that saw the lower limit marks the budget over, or an
    /// uncharge that saw an old limit). So each takes a second look after its swap and swaps again
    /// until the two agree. Every change that can turn the answer (a limit's store, a charge
    /// against a moved limit, an uncharge) is followed by a fence and then this or a look at
    /// `over`; with the fence after the swap, the last swap's second look sees every such change,
    /// or the change's own look sees that swap and updates again, which would come later. The
    /// loop ends once limits stop changing: charges never pass the limit they see, so without a
    /// new limit the answer can only turn from over to not over.
    #[cold]
    #[inline(never)]
    fn update_over(&self) {
        let mut over = self.is_over();
        loop {
            if self.over.swap(over, Relaxed) != over {
                if over {
                    OVER_LIMIT.fetch_add(1, Relaxed);
                    LIMIT_EPOCH.fetch_add(EPOCH_STEP, Release);
                } else {
                    OVER_LIMIT.fetch_sub(1, Relaxed);
                }
            }
            fence(SeqCst);
            let now = self.is_over();
            if now == over {
                return;
            }
            over = now;
        }
    }

    /// The hard and soft limits (bytes, or [`NONE`]) as one [`set_limits`](Self::set_limits)
    /// stored them together. Lock-free: while a change is being written it reads again, at most
    /// [`LIMIT_READ_TRIES`] times (a writer is a few stores), and then answers with what it read.
    pub fn limit_pair(&self) -> (u64, u64) {
        let mut read = (NONE, NONE);
        for _ in 0..LIMIT_READ_TRIES {
            let before = self.limits_seq.load(Acquire);
            read = (self.hard.load(Relaxed), self.soft.load(Relaxed));
            // The limits are read before the count is read again.
            fence(Acquire);
            if before % 2 == 0 && self.limits_seq.load(Relaxed) == before {
                return read;
            }
            spin_loop();
        }
        read
    }

    /// Replaces the limits (`hard` and `soft` in bytes, at most `i64::MAX`, or [`NONE`]), marks
    /// the budget over or not under the new hard limit, and moves [`LIMIT_EPOCH`] on, so that
    /// threads hand back the credit they charged under the old one.
    ///
    /// Calls on one entity must not overlap (the parent serialises them): they are the writers
    /// of [`limits_seq`](Self::limits_seq)'s sequence lock.
    pub fn set_limits(&self, hard: u64, soft: u64) {
        let seq = self.limits_seq.load(Relaxed);
        self.limits_seq.store(seq.wrapping_add(1), Relaxed);
        // The odd count comes before the limits for any reader that sees a new limit.
        fence(Release);
        self.hard.store(hard, Relaxed);
        self.soft.store(soft, Relaxed);
        self.limits_seq.store(seq.wrapping_add(2), Release);
        // Pairs with `limit_moved_since`: a charge made against the old limit either is seen by
        // this check or sees the new limit and checks again itself.
        fence(SeqCst);
        self.update_over();
        LIMIT_EPOCH.fetch_add(EPOCH_STEP, Release);
    }
}
