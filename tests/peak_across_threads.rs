//! A component's peak when its blocks live on several threads: each thread's pending batch is
//! flushed once its live bytes move by `FLUSH_BYTES` (1 MiB), so what one thread holds unflushed
//! can put another thread's peak off by less than 1.25 MiB (`FLUSH_BYTES + MAX_CREDIT`), however
//! big its blocks are, instead of by whatever it allocated or freed in its last 1023 operations.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use std::hint::black_box;

const MIB: u64 = 1 << 20;
/// How far a quiet thread's pending batch may put another thread's peak off.
const BOUND: u64 = MIB + MIB / 4;
const BIG: usize = 64 << 20;

/// Allocates `BIG` bytes in `component` on a new thread and frees them there.
fn big_block_on_another_thread(component: &'static str) {
    std::thread::spawn(move || {
        let _scope = memgov::component_scope(component);
        drop(black_box(vec![0u8; BIG]));
    })
    .join()
    .unwrap();
}

/// 100 blocks of 100 KiB in `component`: 10 MiB in 100 operations, far fewer than a flush by
/// count needs.
fn hundred_blocks_of_100_kib(component: &'static str) -> Vec<Vec<u8>> {
    let _scope = memgov::component_scope(component);
    (0..100).map(|_| black_box(vec![0u8; 100 << 10])).collect()
}

#[test]
fn a_large_block_kept_by_a_quiet_thread_counts_in_another_threads_peak() {
    const C: &str = "peak-kept-large";
    let kept = {
        let _scope = memgov::component_scope(C);
        black_box(vec![0u8; MIB as usize])
    };
    big_block_on_another_thread(C);
    let peak = memgov::component_stats(C).unwrap().peak_live_bytes;
    // Before batches were flushed by bytes, this thread's 1 MiB stayed pending and the peak read
    // 64 MiB.
    assert!(peak >= BIG as u64 + MIB, "peak {peak}");
    drop(kept);
}

#[test]
fn many_blocks_kept_by_a_quiet_thread_put_another_threads_peak_off_by_less_than_the_bound() {
    const C: &str = "peak-kept-many";
    let kept = hundred_blocks_of_100_kib(C);
    let held = 100 * (100 << 10) as u64;
    big_block_on_another_thread(C);
    let peak = memgov::component_stats(C).unwrap().peak_live_bytes;
    assert!(
        peak + BOUND >= BIG as u64 + held,
        "peak {peak}, truth at least {}",
        BIG as u64 + held
    );
    drop(kept);
}

#[test]
fn blocks_freed_by_a_quiet_thread_put_another_threads_peak_off_by_less_than_the_bound() {
    const C: &str = "peak-freed-many";
    let blocks = hundred_blocks_of_100_kib(C);
    memgov::flush_thread();
    drop(blocks);
    // About 10 MiB was ever live before; then the other thread's block alone. Before batches
    // were flushed by bytes, the frees above stayed pending and the peak read 74 MiB: the other
    // thread's block counted on top of blocks already freed.
    big_block_on_another_thread(C);
    let peak = memgov::component_stats(C).unwrap().peak_live_bytes;
    assert!(peak >= BIG as u64, "peak {peak}");
    assert!(peak < BIG as u64 + BOUND, "peak {peak}");
}
