//! The one line memgov writes to stderr when a refused allocation aborts the process.
//!
//! When a hard limit refuses an allocation the allocator returns null. Fallible callers
//! (`Vec::try_reserve`, `HashMap::try_reserve`, ...) get an error and go on; infallible ones call
//! `handle_alloc_error`, which on stable Rust prints "memory allocation of N bytes failed" and
//! aborts. memgov remembers the refusal in a thread-local (no allocation) and, once a hard limit has
//! been set, installs a `SIGABRT` handler that writes one more line from a stack buffer before the
//! process dies:
//!
//! ```text
//! memgov: allocation of 1048576 bytes refused by component "pages": hard limit 4194304 bytes, 3670016 bytes live, 4128768 charged (last refusal on this thread)
//! ```
//!
//! The handler is installed with `SA_RESETHAND` and only when no other handler was installed
//! before it, so a program's own `SIGABRT` handling is left alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

struct Refusal {
    valid: Cell<bool>,
    component: Cell<u16>,
    by_process: Cell<bool>,
    limit: Cell<u64>,
    live: Cell<u64>,
    charged: Cell<u64>,
    requested: Cell<u64>,
}

thread_local! {
    static LAST: Refusal = const {
        Refusal {
            valid: Cell::new(false),
            component: Cell::new(0),
            by_process: Cell::new(false),
            limit: Cell::new(0),
            live: Cell::new(0),
            charged: Cell::new(0),
            requested: Cell::new(0),
        }
    };
}

/// Remembers a refusal on this thread. Never allocates.
pub(crate) fn remember(component: u16, by_process: bool, limit: u64, charged: u64, requested: u64) {
    let live = if by_process {
        crate::stats::global_live_bytes()
    } else {
        crate::registry::ComponentId(component).stats().live_bytes
    };
    let _ = LAST.try_with(|r| {
        r.component.set(component);
        r.by_process.set(by_process);
        r.limit.set(limit);
        r.live.set(live);
        r.charged.set(charged);
        r.requested.set(requested);
        r.valid.set(true);
    });
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
    let mut line = Line::new();
    let written = LAST.try_with(|r| {
        if !r.valid.get() {
            return false;
        }
        line.push(b"memgov: allocation of ");
        line.number(r.requested.get());
        line.push(b" bytes refused by ");
        if r.by_process.get() {
            line.push(b"the process limit");
        } else {
            line.push(b"component \"");
            line.push(
                crate::registry::ComponentId(r.component.get())
                    .name()
                    .as_bytes(),
            );
            line.push(b"\"");
        }
        line.push(b": hard limit ");
        line.number(r.limit.get());
        line.push(b" bytes, ");
        line.number(r.live.get());
        line.push(b" bytes live, ");
        line.number(r.charged.get());
        line.push(b" charged (last refusal on this thread)\n");
        true
    });
    if written == Ok(true) {
        line.write_stderr();
    }
    // SA_RESETHAND restored the default action: abort() raises SIGABRT again and the process ends.
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
    fn numbers_are_written_in_decimal() {
        let mut l = Line::new();
        l.number(0);
        l.push(b" ");
        l.number(18_446_744_073_709_551_615);
        assert_eq!(&l.buf[..l.len], b"0 18446744073709551615");
    }
}
