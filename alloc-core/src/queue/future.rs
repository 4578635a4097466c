//! [`PopFuture`] and [`PushFuture`]: a [`BoundedQueue`]'s pop and push for async code, which
//! wait by returning `Pending` instead of blocking the thread. They work with any executor (no
//! runtime dependency): a task waiting on the queue is woken through its `Waker`.

use super::shared::Shared;
use super::wakers::ToWake;
use super::{BoundedQueue, Overflow, PushError, PushRefusal};
use crate::scope::try_enter;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

/// The future of [`BoundedQueue::pop_async`]: the oldest entry, once there is one; `None` once
/// the queue is closed and empty.
///
/// Dropping it gives up the wait. A future woken for an entry and dropped before it took it
/// passes the wake-up to the next waiting task, so no entry waits for a consumer that is gone.
#[must_use = "futures do nothing unless polled"]
pub struct PopFuture<'a, T: Send + 'static> {
    shared: &'a Shared<T>,
    /// The id it waits under, once it has waited; `None` again when done.
    waiter: Option<u64>,
}

/// The future of [`BoundedQueue::push_async`]: the value pushed, once there is room (an
/// [`Overflow::Block`] queue), or refused.
///
/// Dropping it gives up the wait and drops the value. A future woken for room and dropped before
/// it used it passes the wake-up on to the other waiting tasks.
#[must_use = "futures do nothing unless polled"]
pub struct PushFuture<'a, T: Send + 'static> {
    shared: &'a Shared<T>,
    /// The value and its weight, until it is pushed or refused.
    value: Option<(T, u64)>,
    waiter: Option<u64>,
    /// Whether the wait was counted in the queue's `total_waits`.
    counted: bool,
}

// The value is never pinned: it is moved into the queue or handed back, never polled or borrowed
// across polls, so the futures can be `Unpin` whatever `T` is.
impl<T: Send + 'static> Unpin for PopFuture<'_, T> {}
impl<T: Send + 'static> Unpin for PushFuture<'_, T> {}

impl<T: Send + 'static> BoundedQueue<T> {
    /// The oldest entry, waiting for one without blocking the thread: the future is ready when
    /// an entry is there (`Some`) or the queue is closed and empty (`None`).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// use std::future::Future;
    /// use std::task::{Context, Poll, Waker};
    ///
    /// let queue = alloc_core::BoundedQueue::new("doc-pop-async", 8);
    /// let mut cx = Context::from_waker(Waker::noop());
    /// let mut pop = queue.pop_async();
    /// assert!(std::pin::Pin::new(&mut pop).poll(&mut cx).is_pending()); // empty: it waits
    /// queue.push(7).unwrap(); // wakes the waiting task
    /// assert_eq!(std::pin::Pin::new(&mut pop).poll(&mut cx), Poll::Ready(Some(7)));
    /// ```
    pub fn pop_async(&self) -> PopFuture<'_, T> {
        PopFuture {
            shared: &self.shared,
            waiter: None,
        }
    }

    /// Pushes `value`, for async code: an [`Overflow::Block`] queue waits for room without
    /// blocking the thread; the other policies never wait, and the future is ready at its first
    /// poll, as [`push`](Self::push) would return.
    ///
    /// The value is weighed when the future is made.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// use alloc_core::{BoundedQueue, Overflow};
    /// use std::future::Future;
    /// use std::pin::Pin;
    /// use std::task::{Context, Poll, Waker};
    ///
    /// let queue = BoundedQueue::builder("doc-push-async")
    ///     .capacity(1)
    ///     .overflow(Overflow::Block)
    ///     .build();
    /// queue.push(1).unwrap();
    /// let mut cx = Context::from_waker(Waker::noop());
    /// let mut push = queue.push_async(2);
    /// assert!(Pin::new(&mut push).poll(&mut cx).is_pending()); // full: it waits
    /// assert_eq!(queue.pop(), Some(1)); // room: wakes the waiting task
    /// assert!(matches!(Pin::new(&mut push).poll(&mut cx), Poll::Ready(Ok(()))));
    /// ```
    pub fn push_async(&self, value: T) -> PushFuture<'_, T> {
        let weight = self.shared.weigh(&value);
        PushFuture {
            shared: &self.shared,
            value: Some((value, weight)),
            waiter: None,
            counted: false,
        }
    }
}

/// Registers the task of `cx` under `waiter` (given an id at its first wait) with `register`,
/// inside the queue's component; wakes it at once where the list could not grow.
fn wait_under<T>(
    shared: &Shared<T>,
    waiter: &mut Option<u64>,
    cx: &Context<'_>,
    register: impl FnOnce(u64) -> bool,
) {
    let id = *waiter.get_or_insert_with(|| shared.next_waiter.fetch_add(1, Relaxed));
    let _scope = try_enter(shared.component).ok();
    if !register(id) {
        cx.waker().wake_by_ref();
    }
}

impl<T: Send + 'static> Future for PopFuture<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        let shared = this.shared;
        let mut st = shared.lock();
        let done = match shared.take_popped(&mut st) {
            Some((value, to_wake)) => Some((Some(value), to_wake)),
            None if st.closed => Some((None, ToWake::default())),
            None => None,
        };
        match done {
            Some((value, to_wake)) => {
                if let Some(id) = this.waiter.take() {
                    st.pop_wakers.remove(id);
                }
                drop(st);
                to_wake.wake();
                Poll::Ready(value)
            }
            None => {
                wait_under(shared, &mut this.waiter, cx, |id| {
                    st.pop_wakers.register(id, cx.waker())
                });
                Poll::Pending
            }
        }
    }
}

impl<T: Send + 'static> Drop for PopFuture<'_, T> {
    fn drop(&mut self) {
        let Some(id) = self.waiter else { return };
        let to_wake = {
            let mut st = self.shared.lock();
            // Not registered any more: it was woken for an entry it will never take.
            if !st.pop_wakers.remove(id) && !st.items.is_empty() {
                st.pop_wakers.take_first()
            } else {
                ToWake::default()
            }
        };
        to_wake.wake();
    }
}

impl<T: Send + 'static> Future for PushFuture<'_, T> {
    type Output = Result<(), PushError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = this.shared;
        let (value, weight) = this
            .value
            .take()
            .expect("PushFuture polled after it completed");
        if shared.overflow != Overflow::Block {
            // These never wait.
            return Poll::Ready(shared.push(
                value,
                weight,
                super::shared::WhenFull::Overflow,
                None,
            ));
        }
        let mut st = shared.lock();
        let result = if weight > shared.max_weight {
            Err(shared.refusal(&mut st, value, weight, PushRefusal::TooHeavy))
        } else if st.closed {
            Err(shared.refusal(&mut st, value, weight, PushRefusal::Closed))
        } else if shared.fits(&st, weight) {
            shared.commit(&mut st, value, weight)
        } else {
            if !this.counted {
                st.waits += 1;
                this.counted = true;
            }
            this.value = Some((value, weight));
            wait_under(shared, &mut this.waiter, cx, |id| {
                st.push_wakers.register(id, cx.waker())
            });
            return Poll::Pending;
        };
        if let Some(id) = this.waiter.take() {
            st.push_wakers.remove(id);
        }
        drop(st);
        Poll::Ready(result.map(ToWake::wake))
    }
}

impl<T: Send + 'static> Drop for PushFuture<'_, T> {
    fn drop(&mut self) {
        let Some(id) = self.waiter else { return };
        let to_wake = {
            let mut st = self.shared.lock();
            // Not registered any more: it was woken for room it will never use.
            if !st.push_wakers.remove(id) {
                st.push_wakers.take_all()
            } else {
                ToWake::default()
            }
        };
        to_wake.wake();
    }
}

impl<T: Send + 'static> fmt::Debug for PopFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PopFuture")
            .field("waiting", &self.waiter.is_some())
            .finish()
    }
}

impl<T: Send + 'static> fmt::Debug for PushFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushFuture")
            .field("waiting", &self.waiter.is_some())
            .finish_non_exhaustive()
    }
}
