//! What memgov does in a forked child.
//!
//! Only the thread that called `fork` lives on in the child. The figures, budgets and limits live
//! in memory the child inherits and need nothing from the parent's other threads, but four
//! things did:
//! - the monitor thread (pressure callbacks, periodic tasks, the emergency reserve, the history
//!   sampler, the jemalloc responder) is not in the child;
//! - a pressure event a vanished thread was writing leaves its slot of the event ring marked as
//!   being written, which holds up the monitor's reading there for ever;
//! - a flush a vanished thread had begun never ends, and readers of the figures wait for it;
//! - the counter blocks of the vanished threads stay in use, holding their pending statistics
//!   and their budget credit, which nothing would ever hand back.
//!
//! A `pthread_atfork` handler, registered before `main` (and again, idempotently, when the
//! monitor starts), fixes the ring and the flush in the child at once and marks the vanished
//! threads' blocks, with atomic loads and stores only (the handler must be async-signal-safe),
//! and flags the child. The first use of memgov's API in the child (any function that reads the
//! environment first: entering a scope, reading figures, setting a limit,
//! [`init`](crate::init)...) then releases the marked blocks as their threads' exits would have,
//! and starts a monitor of the child's own if the parent had one, reading only the events pushed
//! from then on. A child that never calls memgov's API gets no monitor (and no callbacks), and
//! its budgets keep the vanished threads' credit charged.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

/// Set in a forked child by [`in_child`]; taken by the first use of memgov's API there.
static FORKED: AtomicBool = AtomicBool::new(false);
/// Whether the handler is registered.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers the fork handler once.
pub(crate) fn register() {
    if REGISTERED.swap(true, Relaxed) {
        return;
    }
    // SAFETY: registers a child handler that stays valid for the life of the process (a plain
    // function); no prepare or parent handler.
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
}

/// The child's handler: async-signal-safe (atomic loads and stores only), and run with no other
/// thread in the process.
extern "C" fn in_child() {
    crate::pressure::forget_event_writers();
    crate::counters::forget_flushes();
    crate::thread::mark_orphans_in_child();
    FORKED.store(true, Relaxed);
}

/// Called by every use of memgov's API: one relaxed load, except the first time in a forked
/// child.
#[inline]
pub(crate) fn after_fork() {
    if FORKED.load(Relaxed) {
        after_fork_now();
    }
}

#[cold]
fn after_fork_now() {
    if FORKED.swap(false, Relaxed) {
        crate::thread::release_orphans();
        crate::monitor::restart_in_child();
    }
}
