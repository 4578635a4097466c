//! The shadow tag tables give their pages back when jemalloc gives back the memory they describe:
//! freed exact-class blocks leave no resident table pages behind after `compact()`, the tags of
//! blocks still live survive every release, and purges racing with allocation keep every count
//! exact. Arenas jemalloc makes for new threads are wrapped too.
#![cfg(feature = "jemalloc")]

use serial_test::serial;
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

const MIB: u64 = 1 << 20;

#[path = "support/rss.rs"]
mod resident;
use resident::rss;

/// 64 bytes is exactly a jemalloc class, so its tags live in the 16-byte-granule table: one
/// 2-byte entry per 16 bytes of address, 1/8 of the blocks' memory.
const EXACT: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

/// `n` blocks of [`EXACT`] allocated in `component`, their addresses in a vector allocated
/// outside it.
fn allocate(component: &'static str, n: usize) -> Vec<usize> {
    let mut blocks = Vec::with_capacity(n);
    let _scope = memgov::component_scope(component);
    for _ in 0..n {
        // SAFETY: a non-zero size.
        let p = unsafe { GLOBAL.alloc(EXACT) };
        assert!(!p.is_null());
        blocks.push(p as usize);
    }
    blocks
}

fn free(blocks: impl IntoIterator<Item = usize>) {
    for p in blocks {
        // SAFETY: every address came from `allocate` with EXACT and is freed once.
        unsafe { GLOBAL.dealloc(p as *mut u8, EXACT) };
    }
}

/// Whether the health report says the shadow tables mostly describe freed memory.
fn recommends_compacting_the_tables(report: &memgov::stats::HealthReport) -> bool {
    report
        .recommendations
        .iter()
        .any(|r| r.contains("shadow tag tables hold"))
}

/// Makes the shadow tables, wraps the arenas that exist, and sets jemalloc's decay to `dirty_ms`
/// (no muzzy stage) until dropped, when the decay found is restored.
struct DecayFor(memgov::jemalloc::Decay);

impl DecayFor {
    fn ms(dirty_ms: isize) -> DecayFor {
        free(allocate("shadow-decay-setup", 1));
        memgov::jemalloc::hook_arenas().unwrap();
        let found = memgov::jemalloc::decay().unwrap();
        memgov::jemalloc::set_decay(memgov::jemalloc::Decay {
            dirty_ms,
            muzzy_ms: 0,
        })
        .unwrap();
        DecayFor(found)
    }
}

impl Drop for DecayFor {
    fn drop(&mut self) {
        memgov::jemalloc::set_decay(self.0).unwrap();
    }
}

fn live(component: &str) -> u64 {
    memgov::component_stats(component).map_or(0, |s| s.live_bytes)
}

#[test]
#[serial]
fn freed_exact_class_blocks_leave_no_table_pages_resident() {
    // 256 MiB of 64-byte blocks: 32 MiB of table entries. The blocks themselves are never
    // touched (jemalloc writes nothing into small blocks), so what becomes resident is mostly the
    // table and the address vector.
    let n = (256 * MIB / 64) as usize;
    // No decay: jemalloc purges only when told to (`compact()` below). With its default 10 s
    // decay it purges part of the freed slabs while this thread is still freeing them (the more,
    // the slower the freeing, as on a loaded machine), in ranges of its choosing: the tables
    // would then shrink below what the health report calls "mostly freed memory" before it is
    // asked, and a table page that straddles two separately purged ranges stays resident.
    let _decay = DecayFor::ms(-1);
    memgov::jemalloc::compact().unwrap();
    let base = rss();
    // Table pages that earlier tests in this process left (pages at the edges of ranges purged
    // piecemeal stay resident until their range is used and purged again): not this test's.
    let tables_before = memgov::shadow_resident_bytes().unwrap_or(0);
    let released_before = memgov::global_stats().shadow_released_bytes;
    let blocks = allocate("shadow-freed", n);
    if memgov::global_stats().shadow_reserved_bytes == 0 {
        free(blocks);
        eprintln!("no shadow tables on this machine (reservation refused): nothing to check");
        return;
    }
    let full = rss();
    assert!(
        full >= base + 32 * MIB,
        "the table entries should be resident: {base} -> {full}"
    );
    let tables_full = memgov::shadow_resident_bytes().expect("the tables' mapping in smaps");
    assert!(tables_full >= 32 * MIB, "tables hold {tables_full} bytes");
    free(blocks);
    assert_eq!(live("shadow-freed"), 0);
    // Freed, not yet purged: the tables describe mostly freed memory, and the health report
    // says so.
    let report = memgov::stats::health();
    assert!(recommends_compacting_the_tables(&report), "{report}");
    memgov::jemalloc::compact().unwrap();
    let tables_after = memgov::shadow_resident_bytes().unwrap();
    assert!(
        tables_after < tables_before + 4 * MIB,
        "tables hold {tables_after} bytes after compact (from {tables_full}; {tables_before} before \
         the blocks were allocated)"
    );
    let report = memgov::stats::health();
    assert!(!recommends_compacting_the_tables(&report), "{report}");
    let after = rss();
    let released = memgov::global_stats().shadow_released_bytes - released_before;
    // Without the release the table's 32 MiB stayed resident here, on top of what jemalloc keeps
    // (its metadata for 65 536 slabs, about 9 MiB in a debug build).
    assert!(
        after < base + 20 * MIB,
        "resident {} MiB before, {} MiB full, {} MiB after compact ({} MiB of table released)",
        base / MIB,
        full / MIB,
        after / MIB,
        released / MIB
    );
    assert!(released >= 28 * MIB, "released {released}");
    assert!(memgov::jemalloc::extent_hook_stats().arenas_hooked >= 1);
}

#[test]
#[serial]
fn live_blocks_keep_their_tags_through_releases() {
    let corrupt = memgov::global_stats().corrupt_tags;
    // One block in 4096 stays live (one per 256 KiB of blocks): most slabs empty out and are
    // purged, and every table page that still describes a live block must be kept.
    let n = 1 << 22;
    let blocks = allocate("shadow-sparse", n);
    let kept: Vec<usize> = blocks.iter().copied().step_by(4096).collect();
    free(
        blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4096 != 0)
            .map(|(_, &p)| p),
    );
    let released_before = memgov::global_stats().shadow_released_bytes;
    memgov::jemalloc::compact().unwrap();
    let released = memgov::global_stats().shadow_released_bytes - released_before;
    assert_eq!(live("shadow-sparse"), kept.len() as u64 * 64);

    // New blocks land on released table pages: their tags are written anew.
    let again = allocate("shadow-again", 1 << 20);
    assert_eq!(live("shadow-again"), (1 << 20) * 64);
    free(again);
    free(kept);

    // Every free found its owner: a zeroed tag would have credited component 0 ("unscoped")
    // instead, leaving these above zero.
    assert_eq!(live("shadow-sparse"), 0);
    assert_eq!(live("shadow-again"), 0);
    assert_eq!(memgov::global_stats().corrupt_tags, corrupt);
    if memgov::global_stats().shadow_reserved_bytes > 0 {
        assert!(released > 0, "some table pages went back");
    }
}

#[test]
#[serial]
fn purges_racing_with_allocation_keep_counts_exact() {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let component = ["shadow-race-0", "shadow-race-1"][t];
                    let mut rounds = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 20 {
                        let blocks = allocate(component, 1 << 16);
                        free(blocks);
                        rounds += 1;
                    }
                    memgov::flush_thread();
                    rounds
                })
            })
            .collect();
        for _ in 0..100 {
            memgov::jemalloc::compact().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            assert!(w.join().unwrap() >= 20);
        }
    });
    assert_eq!(live("shadow-race-0"), 0);
    assert_eq!(live("shadow-race-1"), 0);
    let s = memgov::component_stats("shadow-race-0").unwrap();
    assert_eq!(s.alloc_count, s.free_count);
}

#[test]
#[serial]
fn arenas_of_new_threads_are_wrapped_off_the_allocation_path() {
    // Make sure the tables exist, then give a few new threads a chance to get arenas of their own.
    free(allocate("shadow-threads", 1));
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| free(allocate("shadow-threads", 1000))))
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let initialized = (0..memgov::jemalloc::arena_count().unwrap())
        .filter(|&i| memgov::jemalloc::arena_initialized(i).unwrap_or(false))
        .count() as u32;
    // A snapshot (like the monitor and every purge) looks for new arenas, at most once a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let _ = memgov::snapshot();
    let stats = memgov::jemalloc::extent_hook_stats();
    if memgov::global_stats().shadow_reserved_bytes > 0 {
        assert!(
            stats.arenas_hooked >= initialized,
            "{initialized} arenas initialised, {stats:?}"
        );
        assert_eq!(stats.failures, 0);
    }
}

#[test]
#[serial]
fn purges_inside_frees_reach_the_listener_and_stay_exact() {
    // Make the tables and wrap the arenas that exist, then purge on every free (decay 0): the
    // listener now runs inside jemalloc's free, under the governor's dealloc, while blocks are
    // handed out and freed around it.
    let decay = DecayFor::ms(0);
    let heard_before = memgov::jemalloc::extent_hook_stats().ranges_released;
    for _ in 0..4 {
        let blocks = allocate("shadow-decay", 1 << 18);
        let again = allocate("shadow-decay-2", 1 << 16);
        free(blocks);
        free(again);
    }
    let heard = memgov::jemalloc::extent_hook_stats().ranges_released - heard_before;
    drop(decay);
    assert_eq!(live("shadow-decay"), 0);
    assert_eq!(live("shadow-decay-2"), 0);
    // Each emptied slab is purged as soon as it is free. (Such purges are mostly a page or a few:
    // too small to free a table page, which describes 32 KiB of 64-byte blocks, so how much of
    // the table goes back here depends on how jemalloc coalesces; `compact()` is what gives it
    // all back, as the first test checks.)
    assert!(heard > 0, "no purge reached the listener");
}

#[test]
#[serial]
fn the_tables_take_no_huge_pages_and_stay_out_of_core_dumps() {
    free(allocate("shadow-thp", 1));
    if memgov::global_stats().shadow_reserved_bytes == 0 {
        return;
    }

    // The reservation is the one mapping of its size: find its flags in smaps. "dd" is
    // MADV_DONTDUMP (no 17 TiB walk in a core dump), "nh" MADV_NOHUGEPAGE; either also keeps the
    // kernel from merging it with jemalloc's mappings, so that it is found at all.
    let reserved = memgov::global_stats().shadow_reserved_bytes / 1024;
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut size_matches = false;
    let mut flags = None;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Size:") {
            let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().unwrap();
            size_matches = kib == reserved;
        } else if let Some(f) = line.strip_prefix("VmFlags:") {
            if size_matches {
                flags = Some(f.split_whitespace().map(str::to_string).collect::<Vec<_>>());
            }
        }
    }
    let flags = flags.expect("the shadow reservation in /proc/self/smaps");
    assert!(flags.iter().any(|f| f == "dd"), "{flags:?}");
    // A kernel built without transparent huge pages refuses that advice, and has none to avoid.
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        assert!(flags.iter().any(|f| f == "nh"), "{flags:?}");
    }
}

#[test]
#[serial]
fn purges_by_jemallocs_background_threads_reach_the_tables() {
    // The tables exist and the arenas are wrapped; then jemalloc's own threads purge what decays
    // (over 1 s) while this thread only waits.
    let decay = DecayFor::ms(1000);
    let background = memgov::jemalloc::background_threads().unwrap();
    memgov::jemalloc::set_background_threads(true).unwrap();
    free(allocate("shadow-background", 1 << 21));
    memgov::jemalloc::flush_thread_cache().unwrap();
    // From here on this thread neither allocates nor frees: what is heard, they purged.
    let heard_before = memgov::jemalloc::extent_hook_stats().ranges_released;
    let start = std::time::Instant::now();
    let heard = loop {
        let heard = memgov::jemalloc::extent_hook_stats().ranges_released - heard_before;
        if heard > 0 || start.elapsed() > std::time::Duration::from_secs(10) {
            break heard;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    memgov::jemalloc::set_background_threads(background).unwrap();
    drop(decay);
    assert_eq!(live("shadow-background"), 0);
    assert!(
        heard > 0,
        "no background purge reached the listener in 10 s"
    );
}

#[test]
#[serial]
fn wrapping_arenas_allocates_nothing() {
    // A new thread takes an arena of its own if one is left, for the sweep to wrap.
    free(allocate("shadow-sweep", 1));
    std::thread::spawn(|| free(allocate("shadow-sweep", 100)))
        .join()
        .unwrap();
    let wrapped = {
        let _scope = memgov::component_scope("shadow-sweep-itself");
        memgov::jemalloc::hook_arenas().unwrap()
    };
    // The sweep reaches jemalloc's controls by MIB: no name to format, nothing allocated (so the
    // figures can look for new arenas even at a hard limit).
    let s = memgov::component_stats("shadow-sweep-itself").unwrap();
    assert_eq!(s.alloc_count, 0, "{s:?} (wrapped {wrapped} arenas)");
}
