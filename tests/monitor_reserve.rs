//! The monitor keeps a slice of the process's hard limit for itself, so that the pressure
//! callbacks and tasks it runs can allocate while the rest of the program holds everything else;
//! before the reserve existed, the monitor's own bookkeeping aborted the process at the limit even
//! though every other allocation there was a graceful `try_reserve`.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{budget_stats, monitor_stats, EventKind, Limits, Scope};
use serial_test::serial;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Resets the process limits and the reserve when dropped, so a failing test leaves neither behind.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        memgov::set_process_limits(Limits::NONE).unwrap();
        memgov::set_monitor_reserve(memgov::DEFAULT_MONITOR_RESERVE);
    }
}

/// Waits up to 10 s for `done`; false if it never came. (At the limit a panic could not even
/// format its message: callers let go of their memory before they assert.)
fn came(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    assert!(came(done), "timed out waiting for {what}");
}

/// Sets a process hard limit `room` bytes above what is charged now and waits until the monitor
/// holds its whole reserve; returns the limit.
fn limit_with_room(room: u64) -> u64 {
    memgov::start_monitor();
    memgov::flush_thread();
    let hard = budget_stats(Scope::Process).charged_bytes + room;
    memgov::set_process_limits(Limits::hard(hard)).unwrap();
    let target = memgov::monitor_reserve();
    wait_until("the reserve", || monitor_stats().reserve_bytes == target);
    hard
}

/// Takes blocks, halving the size at each refusal, until not even 16 bytes are granted: this
/// thread then holds everything the limit lets it have.
fn fill_to_the_limit() -> Vec<Vec<u8>> {
    let mut held = Vec::with_capacity(256);
    let mut size = MIB as usize;
    while size >= 16 {
        let mut block = Vec::new();
        if block.try_reserve_exact(size).is_ok() {
            held.push(block);
        } else {
            size /= 2;
        }
    }
    held
}

#[test]
#[serial]
fn a_callback_allocates_at_the_process_hard_limit_from_the_reserve() {
    let _restore = Restore;
    memgov::set_monitor_reserve(MIB);
    let hard = limit_with_room(16 * MIB);
    let ran = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&ran);
    let id = memgov::on_pressure(move |event| {
        if event.scope == Scope::Process && event.kind == EventKind::Critical {
            // Infallible, and more than the monitor thread's own credit can cover: without the
            // reserve this aborts the process.
            let report = vec![0x5Au8; 512 * KIB as usize];
            seen.fetch_add(report.len() as u64, Relaxed);
        }
    });
    let held = fill_to_the_limit();
    let called = came(|| ran.load(Relaxed) > 0);
    let charged = budget_stats(Scope::Process).charged_bytes;
    drop(held);
    assert!(called, "the Critical callback never ran");
    let stats = monitor_stats();
    assert!(stats.reserve_draws >= 1, "{stats:?}");
    assert!(stats.reserve_drawn_bytes >= 256 * KIB, "{stats:?}");
    assert!(charged <= hard, "charged {charged} past the limit {hard}");
    memgov::remove_callback(id);
}

#[test]
#[serial]
fn other_threads_get_the_hard_limit_less_the_reserve() {
    let _restore = Restore;
    memgov::set_monitor_reserve(2 * MIB);
    let hard = limit_with_room(16 * MIB);
    let held = fill_to_the_limit();
    let got: u64 = held.iter().map(|b| b.capacity() as u64).sum();
    let level = memgov::pressure();
    let stats = monitor_stats();
    let charged = budget_stats(Scope::Process).charged_bytes;
    drop(held);
    // The reserve was never touched: the program got the room less the reserve, less what the
    // threads' credit and the monitor's own allocations hold (a few KiB).
    assert_eq!(stats.reserve_bytes, 2 * MIB, "{stats:?}");
    assert!(
        got <= 14 * MIB,
        "{got} bytes granted with 16 MiB of room and 2 MiB reserved"
    );
    assert!(got >= 13 * MIB, "only {got} bytes granted");
    assert!(charged <= hard, "charged {charged} past the limit {hard}");
    // Pressure measures the program's use against what it can use: Critical at the limit less
    // the reserve, back at Normal once the program lets go although the reserve is still held.
    assert_eq!(level, memgov::Level::Critical);
    memgov::flush_thread();
    wait_until("Normal", || memgov::pressure() == memgov::Level::Normal);
    assert_eq!(monitor_stats().reserve_bytes, 2 * MIB);
}

#[test]
#[serial]
fn the_reserve_follows_its_setting_and_is_held_only_under_a_hard_limit() {
    let _restore = Restore;
    memgov::start_monitor();
    memgov::set_process_limits(Limits::NONE).unwrap();
    wait_until("no reserve", || monitor_stats().reserve_bytes == 0);
    memgov::set_monitor_reserve(512 * KIB);
    limit_with_room(64 * MIB);
    memgov::set_monitor_reserve(128 * KIB);
    wait_until("a smaller reserve", || {
        monitor_stats().reserve_bytes == 128 * KIB
    });
    memgov::set_monitor_reserve(0);
    wait_until("no reserve", || monitor_stats().reserve_bytes == 0);
    memgov::set_monitor_reserve(256 * KIB);
    wait_until("the reserve again", || {
        monitor_stats().reserve_bytes == 256 * KIB
    });
    memgov::set_process_limits(Limits::soft(1 << 40)).unwrap();
    wait_until("no reserve without a hard limit", || {
        monitor_stats().reserve_bytes == 0
    });
}
