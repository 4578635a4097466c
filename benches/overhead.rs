//! Memory overhead of the governor: peak resident bytes of the same workloads over raw jemalloc
//! and over `Governor<Jemalloc>`, each in a fresh process, reported as a ratio; and what stays
//! resident once a workload's memory is freed and `compact()` has run (what memgov's shadow tag
//! tables keep, if anything, shows there).
//!
//! `cargo bench --bench overhead` (a plain runner: criterion measures time, not memory).

use memgov::{Governor, Jemalloc};
use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};

/// Raw jemalloc or the governor over it, chosen once from `OVERHEAD_MODE` before the first
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
    let v = unsafe { libc::getenv(c"OVERHEAD_MODE".as_ptr()) };
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

/// A `/proc/self/status` figure in KiB (`VmHWM:` the peak, `VmRSS:` now).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 64 MiB of 64-byte blocks (exactly a class, so their tags live in the shadow table) and
/// 64 MiB of 4 KiB blocks (the same, in the coarser table), each block written once, all
/// freed before returning.
fn exact_classes() -> usize {
    let mut small: Vec<Box<[u8; 64]>> = (0..1 << 20).map(|_| Box::new([1u8; 64])).collect();
    let mut pages: Vec<Box<[u8; 4096]>> = (0..1 << 14).map(|_| Box::new([1u8; 4096])).collect();
    small.truncate(0);
    pages.truncate(0);
    small.capacity() + pages.capacity()
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

/// Runs `workload` and prints its result, the peak resident KiB, and the resident KiB after a
/// `compact()` (everything the workload made is freed by then).
fn child(workload: &str) {
    let n = match workload {
        "maps" => maps(),
        "vec-growth" => vec_growth(),
        _ => exact_classes(),
    };
    let peak = status_kib("VmHWM:");
    memgov::jemalloc::compact().expect("compact");
    println!("{n} {peak} {}", status_kib("VmRSS:"));
}

/// The figures a child prints for `workload` under `mode`: (peak KiB, resident KiB after the
/// compaction).
fn run(workload: &str, mode: &str) -> (u64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("OVERHEAD_CHILD", workload)
        .env("OVERHEAD_MODE", mode)
        .output()
        .expect("spawn child");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |i: usize| -> u64 {
        text.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .expect("child output")
    };
    (field(1), field(2))
}

fn main() {
    if let Ok(workload) = std::env::var("OVERHEAD_CHILD") {
        return child(&workload);
    }
    println!(
        "{:<14} {:>10} {:>10} {:>7}   {:>16} {:>16}",
        "workload", "peak raw", "governed", "ratio", "after raw (KiB)", "after governed"
    );
    for workload in ["maps", "vec-growth", "exact-classes"] {
        let (raw, raw_after) = run(workload, "raw");
        let (gov, gov_after) = run(workload, "governed");
        println!(
            "{workload:<14} {raw:>10} {gov:>10} {:>7.3}   {raw_after:>16} {gov_after:>16}",
            gov as f64 / raw as f64
        );
    }
}
