//! Pressure levels and the monitor thread.
//!
//! A scripted sequence of allocations in a component with a soft budget crosses the thresholds
//! up and down (default thresholds: Warning at 85%, Critical at 95%, back to Warning below 85%,
//! to Normal below 70%) and produces exactly the expected `PressureEvent`s, with no extra events
//! while usage hovers around a threshold; callbacks run on the "memgov-monitor" thread, never on
//! the allocating one. Also: a panicking callback or task is counted and survived,
//! `remove_callback` stops deliveries, `every` runs tasks periodically, `adaptive_size` scales
//! with the level, and `pressure()` follows the process's soft limit.
//!
//! Levels are computed from charged bytes (live bytes plus this thread's credit, at most
//! `CREDIT_CHUNK` = 64 KiB after a flush), so the scripted budget is 16 MiB: a credit chunk is
//! 0.4% of it, and no scripted step comes within 1% of a threshold. Each step ends with
//! `flush_thread` and two monitor samples, so the level has been re-evaluated on exact figures.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{
    component_pressure, monitor_stats, reserve, ComponentId, EventKind, Level, Limits,
    PressureEvent, Scope, Thresholds,
};
use serial_test::serial;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[path = "support/monitor.rs"]
mod monitor;
use monitor::{settle, wait_until};

/// Starts the monitor with a short sampling interval, and keeps the deliberate panics of the
/// tests below out of the output.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"deliberate") {
                default(info);
            }
        }));
    });
    memgov::set_monitor_interval(Duration::from_millis(10));
    memgov::start_monitor();
}

/// A pressure event as a callback saw it, and where the callback ran.
#[derive(Clone, Debug)]
struct Delivery {
    event: PressureEvent,
    thread: ThreadId,
    on_monitor: bool,
    component: ComponentId,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

/// A log with room for every event a test makes, so recording does not allocate while the
/// figures are under test.
fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::with_capacity(64)))
}

fn delivery(event: &PressureEvent) -> Delivery {
    let current = thread::current();
    Delivery {
        event: *event,
        thread: current.id(),
        on_monitor: current.name() == Some("memgov-monitor"),
        component: memgov::current_component(),
    }
}

/// Registers a callback for `name` that records what it is given.
fn record(name: &'static str) -> (u64, Log) {
    let log = new_log();
    let sink = Arc::clone(&log);
    let id = memgov::on_component_pressure(name, move |event| {
        sink.lock().unwrap().push(delivery(event));
    });
    (id, log)
}

fn count(log: &Log) -> usize {
    log.lock().unwrap().len()
}

fn kinds(log: &Log) -> Vec<(EventKind, Level, Level)> {
    let log = log.lock().unwrap();
    log.iter()
        .map(|d| (d.event.kind, d.event.previous, d.event.level))
        .collect()
}

#[test]
#[serial]
fn crossing_thresholds_up_and_down_produces_exactly_the_expected_events() {
    use EventKind::{Critical as ToCritical, Recovery, Warning as ToWarning};
    use Level::{Critical, Normal, Warning};
    const SOFT: u64 = 16 * MIB;
    let name = "pr-script";
    let comp = memgov::component(name);
    setup();
    assert_eq!(memgov::thresholds(), memgov::Thresholds::default());
    memgov::set_budget(name, Limits::soft(SOFT)).unwrap();
    let (id, log) = record(name);

    // (usage in percent of the soft limit, the level it must leave the component at)
    let script = [
        (50, Normal),
        (80, Normal),
        (86, Warning),
        (84, Warning), // hovering around 85%: no events
        (86, Warning),
        (84, Warning),
        (86, Warning),
        (84, Warning),
        (96, Critical),
        (90, Critical), // still above 85%
        (96, Critical),
        (84, Warning),
        (86, Warning), // Warning rises again only at 95%
        (71, Warning),
        (69, Normal),
        (84, Normal),
        (96, Critical), // Normal straight to Critical
        (50, Normal),   // and straight back
        (0, Normal),
    ];
    let mut buf: Vec<u8> = Vec::new();
    for (step, &(percent, level)) in script.iter().enumerate() {
        let bytes = (SOFT * percent / 100) as usize;
        // Grow or shrink one block in place of allocating several: no step passes through a
        // lower usage on its way up, or a higher one on its way down.
        let _scope = memgov::component_scope(name);
        if bytes > buf.capacity() {
            buf.reserve_exact(bytes);
        } else {
            buf.shrink_to(bytes);
        }
        drop(_scope);
        assert_eq!(buf.capacity(), bytes);
        settle();
        let s = memgov::component_stats(name).unwrap();
        assert_eq!(s.live_bytes, bytes as u64, "{s:?}");
        assert_eq!(component_pressure(name), level, "step {step}: {percent}%");
    }

    let expected = [
        (ToWarning, Normal, Warning),
        (ToCritical, Warning, Critical),
        (Recovery, Critical, Warning),
        (Recovery, Warning, Normal),
        (ToCritical, Normal, Critical),
        (Recovery, Critical, Normal),
    ];
    wait_until("six events", || count(&log) >= expected.len());
    settle();
    memgov::remove_callback(id);
    assert_eq!(kinds(&log), expected);

    let me = thread::current().id();
    for d in log.lock().unwrap().iter() {
        assert_eq!(d.event.scope, Scope::Component(comp));
        assert_eq!(d.event.limit_bytes, SOFT);
        assert_ne!(d.thread, me, "a callback ran on the allocating thread");
        assert!(d.on_monitor, "{d:?}");
        assert_eq!(
            d.component,
            memgov::component("memgov"),
            "callbacks run in the monitor's own component"
        );
    }
    // Each event carries the charged bytes it was computed from: the step's usage, plus at most
    // one credit chunk held by the allocating thread.
    let charged: Vec<u64> = log
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.event.charged_bytes)
        .collect();
    for (c, percent) in charged.iter().zip([86, 96, 84, 69, 96, 50]) {
        let usage = SOFT * percent / 100;
        assert!((usage..=usage + 64 * KIB).contains(c), "{c} for {percent}%");
    }
}

#[test]
#[serial]
fn a_panicking_callback_is_counted_and_later_events_are_still_delivered() {
    let name = "pr-panic";
    setup();
    memgov::set_budget(name, Limits::soft(MIB)).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let calls_in = Arc::clone(&calls);
    let panicky = memgov::on_component_pressure(name, move |_| {
        calls_in.fetch_add(1, Relaxed);
        panic!("deliberate");
    });
    let (id, log) = record(name);
    let panics = monitor_stats().callback_panics;

    let r = reserve(name, 900 * KIB).unwrap();
    assert_eq!(component_pressure(name), Level::Warning);
    wait_until("the warning", || count(&log) == 1);
    assert_eq!(monitor_stats().callback_panics, panics + 1);
    drop(r);
    assert_eq!(component_pressure(name), Level::Normal);
    wait_until("the recovery", || count(&log) == 2);
    assert_eq!(monitor_stats().callback_panics, panics + 2);
    assert_eq!(
        calls.load(Relaxed),
        2,
        "the panicking callback stays registered"
    );
    assert_eq!(
        kinds(&log),
        [
            (EventKind::Warning, Level::Normal, Level::Warning),
            (EventKind::Recovery, Level::Warning, Level::Normal),
        ]
    );
    assert!(monitor_stats().running);
    memgov::remove_callback(panicky);
    memgov::remove_callback(id);
}

#[test]
#[serial]
fn a_removed_callback_gets_no_more_events() {
    let name = "pr-remove";
    setup();
    memgov::set_budget(name, Limits::soft(MIB)).unwrap();
    let (removed, removed_log) = record(name);
    let (kept, kept_log) = record(name);
    assert!(memgov::remove_callback(removed));

    let r = reserve(name, 990 * KIB).unwrap();
    wait_until("the critical event", || count(&kept_log) == 1);
    drop(r);
    wait_until("the recovery", || count(&kept_log) == 2);
    settle();
    assert_eq!(count(&removed_log), 0);
    assert!(memgov::remove_callback(kept));
    let r = reserve(name, 990 * KIB).unwrap();
    settle();
    drop(r);
    settle();
    assert_eq!(count(&kept_log), 2);
}

#[test]
#[serial]
fn remove_callback_says_false_for_an_unknown_id() {
    setup();
    let id = memgov::on_pressure(|_| {});
    assert!(memgov::remove_callback(id));
    assert!(!memgov::remove_callback(id), "removed twice");
    assert!(!memgov::remove_callback(u64::MAX), "never issued");
}

#[test]
#[serial]
fn every_runs_a_task_periodically_until_it_is_removed() {
    setup();
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    let task_runs = monitor_stats().task_runs;
    let start = Instant::now();
    let id = memgov::every(Duration::from_millis(20), move || {
        counter.fetch_add(1, Relaxed);
    });
    // At least 15 runs however slow the machine (the wait has its own deadline), then never more
    // runs than one per interval since registration.
    thread::sleep(Duration::from_millis(300));
    wait_until("fifteen runs", || runs.load(Relaxed) >= 15);
    assert!(memgov::remove_callback(id));
    let elapsed = start.elapsed().as_millis() as u64;
    let n = runs.load(Relaxed);
    assert!(n <= elapsed / 20 + 1, "{n} runs in {elapsed} ms");
    assert!(monitor_stats().task_runs >= task_runs + n);
    // A run in progress when it was removed may still finish; none starts afterwards.
    thread::sleep(Duration::from_millis(100));
    assert!(runs.load(Relaxed) <= n + 1);
}

#[test]
#[serial]
fn a_panicking_task_is_counted_and_other_tasks_go_on() {
    setup();
    let before = monitor_stats();
    let good_runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&good_runs);
    let bad = memgov::every(Duration::from_millis(10), || panic!("deliberate"));
    let good = memgov::every(Duration::from_millis(10), move || {
        counter.fetch_add(1, Relaxed);
    });
    wait_until("three panics and three good runs", || {
        monitor_stats().task_panics >= before.task_panics + 3 && good_runs.load(Relaxed) >= 3
    });
    memgov::remove_callback(bad);
    let panics = monitor_stats().task_panics;
    let runs = good_runs.load(Relaxed);
    wait_until("more good runs", || good_runs.load(Relaxed) >= runs + 3);
    assert!(
        monitor_stats().task_panics <= panics + 1,
        "the removed task still runs"
    );
    memgov::remove_callback(good);
    assert!(monitor_stats().running);
}

#[test]
#[serial]
fn adaptive_sizes_follow_the_components_level() {
    let name = "pr-adaptive";
    memgov::set_budget(name, Limits::soft(MIB)).unwrap();
    let size = |base| memgov::component_adaptive_size(name, base);
    assert_eq!((size(1000), size(0)), (1000, 0));
    let mut r = reserve(name, 900 * KIB).unwrap();
    assert_eq!(component_pressure(name), Level::Warning);
    assert_eq!((size(1000), size(1), size(0)), (500, 1, 0));
    r.try_grow(80 * KIB).unwrap();
    assert_eq!(component_pressure(name), Level::Critical);
    assert_eq!((size(1000), size(3), size(0)), (250, 1, 0));
    drop(r);
    assert_eq!(component_pressure(name), Level::Normal);
    assert_eq!(size(1000), 1000);
    assert_eq!(
        memgov::component_adaptive_size("pr-never-registered", 1000),
        1000
    );
}

#[test]
#[serial]
fn the_process_level_follows_its_soft_limit() {
    setup();
    let charged = || memgov::budget_stats(Scope::Process).charged_bytes;
    // Reservations are counters only: a large soft limit costs no memory, and the few KiB other
    // threads allocate meanwhile are far below a threshold's margin.
    let soft = charged() + 256 * MIB;
    let at = |percent: u64| soft * percent / 1000;
    let log = new_log();
    let sink = Arc::clone(&log);
    let id = memgov::on_pressure(move |event| {
        if event.scope == Scope::Process {
            sink.lock().unwrap().push(delivery(event));
        }
    });
    memgov::set_process_limits(Limits::soft(soft)).unwrap();
    assert_eq!(
        (memgov::pressure(), memgov::adaptive_size(1000)),
        (Level::Normal, 1000)
    );

    let mut r = reserve("pr-process", at(900) - charged()).unwrap();
    let warning = (memgov::pressure(), memgov::adaptive_size(1000));
    r.try_grow(at(975) - charged()).unwrap();
    let critical = (memgov::pressure(), memgov::adaptive_size(1000));
    r.shrink(charged() - at(800));
    let recovered = memgov::pressure();
    drop(r);
    let normal = (memgov::pressure(), memgov::adaptive_size(1000));
    memgov::set_process_limits(Limits::NONE).unwrap();

    assert_eq!(warning, (Level::Warning, 500));
    assert_eq!(critical, (Level::Critical, 250));
    assert_eq!(recovered, Level::Warning);
    assert_eq!(normal, (Level::Normal, 1000));
    wait_until("four process events", || count(&log) >= 4);
    settle();
    memgov::remove_callback(id);
    assert_eq!(
        kinds(&log),
        [
            (EventKind::Warning, Level::Normal, Level::Warning),
            (EventKind::Critical, Level::Warning, Level::Critical),
            (EventKind::Recovery, Level::Critical, Level::Warning),
            (EventKind::Recovery, Level::Warning, Level::Normal),
        ]
    );
    for d in log.lock().unwrap().iter() {
        assert!(d.on_monitor, "{d:?}");
        assert_eq!(
            d.component,
            memgov::component("memgov"),
            "callbacks run in the monitor's own component"
        );
    }
}

#[test]
#[serial]
fn every_with_an_interval_too_long_to_come_due_never_runs_and_does_not_panic() {
    setup();
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    // "Never", in effect: later than any Instant can express.
    let id = memgov::every(Duration::MAX, move || {
        counter.fetch_add(1, Relaxed);
    });
    settle();
    assert_eq!(runs.load(Relaxed), 0);
    assert!(memgov::remove_callback(id));
    assert!(monitor_stats().running);
}

#[test]
#[serial]
fn every_with_a_zero_interval_runs_at_most_once_per_millisecond() {
    setup();
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    let samples = monitor_stats().samples;
    let start = Instant::now();
    let id = memgov::every(Duration::ZERO, move || {
        counter.fetch_add(1, Relaxed);
    });
    thread::sleep(Duration::from_millis(200));
    assert!(memgov::remove_callback(id));
    let elapsed = start.elapsed().as_millis() as u64;
    let (n, rounds) = (runs.load(Relaxed), monitor_stats().samples - samples);
    assert!(
        n <= elapsed + 1,
        "{n} runs in {elapsed} ms ({rounds} monitor rounds)"
    );
}

#[test]
#[serial]
fn thresholds_too_fine_to_be_told_apart_are_refused() {
    let name = "pr-fine-thresholds";
    memgov::set_budget(name, Limits::soft(MIB)).unwrap();
    // Below a millionth: stored as 0, so a budget at Warning could never recover.
    let tiny = Thresholds {
        recovery: 1e-7,
        warning: 0.5,
        critical: 0.9,
    };
    let result = memgov::set_thresholds(tiny);
    let r = reserve(name, 900 * KIB).unwrap();
    assert_eq!(component_pressure(name), Level::Warning);
    drop(r);
    let after = component_pressure(name);
    let stored = memgov::thresholds();
    memgov::set_thresholds(Thresholds::default()).unwrap();
    assert_eq!(
        after,
        Level::Normal,
        "with nothing charged the level is Normal"
    );
    let e = result.unwrap_err();
    assert_eq!(e.thresholds, tiny);
    assert!(e.to_string().contains("millionth"), "{e}");
    assert!(stored.recovery > 0.0, "{stored:?}");
    // Warning and critical a tenth of a millionth apart would be one threshold.
    let close = Thresholds {
        recovery: 0.5,
        warning: 0.99999996,
        critical: 1.0,
    };
    assert!(memgov::set_thresholds(close).is_err());
    assert_eq!(memgov::thresholds(), Thresholds::default());
}
