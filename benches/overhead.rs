//! Memory overhead of the governor: peak resident bytes of the same workloads over raw jemalloc
//! and over `Governor<Jemalloc>`, each in a fresh process, reported as a ratio; and what stays
//! resident once a workload's memory is freed and `compact()` has run (what memgov's shadow tag
//! tables keep, if anything, shows there).
//!
//! `cargo bench --bench overhead` (a plain runner: criterion measures time, not memory).

#[path = "support/switch.rs"]
mod switch;
#[path = "support/workloads.rs"]
mod workloads;

use switch::{Switch, GOVERNED_MODE, MODE_VAR, RAW_MODE};
use workloads::{exact_classes, maps, vec_growth};

#[global_allocator]
static GLOBAL: Switch = Switch;

/// A `/proc/self/status` figure in KiB (`VmHWM:` the peak, `VmRSS:` now).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `workload` and prints its result, the peak resident KiB, and the resident KiB after a
/// `compact()` (everything the workload made is freed by then).
fn child(workload: &str) {
    let n = match workload {
        "maps" => maps(),
        "vec-growth" => vec_growth(),
        _ => exact_classes(),
    };
    let peak = status_kib("VmHWM:");
    memgov::jemalloc::compact().expect("compact");
    println!("{n} {peak} {}", status_kib("VmRSS:"));
}

/// The figures a child prints for `workload` under `mode`: (peak KiB, resident KiB after the
/// compaction).
fn run(workload: &str, mode: &str) -> (u64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("OVERHEAD_CHILD", workload)
        .env(MODE_VAR, mode)
        .output()
        .expect("spawn child");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |i: usize| -> u64 {
        text.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .expect("child output")
    };
    (field(1), field(2))
}

fn main() {
    if let Ok(workload) = std::env::var("OVERHEAD_CHILD") {
        return child(&workload);
    }
    println!(
        "{:<14} {:>10} {:>10} {:>7}   {:>16} {:>16}",
        "workload", "peak raw", "governed", "ratio", "after raw (KiB)", "after governed"
    );
    for workload in ["maps", "vec-growth", "exact-classes"] {
        let (raw, raw_after) = run(workload, RAW_MODE);
        let (gov, gov_after) = run(workload, GOVERNED_MODE);
        println!(
            "{workload:<14} {raw:>10} {gov:>10} {:>7.3}   {raw_after:>16} {gov_after:>16}",
            gov as f64 / raw as f64
        );
    }
}
