//! Component scopes: guards that tag every allocation made on this thread while they live, and a
//! future wrapper that does the same for every poll.

use crate::registry::{self, ComponentId, NameError};
use crate::thread;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why a scope could not be entered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeError {
    /// The component name was not accepted.
    Name(NameError),
    /// [`MAX_SCOPE_DEPTH`](crate::MAX_SCOPE_DEPTH) scopes are already open on this thread.
    TooDeep {
        /// The component that could not be entered.
        component: &'static str,
    },
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Name(e) => e.fmt(f),
            ScopeError::TooDeep { component } => write!(
                f,
                "cannot enter component {component:?}: {} scopes are already open on this thread",
                thread::MAX_DEPTH
            ),
        }
    }
}

impl std::error::Error for ScopeError {}

impl From<NameError> for ScopeError {
    fn from(e: NameError) -> Self {
        ScopeError::Name(e)
    }
}

/// While this guard lives, allocations on this thread are tagged with its component.
///
/// Scopes nest: the innermost open scope wins, and dropping a guard restores the scope that was
/// current before it. Dropping guards out of order is handled: an outer guard dropped first stays
/// on the stack, inert, until the inner one is dropped, so the current component is always the
/// innermost scope still open. The guard is `!Send`: a scope belongs to one thread.
///
/// Do not hold a guard across an `.await`: wrap the future with [`scoped`] or
/// [`InComponent::in_component`] instead, which enter the scope for each poll and leave it before
/// the poll returns. A future holding a guard is `!Send`, so a multi-threaded executor refuses it
/// at compile time; on a single-threaded one it compiles, and while the future waits its scope stays
/// open on the executor's thread, so every other task polled there allocates in its component.
///
/// ```
/// let _pages = alloc_core::component_scope("pages");
/// assert_eq!(alloc_core::current_component().name(), "pages");
/// {
///     let _tpl = alloc_core::component_scope("templates");
///     assert_eq!(alloc_core::current_component().name(), "templates");
/// }
/// assert_eq!(alloc_core::current_component().name(), "pages");
/// ```
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    level: u8,
    component: ComponentId,
    _not_send: PhantomData<*const ()>,
}

impl ScopeGuard {
    /// The component this guard entered.
    pub fn component(&self) -> ComponentId {
        self.component
    }
}

impl fmt::Debug for ScopeGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeGuard")
            .field("component", &self.component)
            .field("level", &self.level)
            .finish()
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let _ = thread::with_state(|st| st.pop_scope(self.level));
    }
}

/// Enters `component` on this thread until the returned guard is dropped.
///
/// # Errors
/// [`ScopeError::TooDeep`] when [`MAX_SCOPE_DEPTH`](crate::MAX_SCOPE_DEPTH) scopes are already open.
///
/// ```
/// let id = alloc_core::component("parser");
/// let guard = alloc_core::try_enter(id).unwrap();
/// assert_eq!(guard.component(), id);
/// ```
pub fn try_enter(component: ComponentId) -> Result<ScopeGuard, ScopeError> {
    crate::config::ensure_init();
    match thread::with_state(|st| st.push_scope(component.0)) {
        Some(Some(level)) => Ok(ScopeGuard {
            level,
            component,
            _not_send: PhantomData,
        }),
        _ => Err(ScopeError::TooDeep {
            component: component.name(),
        }),
    }
}

/// Enters the component named `name` (interning it) until the guard is dropped.
///
/// # Errors
/// [`ScopeError::Name`] for an empty or over-long name; [`ScopeError::TooDeep`] when too many
/// scopes are open.
///
/// ```
/// assert!(alloc_core::try_component_scope("").is_err());
/// let _g = alloc_core::try_component_scope("ok").unwrap();
/// ```
pub fn try_component_scope(name: &'static str) -> Result<ScopeGuard, ScopeError> {
    try_enter(registry::try_component(name)?)
}

/// Enters the component named `name` until the guard is dropped. See [`ScopeGuard`].
///
/// # Panics
/// When the name is empty or longer than 64 bytes, or when 64 scopes are already open on this
/// thread. [`try_component_scope`] returns these as errors instead.
///
/// ```
/// fn render_page() -> String {
///     let _scope = alloc_core::component_scope("pages");
///     "<html>".repeat(10) // tagged "pages"
/// }
/// render_page();
/// ```
pub fn component_scope(name: &'static str) -> ScopeGuard {
    match try_component_scope(name) {
        Ok(guard) => guard,
        Err(e) => panic!("memgov: {e}"),
    }
}

/// The component that allocations on this thread are tagged with right now.
///
/// ```
/// assert_eq!(alloc_core::current_component(), alloc_core::ComponentId::UNSCOPED);
/// ```
pub fn current_component() -> ComponentId {
    ComponentId(thread::current())
}

/// A future that enters a component scope around every poll of the future it wraps.
///
/// Made by [`scoped`] or [`InComponent::in_component`]. Works with any executor: the scope is
/// entered and left inside `poll`, so the future may move between threads freely. If the polling
/// thread already has [`MAX_SCOPE_DEPTH`](crate::MAX_SCOPE_DEPTH) scopes open, that poll runs in
/// the thread's current component instead (a poll must not fail).
///
/// ```
/// use std::future::Future;
/// use std::task::{Context, Poll, Waker};
/// let mut fut = Box::pin(alloc_core::scoped("jobs", async { alloc_core::current_component() }));
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(c) if c.name() == "jobs"));
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Scoped<F> {
    component: ComponentId,
    future: F,
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and `Scoped`
        // has no Drop impl or Unpin impl that would move it.
        let this = unsafe { self.get_unchecked_mut() };
        let _guard = try_enter(this.component).ok();
        // SAFETY: see above; `this.future` stays where it is for as long as `self` is pinned.
        unsafe { Pin::new_unchecked(&mut this.future) }.poll(cx)
    }
}

/// Wraps `future` so that every poll runs inside the component named `name`.
///
/// # Panics
/// When the name is invalid (see [`component`](crate::component)).
///
/// ```
/// let fut = alloc_core::scoped("uploads", async { vec![0u8; 64] });
/// # drop(fut);
/// ```
pub fn scoped<F: Future>(name: &'static str, future: F) -> Scoped<F> {
    Scoped {
        component: registry::component(name),
        future,
    }
}

/// Extension trait: `.in_component("name")` on any future. See [`Scoped`].
///
/// ```
/// use alloc_core::InComponent;
/// let fut = async { 1 + 1 }.in_component("math");
/// # drop(fut);
/// ```
pub trait InComponent: Future + Sized {
    /// Wraps the future so every poll runs inside the component named `name`.
    ///
    /// # Panics
    /// When the name is invalid (see [`component`](crate::component)).
    fn in_component(self, name: &'static str) -> Scoped<Self> {
        scoped(name, self)
    }

    /// Wraps the future so every poll runs inside `component`.
    fn in_component_id(self, component: ComponentId) -> Scoped<Self> {
        Scoped {
            component,
            future: self,
        }
    }
}

impl<F: Future> InComponent for F {}

/// How many scopes are open on this thread (scopes dropped out of order and still waiting for an
/// inner scope to close included).
///
/// ```
/// assert_eq!(alloc_core::scope_depth(), 0);
/// let _g = alloc_core::component_scope("depth");
/// assert_eq!(alloc_core::scope_depth(), 1);
/// ```
pub fn scope_depth() -> usize {
    thread::with_state(|st| st.depth()).unwrap_or(0)
}
