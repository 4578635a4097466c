//! The live caches, pools and queues: how they hear that the pressure changed, and how their
//! figures are listed ([`caches`], [`pools`], [`queues`]).
//!
//! Each [`BoundedCache`](crate::BoundedCache), [`Pool`](crate::Pool) and
//! [`BoundedQueue`](crate::BoundedQueue) registers here when it is built and leaves when it is dropped. The registry holds them weakly. One pressure callback,
//! registered with the first of them, has every live one whose level may have changed (all of
//! them for a process event, those of the component for a component event) read its level again,
//! on the monitor thread, outside the registry's lock. The registry and the callback are memgov's
//! own memory (the component "memgov").

use crate::budget::Scope;
use crate::cache::CacheStats;
use crate::pool::PoolStats;
use crate::pressure::PressureEvent;
use crate::queue::QueueStats;
use crate::registry::ComponentId;
use std::any::Any;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// What a cache, pool or queue tells the registry.
pub(crate) trait Shed: Send + Sync {
    /// Reads the level it obeys ([`shedding_level`](crate::shedding_level)) again and sheds if it
    /// rose, so that racing calls end with the latest reading (a pool and a queue read it under
    /// their lock; a cache's shards read it once and again after, until it holds still). A call
    /// that finds the level it already obeys does nothing.
    fn refresh_level(&self);

    /// Its figures now; `None` when the calling thread holds its lock (it is inside the cache's
    /// `with`), where taking it again would deadlock.
    fn figures(&self) -> Option<Figures>;

    /// Takes its lock for the fork handler, unless the calling thread holds it already; the
    /// result keeps it (and the lock) until dropped.
    fn hold_for_fork(self: Arc<Self>) -> Option<Box<dyn Any>>;
}

/// A cache's, a pool's or a queue's figures.
pub(crate) enum Figures {
    Cache(CacheStats),
    Pool(PoolStats),
    Queue(QueueStats),
}

struct Entry {
    id: u64,
    component: ComponentId,
    target: Weak<dyn Shed>,
}

struct Registry {
    entries: Vec<Entry>,
    /// Whether the pressure callback is registered.
    watching: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    watching: false,
});
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lock() -> MutexGuard<'static, Registry> {
    // Only pushes, removals and copies happen under this lock, and the callback's registration,
    // which cannot panic past its own locks: a poisoned one is consistent.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the registry's lock for the fork handler ([`crate::fork`]). The first registration
/// registers the pressure callback under it, so it comes before the monitor's locks.
pub(crate) fn lock_for_fork() -> impl Sized {
    lock()
}

/// Takes the lock of every live cache and pool for the fork handler, except those the forking
/// thread holds itself (it keeps them, and releases them in the parent and the child alike): the
/// monitor and the exporters take these locks, and one held by a thread that does not come
/// along would stay held for ever in the child. They come before every lock of memgov's (code
/// under a cache's lock, `with`'s closure, may take those), and are found through the registry,
/// whose lock is released before they are taken. A cache built while the fork is being prepared
/// may be missed.
pub(crate) fn hold_all_for_fork() -> Vec<Box<dyn Any>> {
    live(|_| true)
        .into_iter()
        .filter_map(|target| target.hold_for_fork())
        .collect()
}

/// Registers `target`, a cache or pool in `component` just built, and has it read its level
/// again (a change between its build and now was delivered before it could hear of it); returns
/// the id to [`unregister`] it with. Starts the monitor with the first registration.
pub(crate) fn register<T: Shed + 'static>(component: ComponentId, target: &Arc<T>) -> u64 {
    let id = NEXT_ID.fetch_add(1, Relaxed);
    {
        let _scope = crate::scope::try_component_scope("memgov").ok();
        let mut registry = lock();
        if !registry.watching {
            // Under the registry's lock (not a `Once`, which a fork could leave half run for ever
            // in the child): no cache registered meanwhile goes unheard.
            crate::monitor::on_pressure(deliver);
            registry.watching = true;
        }
        registry.entries.push(Entry {
            id,
            component,
            target: Arc::downgrade(target) as Weak<dyn Shed>,
        });
    }
    target.refresh_level();
    id
}

/// Removes the registration `id` (a cache or pool being dropped).
pub(crate) fn unregister(id: u64) {
    let gone = {
        let entries = &mut lock().entries;
        entries
            .iter()
            .position(|e| e.id == id)
            .map(|i| entries.remove(i))
    };
    // The weak reference is released outside the lock (it may free the allocation of a target
    // dropped meanwhile).
    drop(gone);
}

/// The live targets `pick` chooses, in registration order, taken out of the lock.
fn live(pick: impl Fn(&Entry) -> bool) -> Vec<Arc<dyn Shed>> {
    lock()
        .entries
        .iter()
        .filter(|e| pick(e))
        .filter_map(|e| e.target.upgrade())
        .collect()
}

/// The monitor's callback: every target whose level may have changed reads it again.
fn deliver(event: &PressureEvent) {
    let targets = live(|e| match event.scope {
        Scope::Process => true,
        Scope::Component(c) => c == e.component,
    });
    for target in &targets {
        target.refresh_level();
    }
    // A target whose owner dropped it meanwhile is dropped here, on the monitor thread.
    drop(targets);
}

/// The figures of every live [`BoundedCache`](crate::BoundedCache), in the order they were built.
/// A cache whose lock the calling thread holds (called from inside its
/// [`with`](crate::BoundedCache::with)) is left out: reading it would deadlock.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// let cache = alloc_core::BoundedCache::<u32, u32>::builder("doc-listed").name("listed").build();
/// assert!(alloc_core::caches().iter().any(|c| c.name == "listed"));
/// drop(cache);
/// assert!(!alloc_core::caches().iter().any(|c| c.name == "listed"));
/// ```
pub fn caches() -> Vec<CacheStats> {
    figures(|f| match f {
        Figures::Cache(c) => Some(c),
        _ => None,
    })
}

/// The figures `pick` keeps, of every live target whose lock the calling thread does not hold.
fn figures<S>(pick: impl Fn(Figures) -> Option<S>) -> Vec<S> {
    live(|_| true)
        .iter()
        .filter_map(|t| pick(t.figures()?))
        .collect()
}

/// The figures of every live [`Pool`](crate::Pool), in the order they were built.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// let pool = alloc_core::Pool::new("doc-listed-pool", 4, || 0u64);
/// assert_eq!(alloc_core::pools().iter().filter(|p| p.name == "doc-listed-pool").count(), 1);
/// # drop(pool);
/// ```
pub fn pools() -> Vec<PoolStats> {
    figures(|f| match f {
        Figures::Pool(p) => Some(p),
        _ => None,
    })
}

/// The figures of every live [`BoundedQueue`](crate::BoundedQueue), in the order they were built.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// let queue = alloc_core::BoundedQueue::<u64>::new("doc-listed-queue", 16);
/// queue.push(1).unwrap();
/// let listed = alloc_core::queues();
/// assert!(listed.iter().any(|q| q.name == "doc-listed-queue" && q.live_entries == 1));
/// # drop(queue);
/// ```
pub fn queues() -> Vec<QueueStats> {
    figures(|f| match f {
        Figures::Queue(q) => Some(q),
        _ => None,
    })
}
