//! The error of a jemalloc control.

use std::fmt;

/// A `mallctl` call that failed: which control, and jemalloc's errno with its meaning.
///
/// ```
/// let e = alloc_jemalloc::stats_read("no.such.stat").unwrap_err();
/// assert_eq!(e.errno, libc::ENOENT);
/// assert!(e.to_string().contains("no such control"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CtlError {
    /// The control's name, e.g. `arena.4096.purge`.
    pub name: String,
    /// The errno jemalloc returned.
    pub errno: i32,
}

impl CtlError {
    pub(crate) fn new(name: &str, errno: i32) -> CtlError {
        CtlError {
            name: name.to_string(),
            errno,
        }
    }

    /// What the errno means for a control, per jemalloc's manual.
    pub fn meaning(&self) -> &'static str {
        match self.errno {
            libc::EINVAL => "invalid argument or value size",
            libc::ENOENT => "no such control",
            libc::EPERM => "not permitted (read-only control, or a value given to a void control)",
            libc::EAGAIN => "temporarily unavailable (memory allocation failure)",
            libc::EFAULT => {
                "internal error (for an arena: not initialised; for a decay time: out of range)"
            }
            libc::ENOMEM => "out of memory",
            _ => "unknown error",
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jemalloc control {:?} failed: {} (errno {})",
            self.name,
            self.meaning(),
            self.errno
        )
    }
}

impl std::error::Error for CtlError {}
