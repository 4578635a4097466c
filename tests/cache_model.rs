//! A property test of `BoundedCache` against a model: random sequences of inserts (some too heavy
//! to fit), lookups, peeks, removals and trims on a weighted cache, checked after every operation
//! against a list kept in order of use. The entries held, the total weight and every counter must
//! match exactly.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::BoundedCache;
use proptest::prelude::*;

const MAX_WEIGHT: u64 = 40;
const KEYS: u8 = 12;

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u64),
    Get(u8),
    Peek(u8),
    Remove(u8),
    TrimTo(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, 0..=MAX_WEIGHT + 5).prop_map(|(k, w)| Op::Insert(k, w)),
        3 => (0..KEYS).prop_map(Op::Get),
        1 => (0..KEYS).prop_map(Op::Peek),
        1 => (0..KEYS).prop_map(Op::Remove),
        1 => (0..=MAX_WEIGHT).prop_map(Op::TrimTo),
    ]
}

/// The cache as a list from the most to the least recently used entry: (key, weight).
#[derive(Default)]
struct Model {
    entries: Vec<(u8, u64)>,
    hits: u64,
    misses: u64,
    inserts: u64,
    evictions: u64,
    refused: u64,
}

impl Model {
    fn weight(&self) -> u64 {
        self.entries.iter().map(|e| e.1).sum()
    }

    fn position(&self, k: u8) -> Option<usize> {
        self.entries.iter().position(|e| e.0 == k)
    }

    /// Returns the weight of the replaced entry, if any (the cache returns its value).
    fn insert(&mut self, k: u8, w: u64) -> Result<Option<u64>, ()> {
        if w > MAX_WEIGHT {
            self.refused += 1;
            return Err(());
        }
        let old = self.position(k).map(|i| self.entries.remove(i).1);
        self.entries.insert(0, (k, w));
        self.inserts += 1;
        while self.weight() > MAX_WEIGHT {
            self.entries.pop();
            self.evictions += 1;
        }
        Ok(old)
    }

    fn get(&mut self, k: u8) -> Option<u64> {
        match self.position(k) {
            Some(i) => {
                let e = self.entries.remove(i);
                self.entries.insert(0, e);
                self.hits += 1;
                Some(e.1)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    fn trim_to(&mut self, w: u64) -> usize {
        let mut n = 0;
        while self.weight() > w {
            self.entries.pop();
            self.evictions += 1;
            n += 1;
        }
        n
    }
}

fn check(cache: &BoundedCache<u8, u64>, model: &Model) {
    for k in 0..KEYS {
        assert_eq!(
            cache.peek(&k),
            model.position(k).map(|i| model.entries[i].1),
            "key {k}"
        );
    }
    let s = cache.stats();
    assert_eq!(s.live_entries, model.entries.len() as u64);
    assert_eq!(s.live_weight, model.weight());
    assert_eq!(
        (
            s.total_hits,
            s.total_misses,
            s.total_inserts,
            s.total_evictions,
            s.total_refused
        ),
        (
            model.hits,
            model.misses,
            model.inserts,
            model.evictions,
            model.refused
        )
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_matches_the_model(ops in prop::collection::vec(op(), 1..200)) {
        // The value of each entry is its weight, which the weigher reads back.
        let cache = BoundedCache::builder("cache-model")
            .max_weight(MAX_WEIGHT)
            .weigher(|_: &u8, w: &u64| *w)
            .build();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Insert(k, w) => {
                    let got = cache.insert(k, w).map_err(|r| {
                        assert_eq!((r.weight, r.bound), (w, MAX_WEIGHT));
                    });
                    prop_assert_eq!(got, model.insert(k, w));
                }
                Op::Get(k) => prop_assert_eq!(cache.get(&k), model.get(k)),
                Op::Peek(k) => {
                    prop_assert_eq!(cache.peek(&k), model.position(k).map(|i| model.entries[i].1))
                }
                Op::Remove(k) => {
                    let expected = model.position(k).map(|i| model.entries.remove(i).1);
                    prop_assert_eq!(cache.remove(&k), expected);
                }
                Op::TrimTo(w) => prop_assert_eq!(cache.trim_to(w), model.trim_to(w)),
            }
            check(&cache, &model);
        }
    }
}
