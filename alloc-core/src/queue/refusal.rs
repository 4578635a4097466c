//! [`PushError`]: a value a [`BoundedQueue`](super::BoundedQueue) would not take, handed back
//! with why; [`PopTimeoutError`]: why a timed pop came back empty.

use crate::pressure::Level;
use crate::registry::ComponentId;
use std::fmt;

/// A value a [`BoundedQueue`](super::BoundedQueue) would not take, handed back with why.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// use alloc_core::{BoundedQueue, Overflow, PushRefusal};
/// let queue = BoundedQueue::builder("doc-push-error")
///     .capacity(1)
///     .overflow(Overflow::Reject)
///     .build();
/// queue.push("first").unwrap();
/// let refused = queue.push("second").unwrap_err();
/// assert_eq!(refused.cause, PushRefusal::Full);
/// assert_eq!(refused.to_string(),
///     "queue in doc-push-error refused a value: full at its bound of 1 entries (pressure normal)");
/// assert_eq!(refused.into_value(), "second");
/// ```
pub struct PushError<T> {
    pub(super) value: T,
    /// The component of the queue that refused.
    pub component: ComponentId,
    /// Why.
    pub cause: PushRefusal,
    /// The value's weight.
    pub weight: u64,
    /// The most entries the queue held at the time (its capacity, or fewer under pressure).
    pub bound: u64,
    /// The level the queue obeyed.
    pub level: Level,
}

impl<T> PushError<T> {
    /// The value that was refused.
    pub fn into_value(self) -> T {
        self.value
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushError")
            .field("component", &self.component)
            .field("cause", &self.cause)
            .field("weight", &self.weight)
            .field("bound", &self.bound)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue in {} refused a value: ", self.component.name())?;
        match self.cause {
            PushRefusal::Full => write!(f, "full at its bound of {} entries", self.bound)?,
            PushRefusal::TimedOut => write!(
                f,
                "still full at its bound of {} entries when the wait timed out",
                self.bound
            )?,
            PushRefusal::Closed => f.write_str("it is closed")?,
            PushRefusal::TooHeavy => write!(
                f,
                "its weight {} is more than the queue's max_weight",
                self.weight
            )?,
            PushRefusal::NoMemory => {
                f.write_str("a hard limit refused the memory to hold it")?;
            }
        }
        write!(f, " (pressure {})", self.level)
    }
}

impl<T> std::error::Error for PushError<T> {}

/// Why a [`BoundedQueue`](super::BoundedQueue) refused a value ([`PushError::cause`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushRefusal {
    /// The queue is at its bound ([`Overflow::Reject`](super::Overflow::Reject), or
    /// [`Overflow::Block`](super::Overflow::Block) from a push that does not wait).
    Full,
    /// [`Overflow::Block`](super::Overflow::Block): the queue stayed full until the push's
    /// timeout.
    TimedOut,
    /// The queue was [closed](super::BoundedQueue::close).
    Closed,
    /// The value alone weighs more than the queue's `max_weight`.
    TooHeavy,
    /// The queue's storage had to grow and a hard limit (its component's or the process's)
    /// refused the memory.
    NoMemory,
}

/// Why [`BoundedQueue::pop_timeout`](super::BoundedQueue::pop_timeout) came back without a
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopTimeoutError {
    /// The queue stayed empty until the timeout.
    TimedOut,
    /// The queue is closed and empty: no value will ever come.
    Closed,
}

impl fmt::Display for PopTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PopTimeoutError::TimedOut => "the queue stayed empty until the timeout",
            PopTimeoutError::Closed => "the queue is closed and empty",
        })
    }
}

impl std::error::Error for PopTimeoutError {}
