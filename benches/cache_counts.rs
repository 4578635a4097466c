//! Instructions and simulated L1 data-cache misses per `BoundedCache` operation, against a
//! `Mutex<HashMap>` doing the same, counted by `valgrind --tool=cachegrind`: the steady figures
//! behind `cache_pool`'s timings, which move by a third between runs on a shared machine.
//!
//! `cargo bench --bench cache_counts` runs this binary once per case under cachegrind, with two
//! operation counts, and reports the difference divided by the difference in operations (so the
//! filling of the map cancels out). Without valgrind it says so and exits successfully.
//!
//! Cases, on 100 000 `u64 -> u64` entries with keys visited in an order with no locality: a lookup
//! that hits, and the insert of a new key into the full map (the cache evicts its least recently
//! used entry; the map has its oldest key removed by hand). Each with std's hasher (SipHash) and
//! with FxHash (`-fx`, the cache's `.hasher(..)`).

#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

#[path = "support/cachegrind.rs"]
mod cachegrind;
#[path = "../alloc-core/src/fx_hash.rs"]
mod fx_hash;

use fx_hash::FxBuildHasher;
use std::hash::BuildHasher;

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

const ENTRIES: u64 = 100_000;
const OPS: [u64; 2] = [200_000, 400_000];
const MAPS: [&str; 5] = [
    "mutex-hashmap",
    "bounded-cache",
    "mutex-hashmap-fx",
    "bounded-cache-fx",
    "bounded-cache-8-shards",
];
const CASES: [&str; 2] = ["lookup", "insert"];

fn key(i: u64) -> u64 {
    i.wrapping_mul(7919) % ENTRIES
}

fn run(map: &str, case: &str, ops: u64) {
    match map {
        "mutex-hashmap" => run_map(case, ops, std::collections::hash_map::RandomState::new()),
        "mutex-hashmap-fx" => run_map(case, ops, FxBuildHasher::default()),
        "bounded-cache" => run_cache(case, ops, std::collections::hash_map::RandomState::new(), 1),
        "bounded-cache-8-shards" => {
            run_cache(case, ops, std::collections::hash_map::RandomState::new(), 8)
        }
        _ => run_cache(case, ops, FxBuildHasher::default(), 1),
    }
}

fn run_map<S: BuildHasher>(case: &str, ops: u64, hasher: S) {
    let mut filled = HashMap::with_hasher(hasher);
    filled.extend((0..ENTRIES).map(|k| (k, k)));
    let m = Mutex::new(filled);
    for i in 0..ops {
        let mut m = m.lock().unwrap();
        if case == "lookup" {
            black_box(m.get(&key(i)).copied());
        } else {
            m.insert(ENTRIES + i, i);
            black_box(m.remove(&i));
        }
    }
}

fn run_cache<S: BuildHasher + Clone + Send + Sync + 'static>(
    case: &str,
    ops: u64,
    hasher: S,
    shards: usize,
) {
    let cache = memgov::BoundedCache::<u64, u64>::builder("cache-counts")
        .max_weight(ENTRIES)
        .hasher(hasher)
        .shards(shards)
        .build();
    for k in 0..ENTRIES {
        cache.insert(k, k).unwrap();
    }
    for i in 0..ops {
        if case == "lookup" {
            black_box(cache.get(&key(i)));
        } else {
            black_box(cache.insert(ENTRIES + i, i).unwrap());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("loop") {
        run(&args[2], &args[3], args[4].parse().unwrap());
        return;
    }
    if !cachegrind::available() {
        println!("cache_counts: valgrind is not installed; nothing measured");
        return;
    }
    let exe = args[0].clone();
    println!("per operation, under cachegrind; ratios over the Mutex<HashMap>");
    println!(
        "{:<22} {:>7} {:>13} {:>7} {:>10} {:>7}",
        "map", "case", "instructions", "ratio", "L1d misses", "ratio"
    );
    for case in CASES {
        let mut plain = [0.0; 2];
        for map in MAPS {
            let counts: Result<Vec<[u64; 3]>, String> = OPS
                .iter()
                .map(|&n| cachegrind::count(&exe, &[map, case, &n.to_string()]))
                .collect();
            let counts = counts.unwrap_or_else(|e| panic!("{map} {case}: {e}"));
            let per_op = |i: usize| (counts[1][i] - counts[0][i]) as f64 / (OPS[1] - OPS[0]) as f64;
            if map == MAPS[0] {
                plain = [per_op(0), per_op(1)];
            }
            println!(
                "{map:<22} {case:>7} {:>13.1} {:>6.2}x {:>10.2} {:>6.2}x",
                per_op(0),
                per_op(0) / plain[0],
                per_op(1),
                per_op(1) / plain[1]
            );
        }
    }
}
