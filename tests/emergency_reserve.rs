//! The emergency reserve: a slice of the process's hard limit kept for the threads that react to
//! pressure, so that they can allocate while the rest of the program holds everything else. Before
//! it existed, the monitor's own bookkeeping (and the HTTP endpoint serving a request) aborted the
//! process at the limit, although every other allocation there was a graceful `try_reserve`.
//!
//! Each scenario fills the process to its hard limit with `try_reserve` and then checks what
//! still works; assertions wait until the memory is let go (at the limit a panic could not even
//! format its message). `harness = false`: the scenarios run one after another on the main thread,
//! since any other thread of a test harness (printing a result, starting the next test) would be
//! refused at the limit and abort the process.

#[path = "support/cases.rs"]
mod cases;

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{budget_stats, emergency_reserve_stats, EventKind, Level, Limits, Scope};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Resets the process limits and the reserve when dropped, so a failing test leaves neither behind.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        memgov::set_process_limits(Limits::NONE).unwrap();
        memgov::set_emergency_reserve(memgov::DEFAULT_EMERGENCY_RESERVE);
    }
}

/// Waits up to 10 s for `done`; false if it never came.
fn came(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    assert!(came(done), "timed out waiting for {what}");
}

fn held_bytes() -> u64 {
    emergency_reserve_stats().held_bytes
}

/// Sets a reserve of `reserve` bytes and a process hard limit `room` bytes above what is charged
/// now, and waits until the monitor holds the whole reserve; returns the limit.
fn limit_with_room(reserve: u64, room: u64) -> u64 {
    memgov::set_emergency_reserve(reserve);
    memgov::start_monitor();
    memgov::flush_thread();
    let hard = budget_stats(Scope::Process).charged_bytes + room;
    memgov::set_process_limits(Limits::hard(hard)).unwrap();
    wait_until("the reserve", || held_bytes() == reserve);
    hard
}

/// Takes blocks, halving the size at each refusal, until not even 16 bytes are granted: this
/// thread then holds everything the limit lets it have.
fn fill_to_the_limit() -> Vec<Vec<u8>> {
    let mut held = Vec::with_capacity(256);
    fill_more(&mut held);
    held
}

/// [`fill_to_the_limit`] into `held`, which only grows where the limit allows it.
fn fill_more(held: &mut Vec<Vec<u8>>) {
    let mut size = MIB as usize;
    while size >= 16 && held.try_reserve(1).is_ok() {
        let mut block = Vec::new();
        if block.try_reserve_exact(size).is_ok() {
            held.push(block);
        } else {
            size /= 2;
        }
    }
}

fn a_critical_callback_allocates_at_the_process_hard_limit_from_the_reserve() {
    let restore = Restore;
    let hard = limit_with_room(MIB, 16 * MIB);
    let before = emergency_reserve_stats();
    let ran = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&ran);
    // Critical comes at 95% of what the program can use, while this thread is still filling: a
    // callback that allocated then would still find room under the limit and draw nothing (the
    // monitor may run it before this thread fills the rest, as it does on a loaded machine). So
    // the callback waits (allocating nothing) until the process is at its limit.
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let at_limit = Arc::clone(&full);
    let id = memgov::on_pressure(move |event| {
        if event.scope == Scope::Process
            && event.kind == EventKind::Critical
            && came(|| at_limit.load(Relaxed))
        {
            // Infallible, and more than the monitor thread's own credit can cover: without the
            // reserve this aborts the process.
            let report = std::hint::black_box(vec![0x5Au8; 512 * KIB as usize]);
            seen.fetch_add(report.len() as u64, Relaxed);
        }
    });
    let held = fill_to_the_limit();
    full.store(true, Relaxed);
    let called = came(|| ran.load(Relaxed) > 0);
    let charged = budget_stats(Scope::Process).charged_bytes;
    drop(held);
    drop(restore);
    memgov::remove_callback(id);
    assert!(called, "the Critical callback never ran");
    let after = emergency_reserve_stats();
    assert!(after.draws > before.draws, "{after:?}");
    assert!(
        after.drawn_bytes >= before.drawn_bytes + 256 * KIB,
        "{after:?}"
    );
    assert!(charged <= hard, "charged {charged} past the limit {hard}");
}

fn what_a_callback_draws_and_frees_goes_back_into_the_reserve() {
    let restore = Restore;
    limit_with_room(MIB, 16 * MIB);
    let before = emergency_reserve_stats();
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    // As in the test above: the callback allocates only once the process is at its limit, so that
    // what it takes comes from the reserve (else the test would check nothing).
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let at_limit = Arc::clone(&full);
    let id = memgov::on_pressure(move |event| {
        if event.scope == Scope::Process
            && event.kind == EventKind::Critical
            && came(|| at_limit.load(Relaxed))
        {
            drop(std::hint::black_box(vec![0x5Au8; 512 * KIB as usize]));
            seen.fetch_add(1, Relaxed);
        }
    });
    let mut held = fill_to_the_limit();
    full.store(true, Relaxed);
    let called = came(|| calls.load(Relaxed) > 0);
    // The program takes whatever room the callback's free handed back to the process, as a
    // program at its limit does, before the monitor's next round could refill the reserve.
    fill_more(&mut held);
    let stats = emergency_reserve_stats();
    drop(held);
    drop(restore);
    memgov::remove_callback(id);
    assert!(called, "the Critical callback never ran");
    assert!(
        stats.draws > before.draws,
        "the callback drew nothing: {stats:?}"
    );
    // All of it but the credit the monitor's thread keeps (at most CREDIT_CHUNK).
    assert!(
        stats.held_bytes >= MIB - memgov::CREDIT_CHUNK as u64,
        "{stats:?}"
    );
}

fn other_threads_get_the_hard_limit_less_the_reserve() {
    let restore = Restore;
    let hard = limit_with_room(2 * MIB, 16 * MIB);
    let held = fill_to_the_limit();
    let got: u64 = held.iter().map(|b| b.capacity() as u64).sum();
    let level = memgov::pressure();
    let stats = emergency_reserve_stats();
    let charged = budget_stats(Scope::Process).charged_bytes;
    drop(held);
    memgov::flush_thread();
    let normal_again = came(|| memgov::pressure() == Level::Normal);
    let level_after = memgov::pressure();
    let held_after = held_bytes();
    drop(restore);
    // Refused to the last 16 bytes while the whole reserve was held, and never past the limit:
    // the program's use stayed within the hard limit less the reserve. (What it got can exceed the
    // room less the reserve by credit other threads hand back meanwhile, hence no upper bound.)
    assert_eq!(stats.held_bytes, 2 * MIB, "{stats:?}");
    assert!(got >= 13 * MIB, "only {got} bytes granted");
    assert!(charged <= hard, "charged {charged} past the limit {hard}");
    // Pressure measures the program's use against what it can use: Critical at the limit less
    // the reserve, back at Normal once the program lets go although the reserve is still held.
    assert_eq!(level, Level::Critical);
    assert!(normal_again, "pressure stayed at {level_after}");
    assert_eq!(held_after, 2 * MIB);
}

fn a_thread_that_uses_the_reserve_allocates_where_others_are_refused() {
    let restore = Restore;
    let at_limit = Barrier::new(2);
    let done = Barrier::new(2);
    std::thread::scope(|s| {
        let admin = s.spawn(|| {
            memgov::use_emergency_reserve();
            at_limit.wait();
            // Infallible, at the limit.
            let answer = std::hint::black_box(vec![1u8; 128 * KIB as usize]);
            let ok = answer.iter().all(|&b| b == 1);
            done.wait();
            ok
        });
        let hard = limit_with_room(MIB, 16 * MIB);
        let before = emergency_reserve_stats();
        let held = fill_to_the_limit();
        let refused_here = Vec::<u8>::new()
            .try_reserve_exact(128 * KIB as usize)
            .is_err();
        at_limit.wait();
        done.wait();
        let after = emergency_reserve_stats();
        let charged = budget_stats(Scope::Process).charged_bytes;
        drop(held);
        drop(restore);
        assert!(admin.join().unwrap());
        assert!(
            refused_here,
            "a thread without the reserve got 128 KiB at the limit"
        );
        assert!(after.draws > before.draws, "{after:?}");
        assert!(charged <= hard, "charged {charged} past the limit {hard}");
    });
}

/// Four threads that use the reserve allocate and free 16 KiB blocks over and over at the limit,
/// drawing on the reserve and handing credit back into it concurrently, while a watcher samples
/// the process's charged bytes: they never pass the limit, and once the threads are gone the
/// reserve is whole again.
fn reserve_threads_drawing_at_once_never_pass_the_limit() {
    const THREADS: usize = 4;
    let restore = Restore;
    let at_limit = Barrier::new(THREADS + 1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let max_charged = AtomicU64::new(0);
    let (hard, before, after_threads, refilled, joined) = std::thread::scope(|s| {
        let hard = limit_with_room(2 * MIB, 32 * MIB);
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let at_limit = &at_limit;
                s.spawn(move || {
                    memgov::use_emergency_reserve();
                    at_limit.wait();
                    for _ in 0..2000 {
                        // Infallible, at the limit.
                        drop(std::hint::black_box(vec![t as u8; 16 * KIB as usize]));
                    }
                })
            })
            .collect();
        let watcher = s.spawn(|| {
            while !stop.load(Relaxed) {
                let charged = budget_stats(Scope::Process).charged_bytes;
                max_charged.fetch_max(charged, Relaxed);
                std::hint::spin_loop();
            }
        });
        let before = emergency_reserve_stats();
        let held = fill_to_the_limit();
        at_limit.wait();
        let mut joined = [false; THREADS];
        for (ok, w) in joined.iter_mut().zip(workers) {
            *ok = w.join().is_ok();
        }
        stop.store(true, Relaxed);
        let _ = watcher.join();
        let after_threads = emergency_reserve_stats();
        // The threads handed their credit back into the reserve as they exited.
        let refilled = came(|| held_bytes() == 2 * MIB);
        drop(held);
        (hard, before, after_threads, refilled, joined)
    });
    drop(restore);
    assert_eq!(joined, [true; THREADS], "a worker panicked");
    let max = max_charged.load(Relaxed);
    assert!(max <= hard, "charged {max} past the limit {hard}");
    assert!(after_threads.draws > before.draws, "{after_threads:?}");
    assert!(refilled, "the reserve holds {} bytes", held_bytes());
}

/// While a reserve thread holds most of the reserve at the limit, the health report, asked for on
/// that thread (no other can allocate there), says the reserve is running low.
fn the_health_report_says_when_the_reserve_runs_low() {
    let restore = Restore;
    let at_limit = Barrier::new(2);
    let said = std::thread::scope(|s| {
        let admin = s.spawn(|| {
            memgov::use_emergency_reserve();
            at_limit.wait();
            let hog = std::hint::black_box(vec![1u8; 800 * KIB as usize]);
            let report = memgov::stats::health();
            let said = report
                .recommendations
                .iter()
                .any(|r| r.starts_with("emergency reserve at "));
            drop(report);
            drop(hog);
            said
        });
        limit_with_room(MIB, 16 * MIB);
        let held = fill_to_the_limit();
        at_limit.wait();
        let said = admin.join();
        drop(held);
        said
    });
    drop(restore);
    assert_eq!(said.ok(), Some(true), "no recommendation about the reserve");
    let calm = memgov::stats::health();
    assert!(
        !calm
            .recommendations
            .iter()
            .any(|r| r.starts_with("emergency reserve")),
        "{calm}"
    );
}

fn the_reserve_holds_at_most_an_eighth_of_a_small_hard_limit() {
    let restore = Restore;
    memgov::set_emergency_reserve(64 * MIB);
    memgov::start_monitor();
    memgov::flush_thread();
    let hard = budget_stats(Scope::Process).charged_bytes + 16 * MIB;
    memgov::set_process_limits(Limits::hard(hard)).unwrap();
    wait_until("an eighth of the limit", || held_bytes() == hard / 8);
    // Most of the limit is still the program's.
    let held = fill_to_the_limit();
    let got: u64 = held.iter().map(|b| b.capacity() as u64).sum();
    drop(held);
    drop(restore);
    assert!(got >= 16 * MIB - hard / 8 - MIB, "only {got} bytes granted");
}

fn the_reserve_follows_its_setting_and_is_held_only_under_a_hard_limit() {
    let _restore = Restore;
    memgov::start_monitor();
    memgov::set_process_limits(Limits::NONE).unwrap();
    wait_until("no reserve", || held_bytes() == 0);
    limit_with_room(512 * KIB, 64 * MIB);
    memgov::set_emergency_reserve(128 * KIB);
    wait_until("a smaller reserve", || held_bytes() == 128 * KIB);
    memgov::set_emergency_reserve(0);
    wait_until("no reserve", || held_bytes() == 0);
    memgov::set_emergency_reserve(256 * KIB);
    wait_until("the reserve again", || held_bytes() == 256 * KIB);
    memgov::set_process_limits(Limits::soft(1 << 40)).unwrap();
    wait_until("no reserve without a hard limit", || held_bytes() == 0);
}

/// The HTTP endpoint answers `/metrics` with the process at its hard limit, for 1000 components: an
/// answer larger than any credit the server's thread could hold from before the limit. The client
/// reads into a buffer made before the limit was reached, since the test thread has no reserve.
#[cfg(feature = "http")]
fn the_http_endpoint_answers_at_the_process_hard_limit() {
    use std::io::{Read, Write};
    let restore = Restore;
    let kept: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let name: &'static str = Box::leak(format!("reserve-http-{i}").into_boxed_str());
            let _scope = memgov::component_scope(name);
            vec![1u8; 64]
        })
        .collect();
    let server = memgov::stats::http::serve("127.0.0.1:0").unwrap();
    let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = vec![0u8; 16 * MIB as usize];
    let mut len = 0;
    let hard = limit_with_room(4 * MIB, 32 * MIB);
    let before = emergency_reserve_stats();
    let held = fill_to_the_limit();
    let sent = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    while let Ok(n @ 1..) = stream.read(&mut answer[len..]) {
        len += n;
    }
    let after = emergency_reserve_stats();
    let charged = budget_stats(Scope::Process).charged_bytes;
    drop(held);
    drop(restore);
    sent.unwrap();
    let answer = String::from_utf8_lossy(&answer[..len]);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("memgov_live_bytes{component=\"reserve-http-999\"} 64"),
        "{answer}"
    );
    assert!(len > 256 * 1024, "a {len}-byte answer");
    assert!(after.draws > before.draws, "{after:?}");
    assert!(charged <= hard, "charged {charged} past the limit {hard}");
    server.stop();
    drop(kept);
}

/// At the limit, on a thread without the reserve: the figures that allocate nothing can be read
/// (had one allocated, the process would have aborted here), and `try_snapshot` reports its
/// refused `Vec` instead of aborting as `snapshot` would.
fn the_figures_can_be_read_at_the_limit_without_the_reserve() {
    let restore = Restore;
    let hard = limit_with_room(MIB, 16 * MIB);
    let held = fill_to_the_limit();
    let global = memgov::global_stats();
    let unscoped = memgov::component_stats("unscoped");
    let process = budget_stats(Scope::Process);
    let refused = memgov::try_snapshot().is_err();
    drop(held);
    let after = memgov::try_snapshot();
    drop(restore);
    assert!(refused, "a snapshot's Vec was granted at the limit");
    assert!(global.live_bytes >= 14 * MIB, "{global:?}");
    assert!(unscoped.is_some_and(|u| u.live_bytes >= 14 * MIB));
    assert!(process.charged_bytes <= hard, "{process:?}");
    let after = after.expect("a snapshot once the memory is let go");
    assert!(after.component("unscoped").is_some());
}

/// What the child process of [`a_hard_limit_alone_holds_the_reserve_and_a_panic_at_it_unwinds`]
/// does: set a hard limit and nothing else (no monitor, no callback), fill the process to it,
/// then panic under `catch_unwind` with the default panic hook. Exits 0 when the panic was caught
/// with its message and the program went on.
fn child_panics_at_the_limit() -> ! {
    assert!(!memgov::monitor_stats().running, "the monitor ran already");
    memgov::flush_thread();
    let hard = budget_stats(Scope::Process).charged_bytes + 16 * MIB;
    memgov::set_process_limits(Limits::hard(hard)).unwrap();
    // The limit alone started the monitor, which holds the reserve.
    let full = emergency_reserve_stats().full_bytes;
    if !came(|| held_bytes() == full) || full == 0 {
        std::process::exit(3);
    }
    let held = fill_to_the_limit();
    let blocks = held.len();
    // Before the reserve took panicking threads, boxing this message was refused and the process
    // aborted with "memory allocation of N bytes failed", the message lost.
    let caught = std::panic::catch_unwind(move || {
        panic!("expected: a panic at the hard limit after {blocks} blocks")
    });
    let charged = budget_stats(Scope::Process).charged_bytes;
    drop(held);
    let message = caught
        .err()
        .and_then(|p| p.downcast::<String>().ok())
        .map(|m| *m);
    let expected = format!("expected: a panic at the hard limit after {blocks} blocks");
    if message.as_deref() != Some(expected.as_str()) {
        eprintln!("caught {message:?}");
        std::process::exit(4);
    }
    if charged > hard {
        eprintln!("charged {charged} past the limit {hard}");
        std::process::exit(5);
    }
    println!("draws {}", emergency_reserve_stats().draws);
    std::process::exit(0);
}

/// A process hard limit on its own starts the monitor, so the reserve is held; a panic at the
/// limit then boxes its message from the reserve and unwinds to the program's `catch_unwind`.
/// In a child process, where no monitor runs yet, with the default panic hook (and no backtrace:
/// resolving one needs more memory than a reserve holds).
fn a_hard_limit_alone_holds_the_reserve_and_a_panic_at_it_unwinds() {
    let (status, stdout, stderr) = run_child("0");
    let status = status.expect("the child hung");
    assert!(
        status.success(),
        "child {status}: stdout {stdout:?}, stderr {stderr:?}"
    );
    // The default hook printed the message, and the reserve paid for the panic.
    assert!(
        stderr.contains("expected: a panic at the hard limit after"),
        "{stderr}"
    );
    let draws: u64 = stdout
        .trim()
        .strip_prefix("draws ")
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    assert!(draws > 0, "{stdout}");
}

/// The same child with `RUST_BACKTRACE=1`: resolving the backtrace at the limit needs far more
/// than the reserve, and the refusal comes while std's panic hook holds its backtrace lock. Handed
/// a null, std's allocation-error hook waited for that lock and the process hung (about half of
/// the runs); memgov now aborts it with a line that says why.
///
/// A binary without debug information (stripped) resolves its backtrace in far less: then the
/// reserve pays for it, the backtrace is printed and the panic unwinds as in the case above.
fn a_panic_at_the_limit_that_wants_a_backtrace_aborts_instead_of_hanging() {
    let (status, stdout, stderr) = run_child("1");
    let Some(status) = status else {
        panic!("the child hung: stderr {stderr:?}");
    };
    if status.success() {
        assert!(
            stderr.contains("expected: a panic at the hard limit after")
                && stderr.contains("stack backtrace:")
                && stdout.starts_with("draws "),
            "the child neither aborted nor printed its backtrace: stdout {stdout:?}, stderr {stderr:?}"
        );
        return;
    }
    assert!(
        stderr.contains("refused memory to a panicking thread"),
        "child {status}: stderr {stderr:?}"
    );
    // The figures line names the refusal that ended the panic (the latest), not the largest
    // refusal before it (the child's own `try_reserve`s while filling).
    assert!(
        stderr.contains("refused by the process limit")
            && stderr.contains("refused while the thread was panicking"),
        "child {status}: stderr {stderr:?}"
    );
}

/// Runs [`child_panics_at_the_limit`] in a child process with `RUST_BACKTRACE` set to
/// `backtrace`; its exit status (`None` if it was still running after 60 s, then killed), stdout
/// and stderr.
fn run_child(backtrace: &str) -> (Option<std::process::ExitStatus>, String, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "panic-at-the-limit")
        .env("RUST_BACKTRACE", backtrace)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (status, stdout, stderr)
}

/// The variable that makes this binary run a child scenario instead of the cases.
const CHILD: &str = "EMERGENCY_RESERVE_CHILD";

/// Runs one scenario on this thread; its panic (printed by the default hook) fails the case.
fn in_process(scenario: fn()) -> Result<(), String> {
    std::panic::catch_unwind(scenario).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".to_string())
    })
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        [$((
            stringify!($name),
            (|| in_process($name)) as fn() -> Result<(), String>,
            None,
        )),*]
    };
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child_panics_at_the_limit();
    }
    #[cfg_attr(not(feature = "http"), allow(unused_mut))] // the http feature adds a scenario
    let mut all: Vec<cases::Case> = scenarios![
        a_hard_limit_alone_holds_the_reserve_and_a_panic_at_it_unwinds,
        a_panic_at_the_limit_that_wants_a_backtrace_aborts_instead_of_hanging,
        the_figures_can_be_read_at_the_limit_without_the_reserve,
        a_critical_callback_allocates_at_the_process_hard_limit_from_the_reserve,
        what_a_callback_draws_and_frees_goes_back_into_the_reserve,
        other_threads_get_the_hard_limit_less_the_reserve,
        a_thread_that_uses_the_reserve_allocates_where_others_are_refused,
        reserve_threads_drawing_at_once_never_pass_the_limit,
        the_health_report_says_when_the_reserve_runs_low,
        the_reserve_holds_at_most_an_eighth_of_a_small_hard_limit,
        the_reserve_follows_its_setting_and_is_held_only_under_a_hard_limit,
    ]
    .to_vec();
    #[cfg(feature = "http")]
    all.extend(scenarios![
        the_http_endpoint_answers_at_the_process_hard_limit
    ]);
    cases::run("emergency_reserve", &all);
}
