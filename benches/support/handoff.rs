//! Handoff: every block is freed by a thread other than the one that allocated it.

use super::churn::{churn_sizes, Alloc, LIVE_SET};
use std::alloc::Layout;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// `iters` operations on each of `threads` threads, each inside `component` if given, where every
/// block is freed by a thread other than the one that allocated it (with one thread, by itself
/// a round later): in each round every thread allocates `LIVE_SET` blocks, waits for the others,
/// then frees the blocks its neighbour allocated. What a service does when one thread builds a
/// response and another drops it. Returns the slowest thread's time, scaled to `iters`.
pub fn handoff_threads(
    a: Alloc,
    iters: u64,
    threads: usize,
    component: Option<&'static str>,
) -> Duration {
    let rounds = (iters as usize).div_ceil(LIVE_SET).max(1);
    let sizes: Vec<Vec<usize>> = (0..threads)
        .map(|t| churn_sizes(0x51_7CC1_B727 + t as u64, LIVE_SET))
        .collect();
    let slots: Vec<Vec<AtomicPtr<u8>>> = (0..threads)
        .map(|_| {
            (0..LIVE_SET)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect()
        })
        .collect();
    let barrier = Barrier::new(threads);
    let took = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (sizes, slots, barrier) = (&sizes, &slots, &barrier);
                s.spawn(move || {
                    let _scope = component.map(memgov::component_scope);
                    let neighbour = (t + 1) % threads;
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..rounds {
                        for (slot, &size) in slots[t].iter().zip(&sizes[t]) {
                            let l = Layout::from_size_align(size, 8).unwrap();
                            // SAFETY: non-zero size.
                            slot.store(unsafe { a.alloc(l) }, Ordering::Relaxed);
                        }
                        // The barrier orders the neighbour's stores before these loads.
                        barrier.wait();
                        for (slot, &size) in slots[neighbour].iter().zip(&sizes[neighbour]) {
                            let l = Layout::from_size_align(size, 8).unwrap();
                            let p = slot.load(Ordering::Relaxed);
                            // SAFETY: the neighbour allocated `p` with this layout in this round,
                            // and only this thread frees it.
                            unsafe { a.dealloc(p, l) };
                        }
                        barrier.wait();
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    });
    took.mul_f64(iters as f64 / (rounds * LIVE_SET) as f64)
}
