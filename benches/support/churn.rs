//! Random-size churn over a live set, shared by the criterion benches: each thread replaces
//! blocks of a fixed live set, sizes log-uniform from 8 bytes to just under 8 KiB.

use std::alloc::{GlobalAlloc, Layout};
use std::time::{Duration, Instant};

/// Blocks each churning thread keeps live.
pub const LIVE_SET: usize = 4096;

/// An allocator under test, called through `dyn` so raw and governed pay the same call.
pub type Alloc = &'static (dyn GlobalAlloc + Sync);

/// Sizes for the churn: log-uniform from 8 bytes to just under 8 KiB, from a fixed xorshift seed.
pub fn churn_sizes(seed: u64, n: usize) -> Vec<usize> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bits = 3 + (x % 10) as u32; // base 8 B .. 4 KiB; size in [base, 2 * base)
            let base = 1usize << bits;
            base + (x >> 20) as usize % base
        })
        .collect()
}

/// `ops` replacements over a live set of LIVE_SET blocks; returns the time they took.
pub fn churn(a: Alloc, ops: u64, seed: u64) -> Duration {
    let sizes = churn_sizes(seed, 1 << 14);
    let mut live: Vec<(*mut u8, Layout)> = (0..LIVE_SET)
        .map(|i| {
            let l = Layout::from_size_align(sizes[i], 8).unwrap();
            // SAFETY: non-zero size.
            (unsafe { a.alloc(l) }, l)
        })
        .collect();
    let start = Instant::now();
    for i in 0..ops as usize {
        let slot = (i * 2654435761) % LIVE_SET;
        let l = Layout::from_size_align(sizes[i & ((1 << 14) - 1)], 8).unwrap();
        // SAFETY: every live block was allocated by `a` with the layout stored beside it.
        unsafe {
            let (p, old) = live[slot];
            a.dealloc(p, old);
            live[slot] = (a.alloc(l), l);
        }
    }
    let took = start.elapsed();
    for (p, l) in live {
        // SAFETY: as above.
        unsafe { a.dealloc(p, l) };
    }
    took
}

/// `iters` churn operations on each of `threads` threads, each inside `component` if given;
/// returns the slowest thread's time.
pub fn churn_threads(
    a: Alloc,
    iters: u64,
    threads: usize,
    component: Option<&'static str>,
) -> Duration {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let _scope = component.map(memgov::component_scope);
                    churn(a, iters, 0x9E37_79B9 + t as u64)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
}
