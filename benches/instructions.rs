//! Instructions, simulated L1 data-cache misses and simulated branch mispredictions per
//! operation, counted by `valgrind --tool=cachegrind`: figures that do not move with the machine's
//! load, for comparing versions of the allocation path.
//!
//! `cargo bench --bench instructions` runs this binary once per case under cachegrind, with two
//! operation counts, and reports the difference divided by the difference in operations (so
//! start-up and set-up cancel out). Without valgrind it says so and exits successfully.
//!
//! Cases: alloc+free pairs of sizes with slack in their jemalloc class (24, 100 and 5000 bytes),
//! and the random-size churn of `alloc_pair` (one free and one allocation per operation), each on
//! the raw allocators, the governor over them, and the governor over jemalloc with allocation-size
//! histograms on (`governor-jemalloc+h`), and two of `alloc_pair`'s reference wrappers over
//! jemalloc: the trailer tag (`ref-trailer-tag`, the least a wrapper can do and credit each free
//! to its component) and the one shared atomic counter of `cap`-like wrappers
//! (`ref-global-counter`). Under valgrind the shadow tables' address-space reservation fails, so exact-class sizes take the
//! trailer fallback instead of the path they take outside valgrind; the pair sizes avoid them.

use memgov::{Governor, Jemalloc};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

#[path = "support/cachegrind.rs"]
mod cachegrind;

static RAW_JEMALLOC: Jemalloc = Jemalloc;
static GOV_JEMALLOC: Governor<Jemalloc> = Governor::with_inner(Jemalloc);
static RAW_SYSTEM: System = System;
static GOV_SYSTEM: Governor<System> = Governor::with_inner(System);

type Alloc = &'static (dyn GlobalAlloc + Sync);

#[path = "support/references.rs"]
#[allow(dead_code)] // the shadow-tag, forward and thread-counter references are not counted here
mod references;
use references::{GLOBAL_COUNTER_JEMALLOC, TRAILER_TAG_JEMALLOC};

/// The raw allocators, the denominators of the ratios.
const RAW: [&str; 2] = ["jemalloc", "system"];

/// The suffix of an allocator's name that turns histograms on.
const HISTOGRAMS: &str = "+h";

/// Names ending in [`HISTOGRAMS`] run with allocation-size histograms on; ratios are over
/// [`RAW`] allocators' rows. The `ref-` rows are `alloc_pair`'s reference wrappers (the
/// shadow-tag one is left out: its table cannot be reserved under valgrind).
const ALLOCATORS: [(&str, Alloc); 7] = [
    ("jemalloc", &RAW_JEMALLOC),
    ("governor-jemalloc", &GOV_JEMALLOC),
    ("governor-jemalloc+h", &GOV_JEMALLOC),
    ("ref-trailer-tag", &TRAILER_TAG_JEMALLOC),
    ("ref-global-counter", &GLOBAL_COUNTER_JEMALLOC),
    ("system", &RAW_SYSTEM),
    ("governor-system", &GOV_SYSTEM),
];

/// Pair sizes; 0 stands for the churn.
const CASES: [usize; 4] = [24, 100, 5000, CHURN];
const CHURN: usize = 0;
const OPS: [u64; 2] = [200_000, 400_000];
const LIVE_SET: usize = 4096;

/// `pairs` alloc+free pairs of `size` bytes on `a`, as `alloc_pair` does them.
fn pair_loop(a: Alloc, size: usize, pairs: u64) {
    let layout = Layout::from_size_align(size, 8).expect("a valid layout");
    for _ in 0..pairs {
        // SAFETY: non-zero size; the block is freed with the layout it was allocated with.
        unsafe {
            let p = a.alloc(layout);
            black_box(p);
            a.dealloc(p, layout);
        }
    }
}

/// `ops` replacements over a live set of LIVE_SET blocks of log-uniform sizes from 8 B to 8 KiB,
/// as `alloc_pair`'s churn does them.
fn churn_loop(a: Alloc, ops: u64) {
    let mut x = 0x9E37_79B9u64;
    let sizes: Vec<usize> = (0..1 << 14)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = 1usize << (3 + (x % 10) as u32);
            base + (x >> 20) as usize % base
        })
        .collect();
    let layout = |i: usize| Layout::from_size_align(sizes[i & ((1 << 14) - 1)], 8).unwrap();
    // SAFETY: non-zero sizes.
    let mut live: Vec<(*mut u8, Layout)> = (0..LIVE_SET)
        .map(|i| (unsafe { a.alloc(layout(i)) }, layout(i)))
        .collect();
    for i in 0..ops as usize {
        let slot = (i * 2654435761) % LIVE_SET;
        // SAFETY: every live block was allocated by `a` with the layout stored beside it.
        unsafe {
            let (p, old) = live[slot];
            a.dealloc(p, old);
            live[slot] = (a.alloc(layout(i)), layout(i));
        }
    }
    for (p, l) in live {
        // SAFETY: as above.
        unsafe { a.dealloc(p, l) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("loop") {
        let (name, case, ops) = (&args[2], args[3].parse().unwrap(), args[4].parse().unwrap());
        let (_, a) = ALLOCATORS
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("unknown allocator {name:?}"));
        memgov::set_histograms(name.ends_with(HISTOGRAMS));
        match case {
            CHURN => churn_loop(*a, ops),
            size => pair_loop(*a, size, ops),
        }
        return;
    }
    if !cachegrind::available() {
        println!("instructions: valgrind is not installed; nothing measured");
        return;
    }
    let exe = args[0].clone();
    println!("per operation (an alloc+free pair, or a churn replacement), under cachegrind;");
    println!("ratios over the raw allocator");
    println!(
        "{:<20} {:>6} {:>13} {:>7} {:>10} {:>12}",
        "allocator", "case", "instructions", "ratio", "L1d misses", "mispredicts"
    );
    for case in CASES {
        let mut raw = 0.0;
        for (name, _) in ALLOCATORS {
            let counts: Result<Vec<[u64; 3]>, String> = OPS
                .iter()
                .map(|&n| cachegrind::count(&exe, &[name, &case.to_string(), &n.to_string()]))
                .collect();
            let counts = counts.unwrap_or_else(|e| panic!("{name} case {case}: {e}"));
            let per_op = |i: usize| (counts[1][i] - counts[0][i]) as f64 / (OPS[1] - OPS[0]) as f64;
            if RAW.contains(&name) {
                raw = per_op(0);
            }
            let label = match case {
                CHURN => "churn".to_string(),
                size => format!("{size} B"),
            };
            println!(
                "{name:<20} {label:>6} {:>13.1} {:>6.2}x {:>10.2} {:>12.2}",
                per_op(0),
                per_op(0) / raw,
                per_op(1),
                per_op(2)
            );
        }
    }
}
