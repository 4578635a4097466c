//! The governor against its raw inner allocator, in one run: alloc+free pairs of fixed sizes and
//! random-size churn over a live set, on 1 and 2 threads, over jemalloc and the system allocator.
//!
//! `cargo bench --bench alloc_pair`; `benches/README.md` has the figures and the ratios.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use memgov::{Governor, Jemalloc};
use std::alloc::{Layout, System};
use std::time::Duration;

static RAW_JEMALLOC: Jemalloc = Jemalloc;
static GOV_JEMALLOC: Governor<Jemalloc> = Governor::with_inner(Jemalloc);
static RAW_SYSTEM: System = System;
static GOV_SYSTEM: Governor<System> = Governor::with_inner(System);

#[path = "support/churn.rs"]
mod churn;
use churn::{churn_threads, Alloc};
#[path = "support/references.rs"]
mod references;
use references::{
    FORWARD_JEMALLOC, GLOBAL_COUNTER_JEMALLOC, SHADOW_TAG_JEMALLOC, THREAD_COUNTER_JEMALLOC,
    TRAILER_TAG_JEMALLOC,
};

fn allocators() -> [(&'static str, Alloc); 9] {
    [
        ("jemalloc", &RAW_JEMALLOC),
        ("governor-jemalloc", &GOV_JEMALLOC),
        ("system", &RAW_SYSTEM),
        ("governor-system", &GOV_SYSTEM),
        ("reference-forward-jemalloc", &FORWARD_JEMALLOC),
        (
            "reference-thread-counter-jemalloc",
            &THREAD_COUNTER_JEMALLOC,
        ),
        ("reference-trailer-tag-jemalloc", &TRAILER_TAG_JEMALLOC),
        ("reference-shadow-tag-jemalloc", &SHADOW_TAG_JEMALLOC),
        (
            "reference-global-counter-jemalloc",
            &GLOBAL_COUNTER_JEMALLOC,
        ),
    ]
}

fn pair(a: Alloc, layout: Layout) {
    // SAFETY: non-zero size; the block is freed with the layout it was allocated with.
    unsafe {
        let p = a.alloc(layout);
        black_box(p);
        a.dealloc(p, layout);
    }
}

fn pairs(c: &mut Criterion) {
    for size in [16usize, 64, 4096] {
        let mut g = c.benchmark_group(format!("pair-{size}B"));
        let layout = Layout::from_size_align(size, 8).unwrap();
        for (name, a) in allocators() {
            g.bench_function(name, |b| b.iter(|| pair(a, layout)));
        }
        g.finish();
    }
}

fn churns(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("churn-{threads}t"));
        for (name, a) in allocators() {
            g.bench_with_input(
                BenchmarkId::from_parameter(name),
                &threads,
                |b, &threads| b.iter_custom(|iters| churn_threads(a, iters, threads, None)),
            );
        }
        g.finish();
    }
}

/// The same cases with a process hard limit and a component budget set (far above what the bench
/// uses, so nothing is refused), inside that component's scope: what the budget checks cost.
fn limited(c: &mut Criterion) {
    memgov::set_process_limits(memgov::Limits::hard(64 << 30).with_soft(48 << 30)).unwrap();
    memgov::set_budget("bench", memgov::Limits::hard(32 << 30).with_soft(24 << 30)).unwrap();
    let budgeted: [(&str, Alloc); 2] = [
        ("jemalloc", &RAW_JEMALLOC),
        ("governor-jemalloc-limited", &GOV_JEMALLOC),
    ];
    for size in [16usize, 4096] {
        let mut g = c.benchmark_group(format!("limited-pair-{size}B"));
        let layout = Layout::from_size_align(size, 8).unwrap();
        for (name, a) in budgeted {
            g.bench_function(name, |b| {
                let _scope = memgov::component_scope("bench");
                b.iter(|| pair(a, layout))
            });
        }
        g.finish();
    }
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("limited-churn-{threads}t"));
        for (name, a) in budgeted {
            g.bench_with_input(
                BenchmarkId::from_parameter(name),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| churn_threads(a, iters, threads, Some("bench")))
                },
            );
        }
        g.finish();
    }
    // The groups after this one measure without limits: clear them, and stop the responder that
    // the soft limit started (it samples jemalloc's statistics every 50 ms).
    memgov::set_budget("bench", memgov::Limits::NONE).unwrap();
    memgov::set_process_limits(memgov::Limits::NONE).unwrap();
    memgov::jemalloc::stop_responder();
}

/// The pair and the churn with allocation-size histograms recording.
fn histograms(c: &mut Criterion) {
    memgov::set_histograms(true);
    let cases: [(&str, Alloc); 2] = [
        ("jemalloc", &RAW_JEMALLOC),
        ("governor-jemalloc-histograms", &GOV_JEMALLOC),
    ];
    let mut g = c.benchmark_group("histograms-pair-16B");
    let layout = Layout::from_size_align(16, 8).unwrap();
    for (name, a) in cases {
        g.bench_function(name, |b| b.iter(|| pair(a, layout)));
    }
    g.finish();
    let mut g = c.benchmark_group("histograms-churn-2t");
    for (name, a) in cases {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| churn_threads(a, iters, 2, None))
        });
    }
    g.finish();
    memgov::set_histograms(false);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = pairs, churns, limited, histograms
}
criterion_main!(benches);
