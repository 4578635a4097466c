//! jemalloc's levers at work: resident memory after a large free, after `compact()`, under the
//! soft-limit responder (the `GOMEMLIMIT` of Rust) and under the GC percent (its `GOGC`), read
//! from `/proc/self/statm`.
//!
//! `cargo run --release --example compaction`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

const MIB: u64 = 1 << 20;

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// 256 MiB in blocks of 4 KiB to 1 MiB, every page touched.
fn allocate_256_mib() -> Vec<Vec<u8>> {
    let (mut x, mut total, mut blocks) = (0x2545_f491_4f6c_dd1d_u64, 0, Vec::new());
    while total < 256 * MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 4096 << (x % 9);
        blocks.push(vec![0xA5u8; size as usize]);
        total += size;
    }
    blocks
}

/// Six threads, each in an arena of its own, take turns allocating and freeing 150 MiB batches
/// (twice each); returns the peak resident memory, sampled every 5 ms.
fn batches() -> u64 {
    let (done, peak, turn, finished) = (
        AtomicBool::new(false),
        AtomicU64::new(0),
        Mutex::new(()),
        Barrier::new(6),
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Relaxed) {
                peak.fetch_max(rss(), Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let workers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    // SAFETY: `arenas.create` returns an unsigned; `thread.arena` takes one.
                    unsafe {
                        let arena = memgov::jemalloc::raw::read::<u32>("arenas.create").unwrap();
                        memgov::jemalloc::raw::write::<u32>("thread.arena", arena).unwrap();
                    }
                    for _ in 0..2 {
                        let _turn = turn.lock().unwrap();
                        let batch: Vec<Vec<u8>> =
                            (0..2400).map(|_| vec![0x5Au8; 64 * 1024]).collect();
                        std::thread::sleep(Duration::from_millis(20));
                        drop(batch);
                        std::thread::sleep(Duration::from_millis(60));
                    }
                    finished.wait();
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Relaxed);
    });
    peak.load(Relaxed)
}

fn main() {
    let decay = memgov::jemalloc::decay().unwrap();
    println!(
        "jemalloc decay: {} ms dirty, {} ms muzzy",
        decay.dirty_ms, decay.muzzy_ms
    );

    println!("\n1. Free 256 MiB, then compact()");
    memgov::jemalloc::compact().unwrap();
    let base = rss();
    let blocks = allocate_256_mib();
    println!("   resident with 256 MiB live:   {:>5} MiB", rss() / MIB);
    drop(blocks);
    let stats = memgov::jemalloc::stats().unwrap();
    println!(
        "   resident after the free:      {:>5} MiB ({} MiB dirty in jemalloc)",
        rss() / MIB,
        stats.dirty / MIB
    );
    let report = memgov::jemalloc::compact().unwrap();
    println!(
        "   resident after compact():     {:>5} MiB (gave back {} MiB in {:.1} ms)",
        rss() / MIB,
        report.reclaimed() / MIB,
        report.took.as_secs_f64() * 1e3
    );

    println!(
        "\n   64 MiB of 64-byte blocks (tags in memgov's shadow tables), freed and compacted:"
    );
    let small: Vec<Box<[u8; 64]>> = (0..1 << 20).map(|_| Box::new([1u8; 64])).collect();
    let tables = |when: &str| {
        let bytes = memgov::shadow_resident_bytes().unwrap_or(0);
        println!("   tag tables {when:<19} {:>5} KiB", bytes / 1024);
    };
    tables("with them live:");
    drop(small);
    memgov::jemalloc::compact().unwrap();
    tables("after compact():");

    println!(
        "\n2. Six threads, 150 MiB batches in arenas of their own, jemalloc told never to purge"
    );
    let soft = base + 300 * MIB;
    memgov::jemalloc::set_decay(memgov::jemalloc::Decay {
        dirty_ms: -1,
        muzzy_ms: -1,
    })
    .unwrap();
    let without = batches();
    println!(
        "   without the responder: peak {:>5} MiB resident (soft limit {} MiB)",
        without / MIB,
        soft / MIB
    );
    memgov::jemalloc::compact().unwrap();
    memgov::set_process_limits(memgov::Limits::soft(soft)).unwrap(); // starts the responder
    let with = batches();
    let r = memgov::jemalloc::responder_stats();
    println!(
        "   with the responder:    peak {:>5} MiB resident (soft limit {} MiB): {} purges ({} MiB), {} decay changes, {} rate-limited",
        with / MIB,
        soft / MIB,
        r.purges,
        r.purged_bytes / MIB,
        r.decay_changes,
        r.purges_rate_limited
    );

    println!(
        "\n3. The same batches beside 200 MiB of live data, jemalloc still told never to purge, no soft limit"
    );
    memgov::set_process_limits(memgov::Limits::NONE).unwrap();
    memgov::jemalloc::stop_responder();
    memgov::jemalloc::compact().unwrap();
    let live: Vec<Vec<u8>> = (0..3200).map(|_| vec![0x3Cu8; 64 * 1024]).collect();
    let without = batches();
    println!(
        "   without a GC percent:  peak {:>5} MiB resident",
        without / MIB
    );
    memgov::jemalloc::compact().unwrap();
    memgov::jemalloc::set_gc_percent(Some(100));
    let with = batches();
    let g = memgov::jemalloc::gc_percent_stats();
    println!(
        "   GC percent 100:        peak {:>5} MiB resident: {} purges ({} MiB) in {} samples",
        with / MIB,
        g.purges,
        g.purged_bytes / MIB,
        g.samples
    );
    memgov::jemalloc::set_gc_percent(None);
    drop(live);
}
