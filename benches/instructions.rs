//! Instructions per alloc+free pair, counted by `valgrind --tool=callgrind`: a figure that does not
//! move with the machine's load, for comparing versions of the allocation path.
//!
//! `cargo bench --bench instructions` runs this binary once per case under callgrind, with two
//! iteration counts, and reports the difference divided by the difference in pairs (so start-up
//! and set-up cancel out). Without valgrind it says so and exits successfully.
//!
//! Sizes are ones with slack in their jemalloc class (24, 100 and 5000 bytes), so the governor
//! keeps its tag in a trailer: under valgrind the shadow tables' address-space reservation fails,
//! and exact-class sizes would take the fallback path, which is not what runs outside valgrind.

use memgov::{Governor, Jemalloc};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::Command;

static RAW_JEMALLOC: Jemalloc = Jemalloc;
static GOV_JEMALLOC: Governor<Jemalloc> = Governor::with_inner(Jemalloc);
static RAW_SYSTEM: System = System;
static GOV_SYSTEM: Governor<System> = Governor::with_inner(System);

type Alloc = &'static (dyn GlobalAlloc + Sync);

const ALLOCATORS: [(&str, Alloc); 4] = [
    ("jemalloc", &RAW_JEMALLOC),
    ("governor-jemalloc", &GOV_JEMALLOC),
    ("system", &RAW_SYSTEM),
    ("governor-system", &GOV_SYSTEM),
];

const SIZES: [usize; 3] = [24, 100, 5000];
const PAIRS: [u64; 2] = [200_000, 400_000];

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

/// Instructions callgrind counted for one run of this binary in `loop` mode.
fn count(exe: &str, name: &str, size: usize, pairs: u64) -> Result<u64, String> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null", exe])
        .args(["loop", name, &size.to_string(), &pairs.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("valgrind failed ({}): {stderr}", out.status));
    }
    // "==123== I   refs:      88,450,572"
    stderr
        .lines()
        .find_map(|l| l.split_once("refs:"))
        .map(|(_, n)| n.trim().replace(',', ""))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no instruction count in valgrind's output: {stderr}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("loop") {
        let (name, size, pairs) = (&args[2], args[3].parse().unwrap(), args[4].parse().unwrap());
        let (_, a) = ALLOCATORS
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("unknown allocator {name:?}"));
        pair_loop(*a, size, pairs);
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("instructions: valgrind is not installed; nothing measured");
        return;
    }
    let exe = args[0].clone();
    println!("instructions per alloc+free pair (callgrind; ratio over the raw allocator)");
    println!(
        "{:<20} {:>8} {:>14} {:>8}",
        "allocator", "size", "instructions", "ratio"
    );
    for size in SIZES {
        let mut raw = 0.0;
        for (name, _) in ALLOCATORS {
            let counts: Result<Vec<u64>, String> =
                PAIRS.iter().map(|&n| count(&exe, name, size, n)).collect();
            let counts = counts.unwrap_or_else(|e| panic!("{name} {size} B: {e}"));
            let per_pair = (counts[1] - counts[0]) as f64 / (PAIRS[1] - PAIRS[0]) as f64;
            if !name.starts_with("governor") {
                raw = per_pair;
            }
            println!(
                "{name:<20} {size:>8} {per_pair:>14.1} {:>7.2}x",
                per_pair / raw
            );
        }
    }
}
