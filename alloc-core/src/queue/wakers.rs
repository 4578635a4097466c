//! [`Wakers`]: the tasks waiting on a [`BoundedQueue`](super::BoundedQueue), each under the id
//! of its future, in the order they began to wait.

use std::task::Waker;

/// Tasks waiting for an entry, or for room. A future registers (again) each time it returns
/// `Pending`; whoever makes progress for them takes their wakers out and wakes them after
/// releasing the queue's lock, and a woken future that is dropped before it is polled again
/// passes the wake-up on (see `future.rs`).
#[derive(Default)]
pub(super) struct Wakers {
    list: Vec<(u64, Waker)>,
}

/// Wakers taken out of a [`Wakers`], to wake once the queue's lock is released. Taking them out
/// allocates nothing (the queue may be at a hard limit).
#[must_use = "wakers taken out of the list must be woken"]
#[derive(Default)]
pub(super) struct ToWake {
    one: Option<Waker>,
    all: Vec<(u64, Waker)>,
}

impl ToWake {
    /// Wakes them all.
    pub(super) fn wake(self) {
        if let Some(waker) = self.one {
            waker.wake();
        }
        for (_, waker) in self.all {
            waker.wake();
        }
    }
}

impl Wakers {
    /// Registers `waker` under `id`, or replaces the one registered there. False when the list
    /// had to grow and could not (a hard limit): the caller then wakes its task at once, so that
    /// it polls again rather than wait for a wake-up that would never come.
    pub(super) fn register(&mut self, id: u64, waker: &Waker) -> bool {
        if let Some((_, w)) = self.list.iter_mut().find(|(i, _)| *i == id) {
            if !w.will_wake(waker) {
                w.clone_from(waker);
            }
            return true;
        }
        if self.list.try_reserve(1).is_err() {
            return false;
        }
        self.list.push((id, waker.clone()));
        true
    }

    /// Removes the waker registered under `id`; false if none was (it was woken since).
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self.list.iter().position(|(i, _)| *i == id) {
            Some(i) => {
                self.list.remove(i);
                true
            }
            None => false,
        }
    }

    /// The longest-waiting task's waker, taken out.
    pub(super) fn take_first(&mut self) -> ToWake {
        ToWake {
            one: (!self.list.is_empty()).then(|| self.list.remove(0).1),
            all: Vec::new(),
        }
    }

    /// Every waker, taken out.
    pub(super) fn take_all(&mut self) -> ToWake {
        ToWake {
            one: None,
            all: std::mem::take(&mut self.list),
        }
    }
}
