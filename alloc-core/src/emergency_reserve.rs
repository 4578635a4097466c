//! The emergency reserve: a slice of the process's hard limit kept for the threads that react to
//! memory pressure, so that they can still allocate when the rest of the program has used
//! everything else.
//!
//! The code that reacts to the limit must be able to run at the limit: the monitor thread (pressure
//! callbacks, periodic tasks, the jemalloc responder, the history sampler, and its own
//! bookkeeping), memgov's HTTP endpoint (an operator asks for `/memory/health` or
//! `POST /memory/compact` exactly when memory is short), any thread the program marks with
//! [`use_emergency_reserve`], and any thread while it panics. An infallible allocation refused
//! there would abort the process, even one whose own code meets the limit gracefully with
//! `try_reserve`: a panic at the limit could not even box its message, so it aborted with
//! "memory allocation of N bytes failed" instead of unwinding to the program's `catch_unwind`
//! (a request handler's, say), and its message was lost.
//!
//! While the process has a hard limit, the monitor (started by the limit if it is not running)
//! charges up to [`set_emergency_reserve`] bytes to the process budget at the start of every round
//! and holds them, unspent. When the process's hard limit refuses an allocation on a thread that
//! uses the reserve, the allocation path takes what it needs from the reserve instead: the bytes are already charged, so nothing passes the
//! limit (`live <= charged <= hard` holds throughout). Process credit such a thread hands back
//! refills the reserve first, and the next round tops it up from whatever room the limit has. Every other thread can therefore use the hard limit less the
//! reserve. The reserve never holds more than an eighth of the hard limit, and without a process
//! hard limit it holds nothing.
//!
//! The reserve counts in the process's charged bytes (it is part of what the limit has handed
//! out), but not in its pressure level, which measures the program's use against what the program
//! can use. Component budgets are not covered: the reserve only answers the process's limit.

use crate::budget;
use crate::thread;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// The reserve kept unless told otherwise: 1 MiB.
pub const DEFAULT_EMERGENCY_RESERVE: u64 = 1024 * 1024;

/// The reserve never holds more than this fraction of the hard limit (an eighth), so that a small
/// limit is not swallowed by a reserve sized for a large one.
const MAX_SHARE_OF_LIMIT: u64 = 8;

/// The size the monitor tops the reserve up to.
static TARGET: AtomicU64 = AtomicU64::new(DEFAULT_EMERGENCY_RESERVE);
/// Bytes charged to the process budget and held in reserve: neither live nor any thread's credit.
static HELD: AtomicU64 = AtomicU64::new(0);
/// Allocations the reserve let through, and the bytes it gave them.
static DRAWS: AtomicU64 = AtomicU64::new(0);
static DRAWN_BYTES: AtomicU64 = AtomicU64::new(0);

/// The emergency reserve's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmergencyReserveStats {
    /// The size the reserve is topped up to while the process has a hard limit
    /// ([`set_emergency_reserve`]).
    pub target_bytes: u64,
    /// What the reserve holds when full under the current limits: the target, at most an eighth
    /// of the process's hard limit, and 0 without one.
    pub full_bytes: u64,
    /// Bytes held now: up to `full_bytes` (less while reserve threads allocate at the limit, and 0
    /// before the monitor's first round).
    pub held_bytes: u64,
    /// Allocations that the process's hard limit refused and the reserve let through.
    pub draws: u64,
    /// The bytes those allocations took from the reserve.
    pub drawn_bytes: u64,
}

/// Sets how many bytes of the process's hard limit are kept for the threads that react to
/// pressure (default [`DEFAULT_EMERGENCY_RESERVE`]; 0 turns the reserve off; at most an eighth of
/// the hard limit is held whatever the setting). The monitor applies it at its next round (and
/// is started, if it is not running, while the process has a hard limit). Also
/// `MEMGOV_EMERGENCY_RESERVE`.
///
/// Size it for what the pressure callbacks, the periodic tasks and a request to the HTTP endpoint
/// allocate between two monitor rounds: past the reserve, an infallible allocation on those
/// threads at the hard limit aborts the process like any other.
///
/// # Panics
/// If the monitor thread has to be started and the system refuses a new thread.
///
/// ```
/// alloc_core::set_emergency_reserve(4 << 20); // callbacks that build large reports
/// assert_eq!(alloc_core::emergency_reserve_stats().target_bytes, 4 << 20);
/// # alloc_core::set_emergency_reserve(alloc_core::DEFAULT_EMERGENCY_RESERVE);
/// ```
pub fn set_emergency_reserve(bytes: u64) {
    crate::config::ensure_init();
    store_emergency_reserve(bytes);
}

/// [`set_emergency_reserve`] without reading the environment first (the environment reader uses
/// it).
pub(crate) fn store_emergency_reserve(bytes: u64) {
    TARGET.store(bytes.min(i64::MAX as u64), Relaxed);
    hold_when_wanted();
    crate::pressure::wake_monitor();
}

/// Starts the monitor (which holds the reserve) if the reserve should hold something now: a
/// process hard limit and a non-zero setting. Called where either changes, off the allocation
/// path; the environment reader calls it too, so it does not read the environment itself.
pub(crate) fn hold_when_wanted() {
    if target() > 0 {
        crate::monitor::start_monitor_thread();
    }
}

/// The emergency reserve's size, what it holds now, and what it has given out.
///
/// ```
/// let s = alloc_core::emergency_reserve_stats();
/// assert!(s.full_bytes <= s.target_bytes);
/// ```
pub fn emergency_reserve_stats() -> EmergencyReserveStats {
    EmergencyReserveStats {
        target_bytes: TARGET.load(Relaxed),
        full_bytes: target(),
        held_bytes: held(),
        draws: DRAWS.load(Relaxed),
        drawn_bytes: DRAWN_BYTES.load(Relaxed),
    }
}

/// Lets the calling thread draw on the emergency reserve when the process's hard limit refuses
/// one of its allocations, for the rest of its life, and starts the monitor (which fills the
/// reserve) if it does not run.
///
/// For threads whose work is reacting to memory pressure, such as an admin endpoint that reports
/// or sheds memory; memgov's monitor and HTTP threads use it already. Threads that use the reserve
/// share it, so keep what they allocate at the limit small.
///
/// ```
/// std::thread::spawn(|| {
///     alloc_core::use_emergency_reserve();
///     // serve the admin endpoint ...
/// })
/// .join()
/// .unwrap();
/// ```
pub fn use_emergency_reserve() {
    thread::set_uses_emergency_reserve();
    crate::monitor::start_monitor();
}

/// Bytes held in the reserve now.
pub(crate) fn held() -> u64 {
    HELD.load(Relaxed)
}

/// Whether the calling thread may draw on the reserve: a reserve thread, or one that is
/// panicking (`std::thread::panicking` reads a counter and, only while some thread panics, a
/// `const` thread-local: it neither allocates nor locks).
fn uses_reserve() -> bool {
    thread::uses_emergency_reserve() || std::thread::panicking()
}

/// Called where the process's hard limit refuses `bytes`: on a thread that uses the reserve,
/// takes them from it if it holds enough and returns true (they are already charged to the
/// process, so the caller turns them into credit without charging again). False otherwise.
#[cold]
#[inline(never)]
pub(crate) fn draw(bytes: i64) -> bool {
    let Ok(bytes) = u64::try_from(bytes) else {
        return false;
    };
    if bytes == 0 || !uses_reserve() {
        return false;
    }
    let process = budget::process_entity();
    let Some(hard) = process.limits().hard else {
        return false;
    };
    // The held bytes are charged, so a draw passes no limit while the charged bytes are within it.
    // After the limit was lowered below them, the reserve gives only what keeps the charged bytes
    // it does not hold (live bytes and credit) within the new limit: usage must not rise there.
    let taken = HELD.fetch_update(Relaxed, Relaxed, |held| {
        let after = held.checked_sub(bytes)?;
        (process.charged().saturating_sub(after) <= hard).then_some(after)
    });
    if taken.is_err() {
        return false;
    }
    DRAWS.fetch_add(1, Relaxed);
    DRAWN_BYTES.fetch_add(bytes, Relaxed);
    true
}

/// Called where a thread hands `bytes` of process credit back: on a thread that uses the reserve,
/// keeps what the reserve lacks of its target (those bytes stay charged and go straight back into
/// the reserve) and returns the rest, for the caller to uncharge. Without this, what such a thread
/// drew and then freed would go back to the process budget, where the program's threads at the
/// limit take it before the monitor's next round, and the reserve would drain away one draw at a
/// time.
#[cold]
#[inline(never)]
pub(crate) fn keep(bytes: i64) -> i64 {
    if bytes <= 0 || !uses_reserve() {
        return bytes;
    }
    let target = target() as i64;
    let mut kept = 0;
    let _ = HELD.fetch_update(Relaxed, Relaxed, |held| {
        kept = (target - held as i64).clamp(0, bytes);
        (kept > 0).then_some(held + kept as u64)
    });
    bytes - kept
}

/// What the reserve is topped up to now: the setting, at most an eighth of the process's hard
/// limit, and nothing without one.
fn target() -> u64 {
    match budget::process_entity().limits().hard {
        Some(hard) => TARGET.load(Relaxed).min(hard / MAX_SHARE_OF_LIMIT),
        None => 0,
    }
}

/// Monitor thread only: tops the reserve up to its target from the room under the process's hard
/// limit, or gives back what is held beyond the target (all of it without a hard limit).
pub(crate) fn maintain() {
    let process = budget::process_entity();
    let target = target();
    let held = HELD.load(Relaxed);
    if held > target {
        // A draw or a hand-back may change HELD meanwhile: then the next round gives back the rest.
        let excess = held - target;
        if HELD
            .compare_exchange(held, target, Relaxed, Relaxed)
            .is_ok()
        {
            process.uncharge(excess as i64);
        }
    } else if held < target {
        // A hand-back meanwhile may take HELD past the target: the next round gives that back.
        let got = process.charge_up_to((target - held) as i64);
        HELD.fetch_add(got as u64, Relaxed);
    }
}
