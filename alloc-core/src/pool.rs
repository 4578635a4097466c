//! [`Pool`]: reusable objects (buffers, scratch structures) that belong to a component, with a
//! bounded number kept idle, fewer while memory is under pressure.

use crate::owned_lock::{self, OwnedGuard, OwnedLock};
use crate::pressure::Level;
use crate::registry::{self, ComponentId};
use crate::scope::try_enter;
use crate::shed_registry::{self, Figures, Shed};
use crate::shedding::{self, ShedHook, ShedReport, Shedding};
use std::any::Any;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

type Make<T> = Box<dyn Fn() -> T + Send + Sync>;
type Reset<T> = Box<dyn Fn(&mut T) -> bool + Send + Sync>;

/// The most idle objects a pool reserves room for when it is built; past that its idle list grows
/// as objects come back.
const RESERVED_IDLE: usize = 1024;

/// A pool of reusable objects that belong to a component.
///
/// [`get`](Self::get) hands out an idle object, or makes one (inside the pool's component) when
/// none is idle; dropping the [`Pooled`] guard resets the object and keeps it idle for the next
/// `get`, unless `max_idle` objects are idle already. Idle objects are memory nobody uses: when
/// the pressure level the pool obeys (the higher of the process's and its component's) rises, the
/// pool drops idle objects down to the fraction of `max_idle` its [`Shedding`] keeps (by default
/// half at Warning, none at Critical), and keeps no more than that until the level falls back.
///
/// Seed 003's "memory pooler": hit rate, a maximum pool size, cleanup under pressure.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// use alloc_core::Pool;
///
/// let buffers = Pool::builder("doc-buffers")
///     .max_idle(8)
///     .reset(|buf: &mut Vec<u8>| {
///         buf.clear();
///         buf.capacity() <= 1 << 20 // a buffer that grew past 1 MiB is not kept
///     })
///     .build(|| Vec::with_capacity(64 * 1024));
/// {
///     let mut buf = buffers.get(); // made: the pool was empty
///     buf.extend_from_slice(b"response");
/// } // reset and kept idle
/// let buf = buffers.get(); // the same buffer, cleared
/// assert!(buf.is_empty() && buf.capacity() >= 64 * 1024);
/// let s = buffers.stats();
/// assert_eq!((s.total_misses, s.total_hits, s.live_out), (1, 1, 1));
/// ```
pub struct Pool<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    /// The pool's registration (`shed_registry`), removed when the pool is dropped.
    registration: u64,
}

struct Shared<T> {
    name: &'static str,
    component: ComponentId,
    max_idle: usize,
    shedding: Shedding,
    make: Make<T>,
    reset: Option<Reset<T>>,
    on_shed: Option<ShedHook>,
    state: OwnedLock<State<T>>,
}

struct State<T> {
    idle: Vec<T>,
    level: Level,
    /// Set when the pool is dropped: objects that come back then are dropped.
    closed: bool,
    out: u64,
    hits: u64,
    misses: u64,
    returns: u64,
    discards: u64,
    shed: u64,
    detached: u64,
}

/// Builds a [`Pool`]: how many objects stay idle, how they are reset, what is shed under
/// pressure.
pub struct PoolBuilder<T> {
    name: &'static str,
    component: ComponentId,
    max_idle: usize,
    shedding: Shedding,
    reset: Option<Reset<T>>,
    on_shed: Option<ShedHook>,
}

impl<T: Send + 'static> PoolBuilder<T> {
    /// The name the pool's figures go by ([`pools`](crate::pools), the exporters); default: its
    /// component's name.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The most objects kept idle (default 64).
    pub fn max_idle(mut self, max_idle: usize) -> Self {
        self.max_idle = max_idle;
        self
    }

    /// Prepares an object that comes back for its next user (clear a buffer, say), outside the
    /// pool's lock; returning false drops the object instead of keeping it (a buffer that grew
    /// too big, say). Without one, objects are kept as they come back. It should not panic: it
    /// runs when a [`Pooled`] guard is dropped, perhaps during unwinding.
    pub fn reset(mut self, reset: impl Fn(&mut T) -> bool + Send + Sync + 'static) -> Self {
        self.reset = Some(Box::new(reset));
        self
    }

    /// What the pool keeps idle under pressure, as fractions of `max_idle` (default
    /// [`Shedding::DEFAULT`]: half at Warning, none at Critical).
    pub fn shedding(mut self, shedding: Shedding) -> Self {
        self.shedding = shedding;
        self
    }

    /// Called after each change of the level the pool obeys with what the pool shed (entries are
    /// idle objects, weighing 1 each): on the monitor thread, or on the thread that builds the
    /// pool if the level changes while it does. It should return quickly, as every pressure
    /// callback should.
    pub fn on_shed(mut self, hook: impl Fn(&ShedReport) + Send + Sync + 'static) -> Self {
        self.on_shed = Some(Box::new(hook));
        self
    }

    /// The pool, with no object made yet: `make` makes one whenever none is idle, inside the
    /// pool's component.
    pub fn build(self, make: impl Fn() -> T + Send + Sync + 'static) -> Pool<T> {
        let scope = try_enter(self.component).ok();
        let shared = Arc::new(Shared {
            name: self.name,
            component: self.component,
            max_idle: self.max_idle,
            shedding: self.shedding,
            make: Box::new(make),
            reset: self.reset,
            on_shed: self.on_shed,
            state: OwnedLock::new(State {
                idle: reserved_idle(self.max_idle),
                level: shedding::shedding_level(self.component),
                closed: false,
                out: 0,
                hits: 0,
                misses: 0,
                returns: 0,
                discards: 0,
                shed: 0,
                detached: 0,
            }),
        });
        drop(scope);
        let registration = shed_registry::register(self.component, &shared);
        Pool {
            shared,
            registration,
        }
    }
}

/// An idle list with room for `max_idle` objects (at most [`RESERVED_IDLE`]), reserved fallibly:
/// without the room it starts empty and grows as objects come back, or they are dropped.
fn reserved_idle<T>(max_idle: usize) -> Vec<T> {
    let mut idle = Vec::new();
    let _ = idle.try_reserve_exact(max_idle.min(RESERVED_IDLE));
    idle
}

impl<T: Send + 'static> Pool<T> {
    /// A pool in the component called `name` that keeps at most `max_idle` objects idle, made by
    /// `make` and kept as they come back.
    ///
    /// # Panics
    /// When the name is invalid (see [`component`](crate::component)).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// let pool = alloc_core::Pool::new("doc-scratch", 4, || String::with_capacity(1024));
    /// pool.get().push_str("scratch");
    /// assert_eq!(pool.stats().live_idle, 1);
    /// ```
    pub fn new(
        name: &'static str,
        max_idle: usize,
        make: impl Fn() -> T + Send + Sync + 'static,
    ) -> Self {
        Self::builder(name).max_idle(max_idle).build(make)
    }

    /// A builder for a pool in the component called `name`.
    ///
    /// # Panics
    /// When the name is invalid (see [`component`](crate::component)).
    pub fn builder(name: &'static str) -> PoolBuilder<T> {
        Self::builder_in(registry::component(name))
    }

    /// A builder for a pool in `component`.
    pub fn builder_in(component: ComponentId) -> PoolBuilder<T> {
        PoolBuilder {
            name: component.name(),
            component,
            max_idle: 64,
            shedding: Shedding::DEFAULT,
            reset: None,
            on_shed: None,
        }
    }

    /// An idle object, or a new one if none is idle. It comes back to the pool when the guard is
    /// dropped.
    pub fn get(&self) -> Pooled<T> {
        match self.try_get_with(|| Ok::<T, std::convert::Infallible>((self.shared.make)())) {
            Ok(pooled) => pooled,
            Err(never) => match never {},
        }
    }

    /// An idle object, or, if none is idle, what `make` makes instead of the pool's own maker
    /// (inside the pool's component): the fallible twin of [`get`](Self::get), for objects
    /// whose making can fail, at a hard limit say. A failure is counted as a miss and handed
    /// back.
    ///
    /// # Errors
    /// What `make` returned.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// use std::collections::TryReserveError;
    /// let buffers = alloc_core::Pool::new("doc-try-get", 4, || Vec::<u8>::with_capacity(4096));
    /// // Made fallibly: at a hard limit on "doc-try-get", this is an `Err`, not an abort.
    /// let fallible = || -> Result<Vec<u8>, TryReserveError> {
    ///     let mut buf = Vec::new();
    ///     buf.try_reserve_exact(4096)?;
    ///     Ok(buf)
    /// };
    /// let buf = buffers.try_get_with(fallible).unwrap();
    /// assert!(buf.capacity() >= 4096);
    /// ```
    pub fn try_get_with<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<Pooled<T>, E> {
        let idle = {
            let mut st = self.shared.lock();
            let idle = st.idle.pop();
            if idle.is_some() {
                st.hits += 1;
                st.out += 1;
            }
            idle
        };
        let value = match idle {
            Some(value) => value,
            None => {
                let made = {
                    let _scope = try_enter(self.shared.component).ok();
                    make()
                };
                let mut st = self.shared.lock();
                st.misses += 1;
                st.out += u64::from(made.is_ok());
                made?
            }
        };
        Ok(Pooled {
            value: ManuallyDrop::new(value),
            pool: Arc::clone(&self.shared),
        })
    }

    /// Drops every idle object.
    pub fn clear(&self) {
        let idle = std::mem::take(&mut self.shared.lock().idle);
        drop(idle);
    }

    /// The component the pool belongs to.
    pub fn component(&self) -> ComponentId {
        self.shared.component
    }

    /// The pool's figures.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }
}

impl<T: Send + 'static> Drop for Pool<T> {
    fn drop(&mut self) {
        shed_registry::unregister(self.registration);
        let idle = {
            let mut st = self.shared.lock();
            st.closed = true;
            std::mem::take(&mut st.idle)
        };
        drop(idle);
    }
}

impl<T: Send + 'static> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> OwnedGuard<'_, State<T>> {
        // No user code runs under this lock, and every change is complete before it is released.
        self.state.lock()
    }

    fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            name: self.name,
            component: self.component,
            live_idle: st.idle.len() as u64,
            live_out: st.out,
            max_idle: self.max_idle as u64,
            bound: self.bound(&st) as u64,
            level: st.level,
            total_hits: st.hits,
            total_misses: st.misses,
            total_returns: st.returns,
            total_discards: st.discards,
            total_shed: st.shed,
            total_detached: st.detached,
        }
    }

    /// The most objects kept idle now.
    fn bound(&self, st: &State<T>) -> usize {
        self.shedding.keep(st.level, self.max_idle as u64) as usize
    }

    /// Takes back an object whose guard was dropped.
    fn give_back(&self, mut value: T) {
        let keep = self.reset.as_ref().is_none_or(|reset| reset(&mut value));
        let _scope = try_enter(self.component).ok();
        let discarded = {
            let mut st = self.lock();
            st.out -= 1;
            st.returns += 1;
            // The idle list grows in the pool's component: where a hard limit refuses that, the
            // object is dropped instead.
            if keep
                && !st.closed
                && st.idle.len() < self.bound(&st)
                && st.idle.try_reserve(1).is_ok()
            {
                st.idle.push(value);
                None
            } else {
                st.discards += 1;
                Some(value)
            }
        };
        drop(discarded);
    }

    /// Takes out one idle object if more are idle than the bound allows.
    fn pop_above_bound(&self) -> Option<T> {
        let mut st = self.lock();
        if st.idle.len() <= self.bound(&st) {
            return None;
        }
        st.shed += 1;
        st.idle.pop()
    }
}

impl<T: Send + 'static> Shed for Shared<T> {
    fn figures(&self) -> Option<Figures> {
        (!self.state.held_here()).then(|| Figures::Pool(self.stats()))
    }

    fn hold_for_fork(self: Arc<Self>) -> Option<Box<dyn Any>> {
        owned_lock::hold_for_fork(self, |shared: &Self| &shared.state)
    }

    fn refresh_level(&self) {
        let (previous, level, before) = {
            let mut st = self.lock();
            let level = shedding::shedding_level(self.component);
            if st.level == level {
                return;
            }
            let previous = std::mem::replace(&mut st.level, level);
            (previous, level, st.idle.len() as u64)
        };
        let mut shed = 0;
        while let Some(value) = self.pop_above_bound() {
            drop(value);
            shed += 1;
        }
        let after = {
            let mut st = self.lock();
            let after = st.idle.len() as u64;
            if after == 0 && shed > 0 {
                // Nothing idle is left to keep: give the list's own memory back too.
                drop(std::mem::take(&mut st.idle));
            }
            after
        };
        if let Some(hook) = &self.on_shed {
            hook(&ShedReport {
                component: self.component,
                previous,
                level,
                entries_before: before,
                weight_before: before,
                entries_after: after,
                weight_after: after,
                shed,
            });
        }
    }
}

/// An object lent by a [`Pool`]; it goes back to the pool when dropped. Derefs to the object.
pub struct Pooled<T: Send + 'static> {
    value: ManuallyDrop<T>,
    pool: Arc<Shared<T>>,
}

impl<T: Send + 'static> Pooled<T> {
    /// Keeps the object for good: it does not go back to the pool.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// let pool = alloc_core::Pool::new("doc-detach", 4, Vec::<u8>::new);
    /// let v: Vec<u8> = alloc_core::Pooled::into_inner(pool.get());
    /// assert_eq!((pool.stats().live_out, pool.stats().total_detached), (0, 1));
    /// # drop(v);
    /// ```
    pub fn into_inner(this: Self) -> T {
        let mut this = ManuallyDrop::new(this);
        // SAFETY: `this` is never used or dropped again, so the value is taken out exactly once;
        // the `Arc` is moved out once, just below, and dropped there.
        let (value, pool) = unsafe {
            (
                ManuallyDrop::take(&mut this.value),
                std::ptr::read(&this.pool),
            )
        };
        {
            let mut st = pool.lock();
            st.out -= 1;
            st.detached += 1;
        }
        value
    }
}

impl<T: Send + 'static> Deref for Pooled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Send + 'static> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: Send + 'static> Drop for Pooled<T> {
    fn drop(&mut self) {
        // SAFETY: the value is taken out once, here, and `self.value` is not used again.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        self.pool.give_back(value);
    }
}

impl<T: Send + fmt::Debug + 'static> fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pooled").field(&*self.value).finish()
    }
}

/// A pool's figures ([`Pool::stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The name the pool goes by ([`PoolBuilder::name`]; its component's, by default).
    pub name: &'static str,
    /// The component the pool belongs to.
    pub component: ComponentId,
    /// Objects idle in the pool.
    pub live_idle: u64,
    /// Objects lent out and not yet back.
    pub live_out: u64,
    /// The most kept idle, as configured.
    pub max_idle: u64,
    /// The most kept idle now: `max_idle` at Normal, fewer under pressure.
    pub bound: u64,
    /// The pressure level the pool obeys.
    pub level: Level,
    /// `get`s served by an idle object.
    pub total_hits: u64,
    /// `get`s that made a new object.
    pub total_misses: u64,
    /// Objects that came back.
    pub total_returns: u64,
    /// Objects that came back and were dropped: the pool was full or closed, the level kept
    /// fewer, the reset said no, or a hard limit refused the idle list room to grow.
    pub total_discards: u64,
    /// Idle objects dropped because memory came under pressure.
    pub total_shed: u64,
    /// Objects kept for good ([`Pooled::into_inner`]).
    pub total_detached: u64,
}

impl PoolStats {
    /// Hits over `get`s; `None` before the first `get`.
    pub fn hit_ratio(&self) -> Option<f64> {
        shedding::hit_ratio(self.total_hits, self.total_misses)
    }
}
