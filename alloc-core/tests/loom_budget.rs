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

use loom::sync::atomic::Ordering::Relaxed;
use loom::sync::Arc;
use loom::thread;

#[path = "../src/budget/entity.rs"]
#[allow(dead_code)] // The model leaves some of it unused: the pressure level and failure count.
mod entity;

use entity::{Entity, NEAR_LIMIT, NONE};

/// The atomics [`entity`] is compiled against: loom's.
mod sync {
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
