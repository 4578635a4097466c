//! Time of ordinary Rust workloads (maps, `Vec` growth, text processing, a document tree; see
//! `support/workloads.rs`; the maps have 200 000 entries here) over
//! raw jemalloc and over `Governor<Jemalloc>`, in the same run, reported as ratios: what the
//! governor costs a program that does work between its allocations, where `alloc_pair` measures
//! a loop that does nothing else.
//!
//! `cargo bench --bench workloads` (a plain runner: a program has one global allocator for life,
//! so each measurement is a child process, and criterion cannot drive those). Each child runs
//! its workload once to warm up, then [`REPS`] times, and prints the fastest; the parent runs
//! the modes in turn, [`ROUNDS`] times over, and keeps each mode's fastest. Modes: raw jemalloc;
//! the governor with the workload inside one component scope; the same with a process hard and
//! soft limit and a budget on that component (none of them reached). With `-- --threads 2` (the
//! default runs 1 and 2) the workload runs on that many threads at once, each on its own data,
//! and the time is the wall time for all of them.

#[path = "support/switch.rs"]
mod switch;
#[path = "support/workloads.rs"]
mod workloads;

use memgov::Limits;
use std::process::Command;
use std::time::{Duration, Instant};
use switch::{Switch, GOVERNED_MODE, MODE_VAR, RAW_MODE};

#[global_allocator]
static GLOBAL: Switch = Switch;

const CHILD_VAR: &str = "WORKLOAD_CHILD";
const THREADS_VAR: &str = "WORKLOAD_THREADS";
const LIMITS_VAR: &str = "WORKLOAD_LIMITS";
const REPS: usize = 5;
const ROUNDS: usize = 3;
const GIB: u64 = 1 << 30;

/// A workload: builds, uses and drops its data, and returns a figure computed from it.
type Work = fn() -> usize;

const WORKLOADS: [(&str, Work); 4] = [
    ("maps", workloads::small_maps),
    ("vec-growth", workloads::vec_growth),
    ("text", workloads::text),
    ("tree", workloads::tree),
];

/// One timed run of `work` on `threads` threads at once: the wall time, and the work's figure.
fn timed(work: Work, threads: usize) -> (Duration, usize) {
    let start = Instant::now();
    let figure = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let _scope = switch::governed().then(|| memgov::component_scope("workload"));
                    work()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("workload thread"))
            .sum()
    });
    (start.elapsed(), figure)
}

/// The child: runs the workload named in the environment and prints the fastest time in
/// nanoseconds and the work's figure.
fn child(name: &str) {
    let work = WORKLOADS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, w)| w)
        .expect("a known workload");
    let threads: usize = std::env::var(THREADS_VAR)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    if std::env::var_os(LIMITS_VAR).is_some() {
        memgov::set_process_limits(Limits::hard(64 * GIB).with_soft(48 * GIB)).expect("limits");
        memgov::set_budget("workload", Limits::hard(32 * GIB).with_soft(24 * GIB)).expect("budget");
    }
    let (_, figure) = timed(work, threads);
    let best = (0..REPS)
        .map(|_| timed(work, threads).0)
        .min()
        .expect("REPS > 0");
    println!("{} {figure}", best.as_nanos());
}

/// A mode the parent measures: its name in the table, and the child's environment.
struct Mode {
    name: &'static str,
    allocator: &'static str,
    limits: bool,
}

const MODES: [Mode; 3] = [
    Mode {
        name: "raw jemalloc",
        allocator: RAW_MODE,
        limits: false,
    },
    Mode {
        name: "governor",
        allocator: GOVERNED_MODE,
        limits: false,
    },
    Mode {
        name: "governor, limits",
        allocator: GOVERNED_MODE,
        limits: true,
    },
];

/// The fastest time a child reports for `workload` on `threads` threads in `mode`, and the
/// work's figure.
fn run(workload: &str, threads: usize, mode: &Mode) -> (Duration, usize) {
    let mut cmd = Command::new(std::env::current_exe().expect("this binary"));
    cmd.env(CHILD_VAR, workload)
        .env(THREADS_VAR, threads.to_string())
        .env(MODE_VAR, mode.allocator);
    if mode.limits {
        cmd.env(LIMITS_VAR, "1");
    } else {
        cmd.env_remove(LIMITS_VAR);
    }
    let out = cmd.output().expect("spawn child");
    assert!(
        out.status.success(),
        "the {workload} child ({}) failed: {}",
        mode.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>());
    match (fields.next(), fields.next()) {
        (Some(Ok(ns)), Some(Ok(figure))) => (Duration::from_nanos(ns), figure as usize),
        _ => panic!("unexpected child output {text:?}"),
    }
}

fn main() {
    if let Ok(name) = std::env::var(CHILD_VAR) {
        return child(&name);
    }
    let args: Vec<String> = std::env::args().collect();
    let thread_counts: Vec<usize> = match args.iter().position(|a| a == "--threads") {
        Some(i) => vec![args
            .get(i + 1)
            .and_then(|t| t.parse().ok())
            .expect("--threads N")],
        None => vec![1, 2],
    };
    print!("{:<12} {:>7}", "workload", "threads");
    for mode in &MODES {
        print!(" {:>18}", mode.name);
    }
    println!();
    for &threads in &thread_counts {
        for (workload, _) in WORKLOADS {
            let mut best = [Duration::MAX; MODES.len()];
            let mut figures = [0usize; MODES.len()];
            for _ in 0..ROUNDS {
                for (i, mode) in MODES.iter().enumerate() {
                    let (t, figure) = run(workload, threads, mode);
                    best[i] = best[i].min(t);
                    figures[i] = figure;
                }
            }
            assert!(
                figures.iter().all(|&f| f == figures[0]),
                "{workload}: the modes computed different figures {figures:?}"
            );
            print!("{workload:<12} {threads:>7}");
            for t in best {
                let ratio = t.as_secs_f64() / best[0].as_secs_f64();
                print!(" {:>9.1} ms {ratio:>4.2}x", t.as_secs_f64() * 1e3);
            }
            println!();
        }
    }
}
