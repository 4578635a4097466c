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
//! And a lock one of the vanished threads held at the fork would stay held for ever.
//!
//! `pthread_atfork` handlers, registered before `main` (and again, idempotently, when the
//! monitor starts), take care of all of it. Before the fork, the forking thread takes every lock
//! memgov takes off the allocation path ([`prepare`]), so no other thread holds one; after it,
//! the parent and the child release them. The child's handler also fixes the ring and the flush
//! and marks the vanished threads' blocks, with atomic loads and stores only, and flags the
//! child. The first use of memgov's API in the child (any function that reads the
//! environment first: entering a scope, reading figures, setting a limit,
//! [`init`](crate::init)...) then releases the marked blocks as their threads' exits would have,
//! and starts a monitor of the child's own if the parent had one, reading only the events pushed
//! from then on. A child that never calls memgov's API gets no monitor (and no callbacks), and
//! its budgets keep the vanished threads' credit charged.

use std::any::Any;
use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

/// Set in a forked child by [`in_child`]; taken by the first use of memgov's API there.
static FORKED: AtomicBool = AtomicBool::new(false);
/// Whether the handler is registered.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers the fork handlers once.
pub(crate) fn register() {
    if REGISTERED.swap(true, Relaxed) {
        return;
    }
    // jemalloc registers its own fork handlers when it initialises, and prepare handlers run in
    // the reverse order of registration: ours must be registered after jemalloc's, so that it
    // waits for a thread inside a jemalloc control that holds one of memgov's locks before
    // jemalloc's handler takes jemalloc's control lock (the other way round, that thread waits
    // for the control lock, and the fork for it). Reading a control initialises jemalloc.
    #[cfg(feature = "jemalloc")]
    let _ = alloc_jemalloc::page_size();
    // SAFETY: registers handlers that stay valid for the life of the process (plain functions).
    unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
}

thread_local! {
    /// memgov's locks, held by the thread that forks from [`prepare`] until [`in_parent`] or
    /// [`in_child`] drops them.
    static HELD: Cell<Option<Box<dyn Any>>> = const { Cell::new(None) };
}

/// Takes every lock memgov takes off the allocation path, so that none is held by another thread
/// at the fork: one held then would stay held for ever in the child, where its holder does not
/// exist (a child that read jemalloc's statistics while another thread of its parent did hung
/// on 40 forks of 40). The order is the one the locks nest in: every live cache's and pool's (the
/// monitor sheds under them; code under one may call memgov), the responder's state (held while
/// it starts monitor tasks and reads and sets jemalloc's controls), the list of live caches and
/// pools (held while the first of them registers its pressure callback), the monitor's start,
/// callback and task lists, the registry's insertions, limit stores, jemalloc's statistics epoch
/// and its hook installation. A periodic task's own locks are left out: the thread that forks may
/// be running a task.
extern "C" fn prepare() {
    // Tuple fields are evaluated, and so the locks taken, left to right.
    let held = (
        crate::shed_registry::hold_all_for_fork(),
        #[cfg(feature = "jemalloc")]
        crate::responder::lock_for_fork(),
        crate::shed_registry::lock_for_fork(),
        crate::monitor::lock_for_fork(),
        crate::registry::lock_for_fork(),
        crate::budget::lock_for_fork(),
        #[cfg(feature = "jemalloc")]
        alloc_jemalloc::ForkGuard::lock(),
    );
    let held: Box<dyn Any> = Box::new(held);
    let _ = HELD.try_with(|h| h.set(Some(held)));
}

/// The parent's handler: releases what [`prepare`] took.
extern "C" fn in_parent() {
    let _ = HELD.try_with(|h| drop(h.take()));
}

/// The child's handler, run with no other thread in the process: releases what [`prepare`] took
/// (this thread took it, so the child holds it), and fixes what the vanished threads left, with
/// atomic loads and stores only.
extern "C" fn in_child() {
    crate::pressure::forget_event_writers();
    crate::counters::forget_flushes();
    crate::thread::mark_orphans_in_child();
    FORKED.store(true, Relaxed);
    let _ = HELD.try_with(|h| drop(h.take()));
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
