//! Admission with reservations: `reserve`, `try_grow`, `shrink` and drop move a budget's charged
//! bytes exactly; reservations and real allocations share one hard limit; a refusal is a
//! `BudgetExceeded` naming the component (or the process), the limit, what was charged and what
//! was asked, with a readable `Display`; `Reservation::spend` turns reserved bytes into credit
//! for this thread's allocations; `try_with_budget` runs its closure inside the component, or
//! refuses without running it.
//!
//! Assertions run outside limited scopes, so that a failed assertion's message is never refused.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{budget_stats, component_stats, reserve, ComponentId, Limits, Scope};
use serial_test::serial;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Runs `f` inside the component `name`.
fn in_component<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    let _scope = memgov::component_scope(name);
    f()
}

/// A block of exactly `size` bytes in the current component; `None` when refused.
fn try_block(size: u64) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(size as usize).ok()?;
    Some(v)
}

fn charged(name: &'static str) -> u64 {
    budget_stats(Scope::Component(memgov::component(name))).charged_bytes
}

fn failures(name: &'static str) -> u64 {
    budget_stats(Scope::Component(memgov::component(name))).failures
}

fn live(name: &str) -> u64 {
    component_stats(name).unwrap().live_bytes
}

#[test]
#[serial]
fn reserve_grow_shrink_and_drop_move_the_charge_exactly() {
    let name = "rs-basic";
    memgov::set_budget(name, Limits::hard(MIB)).unwrap();
    let before = failures(name);

    let mut r = reserve(name, 256 * KIB).unwrap();
    assert_eq!(
        (r.component(), r.bytes()),
        (memgov::component(name), 256 * KIB)
    );
    assert_eq!(charged(name), 256 * KIB);
    r.try_grow(512 * KIB).unwrap();
    assert_eq!((r.bytes(), charged(name)), (768 * KIB, 768 * KIB));

    let e = r.try_grow(512 * KIB).unwrap_err();
    assert_eq!(
        (e.limit, e.charged, e.requested),
        (MIB, 768 * KIB, 512 * KIB)
    );
    assert_eq!(
        (r.bytes(), charged(name)),
        (768 * KIB, 768 * KIB),
        "unchanged"
    );
    assert_eq!(failures(name), before + 1);
    // Exactly the rest fits.
    r.try_grow(256 * KIB).unwrap();
    assert_eq!(charged(name), MIB);
    assert!(reserve(name, 1).is_err());

    r.shrink(256 * KIB);
    assert_eq!((r.bytes(), charged(name)), (768 * KIB, 768 * KIB));
    r.shrink(10 * MIB); // more than held: gives back everything
    assert_eq!((r.bytes(), charged(name)), (0, 0));
    r.try_grow(100).unwrap();
    let r2 = reserve(name, 900 * KIB).unwrap();
    assert_eq!(charged(name), 900 * KIB + 100);
    drop(r);
    drop(r2);
    assert_eq!(charged(name), 0);
    assert_eq!(failures(name), before + 2);
    assert_eq!(live(name), 0, "reservations are not live bytes");
}

#[test]
#[serial]
fn reservations_and_allocations_share_one_hard_limit() {
    let name = "rs-shared";
    memgov::set_budget(name, Limits::hard(MIB)).unwrap();
    memgov::flush_thread();

    // A reservation crowds out an allocation ...
    let r = reserve(name, 600 * KIB).unwrap();
    let refused = in_component(name, || try_block(600 * KIB));
    assert!(
        refused.is_none(),
        "600 KiB reserved + 600 KiB allocated > 1 MiB"
    );
    assert_eq!(live(name), 0);
    drop(r);
    let block = in_component(name, || try_block(600 * KIB));
    assert!(block.is_some(), "room after the reservation is dropped");
    assert_eq!(live(name), 600 * KIB);

    // ... and live bytes crowd out a reservation.
    let e = reserve(name, 600 * KIB).unwrap_err();
    assert_eq!((e.component, e.limit), (Some(memgov::component(name)), MIB));
    assert_eq!(
        (e.requested, e.shortfall()),
        (600 * KIB, e.charged + 600 * KIB - MIB)
    );
    assert!(e.charged >= 600 * KIB, "{e:?}");
    let rest = reserve(name, MIB - e.charged).unwrap();
    assert_eq!(charged(name), MIB);
    drop(rest);
    drop(block);
    memgov::flush_thread();
    assert_eq!((live(name), charged(name)), (0, 0));
}

#[test]
#[serial]
fn a_refusal_names_the_component_the_limit_the_request_and_the_shortfall() {
    let name = "rs-error";
    memgov::set_budget(name, Limits::hard(MIB)).unwrap();
    let held = reserve(name, 768 * KIB).unwrap();
    let e = reserve(name, 512 * KIB).unwrap_err();
    assert_eq!(e.component, Some(memgov::component(name)));
    assert_eq!(
        (e.limit, e.charged, e.requested),
        (MIB, 768 * KIB, 512 * KIB)
    );
    assert_eq!(e.shortfall(), 256 * KIB);
    assert_eq!(
        e.to_string(),
        "component \"rs-error\" would exceed its hard limit of 1048576 bytes: \
         786432 charged, 524288 requested, 262144 short"
    );
    let as_error: Box<dyn std::error::Error> = Box::new(e.clone());
    assert_eq!(as_error.to_string(), e.to_string());
    drop(held);

    // An invalid name is a refusal by "overflow" with limit 0.
    let e = reserve("", 10).unwrap_err();
    assert_eq!(
        (e.component, e.limit, e.requested),
        (Some(ComponentId::OVERFLOW), 0, 10)
    );
}

#[test]
#[serial]
fn the_process_limit_refuses_reservations_in_any_component() {
    let name = "rs-process";
    // No emergency reserve: the monitor would charge up to 1 MiB of the room below whenever it
    // got to it, and the 256 KiB that fits would not.
    memgov::set_emergency_reserve(0);
    let process_before = budget_stats(Scope::Process).failures;
    let hard = budget_stats(Scope::Process).charged_bytes + MIB;
    memgov::set_process_limits(Limits::hard(hard)).unwrap();
    let refused = reserve(name, 2 * MIB);
    let fits = reserve(name, 256 * KIB).map(|r| r.bytes());
    memgov::set_process_limits(Limits::NONE).unwrap();
    memgov::set_emergency_reserve(memgov::DEFAULT_EMERGENCY_RESERVE);

    let e = refused.unwrap_err();
    assert_eq!((e.component, e.limit, e.requested), (None, hard, 2 * MIB));
    assert_eq!(e.shortfall(), e.charged + 2 * MIB - hard);
    let text = e.to_string();
    let expected = format!("the process would exceed its hard limit of {hard} bytes: ");
    assert!(text.starts_with(&expected), "{text}");
    assert!(
        text.ends_with(&format!("{} short", e.shortfall())),
        "{text}"
    );
    assert_eq!(fits, Ok(256 * KIB));
    // The component's share of the refused reservation was given back.
    assert_eq!(charged(name), 0);
    assert_eq!(failures(name), 1);
    assert_eq!(budget_stats(Scope::Process).failures, process_before + 1);
}

#[test]
#[serial]
fn a_spent_reservation_covers_this_threads_allocations_when_the_budget_is_full() {
    let name = "rs-spend";
    memgov::set_budget(name, Limits::hard(MIB)).unwrap();
    memgov::flush_thread();
    let mine = reserve(name, 512 * KIB).unwrap();
    let theirs = reserve(name, 512 * KIB).unwrap();
    assert_eq!(charged(name), MIB);
    assert!(
        in_component(name, || try_block(1)).is_none(),
        "the budget is full"
    );

    mine.spend();
    assert_eq!(
        charged(name),
        MIB,
        "spending moves the bytes, it does not free them"
    );
    let block = in_component(name, || try_block(512 * KIB));
    assert!(block.is_some(), "covered by the spent reservation");
    assert_eq!((live(name), charged(name)), (512 * KIB, MIB));
    assert!(
        in_component(name, || try_block(1)).is_none(),
        "the credit is used up"
    );
    // The credit belonged to this thread only.
    let elsewhere = std::thread::spawn(|| in_component(name, || try_block(1)).is_none());
    assert!(elsewhere.join().unwrap());

    drop(block);
    memgov::flush_thread();
    assert_eq!((live(name), charged(name)), (0, 512 * KIB));
    drop(theirs);
    assert_eq!(charged(name), 0);
    assert_eq!(failures(name), 3);
}

#[test]
#[serial]
fn try_with_budget_runs_in_the_component_or_refuses_without_running() {
    let name = "rs-with";
    memgov::set_budget(name, Limits::hard(MIB)).unwrap();
    memgov::flush_thread();

    let (inside, v) = memgov::try_with_budget(name, 256 * KIB, || {
        let v: Vec<u8> = Vec::with_capacity(256 * KIB as usize);
        (memgov::current_component().name(), v)
    })
    .unwrap();
    assert_eq!(inside, name);
    assert_eq!(
        memgov::current_component(),
        ComponentId::UNSCOPED,
        "scope closed"
    );
    assert_eq!(v.capacity() as u64, 256 * KIB);
    memgov::flush_thread();
    assert_eq!((live(name), charged(name)), (256 * KIB, 256 * KIB));
    drop(v);
    memgov::flush_thread();

    let held = reserve(name, 900 * KIB).unwrap();
    let mut ran = false;
    let e = memgov::try_with_budget(name, 256 * KIB, || ran = true).unwrap_err();
    assert!(!ran, "the closure must not run when the budget refuses");
    assert_eq!(
        (e.limit, e.charged, e.requested),
        (MIB, 900 * KIB, 256 * KIB)
    );
    assert_eq!(e.shortfall(), 132 * KIB);
    // The closure's allocations beyond what was reserved still meet the hard limit.
    let inner = memgov::try_with_budget(name, 64 * KIB, || try_block(512 * KIB).is_none());
    assert_eq!(inner, Ok(true));
    // Reserved bytes the closure did not use stay with this thread until it flushes.
    assert_eq!(charged(name), 964 * KIB);
    memgov::flush_thread();
    assert_eq!(charged(name), 900 * KIB);
    drop(held);
    assert_eq!((live(name), charged(name)), (0, 0));
}

#[test]
#[serial]
fn a_refusal_of_a_huge_request_reports_its_shortfall_without_overflowing() {
    let name = "rs-huge";
    memgov::set_budget(name, Limits::hard(MIB)).unwrap();
    let before = failures(name);
    let held = reserve(name, 10 * KIB).unwrap();
    // More than any limit can hold: refused, and counted like any other refusal.
    let e = reserve(name, u64::MAX).unwrap_err();
    assert_eq!((e.limit, e.charged, e.requested), (MIB, 10 * KIB, u64::MAX));
    assert_eq!(e.shortfall(), u64::MAX - (MIB - 10 * KIB));
    let text = e.to_string();
    assert!(
        text.ends_with(&format!("{} short", u64::MAX - (MIB - 10 * KIB))),
        "{text}"
    );
    assert_eq!(failures(name), before + 1);
    drop(held);
}

#[test]
#[serial]
fn a_reservation_the_charge_counters_cannot_hold_is_refused_without_a_limit() {
    let name = "rs-enormous";
    memgov::set_budget(name, Limits::NONE).unwrap();
    memgov::set_process_limits(Limits::NONE).unwrap();
    // Something is charged to the process (this thread's credit at least), so i64::MAX more
    // would take its counter past i64::MAX.
    let in_use = in_component(name, || try_block(64 * KIB));
    let process = budget_stats(Scope::Process).charged_bytes;
    assert!(process > 0);
    let huge = reserve(name, i64::MAX as u64);
    let charged_meanwhile = budget_stats(Scope::Process).charged_bytes;
    // A hard limit set meanwhile must still hold.
    memgov::set_process_limits(Limits::hard(process + MIB)).unwrap();
    let past_the_limit = reserve("rs-enormous-2", 2 * MIB).map(|r| r.bytes());
    memgov::set_process_limits(Limits::NONE).unwrap();
    let refused = huge.is_err();
    drop(huge);
    drop(in_use);
    assert!(
        past_the_limit.is_err(),
        "the hard limit let {past_the_limit:?} through"
    );
    // Not wrapped: a counter past i64::MAX reads as 0 charged (other threads may hand credit
    // back meanwhile, so it is not compared with `process`).
    assert!(
        charged_meanwhile > 0 && charged_meanwhile < 1 << 62,
        "{charged_meanwhile} charged"
    );
    assert!(refused);
}

#[test]
#[serial]
fn try_with_budget_with_no_scope_left_panics_before_reserving() {
    let name = "rs-too-deep";
    memgov::set_budget(name, Limits::hard(MIB)).unwrap();
    let guards: Vec<_> = (0..memgov::MAX_SCOPE_DEPTH)
        .map(|_| memgov::component_scope("rs-outer"))
        .collect();
    let mut ran = false;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        memgov::try_with_budget(name, 64 * KIB, || ran = true)
    }));
    drop(guards);
    let message = outcome.expect_err("no scope is left to enter");
    let message = message
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(message.contains("\"rs-too-deep\""), "{message}");
    assert!(!ran, "the closure ran outside its component");
    assert_eq!(charged(name), 0, "nothing stays reserved");
}
