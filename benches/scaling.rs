//! How the governor scales with threads: random-size churn (each thread frees its own blocks) and
//! handoff (each thread frees blocks another thread allocated), raw jemalloc against
//! `Governor<Jemalloc>`, without and with a process limit and a component budget, and against
//! `alloc_pair`'s reference wrappers (a bare forward, a thread-local counter, a trailer tag, a
//! shadow-table tag, one shared atomic counter), in one run.
//!
//! `BENCH_THREADS=1,2,4,8,16 cargo bench --bench scaling`; the thread counts default to `1,2`
//! (this project's development machine has two cores). `benches/README.md` has the figures.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use memgov::{Governor, Jemalloc};
use std::time::Duration;

#[path = "support/churn.rs"]
mod churn;
#[path = "support/handoff.rs"]
mod handoff;
use churn::{churn_threads, Alloc};
use handoff::handoff_threads;
#[path = "support/references.rs"]
mod references;
use references::{
    FORWARD_JEMALLOC, GLOBAL_COUNTER_JEMALLOC, SHADOW_TAG_JEMALLOC, THREAD_COUNTER_JEMALLOC,
    TRAILER_TAG_JEMALLOC,
};

static RAW_JEMALLOC: Jemalloc = Jemalloc;
static GOV_JEMALLOC: Governor<Jemalloc> = Governor::with_inner(Jemalloc);

/// The variable that lists the thread counts.
const THREADS_VAR: &str = "BENCH_THREADS";

/// The thread counts from `BENCH_THREADS` (comma-separated, each at least 1), or 1 and 2.
fn thread_counts() -> Vec<usize> {
    let Ok(value) = std::env::var(THREADS_VAR) else {
        return vec![1, 2];
    };
    value
        .split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => panic!(
                "{THREADS_VAR}={value:?}: expected a comma-separated list of thread counts, \
                 each a whole number of at least 1 (e.g. 1,2,4,8,16); {s:?} is not one"
            ),
        })
        .collect()
}

/// A process hard limit and a component budget far above what the bench uses, as in
/// `alloc_pair`'s `limited-*` groups, or none.
fn set_limits(on: bool) {
    let (process, budget) = if on {
        (
            memgov::Limits::hard(64 << 30).with_soft(48 << 30),
            memgov::Limits::hard(32 << 30).with_soft(24 << 30),
        )
    } else {
        (memgov::Limits::NONE, memgov::Limits::NONE)
    };
    memgov::set_process_limits(process).unwrap();
    memgov::set_budget("bench", budget).unwrap();
    if !on {
        // The soft limit started the responder (it samples jemalloc every 50 ms): stop it too.
        memgov::jemalloc::stop_responder();
    }
}

type Workload = fn(Alloc, u64, usize, Option<&'static str>) -> Duration;

fn scaling(c: &mut Criterion) {
    let workloads: [(&str, Workload); 2] = [("churn", churn_threads), ("handoff", handoff_threads)];
    for (workload, run) in workloads {
        for threads in thread_counts() {
            let mut g = c.benchmark_group(format!("scaling-{workload}-{threads}t"));
            let cases: [(&str, Alloc, bool); 8] = [
                ("jemalloc", &RAW_JEMALLOC, false),
                ("governor-jemalloc", &GOV_JEMALLOC, false),
                ("governor-jemalloc-limited", &GOV_JEMALLOC, true),
                ("reference-forward-jemalloc", &FORWARD_JEMALLOC, false),
                (
                    "reference-thread-counter-jemalloc",
                    &THREAD_COUNTER_JEMALLOC,
                    false,
                ),
                (
                    "reference-trailer-tag-jemalloc",
                    &TRAILER_TAG_JEMALLOC,
                    false,
                ),
                ("reference-shadow-tag-jemalloc", &SHADOW_TAG_JEMALLOC, false),
                (
                    "reference-global-counter-jemalloc",
                    &GLOBAL_COUNTER_JEMALLOC,
                    false,
                ),
            ];
            for (name, a, limited) in cases {
                let component = limited.then_some("bench");
                set_limits(limited);
                g.bench_with_input(BenchmarkId::from_parameter(name), &threads, |b, &t| {
                    b.iter_custom(|iters| run(a, iters, t, component))
                });
                set_limits(false);
            }
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = scaling
}
criterion_main!(benches);
