//! Resident memory and compaction, read from `/proc/self/statm`: 256 MiB in mixed 4 KiB..1 MiB
//! blocks, touched and freed, stays resident under jemalloc's default decay; `compact()` gives it
//! back (below 10% of what was kept), and its report agrees with the kernel's figures.
#![cfg(feature = "jemalloc")]

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

const MIB: u64 = 1 << 20;

#[path = "support/rss.rs"]
mod resident;
use resident::rss;

#[test]
fn freed_memory_stays_resident_until_compacted() {
    let decay = memgov::jemalloc::decay().unwrap();
    assert!(
        decay.dirty_ms >= 1000,
        "this test needs jemalloc's default decay, found {decay:?}"
    );
    memgov::jemalloc::compact().unwrap();
    let base = rss();

    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    while total < 256 * MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 4096 << (x % 9); // 4 KiB .. 1 MiB
        blocks.push(vec![0xA5; size as usize]); // vec! of a non-zero byte touches every page
        total += size;
    }
    let full = rss();
    assert!(
        full - base >= 240 * MIB,
        "touching 256 MiB raised RSS by only {} MiB",
        (full - base) / MIB
    );
    drop(blocks);
    let freed = rss();
    let kept = freed.saturating_sub(base);
    // jemalloc keeps freed pages dirty for its decay time (10 s by default). It does hand part of
    // a large burst of frees back at once (measured here: about half of the 256 MiB), so "stays
    // high" is checked as: at least 96 MiB resident, and at least that much dirty.
    let dirty = memgov::jemalloc::stats().unwrap().dirty;
    assert!(
        kept >= 96 * MIB,
        "with the default decay freed memory stays resident; kept {} MiB",
        kept / MIB
    );
    assert!(
        dirty >= 96 * MIB,
        "jemalloc holds only {} MiB dirty",
        dirty / MIB
    );

    let report = memgov::jemalloc::compact().unwrap();
    let compacted = rss();
    let left = compacted.saturating_sub(base);
    assert!(
        left < kept / 10,
        "compact() left {} MiB of {} MiB",
        left / MIB,
        kept / MIB
    );

    // jemalloc's resident figure moved by what the kernel saw, within 8 MiB (the kernel also
    // counts this thread's stack, libtest's threads and page-table noise).
    let by_kernel = freed.saturating_sub(compacted);
    let by_report = report.reclaimed();
    assert!(
        by_kernel.abs_diff(by_report) <= 8 * MIB,
        "kernel {by_kernel} vs report {by_report}"
    );
    println!(
        "kept {} MiB after free ({} MiB dirty), {} MiB after compact(); reclaimed {} MiB in {:?}",
        kept / MIB,
        dirty / MIB,
        left / MIB,
        by_report / MIB,
        report.took
    );
}
