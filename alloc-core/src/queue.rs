//! [`BoundedQueue`]: a first-in first-out queue that belongs to a component, holds at most a
//! given number (and weight) of entries, and holds fewer while memory is under pressure.

mod future;
mod refusal;
mod shared;
mod stats;
mod wakers;

pub use future::{PopFuture, PushFuture};
pub use refusal::{PopTimeoutError, PushError, PushRefusal};
pub use stats::QueueStats;

use crate::owned_lock::OwnedLock;
use crate::registry::{self, ComponentId};
use crate::shed_registry;
use crate::shedding::{self, ShedHook, ShedReport, Shedding};
use shared::{Shared, State, Weigher, WhenFull};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

/// What a push does when the queue is full (seed 001's overflow policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest entries to make room: the queue keeps the newest (an event buffer, a
    /// telemetry feed). The default.
    DropOldest,
    /// Refuse the new value ([`PushRefusal::Full`]): the caller keeps it and decides.
    Reject,
    /// Wait for room: [`push`](BoundedQueue::push) waits as long as it takes,
    /// [`push_timeout`](BoundedQueue::push_timeout) as long as it is allowed to, and
    /// [`try_push`](BoundedQueue::try_push) does not wait. Backpressure: producers slow down to
    /// the consumers' pace, and to fewer entries in flight while memory is under pressure.
    Block,
}

impl Overflow {
    /// The policy's name in the exporters: `drop_oldest`, `reject` or `block`.
    pub fn name(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop_oldest",
            Overflow::Reject => "reject",
            Overflow::Block => "block",
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A first-in first-out queue that belongs to a component and stays bounded: the Rust twin of
/// seed 001's ring buffer, which replaces unbounded channels.
///
/// - **A bound**: at most [`capacity`](QueueBuilder::capacity) entries and, with a
///   [weigher](QueueBuilder::weigher), at most [`max_weight`](QueueBuilder::max_weight) (say
///   bytes). What a push does when the queue is full is its [`Overflow`] policy: drop the
///   oldest entries, refuse the value, or wait for room.
/// - **Its memory is its component's.** The queue's storage is allocated inside its component,
///   as entries come (never more than the capacity), and fallibly: where a hard limit refuses it
///   room, a push is refused ([`PushRefusal::NoMemory`]) instead of aborting.
/// - **Pressure.** The queue obeys the higher of the process's and its component's level
///   ([`shedding_level`](crate::shedding_level)). While it is up, the bounds are scaled down by
///   the queue's [`Shedding`] (by default to half at Warning and a quarter at Critical, as
///   [`adaptive_size`](crate::adaptive_size) scales a buffer), never below one entry, and storage
///   beyond the lowered bound is given back. A [`DropOldest`](Overflow::DropOldest) queue also
///   drops its oldest entries down to the new bound when the level rises (on memgov's monitor
///   thread); the other policies keep every entry they accepted and take new ones only once the
///   queue is back under the bound.
///
/// One lock guards the queue; displaced and shed entries are dropped outside it. It is `Send` and
/// `Sync`: share it with an `Arc` or a `static`. [`close`](Self::close) ends it: pushes are
/// refused, and consumers take what is left, then get `None`.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// use alloc_core::{BoundedQueue, Overflow};
/// use std::sync::Arc;
///
/// let events = Arc::new(
///     BoundedQueue::builder("doc-events")
///         .capacity(1024)
///         .overflow(Overflow::Block)
///         .build(),
/// );
/// let producer = {
///     let events = Arc::clone(&events);
///     std::thread::spawn(move || {
///         for i in 0..10_000u32 {
///             events.push(i).unwrap(); // waits while 1024 are queued
///         }
///         events.close();
///     })
/// };
/// let mut sum = 0u64;
/// while let Some(i) = events.pop() {
///     sum += u64::from(i);
/// }
/// producer.join().unwrap();
/// assert_eq!(sum, 49_995_000);
/// assert!(events.stats().peak_entries <= 1024);
/// ```
pub struct BoundedQueue<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    /// The queue's registration (`shed_registry`), removed when the queue is dropped.
    registration: u64,
}

/// Builds a [`BoundedQueue`]: its bounds, overflow policy, shedding and shed hook.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// use alloc_core::{BoundedQueue, Overflow, Shedding};
/// // Outgoing messages: at most 4 MiB of them, the newest kept.
/// let outbox: BoundedQueue<Vec<u8>> = BoundedQueue::builder("doc-outbox")
///     .capacity(10_000)
///     .max_weight(4 << 20)
///     .weigher(|message: &Vec<u8>| message.len() as u64)
///     .overflow(Overflow::DropOldest)
///     .shedding(Shedding::new(0.25, 0.0).unwrap())
///     .build();
/// outbox.push(vec![0; 3 << 20]).unwrap();
/// outbox.push(vec![0; 2 << 20]).unwrap(); // displaces the first: 5 MiB would not fit
/// assert_eq!((outbox.len(), outbox.stats().total_displaced), (1, 1));
/// ```
pub struct QueueBuilder<T> {
    name: &'static str,
    component: ComponentId,
    capacity: usize,
    max_weight: u64,
    weigher: Option<Weigher<T>>,
    overflow: Overflow,
    shedding: Shedding,
    on_shed: Option<ShedHook>,
}

impl<T: Send + 'static> QueueBuilder<T> {
    /// The name the queue's figures go by ([`queues`](crate::queues), the exporters); default:
    /// its component's name.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The most entries held (default 1024; at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The most total weight held (default: no bound but the capacity). Without a
    /// [weigher](Self::weigher) every entry weighs 1.
    pub fn max_weight(mut self, max_weight: u64) -> Self {
        self.max_weight = max_weight;
        self
    }

    /// Weighs a value (the bytes it holds, say). It must give the same answer for a value each
    /// time it is asked: it is asked at the push and again when the value leaves. It runs under
    /// the queue's lock and should be quick.
    pub fn weigher(mut self, weigher: impl Fn(&T) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Box::new(weigher));
        self
    }

    /// What a push does when the queue is full (default [`Overflow::DropOldest`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The fractions of its bounds the queue keeps under pressure (default
    /// [`Shedding::ADAPTIVE`]: half at Warning, a quarter at Critical).
    pub fn shedding(mut self, shedding: Shedding) -> Self {
        self.shedding = shedding;
        self
    }

    /// Called after each change of the level the queue obeys with what it shed: on the monitor
    /// thread, or on the thread that builds the queue if the level changes while it does. It
    /// should return quickly, as every pressure callback should.
    pub fn on_shed(mut self, hook: impl Fn(&ShedReport) + Send + Sync + 'static) -> Self {
        self.on_shed = Some(Box::new(hook));
        self
    }

    /// The queue, empty; its storage is allocated as entries come.
    pub fn build(self) -> BoundedQueue<T> {
        let shared = Arc::new(Shared {
            name: self.name,
            component: self.component,
            capacity: self.capacity,
            max_weight: self.max_weight,
            weigher: self.weigher,
            overflow: self.overflow,
            shedding: self.shedding,
            on_shed: self.on_shed,
            state: OwnedLock::new(State::new(shedding::shedding_level(self.component))),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            len_hint: AtomicUsize::new(0),
            next_waiter: AtomicU64::new(0),
        });
        let registration = shed_registry::register(self.component, &shared);
        BoundedQueue {
            shared,
            registration,
        }
    }
}

impl<T: Send + 'static> BoundedQueue<T> {
    /// A queue in the component called `name` that holds at most `capacity` entries and drops
    /// the oldest when full.
    ///
    /// # Panics
    /// When the name is invalid (see [`component`](crate::component)).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// let recent = alloc_core::BoundedQueue::new("doc-recent", 3);
    /// for i in 0..5 {
    ///     recent.push(i).unwrap();
    /// }
    /// assert_eq!(recent.drain(usize::MAX), [2, 3, 4]);
    /// ```
    pub fn new(name: &'static str, capacity: usize) -> Self {
        Self::builder(name).capacity(capacity).build()
    }

    /// A builder for a queue in the component called `name`.
    ///
    /// # Panics
    /// When the name is invalid (see [`component`](crate::component)).
    pub fn builder(name: &'static str) -> QueueBuilder<T> {
        Self::builder_in(registry::component(name))
    }

    /// A builder for a queue in `component`.
    pub fn builder_in(component: ComponentId) -> QueueBuilder<T> {
        QueueBuilder {
            name: component.name(),
            component,
            capacity: 1024,
            max_weight: u64::MAX,
            weigher: None,
            overflow: Overflow::DropOldest,
            shedding: Shedding::ADAPTIVE,
            on_shed: None,
        }
    }

    /// Adds `value` at the back. When the queue is full: drops the oldest entries
    /// ([`Overflow::DropOldest`]), refuses ([`Overflow::Reject`]) or waits for room for as long
    /// as it takes ([`Overflow::Block`]).
    ///
    /// # Errors
    /// [`PushError`], with the value, when the queue is full and refuses, is closed, the value
    /// weighs more than `max_weight`, or a hard limit refuses the storage room to grow.
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        let weight = self.shared.weigh(&value);
        self.shared.push(value, weight, WhenFull::Overflow, None)
    }

    /// As [`push`](Self::push), but an [`Overflow::Block`] queue waits at most `timeout` for
    /// room. Other policies never wait.
    ///
    /// # Errors
    /// As [`push`](Self::push), and [`PushRefusal::TimedOut`] when the queue stayed full.
    pub fn push_timeout(&self, value: T, timeout: Duration) -> Result<(), PushError<T>> {
        let weight = self.shared.weigh(&value);
        let deadline = Instant::now().checked_add(timeout);
        self.shared
            .push(value, weight, WhenFull::Overflow, deadline)
    }

    /// As [`push`](Self::push), but never waits: a full [`Overflow::Block`] queue refuses
    /// ([`PushRefusal::Full`]).
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn try_push(&self, value: T) -> Result<(), PushError<T>> {
        let weight = self.shared.weigh(&value);
        self.shared.push(value, weight, WhenFull::Refuse, None)
    }

    /// The oldest entry, waiting for one as long as it takes; `None` once the queue is closed and
    /// empty.
    pub fn pop(&self) -> Option<T> {
        self.shared.pop(true, None).ok()
    }

    /// The oldest entry, if there is one now.
    pub fn try_pop(&self) -> Option<T> {
        self.shared.pop(false, None).ok()
    }

    /// The oldest entry, waiting at most `timeout` for one.
    ///
    /// # Errors
    /// [`PopTimeoutError::TimedOut`] when the queue stayed empty, [`PopTimeoutError::Closed`]
    /// when it is closed and empty.
    pub fn pop_timeout(&self, timeout: Duration) -> Result<T, PopTimeoutError> {
        self.shared.pop(true, Instant::now().checked_add(timeout))
    }

    /// Takes up to `max` entries, oldest first, without waiting: a consumer's batch. The vector
    /// is allocated in the caller's component.
    pub fn drain(&self, max: usize) -> Vec<T> {
        let mut out = Vec::new();
        self.drain_into(max, &mut out);
        out
    }

    /// Moves up to `max` entries, oldest first, into `out` without waiting; returns how many.
    /// `out` is extended under the queue's lock.
    pub fn drain_into(&self, max: usize, out: &mut impl Extend<T>) -> usize {
        self.shared.drain_into(max, out)
    }

    /// Closes the queue: every push from now on is refused ([`PushRefusal::Closed`]), waiting
    /// producers are refused at once, and consumers take what is queued, then get `None`.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Whether no entry is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the queue holds now: its capacity, or fewer under pressure.
    pub fn bound(&self) -> usize {
        let level = self.shared.lock().level;
        self.shared.bound(level)
    }

    /// The component the queue belongs to.
    pub fn component(&self) -> ComponentId {
        self.shared.component
    }

    /// The queue's figures.
    pub fn stats(&self) -> QueueStats {
        self.shared.stats()
    }
}

impl<T: Send + 'static> Drop for BoundedQueue<T> {
    fn drop(&mut self) {
        shed_registry::unregister(self.registration);
        let items = std::mem::take(&mut self.shared.lock().items);
        drop(items);
    }
}

impl<T: Send + 'static> fmt::Debug for BoundedQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedQueue")
            .field("stats", &self.stats())
            .finish()
    }
}
