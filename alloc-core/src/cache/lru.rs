//! A weighted least-recently-used list with expiry: a hash map from key to slot, and a slab of
//! slots on two linked lists, one from the most to the least recently used entry, one from the
//! youngest to the eldest (for a time to live: with one for every entry, the eldest expire first).
//! No locking; [`BoundedCache`](super::BoundedCache) holds it behind a mutex.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// The end of a list, or no slot.
const NIL: u32 = u32::MAX;

/// Which of the two lists.
#[derive(Clone, Copy)]
enum Order {
    /// From the most to the least recently used entry.
    Use = 0,
    /// From the youngest to the eldest entry (inserted or replaced last, first).
    Birth = 1,
}

/// A slot's neighbours on one list: towards the front (newer, younger) and the back.
#[derive(Clone, Copy)]
struct Links {
    front: u32,
    back: u32,
}

const UNLINKED: Links = Links {
    front: NIL,
    back: NIL,
};

enum Slot<K, V> {
    Occupied {
        key: K,
        value: V,
        weight: u64,
        /// When it was inserted or last replaced, in the caller's clock.
        born: u64,
        links: [Links; 2],
    },
    Vacant {
        next_free: u32,
    },
}

/// Entries ordered by use and by age, with their total weight.
pub(super) struct Lru<K, V, S> {
    map: HashMap<K, u32, S>,
    slots: Vec<Slot<K, V>>,
    /// Each list's front and back.
    ends: [Links; 2],
    /// Head of the list of vacant slots.
    free: u32,
    weight: u64,
}

impl<K, V, S> Lru<K, V, S> {
    /// An empty list whose map hashes with `hasher`.
    pub(super) fn with_hasher(hasher: S) -> Self {
        Lru {
            map: HashMap::with_hasher(hasher),
            slots: Vec::new(),
            ends: [UNLINKED; 2],
            free: NIL,
            weight: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher + Clone> Lru<K, V, S> {
    /// An empty list with the same hasher.
    pub(super) fn emptied(&self) -> Self {
        Lru::with_hasher(self.map.hasher().clone())
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The sum of the entries' weights.
    pub(super) fn weight(&self) -> u64 {
        self.weight
    }

    /// The slot under `key`.
    fn find<Q>(&self, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).copied()
    }

    /// The value under `key`, marked as the most recently used.
    pub(super) fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find(key)?;
        self.unlink(Order::Use, i);
        self.push_front(Order::Use, i);
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
        match &self.slots[self.find(key)? as usize] {
            Slot::Occupied { value, .. } => Some(value),
            Slot::Vacant { .. } => unreachable!("the map names only occupied slots"),
        }
    }

    /// Removes the entry under `key` if it was born at or before `deadline`, and returns it.
    pub(super) fn remove_if_born_by<Q>(&mut self, key: &Q, deadline: u64) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find(key)?;
        if self.born(i) > deadline {
            return None;
        }
        let (key, value) = self.vacate(i);
        self.map.remove::<K>(&key);
        Some((key, value))
    }

    /// [`insert`](Self::insert), unless the map or the slab needs memory and the allocator
    /// refuses it (a hard limit): then the key and value come back and nothing changes. (Cloning
    /// the key may still allocate, infallibly.)
    pub(super) fn try_insert(
        &mut self,
        key: K,
        value: V,
        weight: u64,
        born: u64,
    ) -> Result<Option<V>, (K, V)> {
        // Room for one more entry, reserved fallibly: the map below its capacity, and a free slot
        // or room for one. A replacement needs neither, so only a refusal asks whether it is one.
        let room = (self.map.len() < self.map.capacity() || self.map.try_reserve(1).is_ok())
            && (self.free != NIL
                || self.slots.len() < self.slots.capacity()
                || self.slots.try_reserve(1).is_ok());
        if !room && !self.map.contains_key(&key) {
            return Err((key, value));
        }
        Ok(self.insert(key, value, weight, born))
    }

    /// Inserts `value` under `key`, born at `born`, as the most recently used and the youngest
    /// entry; returns the value it replaced. A replacement happens in place (the key already
    /// there stays), so it never allocates. The key is hashed once.
    pub(super) fn insert(&mut self, key: K, value: V, weight: u64, born: u64) -> Option<V> {
        let (i, replaced) = match self.map.entry(key) {
            Entry::Occupied(e) => {
                let i = *e.get();
                let old = match &mut self.slots[i as usize] {
                    Slot::Occupied {
                        value: v,
                        weight: w,
                        born: b,
                        ..
                    } => {
                        self.weight = self.weight - *w + weight;
                        (*w, *b) = (weight, born);
                        std::mem::replace(v, value)
                    }
                    Slot::Vacant { .. } => unreachable!("the map names only occupied slots"),
                };
                self.unlink(Order::Use, i);
                self.unlink(Order::Birth, i);
                (i, Some(old))
            }
            Entry::Vacant(e) => {
                let slot = Slot::Occupied {
                    key: e.key().clone(),
                    value,
                    weight,
                    born,
                    links: [UNLINKED; 2],
                };
                let i = if self.free != NIL {
                    let i = self.free;
                    match self.slots[i as usize] {
                        Slot::Vacant { next_free } => self.free = next_free,
                        Slot::Occupied { .. } => {
                            unreachable!("the free list names only vacant slots")
                        }
                    }
                    self.slots[i as usize] = slot;
                    i
                } else {
                    // A cache of more than u32::MAX - 1 entries would need more address space
                    // than any machine has for its slots alone.
                    let i = u32::try_from(self.slots.len())
                        .expect("memgov: more than 2^32 cache entries");
                    self.slots.push(slot);
                    i
                };
                e.insert(i);
                self.weight += weight;
                (i, None)
            }
        };
        self.push_front(Order::Use, i);
        self.push_front(Order::Birth, i);
        replaced
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
        self.pop_back(Order::Use)
    }

    /// Removes the eldest entry if it was born at or before `deadline`.
    pub(super) fn pop_born_by(&mut self, deadline: u64) -> Option<(K, V)> {
        let eldest = self.ends[Order::Birth as usize].back;
        if eldest == NIL || self.born(eldest) > deadline {
            return None;
        }
        self.pop_back(Order::Birth)
    }

    fn pop_back(&mut self, order: Order) -> Option<(K, V)> {
        let i = self.ends[order as usize].back;
        if i == NIL {
            return None;
        }
        let (key, value) = self.vacate(i);
        self.map.remove(&key);
        Some((key, value))
    }

    /// Whether the slab and the map hold room for at least four times as many entries as they
    /// hold (after shedding), so that [`compacted`](Self::compacted) would give memory back.
    pub(super) fn is_sparse(&self) -> bool {
        let room = self.slots.len().max(self.map.capacity());
        room >= 64 && room / 4 > self.len()
    }

    /// The same entries, in the same orders, in a slab and a map just big enough for them,
    /// leaving `self` empty for the caller to drop (and with it the old slab and map) where it
    /// likes. `None`, and `self` untouched, when the allocator refuses the memory (a hard limit).
    pub(super) fn compacted(&mut self) -> Option<Self> {
        let n = self.len();
        let mut fresh = self.emptied();
        fresh.map.try_reserve(n).ok()?;
        fresh.slots.try_reserve_exact(n).ok()?;
        // The old slots from the least to the most recently used, and where each one moves.
        let mut by_use = Vec::new();
        by_use.try_reserve_exact(n).ok()?;
        let mut moved_to = Vec::new();
        moved_to.try_reserve_exact(self.slots.len()).ok()?;
        let mut i = self.ends[Order::Use as usize].back;
        while i != NIL {
            by_use.push(i);
            i = self.links(Order::Use, i).front;
        }
        moved_to.resize(self.slots.len(), NIL);
        // Eldest first, so that each one pushed as the youngest rebuilds the birth order; within
        // the capacity reserved, so nothing allocates but the keys' clones.
        loop {
            let i = self.ends[Order::Birth as usize].back;
            if i == NIL {
                break;
            }
            let (weight, born) = (self.weight_of(i), self.born(i));
            let (key, value) = self.vacate(i);
            self.map.remove(&key);
            moved_to[i as usize] = fresh.slots.len() as u32;
            fresh.insert(key, value, weight, born);
        }
        // Then the use order, least recently used first, each pushed to the front.
        for i in by_use {
            let j = moved_to[i as usize];
            fresh.unlink(Order::Use, j);
            fresh.push_front(Order::Use, j);
        }
        Some(fresh)
    }

    fn weight_of(&self, i: u32) -> u64 {
        match &self.slots[i as usize] {
            Slot::Occupied { weight, .. } => *weight,
            Slot::Vacant { .. } => unreachable!("only occupied slots are weighed"),
        }
    }

    fn born(&self, i: u32) -> u64 {
        match &self.slots[i as usize] {
            Slot::Occupied { born, .. } => *born,
            Slot::Vacant { .. } => unreachable!("only occupied slots have an age"),
        }
    }

    /// The keys in one order, front to back.
    #[cfg(test)]
    fn keys(&self, order: Order) -> Vec<K> {
        let mut keys = Vec::new();
        let mut i = self.ends[order as usize].front;
        while i != NIL {
            match &self.slots[i as usize] {
                Slot::Occupied { key, links, .. } => {
                    keys.push(key.clone());
                    i = links[order as usize].back;
                }
                Slot::Vacant { .. } => unreachable!("the lists name only occupied slots"),
            }
        }
        keys
    }

    /// Unlinks slot `i` from both lists (the caller takes its key out of the map, or has), puts
    /// it on the free list and returns its key and value.
    fn vacate(&mut self, i: u32) -> (K, V) {
        self.unlink(Order::Use, i);
        self.unlink(Order::Birth, i);
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

    fn links(&mut self, order: Order, i: u32) -> &mut Links {
        match &mut self.slots[i as usize] {
            Slot::Occupied { links, .. } => &mut links[order as usize],
            Slot::Vacant { .. } => unreachable!("only occupied slots are linked"),
        }
    }

    fn unlink(&mut self, order: Order, i: u32) {
        let Links { front, back } = std::mem::replace(self.links(order, i), UNLINKED);
        match front {
            NIL => self.ends[order as usize].front = back,
            f => self.links(order, f).back = back,
        }
        match back {
            NIL => self.ends[order as usize].back = front,
            b => self.links(order, b).front = front,
        }
    }

    fn push_front(&mut self, order: Order, i: u32) {
        let old_front = self.ends[order as usize].front;
        self.links(order, i).back = old_front;
        match old_front {
            NIL => self.ends[order as usize].back = i,
            f => self.links(order, f).front = i,
        }
        self.ends[order as usize].front = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    /// Entries `k` weighing `k`, born at `k`.
    fn lru(keys: &[u32]) -> Lru<u32, String, RandomState> {
        let mut l = Lru::with_hasher(RandomState::new());
        for &k in keys {
            l.insert(k, k.to_string(), u64::from(k), u64::from(k));
        }
        l
    }

    #[test]
    fn order_follows_use() {
        let mut l = lru(&[1, 2, 3]);
        assert_eq!(l.keys(Order::Use), [3, 2, 1]);
        assert_eq!(l.get(&1).map(String::as_str), Some("1"));
        assert_eq!(l.keys(Order::Use), [1, 3, 2]);
        assert_eq!(
            l.keys(Order::Birth),
            [3, 2, 1],
            "a lookup does not make an entry younger"
        );
        assert_eq!(l.peek(&2).map(String::as_str), Some("2"));
        assert_eq!(l.keys(Order::Use), [1, 3, 2], "peek leaves the order alone");
        assert_eq!(l.pop_oldest(), Some((2, "2".to_string())));
        assert_eq!(l.keys(Order::Use), [1, 3]);
        assert_eq!(l.keys(Order::Birth), [3, 1]);
        assert_eq!(l.weight(), 4);
    }

    #[test]
    fn replacing_moves_to_the_front_of_both_and_reweighs() {
        let mut l = lru(&[1, 2, 3]);
        assert_eq!(l.insert(1, "one".into(), 10, 9), Some("1".to_string()));
        assert_eq!(l.keys(Order::Use), [1, 3, 2]);
        assert_eq!(l.keys(Order::Birth), [1, 3, 2]);
        assert_eq!((l.len(), l.weight()), (3, 15));
    }

    #[test]
    fn the_eldest_expire_first() {
        // Births follow insertion, as the cache's clock only moves on.
        let mut l = Lru::with_hasher(RandomState::new());
        for (k, born) in [(5u32, 10), (1, 20), (3, 30)] {
            l.insert(k, k.to_string(), 1, born);
        }
        l.get(&5); // used last: it still expires by its birth
        assert_eq!(l.pop_born_by(9), None);
        assert_eq!(l.pop_born_by(15), Some((5, "5".to_string())));
        assert_eq!(l.remove_if_born_by(&3, 29), None, "not expired yet");
        assert_eq!(l.remove_if_born_by(&3, 30), Some((3, "3".to_string())));
        l.insert(1, "one".into(), 1, 40); // a replacement is born again
        assert_eq!(l.pop_born_by(35), None);
        assert_eq!(l.keys(Order::Birth), [1]);
    }

    #[test]
    fn vacant_slots_are_reused() {
        let mut l = lru(&[1, 2, 3]);
        assert_eq!(l.remove(&2), Some("2".to_string()));
        assert_eq!(l.remove(&2), None);
        l.insert(4, "4".into(), 4, 4);
        assert_eq!(l.slots.len(), 3);
        assert_eq!(l.keys(Order::Use), [4, 3, 1]);
        while l.pop_oldest().is_some() {}
        assert_eq!((l.len(), l.weight()), (0, 0));
        assert_eq!(l.ends[0].front, NIL);
        assert_eq!(l.ends[1].back, NIL);
    }

    #[test]
    fn compaction_keeps_entries_and_both_orders() {
        let mut l = lru(&(0..200).collect::<Vec<_>>());
        for k in 0..190 {
            if k != 7 {
                l.remove(&k);
            }
        }
        l.get(&7);
        l.get(&193);
        assert!(l.is_sparse());
        let (by_use, by_birth) = (l.keys(Order::Use), l.keys(Order::Birth));
        let weight = l.weight();
        let c = l.compacted().unwrap();
        assert_eq!(c.keys(Order::Use), by_use);
        assert_eq!(c.keys(Order::Birth), by_birth);
        assert_eq!((c.len(), c.weight(), c.slots.len()), (11, weight, 11));
        assert!(!c.is_sparse());
        assert_eq!(l.len(), 0);
    }
}
