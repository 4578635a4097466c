//! A weighted least-recently-used list: a hash map from key to slot, and a slab of slots linked
//! from the most to the least recently used. No locking; [`BoundedCache`](super::BoundedCache)
//! holds it behind a mutex.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// The end of a list, or no slot.
const NIL: u32 = u32::MAX;

enum Slot<K, V> {
    Occupied {
        key: K,
        value: V,
        weight: u64,
        /// The next more recently used slot.
        newer: u32,
        /// The next less recently used slot.
        older: u32,
    },
    Vacant {
        next_free: u32,
    },
}

/// Entries ordered by use, with their total weight.
pub(super) struct Lru<K, V> {
    map: HashMap<K, u32>,
    slots: Vec<Slot<K, V>>,
    /// The most recently used slot.
    newest: u32,
    /// The least recently used slot: the next one evicted.
    oldest: u32,
    /// Head of the list of vacant slots.
    free: u32,
    weight: u64,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Lru {
            map: HashMap::new(),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
            free: NIL,
            weight: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The sum of the entries' weights.
    pub(super) fn weight(&self) -> u64 {
        self.weight
    }

    /// The value under `key`, marked as the most recently used.
    pub(super) fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_newest(i);
        match &self.slots[i as usize] {
            Slot::Occupied { value, .. } => Some(value),
            Slot::Vacant { .. } => unreachable!("the map names only occupied slots"),
        }
    }

    /// The value under `key`, its place in the order unchanged.
    pub(super) fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match &self.slots[*self.map.get(key)? as usize] {
            Slot::Occupied { value, .. } => Some(value),
            Slot::Vacant { .. } => unreachable!("the map names only occupied slots"),
        }
    }

    /// [`insert`](Self::insert), unless the map or the slab needs memory and the allocator
    /// refuses it (a hard limit): then the key and value come back and nothing changes. (Cloning
    /// the key may still allocate, infallibly.)
    pub(super) fn try_insert(
        &mut self,
        key: K,
        value: V,
        weight: u64,
    ) -> Result<Option<V>, (K, V)> {
        if !self.map.contains_key(&key) {
            let room = self.map.try_reserve(1).is_ok()
                && (self.free != NIL || self.slots.try_reserve(1).is_ok());
            if !room {
                return Err((key, value));
            }
        }
        Ok(self.insert(key, value, weight))
    }

    /// Inserts `value` under `key` as the most recently used entry; returns the value it replaced.
    /// A replacement happens in place (the key already there stays), so it never allocates.
    pub(super) fn insert(&mut self, key: K, value: V, weight: u64) -> Option<V> {
        if let Some(&i) = self.map.get(&key) {
            let old = match &mut self.slots[i as usize] {
                Slot::Occupied {
                    value: v,
                    weight: w,
                    ..
                } => {
                    self.weight = self.weight - *w + weight;
                    *w = weight;
                    std::mem::replace(v, value)
                }
                Slot::Vacant { .. } => unreachable!("the map names only occupied slots"),
            };
            self.unlink(i);
            self.push_newest(i);
            return Some(old);
        }
        let slot = Slot::Occupied {
            key: key.clone(),
            value,
            weight,
            newer: NIL,
            older: NIL,
        };
        let i = if self.free != NIL {
            let i = self.free;
            match self.slots[i as usize] {
                Slot::Vacant { next_free } => self.free = next_free,
                Slot::Occupied { .. } => unreachable!("the free list names only vacant slots"),
            }
            self.slots[i as usize] = slot;
            i
        } else {
            // A cache of more than u32::MAX - 1 entries would need more address space than any
            // machine has for its slots alone.
            let i = u32::try_from(self.slots.len()).expect("memgov: more than 2^32 cache entries");
            self.slots.push(slot);
            i
        };
        self.map.insert(key, i);
        self.push_newest(i);
        self.weight += weight;
        None
    }

    /// Removes the entry under `key` and returns its value.
    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.map.remove(key)?;
        Some(self.vacate(i).1)
    }

    /// Removes the least recently used entry.
    pub(super) fn pop_oldest(&mut self) -> Option<(K, V)> {
        if self.oldest == NIL {
            return None;
        }
        let i = self.oldest;
        let (key, value) = self.vacate(i);
        self.map.remove(&key);
        Some((key, value))
    }

    /// The weight of the least recently used entry.
    pub(super) fn oldest_weight(&self) -> Option<u64> {
        match self.slots.get(self.oldest as usize)? {
            Slot::Occupied { weight, .. } => Some(*weight),
            Slot::Vacant { .. } => None,
        }
    }

    /// Whether the slab and the map hold room for at least four times as many entries as they
    /// hold (after shedding), so that [`compacted`](Self::compacted) would give memory back.
    pub(super) fn is_sparse(&self) -> bool {
        let room = self.slots.len().max(self.map.capacity());
        room >= 64 && room / 4 > self.len()
    }

    /// The same entries, in the same order, in a slab and a map just big enough for them, leaving
    /// `self` empty for the caller to drop (and with it the old slab and map) where it likes.
    /// `None`, and `self` untouched, when the allocator refuses the new ones (a hard limit).
    pub(super) fn compacted(&mut self) -> Option<Lru<K, V>> {
        let mut fresh = Lru::default();
        fresh.map.try_reserve(self.len()).ok()?;
        fresh.slots.try_reserve_exact(self.len()).ok()?;
        // Oldest first, so each one pushed as the newest rebuilds the same order; within the
        // capacity reserved, so nothing allocates but the keys' clones.
        while let Some((key, value, weight)) = self.pop_oldest_weighted() {
            fresh.insert(key, value, weight);
        }
        Some(fresh)
    }

    fn pop_oldest_weighted(&mut self) -> Option<(K, V, u64)> {
        let weight = self.oldest_weight()?;
        let (key, value) = self.pop_oldest()?;
        Some((key, value, weight))
    }

    /// The keys from the most to the least recently used.
    #[cfg(test)]
    pub(super) fn keys_newest_first(&self) -> Vec<K> {
        let mut keys = Vec::new();
        let mut i = self.newest;
        while i != NIL {
            match &self.slots[i as usize] {
                Slot::Occupied { key, older, .. } => {
                    keys.push(key.clone());
                    i = *older;
                }
                Slot::Vacant { .. } => unreachable!("the list names only occupied slots"),
            }
        }
        keys
    }

    /// Unlinks slot `i` (whose key the caller has taken out of the map or will), puts it on the
    /// free list and returns its key and value.
    fn vacate(&mut self, i: u32) -> (K, V) {
        self.unlink(i);
        let slot = std::mem::replace(
            &mut self.slots[i as usize],
            Slot::Vacant {
                next_free: self.free,
            },
        );
        self.free = i;
        match slot {
            Slot::Occupied {
                key, value, weight, ..
            } => {
                self.weight -= weight;
                (key, value)
            }
            Slot::Vacant { .. } => unreachable!("only occupied slots are vacated"),
        }
    }

    fn links(&mut self, i: u32) -> (&mut u32, &mut u32) {
        match &mut self.slots[i as usize] {
            Slot::Occupied { newer, older, .. } => (newer, older),
            Slot::Vacant { .. } => unreachable!("only occupied slots are linked"),
        }
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let (n, o) = self.links(i);
            (std::mem::replace(n, NIL), std::mem::replace(o, NIL))
        };
        match newer {
            NIL => self.newest = older,
            n => *self.links(n).1 = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => *self.links(o).0 = newer,
        }
    }

    fn push_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        *self.links(i).1 = old_newest;
        match old_newest {
            NIL => self.oldest = i,
            n => *self.links(n).0 = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lru(keys: &[u32]) -> Lru<u32, String> {
        let mut l = Lru::default();
        for &k in keys {
            l.insert(k, k.to_string(), u64::from(k));
        }
        l
    }

    #[test]
    fn order_follows_use() {
        let mut l = lru(&[1, 2, 3]);
        assert_eq!(l.keys_newest_first(), [3, 2, 1]);
        assert_eq!(l.get(&1).map(String::as_str), Some("1"));
        assert_eq!(l.keys_newest_first(), [1, 3, 2]);
        assert_eq!(l.peek(&2).map(String::as_str), Some("2"));
        assert_eq!(
            l.keys_newest_first(),
            [1, 3, 2],
            "peek leaves the order alone"
        );
        assert_eq!(l.pop_oldest(), Some((2, "2".to_string())));
        assert_eq!(l.keys_newest_first(), [1, 3]);
        assert_eq!(l.weight(), 4);
    }

    #[test]
    fn replacing_moves_to_the_front_and_reweighs() {
        let mut l = lru(&[1, 2, 3]);
        assert_eq!(l.insert(1, "one".into(), 10), Some("1".to_string()));
        assert_eq!(l.keys_newest_first(), [1, 3, 2]);
        assert_eq!((l.len(), l.weight()), (3, 15));
    }

    #[test]
    fn vacant_slots_are_reused() {
        let mut l = lru(&[1, 2, 3]);
        assert_eq!(l.remove(&2), Some("2".to_string()));
        assert_eq!(l.remove(&2), None);
        l.insert(4, "4".into(), 4);
        assert_eq!(l.slots.len(), 3);
        assert_eq!(l.keys_newest_first(), [4, 3, 1]);
        while l.pop_oldest().is_some() {}
        assert_eq!((l.len(), l.weight(), l.newest, l.oldest), (0, 0, NIL, NIL));
        assert_eq!(l.oldest_weight(), None);
    }

    #[test]
    fn compaction_keeps_entries_and_order() {
        let mut l = lru(&(0..200).collect::<Vec<_>>());
        for k in 0..190 {
            if k != 7 {
                l.remove(&k);
            }
        }
        l.get(&7);
        assert!(l.is_sparse());
        let before = l.keys_newest_first();
        let weight = l.weight();
        let c = l.compacted().unwrap();
        assert_eq!(c.keys_newest_first(), before);
        assert_eq!((c.len(), c.weight(), c.slots.len()), (11, weight, 11));
        assert!(!c.is_sparse());
        assert_eq!(l.len(), 0);
    }
}
