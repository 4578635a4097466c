//! Thread churn: 10,000 short-lived threads (run four at a time) each enter a scope, allocate and
//! free, and leave one block behind for the main thread to free. Afterwards the component is back
//! to its baseline with exact counts, the per-thread counter blocks were recycled rather than made
//! anew, and a second round of 10,000 threads grows neither the blocks nor the process's memory.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use serial_test::serial;
use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::thread;

const THREADS: usize = 10_000;
const WAVE: usize = 4;
const NAME: &str = "churn";
/// Blocks each thread allocates and frees itself.
const OWN_BLOCKS: usize = 8;
const LEFT_SIZE: usize = 100;

struct Left(*mut u8);
// SAFETY: a uniquely owned heap block; any thread may free it.
unsafe impl Send for Left {}

fn left_layout() -> Layout {
    Layout::from_size_align(LEFT_SIZE, 8).unwrap()
}

fn short_thread(i: usize) -> Left {
    let _scope = memgov::component_scope(NAME);
    for k in 0..OWN_BLOCKS {
        let layout = Layout::from_size_align(1 + (i + k) % 300, 16).unwrap();
        // SAFETY: non-zero size; freed right away with the same layout.
        unsafe {
            // black_box: in release builds LLVM may elide an allocation nobody observes.
            let p = black_box(alloc(layout));
            assert!(!p.is_null());
            dealloc(p, layout);
        }
    }
    // SAFETY: non-zero size.
    let p = unsafe { alloc(left_layout()) };
    assert!(!p.is_null());
    Left(p)
}

/// Runs `THREADS` short threads, `WAVE` at a time, and frees what they left behind.
fn round() {
    let mut i = 0;
    while i < THREADS {
        let wave: Vec<_> = (i..i + WAVE)
            .map(|n| thread::spawn(move || short_thread(n)))
            .collect();
        for h in wave {
            let Left(p) = h.join().unwrap();
            // SAFETY: allocated by `short_thread` with this layout.
            unsafe { dealloc(p, left_layout()) };
        }
        i += WAVE;
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn check_back_to_baseline(rounds: u64) {
    let s = memgov::component_stats(NAME).unwrap();
    let per_round = (THREADS * (OWN_BLOCKS + 1)) as u64;
    assert_eq!(s.live_bytes, 0, "{s:?}");
    assert_eq!(s.live_inner_bytes, 0, "{s:?}");
    assert_eq!(
        (s.alloc_count, s.free_count),
        (rounds * per_round, rounds * per_round),
        "{s:?}"
    );
    assert_eq!(s.realloc_count, 0, "{s:?}");
}

#[test]
#[serial]
fn ten_thousand_short_threads_recycle_their_counters() {
    memgov::component(NAME);

    round();
    check_back_to_baseline(1);
    let g = memgov::global_stats();
    // Blocks are made in chunks (a 64 KiB mapping at a time) and recycled at thread exit.
    assert!(
        g.thread_blocks <= 256,
        "blocks were made, not recycled: {g:?}"
    );
    assert!(g.threads <= 16, "exited threads still hold blocks: {g:?}");

    let rss_before = rss_kib();
    round();
    let rss_after = rss_kib();
    check_back_to_baseline(2);
    let g2 = memgov::global_stats();
    // At most a few more (threads outside the test, such as the harness's, claim blocks lazily),
    // never one per thread.
    assert!(
        g2.thread_blocks <= g.thread_blocks + WAVE,
        "a second round made new blocks: {} after the first, {g2:?}",
        g.thread_blocks
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over 10,000 threads"
    );
    println!(
        "thread blocks: {} made, {} in use; RSS {rss_before} -> {rss_after} KiB",
        g2.thread_blocks, g2.threads
    );
}
