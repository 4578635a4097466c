//! What a [`BoundedQueue`](super::BoundedQueue)'s handle shares with the registry: its settings,
//! its entries under one lock, the two condition variables its waiters park on, and how it
//! sheds when the pressure level it obeys changes.

use super::refusal::{PopTimeoutError, PushError, PushRefusal};
use super::wakers::{ToWake, Wakers};
use super::{Overflow, QueueStats};
use crate::owned_lock::{self, OwnedGuard, OwnedLock};
use crate::pressure::Level;
use crate::registry::ComponentId;
use crate::scope::try_enter;
use crate::shed_registry::{Figures, Shed};
use crate::shedding::{self, ShedHook, ShedReport, Shedding};
use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

pub(super) type Weigher<T> = Box<dyn Fn(&T) -> u64 + Send + Sync>;

/// The smallest storage a queue allocates when its first entry comes.
const FIRST_SLOTS: usize = 8;

pub(super) struct Shared<T> {
    pub(super) name: &'static str,
    pub(super) component: ComponentId,
    pub(super) capacity: usize,
    pub(super) max_weight: u64,
    pub(super) weigher: Option<Weigher<T>>,
    pub(super) overflow: Overflow,
    pub(super) shedding: Shedding,
    pub(super) on_shed: Option<ShedHook>,
    pub(super) state: OwnedLock<State<T>>,
    /// Consumers wait here for an entry.
    pub(super) not_empty: Condvar,
    /// Producers of an [`Overflow::Block`] queue wait here for room.
    pub(super) not_full: Condvar,
    /// The number of entries, stored under the lock whenever it changes, read without it by a
    /// waiter that spins before it parks (it decides nothing: the waiter checks again under the
    /// lock).
    pub(super) len_hint: AtomicUsize,
    /// The id of the next future that waits on the queue (`future.rs`).
    pub(super) next_waiter: AtomicU64,
}

pub(super) struct State<T> {
    pub(super) items: VecDeque<T>,
    pub(super) weight: u64,
    pub(super) level: Level,
    pub(super) closed: bool,
    /// Threads parked on `not_empty` and `not_full`: nobody is notified when nobody waits.
    pub(super) consumers_waiting: u32,
    pub(super) producers_waiting: u32,
    /// Futures waiting for an entry, and for room.
    pub(super) pop_wakers: Wakers,
    pub(super) push_wakers: Wakers,
    pub(super) peak_entries: u64,
    pub(super) pushed: u64,
    pub(super) popped: u64,
    pub(super) displaced: u64,
    pub(super) refused: u64,
    pub(super) waits: u64,
    pub(super) shed: u64,
}

impl<T> State<T> {
    pub(super) fn new(level: Level) -> Self {
        State {
            items: VecDeque::new(),
            weight: 0,
            level,
            closed: false,
            consumers_waiting: 0,
            producers_waiting: 0,
            pop_wakers: Wakers::default(),
            push_wakers: Wakers::default(),
            peak_entries: 0,
            pushed: 0,
            popped: 0,
            displaced: 0,
            refused: 0,
            waits: 0,
            shed: 0,
        }
    }
}

/// How long a wait may still last: `None` for ever, else what is left before `deadline`
/// (`Err` once it passed).
fn remaining(deadline: Option<Instant>) -> Result<Option<Duration>, ()> {
    match deadline {
        None => Ok(None),
        Some(d) => d.checked_duration_since(Instant::now()).map(Some).ok_or(()),
    }
}

/// Spins, then yields, until `ready` holds: 63 spin-loop hints in rounds of 1 to 32 (crossbeam's
/// `Backoff::snooze` steps), then up to 4 yields to the scheduler, checking between rounds. A
/// producer and a consumer that meet at a full or empty queue mostly find their partner done
/// within that, and skip the two futex calls of a park and a wake-up.
fn spin_until(ready: impl Fn() -> bool) {
    for step in 0..10u32 {
        if step < 6 {
            for _ in 0..1u32 << step {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
        if ready() {
            return;
        }
    }
}

/// What a push does when the queue has no room: the queue's overflow policy, unless the push
/// must not wait.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum WhenFull {
    Overflow,
    /// Refuse (`try_push` on an [`Overflow::Block`] queue).
    Refuse,
}

impl<T> Shared<T> {
    pub(super) fn lock(&self) -> OwnedGuard<'_, State<T>> {
        // Every change is complete before user code (the weigher) can run under this lock, and
        // the weigher runs before anything that depends on its answer changes.
        self.state.lock()
    }

    pub(super) fn weigh(&self, value: &T) -> u64 {
        self.weigher.as_ref().map_or(1, |w| w(value))
    }

    /// The most entries the queue holds at `level`: never fewer than one, so that a queue under
    /// pressure still passes its values one at a time.
    pub(super) fn bound(&self, level: Level) -> usize {
        (self.shedding.keep(level, self.capacity as u64) as usize).max(1)
    }

    /// The most weight the queue holds at `level` (but an empty queue takes any value within
    /// `max_weight`).
    pub(super) fn weight_bound(&self, level: Level) -> u64 {
        self.shedding.keep(level, self.max_weight)
    }

    /// Whether a value of `weight` fits now.
    pub(super) fn fits(&self, st: &State<T>, weight: u64) -> bool {
        st.items.is_empty()
            || (st.items.len() < self.bound(st.level)
                && st.weight.saturating_add(weight) <= self.weight_bound(st.level))
    }

    pub(super) fn refusal(
        &self,
        st: &mut State<T>,
        value: T,
        weight: u64,
        cause: PushRefusal,
    ) -> PushError<T> {
        st.refused += 1;
        PushError {
            value,
            component: self.component,
            cause,
            weight,
            bound: self.bound(st.level) as u64,
            level: st.level,
        }
    }

    /// Pushes `value` (weighing `weight`), displacing, refusing or waiting when the queue is
    /// full as its overflow policy (or `when_full`) says; waits no later than `deadline`.
    pub(super) fn push(
        &self,
        value: T,
        weight: u64,
        when_full: WhenFull,
        deadline: Option<Instant>,
    ) -> Result<(), PushError<T>> {
        let mut st = self.lock();
        if weight > self.max_weight {
            return Err(self.refusal(&mut st, value, weight, PushRefusal::TooHeavy));
        }
        let (mut waited, mut spun) = (false, false);
        loop {
            if st.closed {
                return Err(self.refusal(&mut st, value, weight, PushRefusal::Closed));
            }
            if self.fits(&st, weight) {
                break;
            }
            match (self.overflow, when_full) {
                (Overflow::DropOldest, _) => {
                    // One entry out per lock, dropped outside it.
                    let oldest = self.take_front(&mut st);
                    st.displaced += 1;
                    drop(st);
                    drop(oldest);
                    st = self.lock();
                }
                (Overflow::Reject, _) | (Overflow::Block, WhenFull::Refuse) => {
                    return Err(self.refusal(&mut st, value, weight, PushRefusal::Full));
                }
                (Overflow::Block, WhenFull::Overflow) => {
                    let Ok(timeout) = remaining(deadline) else {
                        return Err(self.refusal(&mut st, value, weight, PushRefusal::TimedOut));
                    };
                    if !waited {
                        st.waits += 1;
                        waited = true;
                    }
                    if !spun {
                        // A consumer is likely to take an entry within the spin.
                        let full = st.items.len();
                        drop(st);
                        spin_until(|| self.len_hint.load(Relaxed) < full);
                        st = self.lock();
                        spun = true;
                        continue;
                    }
                    st.producers_waiting += 1;
                    st = st.wait(&self.not_full, timeout).0;
                    st.producers_waiting -= 1;
                    spun = false;
                }
            }
        }
        let to_wake = self.commit(&mut st, value, weight)?;
        drop(st);
        to_wake.wake();
        Ok(())
    }

    /// Puts `value` at the back of a queue it fits in, and wakes a waiting consumer: a thread
    /// now, a future's task once the caller has released the lock (the result).
    pub(super) fn commit(
        &self,
        st: &mut State<T>,
        value: T,
        weight: u64,
    ) -> Result<ToWake, PushError<T>> {
        if !self.make_room(st) {
            return Err(self.refusal(st, value, weight, PushRefusal::NoMemory));
        }
        st.items.push_back(value);
        self.len_hint.store(st.items.len(), Relaxed);
        st.weight += weight;
        st.pushed += 1;
        st.peak_entries = st.peak_entries.max(st.items.len() as u64);
        if st.consumers_waiting > 0 {
            self.not_empty.notify_one();
        }
        Ok(st.pop_wakers.take_first())
    }

    /// Takes the oldest entry, if any, as a pop, and wakes the producers waiting for room: the
    /// threads now, the futures' tasks once the caller has released the lock.
    pub(super) fn take_popped(&self, st: &mut State<T>) -> Option<(T, ToWake)> {
        let value = self.take_front(st)?;
        st.popped += 1;
        Some((value, self.room_made(st)))
    }

    /// Wakes every producer waiting for room (all of them: a lighter value may fit where the
    /// first woken does not); the futures' tasks are returned to wake after the lock.
    fn room_made(&self, st: &mut State<T>) -> ToWake {
        if st.producers_waiting > 0 {
            self.not_full.notify_all();
        }
        st.push_wakers.take_all()
    }

    /// Room for one more entry: the storage doubles (up to the capacity) when full, fallibly.
    fn make_room(&self, st: &mut State<T>) -> bool {
        let (len, slots) = (st.items.len(), st.items.capacity());
        if len < slots {
            return true;
        }
        let wanted = (slots * 2).max(FIRST_SLOTS).min(self.capacity.max(len + 1));
        // The storage grows inside the queue's component.
        let _scope = try_enter(self.component).ok();
        st.items.try_reserve_exact(wanted - len).is_ok()
    }

    /// Takes the oldest entry out; the queue must not be empty.
    fn take_front(&self, st: &mut State<T>) -> Option<T> {
        let weight = self.weigh(st.items.front()?);
        st.weight = st.weight.saturating_sub(weight);
        let front = st.items.pop_front();
        self.len_hint.store(st.items.len(), Relaxed);
        front
    }

    /// The oldest entry, waiting for one no later than `deadline` (`None`: for ever) when `wait`.
    pub(super) fn pop(&self, wait: bool, deadline: Option<Instant>) -> Result<T, PopTimeoutError> {
        let mut st = self.lock();
        let mut spun = false;
        loop {
            if let Some((value, to_wake)) = self.take_popped(&mut st) {
                drop(st);
                to_wake.wake();
                return Ok(value);
            }
            if st.closed {
                return Err(PopTimeoutError::Closed);
            }
            let timeout = match remaining(deadline) {
                Ok(timeout) if wait => timeout,
                _ => return Err(PopTimeoutError::TimedOut),
            };
            if !spun {
                // A producer is likely to push within the spin.
                drop(st);
                spin_until(|| self.len_hint.load(Relaxed) > 0);
                st = self.lock();
                spun = true;
                continue;
            }
            st.consumers_waiting += 1;
            st = st.wait(&self.not_empty, timeout).0;
            st.consumers_waiting -= 1;
            spun = false;
        }
    }

    /// Moves up to `max` entries, oldest first, into `out`; returns how many.
    pub(super) fn drain_into(&self, max: usize, out: &mut impl Extend<T>) -> usize {
        let mut st = self.lock();
        let mut taken = 0;
        while taken < max {
            let Some(value) = self.take_front(&mut st) else {
                break;
            };
            out.extend(Some(value));
            taken += 1;
        }
        st.popped += taken as u64;
        if taken > 0 {
            let to_wake = self.room_made(&mut st);
            drop(st);
            to_wake.wake();
        }
        taken
    }

    /// Refuses every push from now on and wakes every waiter.
    pub(super) fn close(&self) {
        let (consumers, producers) = {
            let mut st = self.lock();
            st.closed = true;
            (st.pop_wakers.take_all(), st.push_wakers.take_all())
        };
        self.not_empty.notify_all();
        self.not_full.notify_all();
        consumers.wake();
        producers.wake();
    }

    pub(super) fn stats(&self) -> QueueStats {
        let st = self.lock();
        QueueStats {
            name: self.name,
            component: self.component,
            overflow: self.overflow,
            live_entries: st.items.len() as u64,
            live_weight: st.weight,
            capacity: self.capacity as u64,
            max_weight: self.max_weight,
            bound: self.bound(st.level) as u64,
            weight_bound: self.weight_bound(st.level),
            level: st.level,
            closed: st.closed,
            peak_entries: st.peak_entries,
            total_pushed: st.pushed,
            total_popped: st.popped,
            total_displaced: st.displaced,
            total_refused: st.refused,
            total_waits: st.waits,
            total_shed: st.shed,
        }
    }

    /// Takes out the oldest entry if the queue holds more than its bound allows.
    fn pop_above_bound(&self) -> Option<T> {
        let mut st = self.lock();
        let over = st.items.len() > self.bound(st.level) || st.weight > self.weight_bound(st.level);
        if !over || st.items.len() <= 1 {
            return None;
        }
        st.shed += 1;
        self.take_front(&mut st)
    }
}

impl<T: Send + 'static> Shed for Shared<T> {
    fn figures(&self) -> Option<Figures> {
        (!self.state.held_here()).then(|| Figures::Queue(self.stats()))
    }

    fn hold_for_fork(self: Arc<Self>) -> Option<Box<dyn Any>> {
        owned_lock::hold_for_fork(self, |shared: &Self| &shared.state)
    }

    fn refresh_level(&self) {
        let (previous, level, entries_before, weight_before, to_wake) = {
            let mut st = self.lock();
            let level = shedding::shedding_level(self.component);
            if st.level == level {
                return;
            }
            let previous = std::mem::replace(&mut st.level, level);
            // When the bound rose, room for those who wait.
            let to_wake = if level < previous {
                self.room_made(&mut st)
            } else {
                ToWake::default()
            };
            (previous, level, st.items.len() as u64, st.weight, to_wake)
        };
        to_wake.wake();
        let mut shed = 0;
        if self.overflow == Overflow::DropOldest {
            // The policy that drops old entries for new ones drops them to the lowered bound
            // too; the others keep what they hold, and take no more until it is under the bound.
            while let Some(value) = self.pop_above_bound() {
                drop(value);
                shed += 1;
            }
        }
        let (entries_after, weight_after) = {
            let _scope = try_enter(self.component).ok();
            let mut st = self.lock();
            if level > previous {
                // Storage beyond what the bound lets the queue hold is memory nobody may use.
                let keep = st.items.len().max(self.bound(level));
                if st.items.capacity() > keep {
                    st.items.shrink_to(keep);
                }
            }
            (st.items.len() as u64, st.weight)
        };
        if let Some(hook) = &self.on_shed {
            hook(&ShedReport {
                component: self.component,
                previous,
                level,
                entries_before,
                weight_before,
                entries_after,
                weight_after,
                shed,
            });
        }
    }
}
