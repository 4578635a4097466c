//! The monitor's reserve: a slice of the process's hard limit kept for the monitor thread, so that
//! the code that reacts to the limit (pressure callbacks, periodic tasks, the jemalloc responder,
//! the history sampler, and the monitor's own bookkeeping) can still allocate when the rest of the
//! program has used everything else.
//!
//! While the process has a hard limit, the monitor charges up to [`monitor_reserve`] bytes to the
//! process budget at the start of every round and holds them, unspent. When a hard limit refuses
//! an allocation on the monitor thread, the allocation path takes what it needs from the reserve
//! instead (the bytes are already charged, so nothing passes the limit); the next round tops the
//! reserve up again from whatever room the limit has. Every other thread can therefore use the
//! hard limit less the reserve. Without a process hard limit no reserve is held.
//!
//! The reserve counts in the process's charged bytes (it is part of what the limit has handed
//! out), but not in its pressure level, which measures what the program uses. Only the monitor
//! thread draws on it, and only the monitor thread changes how much is held, so the allocation
//! path's draw and the monitor's top-up never race.

use crate::budget;
use crate::thread;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};

/// The reserve the monitor keeps unless told otherwise: 256 KiB.
pub const DEFAULT_MONITOR_RESERVE: u64 = 256 * 1024;

/// The size the monitor tops its reserve up to.
static TARGET: AtomicU64 = AtomicU64::new(DEFAULT_MONITOR_RESERVE);
/// Bytes charged to the process budget and held for the monitor, neither live nor any thread's
/// credit. Written only on the monitor thread.
static HELD: AtomicI64 = AtomicI64::new(0);
/// The address of the monitor thread's thread-local state (0 until it starts): how the allocation
/// path tells the monitor thread apart without a thread-local of its own.
static HOLDER: AtomicUsize = AtomicUsize::new(0);
/// Allocations the reserve let through, and the bytes it gave them.
static DRAWS: AtomicU64 = AtomicU64::new(0);
static DRAWN_BYTES: AtomicU64 = AtomicU64::new(0);

/// Sets how many bytes of the process's hard limit the monitor keeps for itself (default
/// [`DEFAULT_MONITOR_RESERVE`]; 0 turns the reserve off). Takes effect at the monitor's next round.
///
/// The monitor thread runs the pressure callbacks and periodic tasks; with the process at its hard
/// limit, an allocation there is refused like any other unless the reserve covers it, and an
/// infallible one aborts the process. Size the reserve for what the callbacks and tasks allocate
/// in one round.
///
/// ```
/// alloc_core::set_monitor_reserve(1 << 20); // 1 MiB for callbacks that build a report
/// assert_eq!(alloc_core::monitor_reserve(), 1 << 20);
/// # alloc_core::set_monitor_reserve(alloc_core::DEFAULT_MONITOR_RESERVE);
/// ```
pub fn set_monitor_reserve(bytes: u64) {
    TARGET.store(bytes.min(i64::MAX as u64), Relaxed);
    crate::pressure::wake_monitor();
}

/// How many bytes of the process's hard limit the monitor keeps for itself
/// ([`set_monitor_reserve`]).
pub fn monitor_reserve() -> u64 {
    TARGET.load(Relaxed)
}

/// Bytes held in the reserve now (0 without a process hard limit).
pub(crate) fn held() -> u64 {
    HELD.load(Relaxed).max(0) as u64
}

/// Allocations the reserve let through, and the bytes it gave them.
pub(crate) fn draws() -> (u64, u64) {
    (DRAWS.load(Relaxed), DRAWN_BYTES.load(Relaxed))
}

/// Monitor thread only, once: makes the calling thread the one that holds the reserve.
pub(crate) fn hold_for_this_thread() {
    HOLDER.store(this_thread(), Relaxed);
}

fn this_thread() -> usize {
    thread::state().map_or(0, |st| st as *const thread::ThreadState as usize)
}

/// Called where the process's hard limit refuses `bytes`: on the monitor thread, takes them from
/// the reserve if it holds enough and returns true (they are already charged to the process, so
/// the caller turns them into credit without charging again). False anywhere else.
#[cold]
#[inline(never)]
pub(crate) fn draw(bytes: i64) -> bool {
    let holder = HOLDER.load(Relaxed);
    if holder == 0 || holder != this_thread() {
        return false;
    }
    let held = HELD.load(Relaxed);
    if bytes <= 0 || held < bytes {
        return false;
    }
    // Only this thread writes HELD, so a load and a store cannot lose a top-up.
    HELD.store(held - bytes, Relaxed);
    DRAWS.fetch_add(1, Relaxed);
    DRAWN_BYTES.fetch_add(bytes as u64, Relaxed);
    true
}

/// Monitor thread only: tops the reserve up to its target from the room under the process's hard
/// limit, or gives back what is held beyond the target (all of it without a hard limit).
pub(crate) fn maintain() {
    let process = budget::process_entity();
    let target = match process.limits().hard {
        Some(_) => TARGET.load(Relaxed) as i64,
        None => 0,
    };
    let held = HELD.load(Relaxed);
    if held > target {
        HELD.store(target, Relaxed);
        process.uncharge(held - target);
    } else if held < target {
        let got = process.charge_up_to(target - held);
        HELD.store(held + got, Relaxed);
    }
}
