//! One shard of a [`BoundedCache`](super::BoundedCache) (the whole cache, unless it was built
//! with several): its entries and figures behind one lock, and what it does when its level
//! changes or a sweep comes due. `shards.rs` puts the shards together for the monitor, the
//! exporters and the fork handler.

use super::lru::Lru;
use super::CacheStats;
use crate::owned_lock::{OwnedGuard, OwnedLock};
use crate::pressure::Level;
use crate::registry::ComponentId;
use crate::scope::try_enter;
use crate::shedding::{ShedReport, Shedding};
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

/// Shared by the shards.
pub(super) type Weigher<K, V> = std::sync::Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;

/// One shard: its settings, and its state behind one lock.
pub(super) struct Shared<K, V, S> {
    pub(super) name: &'static str,
    pub(super) component: ComponentId,
    /// This shard's share of the cache's `max_weight`.
    pub(super) max_weight: u64,
    /// How long an entry lives after its insert (or its last replacement), in nanoseconds.
    pub(super) ttl: Option<u64>,
    /// The clock entries are born by: nanoseconds since this instant.
    pub(super) clock: Instant,
    pub(super) shedding: Shedding,
    pub(super) weigher: Option<Weigher<K, V>>,
    pub(super) state: OwnedLock<State<K, V, S>>,
}

/// What the cache's lock guards: the entries, the level obeyed, and the counts.
pub(super) struct State<K, V, S> {
    pub(super) lru: Lru<K, V, S>,
    /// The level the cache obeys.
    pub(super) level: Level,
    /// The weight the cache held when the level last left Normal: what the shedding fractions
    /// are fractions of.
    pub(super) base: u64,
    /// Set from a rise of the level until the monitor has shed down to the new bound. Meanwhile an
    /// insert evicts only down to `max_weight`, so that what the rise cuts is shed (and reported)
    /// by the monitor, not taken by whichever insert comes first.
    pub(super) shed_pending: bool,
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) inserts: u64,
    pub(super) evictions: u64,
    pub(super) shed: u64,
    pub(super) refused: u64,
    pub(super) expired: u64,
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher + Clone> Shared<K, V, S> {
    pub(super) fn lock(&self) -> OwnedGuard<'_, State<K, V, S>> {
        // Nothing user-supplied runs under this lock but `with`'s closure and clones, and every
        // change to the state is complete before either runs: a poisoned lock's data is sound.
        self.state.lock()
    }

    pub(super) fn stats(&self) -> CacheStats {
        let st = self.lock();
        CacheStats {
            name: self.name,
            component: self.component,
            live_entries: st.lru.len() as u64,
            live_weight: st.lru.weight(),
            max_weight: self.max_weight,
            bound: self.bound(&st),
            level: st.level,
            total_hits: st.hits,
            total_misses: st.misses,
            total_inserts: st.inserts,
            total_evictions: st.evictions,
            total_shed: st.shed,
            total_refused: st.refused,
            total_expired: st.expired,
        }
    }

    /// Now, by the cache's clock (0 without a time to live: nothing is read then).
    pub(super) fn now(&self) -> u64 {
        match self.ttl {
            Some(_) => u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX),
            None => 0,
        }
    }

    /// The latest birth that has expired by now; `None` when nothing can have (no time to live,
    /// or the cache is younger than it).
    fn expiry_deadline(&self) -> Option<u64> {
        self.now().checked_sub(self.ttl?)
    }

    /// The lock, once the entry under `key` is gone if it has expired; that entry is returned, to
    /// be dropped after the lock.
    #[allow(clippy::type_complexity)]
    pub(super) fn lock_unexpired<Q>(
        &self,
        key: &Q,
    ) -> (OwnedGuard<'_, State<K, V, S>>, Option<(K, V)>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut st = self.lock();
        let expired = self
            .expiry_deadline()
            .and_then(|deadline| st.lru.remove_if_born_by(key, deadline));
        if expired.is_some() {
            st.expired += 1;
        }
        (st, expired)
    }

    /// Drops every expired entry, one per lock (the monitor's periodic task).
    pub(super) fn sweep(&self) {
        let mut swept = false;
        while let Some(entry) = {
            let mut st = self.lock();
            let entry = self
                .expiry_deadline()
                .and_then(|deadline| st.lru.pop_born_by(deadline));
            st.expired += entry.is_some() as u64;
            entry
        } {
            drop(entry);
            swept = true;
        }
        if swept {
            let level = self.lock().level;
            self.give_back_room(level);
        }
    }

    pub(super) fn weigh(&self, key: &K, value: &V) -> u64 {
        self.weigher.as_ref().map_or(1, |w| w(key, value))
    }

    /// The most the cache may weigh now: `max_weight`, capped under pressure unless the level's
    /// fraction keeps everything (then pressure leaves the cache alone).
    pub(super) fn bound(&self, st: &State<K, V, S>) -> u64 {
        if self.shedding.kept(st.level) >= 1.0 {
            self.max_weight
        } else {
            self.max_weight.min(self.shedding.keep(st.level, st.base))
        }
    }

    /// Takes out the least recently used entry if the cache weighs more than `limit`, counting an
    /// eviction. One entry per lock, so that values are dropped outside it.
    pub(super) fn pop_above(&self, limit: u64) -> Option<(K, V)> {
        let mut st = self.lock();
        if st.lru.weight() <= limit {
            return None;
        }
        st.evictions += 1;
        st.lru.pop_oldest()
    }

    /// Takes out the least recently used entry if the cache weighs more than its bound, counting
    /// it as shed; once it does not, the shedding is over. One entry per lock, as `pop_above`.
    fn shed_one(&self) -> Option<(K, V)> {
        let mut st = self.lock();
        if st.lru.weight() <= self.bound(&st) {
            st.shed_pending = false;
            return None;
        }
        st.shed += 1;
        st.lru.pop_oldest()
    }
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher + Clone> Shared<K, V, S> {
    /// Moves the shard to `level` (the level its cache obeys, read once for all its shards) and,
    /// if it rose, sheds down to the new bound (one entry per lock, each dropped outside it); what
    /// it did, when the level changed.
    pub(super) fn move_to(&self, level: Level) -> Option<ShedReport> {
        let (previous, level, entries_before, weight_before) = {
            let mut st = self.lock();
            if st.level == level {
                return None;
            }
            if st.level == Level::Normal {
                st.base = st.lru.weight();
            }
            let previous = std::mem::replace(&mut st.level, level);
            st.shed_pending = level > previous;
            (previous, level, st.lru.len(), st.lru.weight())
        };
        // The bound is read afresh for each entry: inserts and another refresh may run alongside.
        let mut shed = 0;
        while let Some(entry) = self.shed_one() {
            drop(entry);
            shed += 1;
        }
        self.give_back_room(level);
        let st = self.lock();
        Some(ShedReport {
            component: self.component,
            previous,
            level,
            entries_before: entries_before as u64,
            weight_before,
            entries_after: st.lru.len() as u64,
            weight_after: st.lru.weight(),
            shed,
        })
    }
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher + Clone> Shared<K, V, S> {
    /// After shedding or a sweep: an empty cache lets go of its structures; a mostly empty one
    /// moves into smaller ones (an allocation in the cache's component, fallible: skipped if a
    /// hard limit refuses it; and never at Critical, where one would be).
    fn give_back_room(&self, level: Level) {
        let _scope = try_enter(self.component).ok();
        let old = {
            let mut st = self.lock();
            if st.lru.len() == 0 {
                let empty = st.lru.emptied();
                std::mem::replace(&mut st.lru, empty)
            } else if level < Level::Critical && st.lru.is_sparse() {
                match st.lru.compacted() {
                    Some(fresh) => std::mem::replace(&mut st.lru, fresh),
                    None => return,
                }
            } else {
                return;
            }
        };
        drop(old);
    }
}
