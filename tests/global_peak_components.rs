//! The process-wide peak of a single thread is exact (the crate docs' promise), also when its
//! live bytes are spread over several components: two 64 MiB blocks live at once in two
//! components make a process peak of at least 128 MiB, though no reader looked while they were.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use std::hint::black_box;

const BIG: usize = 64 << 20;

#[test]
fn the_global_peak_counts_blocks_live_at_once_in_two_components() {
    // The harness's thread may have begun its batch by freeing blocks the main thread allocated
    // and has not flushed, which would count this batch from below zero (README, "Peaks"): start
    // a batch of this thread's own.
    memgov::flush_thread();
    let a = {
        let _scope = memgov::component_scope("peak-a");
        black_box(vec![0u8; BIG])
    };
    let b = {
        let _scope = memgov::component_scope("peak-b");
        black_box(vec![0u8; BIG])
    };
    drop(a);
    drop(b);
    let g = memgov::global_stats();
    assert!(
        g.peak_live_bytes >= 2 * BIG as u64,
        "global peak {} < {} live at once",
        g.peak_live_bytes,
        2 * BIG
    );
    let snap = memgov::snapshot();
    assert!(snap.global.peak_live_bytes >= 2 * BIG as u64);
    // Still so once the batches are folded into the shared counters.
    memgov::flush_thread();
    assert!(memgov::global_stats().peak_live_bytes >= 2 * BIG as u64);
}
