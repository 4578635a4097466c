//! Allocation-size histograms: exact counts and percentiles within a bucket for a known
//! distribution allocated on several threads (some of which exit before the read), realloc
//! sizes in their own histogram, and nothing recorded while histograms are off.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::stats;
use serial_test::serial;
use std::hint::black_box;

fn in_scope(name: &'static str, f: impl FnOnce()) {
    let _scope = memgov::component_scope(name);
    f()
}

#[test]
#[serial]
fn percentiles_of_a_known_distribution() {
    memgov::set_histograms(true);
    // 6000 blocks: 60% of 100 B, 30% of 1000 B, 10% of 10000 B, over 3 threads that then exit.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                in_scope("hist-known", || {
                    for i in 0..2000 {
                        let size = match i % 10 {
                            0..=5 => 100,
                            6..=8 => 1000,
                            _ => 10_000,
                        };
                        // black_box: in release builds LLVM may elide an allocation nobody observes.
                        drop(black_box(Box::<[u8]>::from(vec![0u8; size])));
                    }
                })
            });
        }
    });
    let h = stats::size_histogram("hist-known").unwrap();
    assert_eq!(h.count(), 6000);
    let within = |got: u64, truth: u64| got <= truth && got * 4 >= truth * 3;
    for (p, truth) in [
        (10.0, 100),
        (50.0, 100),
        (60.0, 100),
        (75.0, 1000),
        (89.0, 1000),
        (95.0, 10_000),
        (100.0, 10_000),
    ] {
        let got = h.percentile(p);
        assert!(
            within(got, truth),
            "p{p}: {got}, expected within 25% below {truth}"
        );
    }
    assert_eq!(h.buckets()[memgov::histogram_bucket(100)], 3600);
    assert_eq!(h.buckets()[memgov::histogram_bucket(10_000)], 600);
    memgov::set_histograms(false);
}

#[test]
#[serial]
fn realloc_sizes_have_their_own_histogram() {
    memgov::set_histograms(true);
    in_scope("hist-realloc", || {
        let mut v: Vec<u8> = Vec::with_capacity(16);
        for cap in [64usize, 256, 4096] {
            v.reserve_exact(cap); // len is 0: grows to exactly `cap`
        }
        drop(v);
    });
    let allocs = stats::size_histogram("hist-realloc").unwrap();
    let reallocs = stats::realloc_histogram("hist-realloc").unwrap();
    assert_eq!(allocs.count(), 1);
    assert_eq!(allocs.percentile(100.0), 16);
    assert_eq!(reallocs.count(), 3);
    assert_eq!(reallocs.percentile(100.0), 4096);
    memgov::set_histograms(false);
}

#[test]
#[serial]
fn a_diff_carries_the_size_counts_of_what_happened_in_between() {
    memgov::set_histograms(true);
    in_scope("hist-diff", || drop(black_box(vec![0u8; 50])));
    let before = stats::snapshot();
    in_scope("hist-diff", || {
        drop(black_box(vec![0u8; 300]));
        drop(black_box(vec![0u8; 300]));
    });
    let d = before.diff();
    let c = d.component("hist-diff").unwrap();
    assert_eq!(c.size_counts.iter().sum::<u64>(), 2);
    assert_eq!(c.size_counts[memgov::histogram_bucket(300)], 2);
    memgov::set_histograms(false);
}

#[test]
#[serial]
fn a_diff_from_a_snapshot_taken_while_off_has_no_size_counts() {
    memgov::set_histograms(true);
    in_scope("hist-diff-off", || {
        for _ in 0..5 {
            drop(black_box(vec![0u8; 50]));
        }
    });
    memgov::set_histograms(false);
    let before = stats::snapshot();
    memgov::set_histograms(true);
    in_scope("hist-diff-off", || drop(black_box(vec![0u8; 300])));
    let d = before.diff();
    memgov::set_histograms(false);
    let c = d.component("hist-diff-off").unwrap();
    assert_eq!(c.allocs, 1);
    // Documented: empty unless histograms were on at both snapshots. (Filled in, it would hold
    // the 5 allocations made before the first snapshot too.)
    assert!(
        c.size_counts.is_empty(),
        "{:?}",
        c.size_counts.iter().sum::<u64>()
    );
}

#[test]
#[serial]
fn nothing_is_recorded_while_off() {
    memgov::set_histograms(false);
    in_scope("hist-off", || drop(black_box(vec![0u8; 123])));
    assert_eq!(stats::size_histogram("hist-off").unwrap().count(), 0);
    let s = memgov::component_stats("hist-off").unwrap();
    assert_eq!(s.alloc_count, 1, "the exact counts are kept regardless");
}

#[test]
#[serial]
fn a_read_never_loses_the_counts_of_a_thread_that_is_exiting() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    const THREADS: u64 = 300;
    const EACH: u64 = 50;
    memgov::set_histograms(true);
    memgov::component("hist-exit");
    let done = AtomicBool::new(false);
    let (finished, drops) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            // Counts only grow; a read below an earlier one lost an exiting thread's counts.
            let (mut last, mut drops) = (0u64, 0u64);
            while !done.load(Relaxed) {
                let n = stats::size_histogram("hist-exit").unwrap().count();
                drops += u64::from(n < last);
                last = last.max(n);
            }
            drops
        });
        for _ in 0..THREADS {
            // Not joined: the scope's end waits only for the closures, so threads are still
            // exiting (and their thread-exit hooks running) while the reader reads.
            s.spawn(|| {
                in_scope("hist-exit", || {
                    for _ in 0..EACH {
                        drop(black_box(vec![0u8; 40]));
                    }
                })
            });
        }
        while stats::size_histogram("hist-exit").unwrap().count() < THREADS * EACH {
            std::thread::yield_now();
        }
        done.store(true, Relaxed);
        (
            stats::size_histogram("hist-exit").unwrap().count(),
            reader.join().unwrap(),
        )
    });
    memgov::set_histograms(false);
    assert_eq!(finished, THREADS * EACH);
    assert_eq!(drops, 0, "reads saw the count fall");
}
