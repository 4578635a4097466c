//! The soft-limit responder keeps resident memory within 100 MiB of a 300 MiB soft limit while six
//! threads take turns allocating, touching and freeing 150 MiB batches (live bytes never above
//! 150 MiB, freed pages left dirty in six arenas of their own); with the responder off, resident
//! memory goes well past the limit. Both start with jemalloc told never to purge on its own
//! (decay -1). Each scenario runs in its own child process; resident memory is sampled from
//! `/proc/self/statm` every 5 ms.

#[cfg(feature = "jemalloc")]
#[path = "support/cases.rs"]
mod cases;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

#[cfg(feature = "jemalloc")]
mod scenario {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::{Barrier, Mutex};
    use std::time::Duration;

    pub const MIB: u64 = 1 << 20;
    pub const SOFT: u64 = 300 * MIB;
    /// What the responder may overshoot the limit by: what can be allocated between two of its
    /// 50 ms samples plus a purge's duration (measured here: 25 to 65 MiB over, in 9 runs).
    pub const MARGIN: u64 = 100 * MIB;
    /// How far past the limit resident memory must go without the responder to count as "well
    /// past" (measured here: about 1.5 GiB past, every run).
    pub const WELL_PAST: u64 = 300 * MIB;
    pub const CASE_VAR: &str = "JEMALLOC_RESPONDER_CASE";
    const WORKERS: usize = 6;

    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
    }

    /// Runs the workload in this process and prints `peak=<bytes> base=<bytes>`.
    pub fn child(responder: bool) {
        // The worst case of jemalloc's decay: freed pages are never given back on their own. (With
        // the default 10 s decay, jemalloc hands back a varying part of a large burst of frees at
        // once, which makes "how far past the limit" a matter of luck; -1 makes it certain.) The
        // responder starts from this setting and restores it when pressure falls.
        memgov::jemalloc::set_decay(memgov::jemalloc::Decay {
            dirty_ms: -1,
            muzzy_ms: -1,
        })
        .unwrap();
        memgov::jemalloc::compact().unwrap();
        let base = rss();
        memgov::set_process_limits(memgov::Limits::soft(base + SOFT)).unwrap();
        if !responder {
            memgov::jemalloc::stop_responder();
        }
        let done = AtomicBool::new(false);
        let peak = AtomicU64::new(0);
        let turn = Mutex::new(());
        // Workers stay alive until every one has finished: a thread that exits can take its
        // arena's dirty pages with it, which would hide what the responder is for.
        let finished = Barrier::new(WORKERS);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut n = 0u64;
                while !done.load(Relaxed) {
                    n += 1;
                    if std::env::var_os("PROBE").is_some() && n % 10 == 0 {
                        let js = memgov::jemalloc::stats().unwrap();
                        eprintln!(
                            "rss {} dirty {} muzzy {} active {} retained {} mapped {}",
                            rss() / MIB,
                            js.dirty / MIB,
                            js.muzzy / MIB,
                            js.active / MIB,
                            js.retained / MIB,
                            js.mapped / MIB
                        );
                    }
                    peak.fetch_max(rss(), Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let (turn, finished) = (&turn, &finished);
            let workers: Vec<_> = (0..WORKERS as u32)
                .map(|k| {
                    s.spawn(move || {
                        // Each worker in a new arena of its own, so what one frees stays dirty
                        // there instead of serving the next worker's batch.
                        // SAFETY: `arenas.create` returns an unsigned arena index and
                        // `thread.arena` takes one.
                        unsafe {
                            let arena = alloc_jemalloc::raw::read::<u32>("arenas.create").unwrap();
                            alloc_jemalloc::raw::write::<u32>("thread.arena", arena).unwrap();
                        }
                        let _ = k;
                        for _ in 0..2 {
                            let _turn = turn.lock().unwrap();
                            let batch: Vec<Vec<u8>> = (0..150 * 16)
                                .map(|_| vec![0x5A; (MIB / 16) as usize])
                                .collect();
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
            std::thread::sleep(Duration::from_millis(200));
            done.store(true, Relaxed);
        });
        let stats = memgov::jemalloc::responder_stats();
        println!(
            "peak={} base={} purges={} decay_changes={}",
            peak.load(Relaxed),
            base,
            stats.purges,
            stats.decay_changes
        );
    }

    pub fn run(case: &str) -> Result<(u64, u64, String), String> {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env(CASE_VAR, case)
            .env_remove("MEMGOV_DECAY")
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "child {case} failed: {:?}\n{text}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let field = |k: &str| -> Result<u64, String> {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {k} in {text:?}"))
        };
        Ok((field("peak=")?, field("base=")?, text.trim().to_string()))
    }
}

#[cfg(feature = "jemalloc")]
fn responder_keeps_resident_memory_near_the_soft_limit() -> Result<(), String> {
    use scenario::*;
    let (peak, base, line) = run("on")?;
    let over = peak.saturating_sub(base);
    println!(
        "  responder on: {line}; peak {} MiB over the start, limit {} MiB",
        over / MIB,
        SOFT / MIB
    );
    if over > SOFT + MARGIN {
        return Err(format!(
            "peak {} MiB above the start passed the {} MiB limit + {} MiB margin",
            over / MIB,
            SOFT / MIB,
            MARGIN / MIB
        ));
    }
    Ok(())
}

#[cfg(feature = "jemalloc")]
fn without_the_responder_resident_memory_goes_well_past() -> Result<(), String> {
    use scenario::*;
    let (peak, base, line) = run("off")?;
    let over = peak.saturating_sub(base);
    println!(
        "  responder off: {line}; peak {} MiB over the start",
        over / MIB
    );
    if over < SOFT + WELL_PAST {
        return Err(format!(
            "without the responder the peak was only {} MiB",
            over / MIB
        ));
    }
    Ok(())
}

#[cfg(feature = "jemalloc")]
const CASES: [cases::Case; 2] = [
    (
        "responder_keeps_resident_memory_near_the_soft_limit",
        responder_keeps_resident_memory_near_the_soft_limit,
        None,
    ),
    (
        "without_the_responder_resident_memory_goes_well_past",
        without_the_responder_resident_memory_goes_well_past,
        None,
    ),
];

fn main() {
    #[cfg(feature = "jemalloc")]
    {
        if let Ok(case) = std::env::var(scenario::CASE_VAR) {
            scenario::child(case == "on");
            return;
        }
        cases::run("jemalloc_responder", &CASES);
    }
    #[cfg(not(feature = "jemalloc"))]
    println!("jemalloc_responder: 0 passed, 0 failed, 2 ignored (built without jemalloc)");
}
