//! The one line memgov writes to stderr when a refused allocation aborts the process.
//!
//! When a hard limit refuses an allocation the allocator returns null. Fallible callers
//! (`Vec::try_reserve`, `HashMap::try_reserve`, ...) get an error and go on; infallible ones call
//! `handle_alloc_error`, which on stable Rust prints "memory allocation of N bytes failed" and
//! aborts. memgov remembers recent refusals in a thread-local (no allocation) and, once a hard limit has
//! been set, installs a `SIGABRT` handler that writes one more line from a stack buffer before the
//! process dies:
//!
//! ```text
//! memgov: allocation of 1048576 bytes refused by component "pages": hard limit 4194304 bytes, 3670016 bytes live, 4128768 charged
//! ```
//!
//! The handler is installed with `SA_RESETHAND` and only when no other handler was installed
//! before it, so a program's own `SIGABRT` handling is left alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Refusals within this window before the abort are candidates for the line.
const WINDOW_NANOS: u64 = 100_000_000;
const RING: usize = 4;

#[derive(Clone, Copy)]
struct Refusal {
    /// Monotonic time of the refusal, in nanoseconds; 0 = empty.
    when: u64,
    component: u16,
    by_process: bool,
    limit: u64,
    live: u64,
    charged: u64,
    requested: u64,
    /// For a realloc's growth, the size of the block it was to grow (else 0).
    grown_from: u64,
}

const EMPTY: Refusal = Refusal {
    when: 0,
    component: 0,
    by_process: false,
    limit: 0,
    live: 0,
    charged: 0,
    requested: 0,
    grown_from: 0,
};

struct Recent {
    ring: [Cell<Refusal>; RING],
    next: Cell<usize>,
}

thread_local! {
    static RECENT: Recent = const { Recent { ring: [const { Cell::new(EMPTY) }; RING], next: Cell::new(0) } };
}

fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own; CLOCK_MONOTONIC is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
        .max(1)
}

/// Remembers a refusal on this thread. Never allocates.
///
/// Refusals come in bursts when an infallible allocation fails: std's allocation-error hook
/// allocates too (to print a backtrace, with `RUST_BACKTRACE` set), some of that succeeds and some
/// is refused in turn. So the last few refusals are kept, and the line names the largest request
/// refused in the 100 ms before the abort (backtrace allocations are small next to a request big
/// enough to pass a limit), saying how many others there were.
pub(crate) fn remember(component: u16, by_process: bool, limit: u64, charged: u64, requested: u64) {
    let live = if by_process {
        crate::stats::global_live_bytes()
    } else {
        crate::stats::component_live_bytes(crate::registry::ComponentId(component))
    };
    let refusal = Refusal {
        when: now_nanos(),
        component,
        by_process,
        limit,
        live,
        charged,
        requested,
        grown_from: 0,
    };
    let _ = RECENT.try_with(|r| {
        let i = r.next.get();
        r.ring[i % RING].set(refusal);
        r.next.set((i + 1) % RING);
    });
}

/// Called where a realloc's growth of `charged` bytes (from `old` to `new` bytes) was refused: the
/// refusal just remembered on this thread was for the growth alone, and the line names the size
/// the realloc requested instead, as std's own line does, with the size of the block it was to
/// grow. Never allocates.
#[cold]
#[inline(never)]
pub(crate) fn remember_realloc(charged: usize, old: usize, new: usize) {
    let _ = RECENT.try_with(|r| {
        let slot = &r.ring[(r.next.get() + RING - 1) % RING];
        let mut refusal = slot.get();
        if refusal.when != 0 && refusal.requested == charged as u64 {
            refusal.requested = new as u64;
            refusal.grown_from = old as u64;
            slot.set(refusal);
        }
    });
}

/// Set by [`abort_if_unwinding`] just before it aborts: the line then names the latest refusal
/// (the one that ended the panic), not the largest, which may be an earlier `try_reserve` the
/// program met gracefully before it panicked.
static ABORTED_WHILE_UNWINDING: AtomicBool = AtomicBool::new(false);

/// The refusal the line names (the largest in the window, or the latest when `latest`), and how
/// many other refusals were in the window.
fn culprit(latest: bool) -> Option<(Refusal, usize)> {
    let now = now_nanos();
    RECENT
        .try_with(|r| {
            let recent = r
                .ring
                .iter()
                .map(Cell::get)
                .filter(|f| f.when != 0 && now.saturating_sub(f.when) <= WINDOW_NANOS);
            let count = recent.clone().count();
            let named = if latest {
                recent.max_by_key(|f| f.when)
            } else {
                recent.max_by_key(|f| (f.requested, f.when))
            };
            named.map(|f| (f, count - 1))
        })
        .ok()
        .flatten()
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the `SIGABRT` handler once, unless the program has its own.
pub(crate) fn install() {
    if INSTALLED.swap(true, Relaxed) {
        return;
    }
    // SAFETY: plain sigaction calls with zeroed (valid) sigaction structs; the handler is an
    // `extern "C" fn(c_int)` that only reads a thread-local and calls write(2).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGABRT, std::ptr::null(), &mut old) != 0
            || old.sa_sigaction != libc::SIG_DFL
        {
            return;
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
    }
}

extern "C" fn on_abort(_signal: libc::c_int) {
    let latest = ABORTED_WHILE_UNWINDING.load(Relaxed);
    if let Some((r, others)) = culprit(latest) {
        let mut line = Line::new();
        line.push(b"memgov: allocation of ");
        line.number(r.requested);
        line.push(b" bytes refused by ");
        if r.by_process {
            line.push(b"the process limit");
        } else {
            line.push(b"component \"");
            line.push(crate::registry::ComponentId(r.component).name().as_bytes());
            line.push(b"\"");
        }
        line.push(b": hard limit ");
        line.number(r.limit);
        line.push(b" bytes, ");
        line.number(r.live);
        line.push(b" bytes live, ");
        line.number(r.charged);
        line.push(b" charged");
        if r.grown_from > 0 {
            line.push(b", growing a block of ");
            line.number(r.grown_from);
            line.push(b" bytes");
        }
        if latest {
            line.push(b" (refused while the thread was panicking");
            if others > 0 {
                line.push(b"; the last of ");
                line.number(others as u64 + 1);
                line.push(b" refusals on this thread just before the abort");
            }
            line.push(b")");
        } else if others > 0 {
            line.push(b" (and ");
            line.number(others as u64);
            line.push(b" smaller refusals on this thread just before the abort)");
        }
        line.push(b"\n");
        line.write_stderr();
    }
    // SA_RESETHAND restored the default action: abort() raises SIGABRT again and the process ends.
}

/// Called where the allocation path refuses memory to the calling thread for good (the process's
/// hard limit past the emergency reserve, or a component's when "unscoped" refuses too, a
/// realloc's growth included): if the thread is panicking, aborts the process now, after one line on
/// stderr (the SIGABRT handler adds the usual line with the figures).
///
/// Returning null there would hand the failure to std's allocation-error hook, which takes the
/// lock std's panic hook holds while it prints a panic's message and backtrace. When the refusal
/// comes from inside the panic hook (resolving a backtrace allocates a lot), the thread waits for
/// a lock it holds itself and the process hangs instead of ending (Rust 1.95;
/// `tests/emergency_reserve.rs` reproduces it with `RUST_BACKTRACE=1`). A hung process is worse
/// than an aborted one: nothing restarts it. The cost: a fallible allocation (`try_reserve`) on a
/// panicking thread at a hard limit aborts too, instead of returning `Err`.
#[cold]
#[inline(never)]
pub(crate) fn abort_if_unwinding() {
    if !std::thread::panicking() {
        return;
    }
    let mut line = Line::new();
    line.push(
        b"memgov: a hard limit refused memory to a panicking thread; aborting now, as std's ",
    );
    line.push(b"allocation-error hook would wait for the backtrace lock the panic holds\n");
    line.write_stderr();
    ABORTED_WHILE_UNWINDING.store(true, Relaxed);
    // SAFETY: abort has no preconditions; it ends the process.
    unsafe { libc::abort() }
}

/// A fixed stack buffer for one line; never allocates.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn write_stderr(&self) {
        // SAFETY: writes `len` initialised bytes of our own buffer to fd 2.
        unsafe { libc::write(2, self.buf.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_largest_refusal_or_the_latest() {
        remember(0, true, 1 << 20, 1 << 20, 65536);
        remember(0, true, 1 << 20, 1 << 20, 160);
        let (largest, others) = culprit(false).unwrap();
        assert_eq!((largest.requested, others), (65536, 1));
        let (last, others) = culprit(true).unwrap();
        assert_eq!((last.requested, others), (160, 1));
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut l = Line::new();
        l.number(0);
        l.push(b" ");
        l.number(18_446_744_073_709_551_615);
        assert_eq!(&l.buf[..l.len], b"0 18446744073709551615");
    }
}
