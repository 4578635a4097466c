//! [`OwnedLock`]: a mutex that knows whether the calling thread holds it, so that the fork
//! handler can take every cache's and pool's lock except one the forking thread holds already
//! (it forks from inside a cache's `with` closure, say), which it would otherwise wait for
//! for ever. A holder may also wait on a condition variable, which releases the lock meanwhile.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A mutex whose holder is known.
pub(crate) struct OwnedLock<T> {
    mutex: Mutex<T>,
    /// The holding thread's [`thread_token`], 0 when free.
    holder: AtomicUsize,
}

/// A held [`OwnedLock`]; releases it when dropped.
pub(crate) struct OwnedGuard<'a, T> {
    // Dropped after `Drop::drop` has cleared the holder: the lock is released last.
    guard: MutexGuard<'a, T>,
    holder: &'a AtomicUsize,
}

/// A number that names the calling thread among the live ones: the address of a thread-local.
fn thread_token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    // A `const` thread-local without a destructor is there for the whole life of its thread, even
    // while other thread-locals' destructors run (a `Pooled` guard dropped by one takes its pool's
    // lock); `try_with` all the same, with a token no thread-local's address can be.
    TOKEN
        .try_with(|t| t as *const u8 as usize)
        .unwrap_or(usize::MAX)
}

impl<T> OwnedLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        OwnedLock {
            mutex: Mutex::new(value),
            holder: AtomicUsize::new(0),
        }
    }

    /// Waits for the lock and takes it. A poisoned lock is taken all the same: its users keep
    /// their data consistent across any panic (they say how).
    pub(crate) fn lock(&self) -> OwnedGuard<'_, T> {
        let guard = self.mutex.lock().unwrap_or_else(|e| e.into_inner());
        self.holder.store(thread_token(), Relaxed);
        OwnedGuard {
            guard,
            holder: &self.holder,
        }
    }

    /// Whether the calling thread holds the lock. (Relaxed suffices: only this thread stores its
    /// own token, and it always sees its own latest store.)
    pub(crate) fn held_here(&self) -> bool {
        self.holder.load(Relaxed) == thread_token()
    }
}

impl<'a, T> OwnedGuard<'a, T> {
    /// Releases the lock and waits on `condvar` until notified (or `timeout` passed, when given),
    /// then takes the lock back; the flag says whether the wait timed out. While it waits, the
    /// calling thread does not hold the lock (the fork handler may take it).
    pub(crate) fn wait(self, condvar: &Condvar, timeout: Option<Duration>) -> (Self, bool) {
        let holder = self.holder;
        holder.store(0, Relaxed);
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so its mutex guard is moved out exactly
        // once; the holder was cleared above, as `Drop` would have.
        let guard = unsafe { std::ptr::read(&this.guard) };
        let (guard, timed_out) = match timeout {
            None => (
                condvar.wait(guard).unwrap_or_else(|e| e.into_inner()),
                false,
            ),
            Some(timeout) => {
                let (guard, result) = condvar
                    .wait_timeout(guard, timeout)
                    .unwrap_or_else(|e| e.into_inner());
                (guard, result.timed_out())
            }
        };
        holder.store(thread_token(), Relaxed);
        (OwnedGuard { guard, holder }, timed_out)
    }
}

/// A lock held for the fork handler, with the `Arc` whose allocation holds it kept alive while
/// it is.
struct HeldForFork<O: 'static, T: 'static> {
    // Declared first, so dropped (the lock released) before `_owner` lets the lock go.
    _guard: OwnedGuard<'static, T>,
    _owner: Arc<O>,
}

/// Takes the lock `lock` finds in `owner` (a cache's, pool's or queue's state) for the fork
/// handler, unless the calling thread holds it already; the result keeps it, and `owner`, until
/// dropped.
pub(crate) fn hold_for_fork<O: Send + Sync + 'static, T: 'static>(
    owner: Arc<O>,
    lock: fn(&O) -> &OwnedLock<T>,
) -> Option<Box<dyn Any>> {
    let held = lock(&owner);
    if held.held_here() {
        return None;
    }
    // SAFETY: `lock` borrows the lock from `*owner` (its signature ties the borrow to it), so the
    // lock lives in the `Arc`'s allocation (or for ever), which `HeldForFork` keeps alive in its
    // second field; its first, the guard, is dropped before it. So the borrow, made `'static`
    // here, never outlives the lock it borrows.
    let held: &'static OwnedLock<T> = unsafe { &*std::ptr::from_ref(held) };
    Some(Box::new(HeldForFork {
        _guard: held.lock(),
        _owner: owner,
    }))
}

impl<T> Drop for OwnedGuard<'_, T> {
    fn drop(&mut self) {
        self.holder.store(0, Relaxed);
    }
}

impl<T> Deref for OwnedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for OwnedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_known_to_itself_only() {
        let lock = std::sync::Arc::new(OwnedLock::new(0));
        assert!(!lock.held_here());
        let mut g = lock.lock();
        *g += 1;
        assert!(lock.held_here());
        let other = std::sync::Arc::clone(&lock);
        assert!(!std::thread::spawn(move || other.held_here())
            .join()
            .unwrap());
        drop(g);
        assert!(!lock.held_here());
        assert_eq!(*lock.lock(), 1);
    }

    #[test]
    fn a_waiting_thread_does_not_hold_the_lock() {
        use std::sync::Arc;
        let shared = Arc::new((OwnedLock::new(false), Condvar::new()));
        let (lock, _) = &*shared;
        let (g, timed_out) = lock.lock().wait(&shared.1, Some(Duration::from_millis(1)));
        assert!(timed_out && lock.held_here());
        drop(g);
        let waiter = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let (lock, condvar) = &*shared;
                let mut g = lock.lock();
                while !*g {
                    g = g.wait(condvar, None).0;
                }
                lock.held_here()
            })
        };
        // The waiter is parked in `wait` (or not yet started): either way this thread can take
        // the lock, and the waiter holds it again once woken.
        *lock.lock() = true;
        shared.1.notify_all();
        assert!(waiter.join().unwrap());
        assert!(!lock.held_here());
    }
}
