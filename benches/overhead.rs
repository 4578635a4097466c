//! Memory overhead of the governor: peak resident bytes of the same workloads over raw jemalloc
//! and over `Governor<Jemalloc>`, each in a fresh process, reported as a ratio.
//!
//! `cargo bench --bench overhead` (a plain runner: criterion measures time, not memory).

use memgov::{Governor, Jemalloc};
use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};

/// Raw jemalloc or the governor over it, chosen once from `MEMGOV_OVERHEAD_MODE` before the first
/// allocation (read with libc::getenv, which does not allocate).
struct Switch;

static MODE: AtomicU8 = AtomicU8::new(0);
static GOVERNOR: Governor<Jemalloc> = Governor::with_inner(Jemalloc);
const RAW: u8 = 1;
const GOVERNED: u8 = 2;

fn mode() -> u8 {
    let m = MODE.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    // SAFETY: the name is a NUL-terminated literal; getenv returns null or a C string.
    let v = unsafe { libc::getenv(c"MEMGOV_OVERHEAD_MODE".as_ptr()) };
    // SAFETY: a non-null result of getenv points at a NUL-terminated string.
    let governed = !v.is_null() && unsafe { *v } == b'g' as libc::c_char;
    let m = if governed { GOVERNED } else { RAW };
    MODE.store(m, Ordering::Relaxed);
    m
}

// SAFETY: forwards to one of two allocators, the same one for the life of the process.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if mode() == GOVERNED {
                GOVERNOR.alloc(l)
            } else {
                Jemalloc.alloc(l)
            }
        }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if mode() == GOVERNED {
                GOVERNOR.alloc_zeroed(l)
            } else {
                Jemalloc.alloc_zeroed(l)
            }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract; the mode never changes, so the block goes back where it came from.
        unsafe {
            if mode() == GOVERNED {
                GOVERNOR.dealloc(p, l)
            } else {
                Jemalloc.dealloc(p, l)
            }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if mode() == GOVERNED {
                GOVERNOR.realloc(p, l, n)
            } else {
                Jemalloc.realloc(p, l, n)
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A HashMap of strings and a BTreeMap of byte vectors, built and partly churned.
fn maps() -> usize {
    let mut seed = 0x1234_5678_9abc_def0;
    let mut h: HashMap<u64, String> = HashMap::new();
    let mut b: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for i in 0..600_000u64 {
        let r = xorshift(&mut seed);
        h.insert(r, format!("value-{i}-{}", r % 1000));
        b.insert(r ^ i, vec![0u8; 16 + (r % 240) as usize]);
        if i % 3 == 0 {
            let k = xorshift(&mut seed);
            h.remove(&k);
        }
    }
    h.len() + b.len()
}

/// Vectors grown by push: every capacity is a power of two, exactly a size class.
fn vec_growth() -> usize {
    let mut seed = 42;
    let vs: Vec<Vec<u64>> = (0..20_000)
        .map(|_| {
            let n = 1 + xorshift(&mut seed) % 2000;
            let mut v = Vec::new();
            for i in 0..n {
                v.push(i);
            }
            v
        })
        .collect();
    vs.iter().map(Vec::len).sum()
}

fn child(workload: &str) {
    let n = match workload {
        "maps" => maps(),
        _ => vec_growth(),
    };
    println!("{n} {}", peak_rss_kib());
}

fn run(workload: &str, mode: &str) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MEMGOV_OVERHEAD_CHILD", workload)
        .env("MEMGOV_OVERHEAD_MODE", mode)
        .output()
        .expect("spawn child");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("child output")
}

fn main() {
    if let Ok(workload) = std::env::var("MEMGOV_OVERHEAD_CHILD") {
        return child(&workload);
    }
    println!(
        "{:<12} {:>14} {:>14} {:>8}",
        "workload", "raw KiB", "governed KiB", "ratio"
    );
    for workload in ["maps", "vec-growth"] {
        let raw = run(workload, "raw");
        let gov = run(workload, "governed");
        println!(
            "{workload:<12} {raw:>14} {gov:>14} {:>8.3}",
            gov as f64 / raw as f64
        );
    }
}
