//! The GC percent (`GOGC` for jemalloc): freed pages that jemalloc keeps past the bound are
//! purged by the monitor's task, and nothing is purged within it or while it is off.
//!
//! Blocks of 64 KiB: above jemalloc's thread cache (32 KiB), so a freed block goes back to its
//! arena as dirty pages at once, and below its oversize threshold (8 MiB), whose arena would
//! purge them itself.

#![cfg(feature = "jemalloc")]

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::jemalloc::{gc_percent_bound, gc_percent_stats, set_gc_percent, stats};
use serial_test::serial;
use std::hint::black_box;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const BLOCK: usize = 64 << 10;

/// `mib` MiB in 64 KiB blocks, every page written.
fn blocks(mib: usize) -> Vec<Vec<u8>> {
    (0..mib * MIB / BLOCK)
        .map(|_| black_box(vec![1u8; BLOCK]))
        .collect()
}

fn kept() -> u64 {
    let s = stats().unwrap();
    s.dirty + s.muzzy
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}: {:?}",
            gc_percent_stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[serial]
fn freed_pages_past_the_bound_are_purged() {
    let live = blocks(8);
    drop(blocks(96));
    let before = kept();
    assert!(
        before > 32 * MIB as u64,
        "jemalloc kept only {before} bytes"
    );
    let purges = gc_percent_stats().purges;
    set_gc_percent(Some(100));
    wait_for("a purge", || gc_percent_stats().purges > purges);
    let s = stats().unwrap();
    let after = s.dirty + s.muzzy;
    assert!(
        after <= gc_percent_bound(s.allocated, 100),
        "{after} bytes still kept for {} live",
        s.allocated
    );
    let g = gc_percent_stats();
    assert_eq!(g.percent, Some(100));
    assert!(g.purged_bytes >= 16 * MIB as u64, "{g:?}");
    assert!(
        g.last_kept_bytes > gc_percent_bound(g.last_live_bytes, 100),
        "{g:?}"
    );
    set_gc_percent(None);
    drop(live);
}

#[test]
#[serial]
fn nothing_is_purged_within_the_bound_or_while_off() {
    let live = blocks(8);
    set_gc_percent(Some(1000)); // ten times the live heap: about 80 MiB may be kept
    let purges = gc_percent_stats().purges;
    drop(blocks(32));
    let samples = gc_percent_stats().samples;
    wait_for("three samples", || {
        gc_percent_stats().samples >= samples + 3
    });
    assert_eq!(gc_percent_stats().purges, purges, "purged within the bound");
    assert!(
        kept() >= 24 * MIB as u64,
        "jemalloc kept only {} bytes",
        kept()
    );
    // Off: no sample, whatever is kept.
    assert_eq!(set_gc_percent(None), Some(1000));
    drop(blocks(96));
    let samples = gc_percent_stats().samples;
    std::thread::sleep(Duration::from_millis(350));
    let g = gc_percent_stats();
    assert!(g.samples <= samples + 1, "sampled while off: {g:?}"); // one may have begun before
    assert_eq!(g.purges, purges);
    drop(live);
}

#[test]
#[serial]
fn the_percent_tightens_under_pressure() {
    let live = blocks(8);
    // A process soft limit just under what is charged now: Critical. The responder that such a
    // limit starts is stopped, so that every purge here is the GC percent's.
    memgov::flush_thread();
    let charged = memgov::budget_stats(memgov::Scope::Process).charged_bytes;
    memgov::set_process_limits(memgov::Limits::soft(charged * 9 / 10)).unwrap();
    memgov::jemalloc::stop_responder();
    wait_for("Critical", || memgov::pressure() == memgov::Level::Critical);
    // A thousand percent would let about 80 MiB be kept; at Critical it works to 250%, 20 MiB.
    // What earlier tests left is given back first: only the 48 MiB below are kept.
    memgov::jemalloc::compact().unwrap();
    let purges = gc_percent_stats().purges;
    set_gc_percent(Some(1000));
    drop(blocks(48));
    wait_for("a purge", || gc_percent_stats().purges > purges);
    assert_eq!(gc_percent_stats().last_effective_percent, Some(250));
    set_gc_percent(None);
    memgov::set_process_limits(memgov::Limits::NONE).unwrap();
    memgov::jemalloc::stop_responder();
    drop(live);
}
