//! `BoundedCache` and `Pool` against what a program would write without them, in one run:
//! a `Mutex<HashMap>` (no order of use, no bound, no figures) and a buffer allocated and freed
//! each time. The governor is the global allocator throughout, as it must be for the cache and
//! pool to account their memory.
//!
//! `cargo bench --bench cache_pool`; `benches/README.md` has the figures and the ratios.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use memgov::{BoundedCache, Pool};
use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

#[path = "../alloc-core/src/fx_hash.rs"]
mod fx_hash;
use fx_hash::FxBuildHasher;

/// Entries in each map.
const ENTRIES: u64 = 100_000;

/// The `i`-th key of a walk that visits every key below `ENTRIES` once per `ENTRIES` steps, in
/// an order with no locality (a multiplier coprime to `ENTRIES`).
fn key(i: u64) -> u64 {
    i.wrapping_mul(7919) % ENTRIES
}

/// The `i`-th key of a walk in no order at all (splitmix64 of `i`): unlike [`key`], whose
/// constant step leads the cache's slots (kept in insertion order) through memory at a constant
/// stride, which the processor's prefetcher follows.
fn scattered_key(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) % ENTRIES
}

fn full_cache() -> BoundedCache<u64, u64> {
    let cache = BoundedCache::new("bench-cache", ENTRIES);
    for k in 0..ENTRIES {
        cache.insert(k, k).unwrap();
    }
    cache
}

/// The same in 8 shards.
fn full_sharded_cache() -> BoundedCache<u64, u64> {
    let cache = BoundedCache::builder("bench-cache")
        .max_weight(ENTRIES)
        .shards(8)
        .build();
    for k in 0..ENTRIES {
        cache.insert(k, k).unwrap();
    }
    cache
}

/// The same with FxHash instead of std's SipHash.
fn full_fx_cache() -> BoundedCache<u64, u64, FxBuildHasher> {
    let cache = BoundedCache::builder("bench-cache")
        .max_weight(ENTRIES)
        .hasher(FxBuildHasher::default())
        .build();
    for k in 0..ENTRIES {
        cache.insert(k, k).unwrap();
    }
    cache
}

fn full_map() -> Mutex<HashMap<u64, u64>> {
    Mutex::new((0..ENTRIES).map(|k| (k, k)).collect())
}

/// Lookups that hit, on `threads` threads at once; the time per lookup on each thread.
fn lookups(
    threads: usize,
    iters: u64,
    order: fn(u64) -> u64,
    get: Arc<dyn Fn(u64) -> Option<u64> + Send + Sync>,
) -> Duration {
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (get, start) = (Arc::clone(&get), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                for i in 0..iters {
                    black_box(get(order(i + t * 1000)));
                }
                began.elapsed()
            })
        })
        .collect();
    let total: Duration = workers.into_iter().map(|w| w.join().unwrap()).sum();
    total / threads as u32
}

/// A lookup function for `lookups`.
type Get = Arc<dyn Fn(u64) -> Option<u64> + Send + Sync>;

/// A group of lookups: its name, the order of keys, and the maps it compares.
type Case<'a> = (&'a str, fn(u64) -> u64, Vec<(&'a str, &'a Get)>);

fn gets(c: &mut Criterion) {
    let cache = Arc::new(full_cache());
    let map = Arc::new(full_map());
    let fx = Arc::new(full_fx_cache());
    let sharded = Arc::new(full_sharded_cache());
    let cache_get: Get = Arc::new(move |k| cache.get(&k));
    let map_get: Get = Arc::new(move |k| map.lock().unwrap().get(&k).copied());
    let fx_get: Get = Arc::new(move |k| fx.get(&k));
    let sharded_get: Get = Arc::new(move |k| sharded.get(&k));
    let cases: [Case; 2] = [
        (
            "get-hit",
            key,
            vec![
                ("mutex-hashmap", &map_get),
                ("bounded-cache", &cache_get),
                ("bounded-cache-fx", &fx_get),
            ],
        ),
        // The order of keys that shows what sharding does: with `key`'s stride, one shard's
        // slots are prefetched and eight shards' are not, which makes sharding look three times
        // slower on one thread than it is.
        (
            "get-hit-scattered",
            scattered_key,
            vec![
                ("mutex-hashmap", &map_get),
                ("bounded-cache", &cache_get),
                ("bounded-cache-8-shards", &sharded_get),
            ],
        ),
    ];
    for (group, order, gets) in &cases {
        for threads in [1usize, 2] {
            let mut g = c.benchmark_group(format!("{group}-{threads}t"));
            for (name, get) in gets {
                g.bench_function(*name, |b| {
                    b.iter_custom(|iters| lookups(threads, iters, *order, Arc::clone(get)))
                });
            }
            g.finish();
        }
    }
}

fn inserts(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert-evict");
    // Each insert is a new key in a full map: the cache evicts its least recently used entry,
    // the map has the oldest key removed by hand to stay the same size.
    g.bench_function("mutex-hashmap", |b| {
        let map = full_map();
        let mut next = ENTRIES;
        b.iter(|| {
            let mut m = map.lock().unwrap();
            m.insert(next, next);
            black_box(m.remove(&(next - ENTRIES)));
            next += 1;
        })
    });
    g.bench_function("bounded-cache", |b| {
        let cache = full_cache();
        let mut next = ENTRIES;
        b.iter(|| {
            black_box(cache.insert(next, next).unwrap());
            next += 1;
        })
    });
    g.bench_function("bounded-cache-fx", |b| {
        let cache = full_fx_cache();
        let mut next = ENTRIES;
        b.iter(|| {
            black_box(cache.insert(next, next).unwrap());
            next += 1;
        })
    });
    g.finish();
}

fn buffers(c: &mut Criterion) {
    const SIZE: usize = 64 * 1024;
    let mut g = c.benchmark_group("buffer-64KiB");
    // A buffer made, written to once, and dropped, each time.
    g.bench_function("allocate", |b| {
        b.iter(|| {
            let mut buf = Vec::<u8>::with_capacity(SIZE);
            buf.push(1);
            black_box(&buf);
        })
    });
    g.bench_function("pool", |b| {
        let pool = Pool::builder("bench-buffers")
            .reset(|buf: &mut Vec<u8>| {
                buf.clear();
                true
            })
            .build(|| Vec::with_capacity(SIZE));
        b.iter(|| {
            let mut buf = pool.get();
            buf.push(1);
            black_box(&*buf);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = gets, inserts, buffers
}
criterion_main!(benches);
