//! [`QueueStats`]: a [`BoundedQueue`](super::BoundedQueue)'s figures.

use super::Overflow;
use crate::pressure::Level;
use crate::registry::ComponentId;

/// A queue's figures ([`BoundedQueue::stats`](super::BoundedQueue::stats),
/// [`queues`](crate::queues)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The name the queue goes by ([`QueueBuilder::name`](super::QueueBuilder::name); its
    /// component's, by default).
    pub name: &'static str,
    /// The component the queue belongs to.
    pub component: ComponentId,
    /// What a push does when the queue is full.
    pub overflow: Overflow,
    /// Entries queued.
    pub live_entries: u64,
    /// Their weight (their number, without a weigher).
    pub live_weight: u64,
    /// The most entries held, as configured.
    pub capacity: u64,
    /// The most weight held, as configured; `u64::MAX` for none.
    pub max_weight: u64,
    /// The most entries held now: `capacity` at Normal, fewer under pressure (never under 1).
    pub bound: u64,
    /// The most weight held now (an empty queue takes any value within `max_weight`).
    pub weight_bound: u64,
    /// The pressure level the queue obeys.
    pub level: Level,
    /// Whether the queue was closed.
    pub closed: bool,
    /// The most entries it ever held at once.
    pub peak_entries: u64,
    /// Values pushed.
    pub total_pushed: u64,
    /// Values popped (or drained).
    pub total_popped: u64,
    /// Old entries dropped to make room for new ones ([`Overflow::DropOldest`]).
    pub total_displaced: u64,
    /// Pushes refused (full, timed out, closed, too heavy, or no memory).
    pub total_refused: u64,
    /// Pushes that had to wait for room ([`Overflow::Block`]).
    pub total_waits: u64,
    /// Entries dropped because memory came under pressure.
    pub total_shed: u64,
}

impl QueueStats {
    /// Entries lost: displaced by newer ones or shed under pressure.
    pub fn total_dropped(&self) -> u64 {
        self.total_displaced + self.total_shed
    }
}
