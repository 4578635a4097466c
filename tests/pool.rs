//! `Pool`: reuse, the idle bound, where its objects are charged, objects that come back from other
//! threads or after the pool is gone, and shedding idle objects under pressure.
//!
//! The pressure test gives the pool's component a 16 MiB soft budget (default thresholds) and
//! moves it across thresholds with a ballast block, each step at least 2% away from a threshold.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{component_stats, Level, Limits, Pool, Pooled, ShedReport};
use serial_test::serial;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[path = "support/monitor.rs"]
mod monitor;
use monitor::{settle, wait_until};

fn live(name: &str) -> u64 {
    component_stats(name).map_or(0, |s| s.live_bytes)
}

#[test]
#[serial]
fn objects_are_reused_reset_and_kept_up_to_max_idle() {
    let pool = Pool::builder("pool-reuse")
        .max_idle(2)
        .reset(|v: &mut Vec<u8>| {
            v.clear();
            v.capacity() <= 4096 // a buffer that grew is not kept
        })
        .build(|| Vec::with_capacity(1024));
    let mut a = pool.get();
    a.extend_from_slice(b"abc");
    let a_ptr = a.as_ptr();
    drop(a);
    let b = pool.get();
    assert_eq!(b.as_ptr(), a_ptr, "the idle buffer is reused");
    assert!(b.is_empty(), "and reset");
    // Four out at once; only two are kept when they come back.
    let more: Vec<Pooled<Vec<u8>>> = (0..3).map(|_| pool.get()).collect();
    assert_eq!(pool.stats().live_out, 4);
    drop(b);
    drop(more);
    let s = pool.stats();
    assert_eq!((s.live_idle, s.live_out), (2, 0));
    assert_eq!(
        (
            s.total_hits,
            s.total_misses,
            s.total_returns,
            s.total_discards
        ),
        (1, 4, 5, 2)
    );
    // A buffer the reset refuses is dropped.
    let mut big = pool.get();
    big.reserve(10_000);
    drop(big);
    let s = pool.stats();
    assert_eq!((s.live_idle, s.total_discards), (1, 3));
    assert_eq!(s.hit_ratio(), Some(2.0 / 6.0));
    let kept = Pooled::into_inner(pool.get());
    assert_eq!(kept.capacity(), 1024);
    let s = pool.stats();
    assert_eq!((s.live_idle, s.live_out, s.total_detached), (0, 0, 1));
    pool.clear();
}

#[test]
#[serial]
fn objects_belong_to_the_pool_component_wherever_they_return() {
    memgov::flush_thread();
    let pool = Arc::new(Pool::new("pool-memory", 8, || vec![0u8; 10_000]));
    let lent: Vec<_> = (0..4).map(|_| pool.get()).collect();
    memgov::flush_thread();
    assert!(live("pool-memory") >= 40_000);
    // Guards are Send: these come back on another thread.
    thread::spawn(move || drop(lent)).join().unwrap();
    assert_eq!(pool.stats().live_idle, 4);
    // One still out when the pool goes: it is dropped when it comes back.
    let straggler = pool.get();
    let pool = Arc::into_inner(pool).unwrap();
    drop(pool);
    memgov::flush_thread();
    assert!(live("pool-memory") >= 10_000, "the straggler is still live");
    drop(straggler);
    memgov::flush_thread();
    assert_eq!(live("pool-memory"), 0, "everything the pool made is freed");
}

#[test]
#[serial]
fn threads_share_a_pool() {
    let pool = Arc::new(Pool::new("pool-threads", 16, || vec![0u8; 256]));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                for i in 0..10_000 {
                    let mut buf = pool.get();
                    buf[0] = i as u8;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let s = pool.stats();
    assert_eq!(s.total_hits + s.total_misses, 40_000);
    assert_eq!(s.total_returns, 40_000);
    assert_eq!(s.live_out, 0);
    assert!(s.live_idle <= 16);
    assert_eq!(
        s.total_misses,
        s.live_idle + s.total_discards,
        "every object made is idle or gone"
    );
}

#[test]
#[serial]
fn pressure_sheds_idle_objects_and_fewer_are_kept_until_normal() {
    memgov::set_monitor_interval(Duration::from_millis(10));
    memgov::start_monitor();
    memgov::set_budget("pool-pressure", Limits::soft(16 * MIB as u64)).unwrap();
    let reports: Arc<Mutex<Vec<ShedReport>>> = Arc::default();
    let log = Arc::clone(&reports);
    let pool = Pool::builder("pool-pressure")
        .max_idle(16)
        .on_shed(move |r| log.lock().unwrap().push(*r))
        .build(|| vec![1u8; 256 * KIB]);
    // 16 idle buffers: 4 MiB, 25%.
    drop((0..16).map(|_| pool.get()).collect::<Vec<_>>());
    assert_eq!(pool.stats().live_idle, 16);
    settle();
    // 10 MiB of ballast: 14 MiB, 87.5%, Warning. Half of max_idle is kept: 12 MiB, 75%, still
    // Warning (recovery is below 70%).
    let ballast = {
        let _s = memgov::component_scope("pool-pressure");
        vec![1u8; 10 * MIB]
    };
    // The level changes before the shedding ends: wait for the report, sent once it has.
    wait_until("Warning", || reports.lock().unwrap().len() == 1);
    let s = pool.stats();
    assert_eq!((s.live_idle, s.bound, s.total_shed), (8, 8, 8));
    // Nine come back: one more than the bound is discarded.
    drop((0..9).map(|_| pool.get()).collect::<Vec<_>>());
    assert_eq!(pool.stats().live_idle, 8);
    // 5.5 MiB more: 17.5 MiB, 109%, Critical. Nothing idle is kept: 15.5 MiB, 97%, still
    // Critical.
    let more = {
        let _s = memgov::component_scope("pool-pressure");
        vec![1u8; 5 * MIB + MIB / 2]
    };
    wait_until("Critical", || reports.lock().unwrap().len() == 2);
    let s = pool.stats();
    assert_eq!((s.live_idle, s.bound), (0, 0));
    let lent = pool.get();
    drop(lent);
    assert_eq!(pool.stats().live_idle, 0, "nothing is kept at Critical");
    drop((more, ballast));
    wait_until("Normal", || reports.lock().unwrap().len() == 3);
    drop((0..16).map(|_| pool.get()).collect::<Vec<_>>());
    assert_eq!(pool.stats().live_idle, 16, "back at Normal, max_idle again");
    let r = reports.lock().unwrap().clone();
    let steps: Vec<_> = r.iter().map(|r| (r.previous, r.level, r.shed)).collect();
    assert_eq!(
        steps,
        [
            (Level::Normal, Level::Warning, 8),
            (Level::Warning, Level::Critical, 8),
            (Level::Critical, Level::Normal, 0),
        ]
    );
    drop(pool);
    memgov::set_budget("pool-pressure", Limits::NONE).unwrap();
}

#[test]
#[serial]
fn live_pools_are_listed_by_name_until_dropped() {
    let pool = Pool::builder("pool-listed")
        .name("scratch")
        .build(|| vec![0u8; 16]);
    drop(pool.get());
    let listed: Vec<_> = memgov::pools()
        .into_iter()
        .filter(|p| p.name == "scratch")
        .collect();
    assert_eq!(listed, [pool.stats()]);
    assert_eq!(listed[0].component.name(), "pool-listed");
    drop(pool);
    assert!(!memgov::pools().iter().any(|p| p.name == "scratch"));
}

#[test]
#[serial]
fn a_guard_in_a_thread_local_comes_back_at_thread_exit() {
    use std::cell::RefCell;
    use std::sync::OnceLock;
    static POOL: OnceLock<Pool<Vec<u8>>> = OnceLock::new();
    thread_local! {
        // Dropped by the thread-local destructors at thread exit: the guard then takes the
        // pool's lock and goes back into the pool.
        static HELD: RefCell<Option<Pooled<Vec<u8>>>> = const { RefCell::new(None) };
    }
    let pool = POOL.get_or_init(|| Pool::new("pool-teardown", 4, || vec![0u8; 4096]));
    thread::spawn(|| {
        let guard = POOL.get().unwrap().get();
        HELD.with(|h| *h.borrow_mut() = Some(guard));
    })
    .join()
    .unwrap();
    let s = pool.stats();
    assert_eq!((s.live_out, s.live_idle, s.total_returns), (0, 1, 1));
}

#[test]
#[serial]
fn try_get_with_hands_back_a_failure_to_make_at_a_hard_limit() {
    memgov::set_budget("pool-hard", Limits::hard(64 * KIB as u64)).unwrap();
    let pool = Pool::new("pool-hard", 8, || Vec::<u8>::with_capacity(16 * KIB));
    let fallible = || -> Result<Vec<u8>, std::collections::TryReserveError> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(16 * KIB)?;
        Ok(buf)
    };
    // Made in the pool's component until its 64 KiB are spent: three, since the idle list the
    // pool reserved there (8 slots) leaves less than a fourth 16 KiB.
    let mut lent = Vec::new();
    let refused = loop {
        match pool.try_get_with(fallible) {
            Ok(buf) => lent.push(buf),
            Err(e) => break e,
        }
        assert!(lent.len() <= 4, "past the hard limit");
    };
    assert_eq!(lent.len(), 3);
    assert!(
        refused.to_string().contains("allocator returned an error"),
        "{refused}"
    );
    let s = pool.stats();
    assert_eq!(
        (s.total_misses, s.live_out),
        (lent.len() as u64 + 1, lent.len() as u64)
    );
    // Once one comes back, it is reused: no making, no failure.
    lent.pop();
    let again = pool.try_get_with(fallible).expect("an idle buffer");
    assert_eq!(pool.stats().total_hits, 1);
    drop((again, lent, pool));
    memgov::set_budget("pool-hard", Limits::NONE).unwrap();
}
