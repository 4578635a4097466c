//! Model checks of the budget protocol under loom: every interleaving (up to a bound on
//! preemptions) and every value the memory model lets a relaxed load read, of a few threads
//! charging, uncharging and changing a hard limit.
//!
//! The code checked is the crate's own: `src/budget/entity.rs`, included below with `#[path]`.
//! That file takes its atomics and `fence` from `super::sync` and the process-wide state from
//! `super::{LIMIT_EPOCH, OVER_LIMIT}`, which this file provides as loom's: atomics that loom
//! schedules, and `lazy_static`s that loom makes afresh for each execution (a plain static would
//! carry one execution's values into the next).
//!
//! `LOOM_MAX_PREEMPTIONS` and the other `LOOM_*` variables override the bounds set here; with
//! `LOOM_LOG=trace LOOM_LOCATION=1` loom prints the interleaving of a failure.

use loom::sync::atomic::Ordering::{Acquire, Relaxed};
use loom::sync::Arc;
use loom::thread;

#[path = "../src/budget/entity.rs"]
#[allow(dead_code)] // The model leaves some of it unused: the pressure level and failure count.
mod entity;

use entity::{Entity, NEAR_LIMIT, NONE};

/// The atomics [`entity`] is compiled against: loom's.
mod sync {
    pub(super) use loom::hint::spin_loop;
    pub(super) use loom::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicU8};
}

loom::lazy_static! {
    /// The limit epoch (`budget::LIMIT_EPOCH` in the crate).
    static ref LIMIT_EPOCH: loom::sync::atomic::AtomicU64 = loom::sync::atomic::AtomicU64::new(0);
    /// How many budgets are over their hard limit (`budget::OVER_LIMIT` in the crate).
    static ref OVER_LIMIT: loom::sync::atomic::AtomicUsize =
        loom::sync::atomic::AtomicUsize::new(0);
}

/// Runs `f` under loom with at most 3 preemptions per execution (unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise): every model here then ends in about a second in a debug build. 3 is the fewest
/// at which each protocol fault these models are known to catch shows up (a `set_limits` without
/// its fence needs 3); all of them pass with 6 too (about 4 minutes).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A budget with `charged` bytes and a hard limit of `hard`, set the way `set_budget` sets it.
fn budget(charged: i64, hard: u64) -> Arc<Entity> {
    let e = Entity {
        charged: sync::AtomicI64::new(charged),
        hard: sync::AtomicU64::new(NONE),
        soft: sync::AtomicU64::new(NONE),
        limits_seq: sync::AtomicU64::new(0),
        level: sync::AtomicU8::new(0),
        failures: sync::AtomicU64::new(0),
        over: sync::AtomicBool::new(false),
    };
    e.set_limits(hard, NONE);
    Arc::new(e)
}

/// Once every thread is joined: `over` and `OVER_LIMIT` say whether the budget is over its limit.
fn assert_over_is_right(e: &Entity) {
    let charged = e.charged.load(Relaxed);
    let hard = e.hard.load(Relaxed);
    let truth = hard != NONE && charged > hard as i64;
    let over = e.over.load(Relaxed);
    assert_eq!(
        over, truth,
        "over is {over} with {charged} charged against {hard}"
    );
    assert_eq!(
        OVER_LIMIT.load(Relaxed),
        usize::from(over),
        "OVER_LIMIT disagrees with over"
    );
}

/// What a thread that refreshes its credit reads: the limit epoch, then whether a budget is over.
/// If it saw none over, it goes on spending credit until the epoch moves.
fn refresh() -> (u64, bool) {
    let epoch = LIMIT_EPOCH.load(Acquire);
    (epoch, OVER_LIMIT.load(Relaxed) != 0)
}

/// Once every thread is joined, with the budget over its limit: a thread that saw no budget over
/// at `epoch` must find the epoch moved, or it would keep spending credit while usage is over.
fn assert_refresh_sent_back(e: &Entity, (epoch, strict): (u64, bool), who: &str) {
    if e.over.load(Relaxed) && !strict {
        assert_ne!(
            LIMIT_EPOCH.load(Relaxed),
            epoch,
            "{who} saw no budget over at epoch {epoch}, and the epoch never moved on \
             though the budget ended over its limit"
        );
    }
}

/// A thread that charges exactly `bytes` (refused or not: either is a case the models check).
fn spawn_charge(e: &Arc<Entity>, bytes: i64) -> thread::JoinHandle<()> {
    let e = e.clone();
    thread::spawn(move || {
        let _ = e.charge(bytes, bytes);
    })
}

/// A thread that gives `bytes` of charge back.
fn spawn_uncharge(e: &Arc<Entity>, bytes: i64) -> thread::JoinHandle<()> {
    let e = e.clone();
    thread::spawn(move || e.uncharge(bytes))
}

/// The three ways to charge, racing against a fixed hard limit: the charged total never passes
/// it, what the calls returned adds up to it, and giving all of it back leaves nothing.
#[test]
fn racing_charges_never_pass_a_fixed_hard_limit() {
    model(|| {
        // Far enough from the limit at first that `charge` takes all it wants.
        let hard = NEAR_LIMIT + 1000;
        let e = budget(0, hard as u64);
        let within = move |e: &Entity| {
            let charged = e.charged.load(Relaxed);
            assert!(
                charged <= hard,
                "{charged} charged against a limit of {hard}"
            );
        };
        let charger = thread::spawn({
            let e = e.clone();
            move || {
                let got = e.charge(300, 800).unwrap_or(0);
                within(&e);
                got
            }
        });
        let upto = thread::spawn({
            let e = e.clone();
            move || {
                let got = e.charge_up_to(900);
                within(&e);
                got
            }
        });
        let reserved = if e.charge_reserved(NEAR_LIMIT) {
            NEAR_LIMIT
        } else {
            0
        };
        within(&e);
        let got = [charger.join().unwrap(), upto.join().unwrap(), reserved];
        let total: i64 = got.iter().sum();
        assert_eq!(e.charged.load(Relaxed), total, "the calls returned {got:?}");
        within(&e);
        for bytes in got {
            e.uncharge(bytes);
        }
        assert_eq!(e.charged.load(Relaxed), 0);
        assert_over_is_right(&e);
    });
}

/// A charge racing a limit lowered below usage: once both are done, `over` is right, and if the
/// budget ended over its limit, a thread that took an epoch while no budget was over (the
/// charger before charging, the setter after its change) finds the epoch moved on.
#[test]
fn a_charge_racing_a_lowered_limit_leaves_over_right_and_moves_the_epoch() {
    model(|| {
        let e = budget(1000, 2000);
        let charger = thread::spawn({
            let e = e.clone();
            move || {
                let before = refresh();
                // Refused if it sees the lower limit; else it lands above it.
                let _ = e.charge(500, 500);
                before
            }
        });
        e.set_limits(1100, NONE);
        let setter = refresh();
        let charger = charger.join().unwrap();
        assert_over_is_right(&e);
        assert_refresh_sent_back(&e, charger, "the charger");
        assert_refresh_sent_back(&e, setter, "the limit's setter");
    });
}

/// A limit lowered and raised back, racing a charge that may see the lowered limit and find the
/// budget over: once both are done, the budget is not over, and `over` says so.
#[test]
fn a_limit_raised_back_racing_a_charge_leaves_over_right() {
    model(|| {
        let e = budget(1000, 2000);
        let charger = spawn_charge(&e, 500);
        e.set_limits(1100, NONE);
        e.set_limits(2000, NONE);
        charger.join().unwrap();
        assert_over_is_right(&e);
    });
}

/// A limit raised above usage, racing an uncharge and a charge of a budget that is over its
/// limit: once all are done, `over` is right.
#[test]
fn a_limit_raised_racing_an_uncharge_and_a_charge_leaves_over_right() {
    model(|| {
        let e = budget(1500, 1100);
        let uncharger = spawn_uncharge(&e, 500);
        let charger = spawn_charge(&e, 300);
        e.set_limits(2000, NONE);
        uncharger.join().unwrap();
        charger.join().unwrap();
        assert_over_is_right(&e);
    });
}

/// An uncharge that takes a budget back under its lowered limit, racing the charge that took it
/// over: once all are done, `over` is right (an uncharge that misses the charge's `over` must
/// leave the charge to see the uncharge).
#[test]
fn an_uncharge_racing_a_charge_over_a_lowered_limit_leaves_over_right() {
    model(|| {
        let e = budget(1000, 2000);
        let charger = spawn_charge(&e, 500);
        let uncharger = spawn_uncharge(&e, 500);
        e.set_limits(1100, NONE);
        charger.join().unwrap();
        uncharger.join().unwrap();
        assert_over_is_right(&e);
    });
}

/// A reader racing a change of both limits: it sees the old pair or the new one, never the new
/// hard limit with the old soft one (the parent's pressure levels and reports read the pair).
#[test]
fn a_reader_racing_a_limit_change_sees_one_pair() {
    model(|| {
        let e = budget(0, 1000);
        e.set_limits(1000, 800);
        let reader = thread::spawn({
            let e = e.clone();
            move || e.limit_pair()
        });
        e.set_limits(2000, 1500);
        let seen = reader.join().unwrap();
        assert!(
            seen == (1000, 800) || seen == (2000, 1500),
            "read {seen:?}, a pair never set together"
        );
    });
}
