//! [`BoundedCache`]: a least-recently-used cache that belongs to a component, stays inside a
//! weight bound, and sheds when memory comes under pressure.

mod lru;
mod refusal;
mod shards;
mod shared;
mod stats;

pub use refusal::{CacheRefusal, RefusalCause};
pub use stats::CacheStats;

use crate::owned_lock::OwnedLock;
use crate::registry::{self, ComponentId};
use crate::scope::try_enter;
use crate::shed_registry;
use crate::shedding::{self, ShedHook, ShedReport, Shedding};
use lru::Lru;
use shards::Shards;
use shared::{Shared, State, Weigher};
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A least-recently-used cache that belongs to a component, holds at most a given weight, and
/// sheds entries when memory comes under pressure.
///
/// - **Its memory is its component's.** The cache's own structures (its map, its list, the copies
///   of the keys) are allocated inside its component, and so are the values that
///   [`get_or_insert_with`](Self::get_or_insert_with) makes. Values made elsewhere keep the
///   component they were allocated in (memgov credits every free to the allocating component).
/// - **A bound.** Each entry has a weight (1 unless the builder was given a
///   [weigher](CacheBuilder::weigher), say the bytes a value holds), and an insert evicts the
///   least recently used entries until the total is within
///   [`max_weight`](CacheBuilder::max_weight).
/// - **Pressure.** The cache obeys the higher of the process's and its component's pressure level
///   ([`shedding_level`](crate::shedding_level)). When the level rises it sheds, on memgov's
///   monitor thread, down to the fraction of what it held when the pressure began that its
///   [`Shedding`] keeps (by default half at Warning, nothing at Critical), and while the level
///   stays up that is the most it may hold: inserts past it evict older entries, and an entry that
///   cannot fit at all is refused ([`CacheRefusal`]). Back at Normal the bound is `max_weight`
///   again.
///
/// One lock guards the cache; values are dropped, and weighed, outside it. It is `Send` and
/// `Sync`: share it with an `Arc` or a `static`.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// use alloc_core::BoundedCache;
///
/// // At most 64 KiB of pages, weighed by their length.
/// let pages = BoundedCache::builder("doc-pages")
///     .max_weight(64 * 1024)
///     .weigher(|_key: &u64, page: &String| page.len() as u64)
///     .build();
/// let page = pages.get_or_insert_with(7, || "<html>".repeat(1000)); // made inside "doc-pages"
/// assert_eq!(pages.get(&7).as_deref(), Some(page.as_str()));
/// assert_eq!(pages.weight(), 6000);
/// let stats = pages.stats();
/// assert_eq!((stats.total_hits, stats.total_misses), (1, 1));
/// ```
pub struct BoundedCache<K: Send + 'static, V: Send + 'static, S = RandomState> {
    shards: Arc<Shards<K, V, S>>,
    /// The cache's registration (`shed_registry`), removed when the cache is dropped.
    registration: u64,
    /// The periodic task that drops expired entries, with a time to live; removed on drop.
    sweep: Option<u64>,
}

/// Builds a [`BoundedCache`]: its bound, weigher, shedding and shed hook.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// use alloc_core::{BoundedCache, Shedding};
/// let cache: BoundedCache<String, Vec<u8>> = BoundedCache::builder("doc-blobs")
///     .max_weight(1 << 20)
///     .weigher(|key: &String, blob: &Vec<u8>| (key.len() + blob.len()) as u64)
///     .shedding(Shedding::new(0.75, 0.1).unwrap())
///     .on_shed(|report| eprintln!("blobs: {report}"))
///     .build();
/// assert_eq!(cache.stats().max_weight, 1 << 20);
/// ```
pub struct CacheBuilder<K, V, S = RandomState> {
    name: &'static str,
    component: ComponentId,
    max_weight: u64,
    ttl: Option<Duration>,
    shedding: Shedding,
    weigher: Option<Weigher<K, V>>,
    on_shed: Option<ShedHook>,
    hasher: S,
    shards: usize,
}

impl<
        K: Hash + Eq + Clone + Send + 'static,
        V: Send + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    > CacheBuilder<K, V, S>
{
    /// The name the cache's figures go by ([`caches`](crate::caches), the exporters); default:
    /// its component's name.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The most the cache holds, in weight (entries, without a weigher). Default: no bound but
    /// pressure.
    pub fn max_weight(mut self, max_weight: u64) -> Self {
        self.max_weight = max_weight;
        self
    }

    /// How long an entry lives after it is inserted (or last replaced), used or not (default: for
    /// ever). An expired entry is a miss, and goes when it is looked up; a sweep on memgov's
    /// monitor thread, every quarter of the time to live (at least 10 ms, at most a minute),
    /// drops the others, so their memory comes back even if nobody looks. Seed 001's cleanup
    /// manager, for a cache.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How much an entry weighs (default 1). Called once per insert, outside the cache's lock.
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// What the cache keeps under pressure (default [`Shedding::DEFAULT`]: half at Warning,
    /// nothing at Critical).
    pub fn shedding(mut self, shedding: Shedding) -> Self {
        self.shedding = shedding;
        self
    }

    /// Called after each change of the level the cache obeys with what the cache shed (nothing,
    /// when the level fell): on the monitor thread, or on the thread that builds the cache if the
    /// level changes while it does. It should return quickly, as every pressure callback should.
    pub fn on_shed(mut self, hook: impl Fn(&ShedReport) + Send + Sync + 'static) -> Self {
        self.on_shed = Some(Box::new(hook));
        self
    }

    /// The hasher of the cache's map (default: std's `RandomState`, SipHash with random keys,
    /// which resists keys chosen to collide). A faster one (FxHash, aHash, or one of your own)
    /// pays where keys are trusted: hashing is about half of what an insert costs with the
    /// default (`benches/README.md`).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// use std::hash::{BuildHasherDefault, DefaultHasher};
    /// // A fixed-key SipHash: the same hashes in every run (a stand-in for a faster hasher).
    /// let cache = alloc_core::BoundedCache::<u64, u64>::builder("doc-hasher")
    ///     .hasher(BuildHasherDefault::<DefaultHasher>::default())
    ///     .max_weight(100)
    ///     .build();
    /// cache.insert(1, 10).unwrap();
    /// assert_eq!(cache.get(&1), Some(10));
    /// ```
    pub fn hasher<H: BuildHasher + Clone + Send + Sync + 'static>(
        self,
        hasher: H,
    ) -> CacheBuilder<K, V, H> {
        CacheBuilder {
            name: self.name,
            component: self.component,
            max_weight: self.max_weight,
            ttl: self.ttl,
            shedding: self.shedding,
            weigher: self.weigher,
            on_shed: self.on_shed,
            hasher,
            shards: self.shards,
        }
    }

    /// Splits the cache into `shards` shards (default 1, at most 256), each with its own lock
    /// and a share of `max_weight` (rounded up): threads that use different keys at once then
    /// mostly take different locks. A key's hash picks its shard. What sharding costs: the
    /// order of use is kept per shard, so an insert evicts the least recently used entry of its
    /// own shard (not of the whole cache), and an entry must fit within one shard's share. The
    /// figures, the exporters, pressure and the `on_shed` hook see one cache.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// let sessions = alloc_core::BoundedCache::<u64, String>::builder("doc-shards")
    ///     .max_weight(10_000)
    ///     .shards(8)
    ///     .build();
    /// for id in 0..20_000 {
    ///     sessions.insert(id, format!("session {id}")).unwrap();
    /// }
    /// assert!(sessions.len() <= 10_000 && sessions.len() > 9_000);
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, 256);
        self
    }

    /// The cache, empty, obeying the level its component has now. One made while the level is up
    /// takes `max_weight` as what it held when the pressure began.
    pub fn build(self) -> BoundedCache<K, V, S> {
        let scope = try_enter(self.component).ok();
        let level = shedding::shedding_level(self.component);
        let clock = Instant::now();
        let share = shards::share(self.max_weight, self.shards);
        let ttl = self
            .ttl
            .map(|ttl| u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        let shard = || {
            Arc::new(Shared {
                name: self.name,
                component: self.component,
                max_weight: share,
                ttl,
                clock,
                shedding: self.shedding,
                weigher: self.weigher.clone(),
                state: OwnedLock::new(State {
                    lru: Lru::with_hasher(self.hasher.clone()),
                    level,
                    base: share,
                    shed_pending: false,
                    hits: 0,
                    misses: 0,
                    inserts: 0,
                    evictions: 0,
                    shed: 0,
                    refused: 0,
                    expired: 0,
                }),
            })
        };
        let shards = Arc::new(Shards {
            name: self.name,
            component: self.component,
            max_weight: self.max_weight,
            shards: (0..self.shards).map(|_| shard()).collect(),
            on_shed: self.on_shed,
        });
        drop(scope);
        let registration = shed_registry::register(self.component, &shards);
        let sweep = self.ttl.map(|ttl| {
            let every = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
            let cache: Weak<Shards<K, V, S>> = Arc::downgrade(&shards);
            let _scope = crate::scope::try_component_scope("memgov").ok();
            crate::monitor::every(every, move || {
                if let Some(cache) = cache.upgrade() {
                    cache.sweep();
                }
            })
        });
        BoundedCache {
            shards,
            registration,
            sweep,
        }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static, V: Send + 'static> BoundedCache<K, V> {
    /// A cache in the component called `name` that holds at most `max_entries` entries (and sheds
    /// under pressure as [`Shedding::DEFAULT`] says).
    ///
    /// # Panics
    /// When the name is invalid (see [`component`](crate::component)).
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// let cache = alloc_core::BoundedCache::new("doc-sessions", 2);
    /// for id in 0..3u32 {
    ///     cache.insert(id, format!("session {id}")).unwrap();
    /// }
    /// assert!(!cache.contains_key(&0)); // the least recently used went
    /// assert_eq!(cache.len(), 2);
    /// ```
    pub fn new(name: &'static str, max_entries: u64) -> Self {
        Self::builder(name).max_weight(max_entries).build()
    }

    /// A builder for a cache in the component called `name`.
    ///
    /// # Panics
    /// When the name is invalid (see [`component`](crate::component)).
    pub fn builder(name: &'static str) -> CacheBuilder<K, V> {
        Self::builder_in(registry::component(name))
    }

    /// A builder for a cache in `component`.
    pub fn builder_in(component: ComponentId) -> CacheBuilder<K, V> {
        CacheBuilder {
            name: component.name(),
            component,
            max_weight: u64::MAX,
            ttl: None,
            shedding: Shedding::DEFAULT,
            weigher: None,
            on_shed: None,
            hasher: RandomState::new(),
            shards: 1,
        }
    }
}

impl<
        K: Hash + Eq + Clone + Send + 'static,
        V: Send + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    > BoundedCache<K, V, S>
{
    /// A clone of the value under `key`, which becomes the most recently used entry; counts a
    /// hit or a miss.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.with(key, V::clone)
    }

    /// Calls `f` with the value under `key` (the most recently used entry from then on), under the
    /// cache's lock: for values that are costly to clone. Counts a hit or a miss. `f` must not use
    /// this cache (its lock is held: that would deadlock) nor lock another cache or pool (a fork
    /// meanwhile could deadlock, since the fork handler takes their locks in the order they were
    /// built); [`caches`](crate::caches) leaves this cache out while `f` runs.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// let cache = alloc_core::BoundedCache::new("doc-with", 8);
    /// cache.insert("k", vec![1u8; 100]).unwrap();
    /// assert_eq!(cache.with(&"k", |v| v.len()), Some(100));
    /// ```
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (mut st, expired) = self.shards.of(key).lock_unexpired(key);
        let result = st.lru.get(key).map(f);
        match result {
            Some(_) => st.hits += 1,
            None => st.misses += 1,
        }
        drop(st);
        drop(expired);
        result
    }

    /// A clone of the value under `key`, its place in the order unchanged and no hit or miss
    /// counted.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.peek_with(key, V::clone)
    }

    /// Whether an entry is under `key` (neither its order nor the counts change).
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.peek_with(key, |_| ()).is_some()
    }

    /// `f` of the value under `key`, under the lock, leaving the order and the counts alone; an
    /// expired entry is dropped after the lock.
    fn peek_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (st, expired) = self.shards.of(key).lock_unexpired(key);
        let result = st.lru.peek(key).map(f);
        drop(st);
        drop(expired);
        result
    }

    /// Inserts `value` under `key` as the most recently used entry, evicting the least recently
    /// used entries until the cache is within its bound; returns the value it replaced.
    ///
    /// # Errors
    /// [`CacheRefusal`], with the key and value handed back, when the entry alone weighs more than
    /// the bound: `max_weight`, or less while memory is under pressure (at Critical, by
    /// default, any entry of non-zero weight); or when the cache's map or list must grow and a
    /// hard limit refuses the memory (the cache's structures are allocated in its component, and
    /// its growth fails gracefully there: the program goes on). An entry already under `key`
    /// stays.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, CacheRefusal<K, V>> {
        let shard = self.shards.of(&key);
        let weight = shard.weigh(&key, &value);
        let _scope = try_enter(shard.component).ok();
        let mut evicted = Evicted::default();
        let replaced = {
            let mut st = shard.lock();
            let bound = shard.bound(&st);
            let attempt = if weight > bound {
                Err((key, value, RefusalCause::TooHeavy))
            } else {
                let born = shard.now();
                st.lru
                    .try_insert(key, value, weight, born)
                    .map_err(|(key, value)| (key, value, RefusalCause::NoMemory))
            };
            let replaced = match attempt {
                Ok(replaced) => replaced,
                Err((key, value, cause)) => {
                    st.refused += 1;
                    let level = st.level;
                    drop(st);
                    return Err(CacheRefusal {
                        key,
                        value,
                        component: shard.component,
                        cause,
                        weight,
                        bound,
                        level,
                    });
                }
            };
            st.inserts += 1;
            let room = if st.shed_pending {
                shard.max_weight
            } else {
                bound
            };
            // The new entry is the newest and fits on its own, so it is never the one evicted.
            while st.lru.weight() > room {
                let entry = st.lru.pop_oldest();
                st.evictions += 1;
                evicted.keep(entry);
            }
            replaced
        };
        drop(evicted);
        Ok(replaced)
    }

    /// The value under `key`, or, on a miss, the value `make` returns, made inside the cache's
    /// component and inserted (a clone is returned). If the insert is refused (memory pressure,
    /// or a value heavier than the bound) the value is returned all the same, uncached. Threads
    /// that miss the same key at once may each make it.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V
    where
        V: Clone,
    {
        match self.get_or_try_insert_with(key, || Ok::<V, std::convert::Infallible>(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) for a `make` that can fail: its error is
    /// returned and nothing is inserted.
    ///
    /// # Errors
    /// What `make` returned.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
    /// #     alloc_core::Governor::with_inner(std::alloc::System);
    /// let cache = alloc_core::BoundedCache::new("doc-parsed", 16);
    /// let n: Result<u32, _> = cache.get_or_try_insert_with("12".to_string(), || "12".parse());
    /// assert_eq!(n, Ok(12));
    /// assert!(cache.get_or_try_insert_with("x".to_string(), || "x".parse::<u32>()).is_err());
    /// assert_eq!(cache.len(), 1);
    /// ```
    pub fn get_or_try_insert_with<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E>
    where
        V: Clone,
    {
        if let Some(value) = self.get(&key) {
            return Ok(value);
        }
        let value = {
            let _scope = try_enter(self.shards.component).ok();
            make()?
        };
        let copy = value.clone();
        // A refusal hands the value back; it is dropped uncached.
        let _ = self.insert(key, value);
        Ok(copy)
    }

    /// Removes the entry under `key` and returns its value.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards.of(key).lock().lru.remove(key)
    }

    /// Evicts the least recently used entries until the cache weighs at most `weight`; returns how
    /// many went. For shedding by hand (from a task of your own, say). A sharded cache trims each
    /// shard to its share of `weight`.
    pub fn trim_to(&self, weight: u64) -> usize {
        let shards = &self.shards.shards;
        let n = shards.len() as u64;
        let mut trimmed = 0;
        for (i, shard) in shards.iter().enumerate() {
            // `weight` split as evenly as whole numbers allow.
            let limit = weight / n + u64::from((i as u64) < weight % n);
            while let Some(entry) = shard.pop_above(limit) {
                drop(entry);
                trimmed += 1;
            }
        }
        trimmed
    }

    /// Removes every entry, and gives back the memory of the cache's own structures.
    pub fn clear(&self) {
        for shard in self.shards.shards.iter() {
            let old = {
                let mut st = shard.lock();
                let empty = st.lru.emptied();
                std::mem::replace(&mut st.lru, empty)
            };
            drop(old);
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.shards.shards.iter().map(|s| s.lock().lru.len()).sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight of the entries (their number, without a weigher).
    pub fn weight(&self) -> u64 {
        self.shards
            .shards
            .iter()
            .map(|s| s.lock().lru.weight())
            .sum()
    }

    /// The component the cache belongs to.
    pub fn component(&self) -> ComponentId {
        self.shards.component
    }

    /// The cache's figures.
    pub fn stats(&self) -> CacheStats {
        self.shards.stats()
    }
}

impl<K: Send + 'static, V: Send + 'static, S> Drop for BoundedCache<K, V, S> {
    fn drop(&mut self) {
        shed_registry::unregister(self.registration);
        if let Some(sweep) = self.sweep {
            crate::monitor::remove_callback(sweep);
        }
    }
}

impl<
        K: Hash + Eq + Clone + Send + 'static,
        V: Send + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    > fmt::Debug for BoundedCache<K, V, S>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedCache")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Entries an insert evicted, kept to be dropped once the lock is released: the first without an
/// allocation (an insert usually evicts one entry at most), the rest in a list that grows
/// fallibly (one that cannot is dropped at once, under the lock).
struct Evicted<K, V> {
    first: Option<(K, V)>,
    rest: Vec<(K, V)>,
}

impl<K, V> Default for Evicted<K, V> {
    fn default() -> Self {
        Evicted {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<K, V> Evicted<K, V> {
    fn keep(&mut self, entry: Option<(K, V)>) {
        let Some(entry) = entry else { return };
        if self.first.is_none() {
            self.first = Some(entry);
        } else if self.rest.try_reserve(1).is_ok() {
            self.rest.push(entry);
        }
    }
}
