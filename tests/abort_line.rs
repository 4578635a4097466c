//! The abort line: when a hard limit refuses an infallible allocation, the process dies by
//! `SIGABRT` and memgov adds one line to stderr naming who refused, the hard limit and the size
//! requested. Each case runs in a child process (this binary re-executed with `ABORT_LINE_CASE`
//! set) so that the parent can watch it die: a component's limit, the process's limit, and a
//! program with its own `SIGABRT` handler (left alone: no memgov line). A last case checks that a
//! pressure callback for a component that is full can still allocate.
//!
//! `harness = false`: the parent checks exit signals and stderr, which libtest cannot express.

#[path = "support/cases.rs"]
mod cases;
use cases::Case;

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{budget_stats, Limits, Scope};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CASE_VAR: &str = "ABORT_LINE_CASE";
const MIB: usize = 1024 * 1024;

// ---- The children --------------------------------------------------------------------------

/// No core files from the deliberate aborts.
fn no_core_dumps() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain setrlimit call with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

/// An infallible allocation of `bytes` that a hard limit refuses: this never returns.
fn allocate_infallibly(bytes: usize) {
    let v = vec![0u8; bytes];
    std::hint::black_box(&v);
}

fn child_component() {
    memgov::set_budget("abort-child", Limits::hard(MIB as u64)).unwrap();
    let _scope = memgov::component_scope("abort-child");
    allocate_infallibly(2 * MIB);
}

/// A block of the component "abort-realloc" (at its 1 MiB limit) grown from inside another
/// component's scope: the growth stays in the block's component, which refuses it.
fn child_realloc() {
    memgov::set_budget("abort-realloc", Limits::hard(MIB as u64)).unwrap();
    let mut v: Vec<u8> = {
        let _scope = memgov::component_scope("abort-realloc");
        Vec::with_capacity(768 * 1024)
    };
    let _other = memgov::component_scope("abort-realloc-other");
    // A realloc from 768 KiB to 1.5 MiB: std reports "memory allocation of 1572864 bytes failed".
    v.reserve_exact(3 * 512 * 1024);
    std::hint::black_box(&v);
}

fn child_process() {
    let limit = budget_stats(Scope::Process).charged_bytes + 8 * MIB as u64;
    memgov::set_process_limits(Limits::hard(limit)).unwrap();
    println!("limit={limit}");
    std::io::stdout().flush().unwrap();
    allocate_infallibly(64 * MIB);
}

extern "C" fn own_handler(_signal: libc::c_int) {
    let line = b"own SIGABRT handler ran\n";
    // SAFETY: writes a static buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

fn child_own_handler() {
    // SAFETY: installs an async-signal-safe handler with a zeroed (valid) sigaction.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = own_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
    }
    // memgov installs its handler with the first limit, and must leave ours alone.
    child_component();
}

fn child_callback_in_full_component() {
    static FORMATTED: AtomicUsize = AtomicUsize::new(0);
    memgov::set_budget("abort-callback", Limits::hard(MIB as u64)).unwrap();
    memgov::on_component_pressure("abort-callback", |event| {
        // What a callback typically does first: format a log line.
        let line = format!("{event:?}");
        FORMATTED.store(line.len(), Relaxed);
    });
    // Take the whole budget: the component goes Critical and its callback runs.
    let _all = memgov::reserve("abort-callback", MIB as u64).unwrap();
    let start = Instant::now();
    while FORMATTED.load(Relaxed) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("callback formatted {} bytes", FORMATTED.load(Relaxed));
}

/// A panic inside a component at its hard limit, whose unwinding grows a buffer the component
/// owns (a guard that appends to a log as it drops): the growth is refused by the component, and
/// the panicking thread must unwind (as it does for a new block) rather than abort the process.
fn child_unwind_realloc() {
    struct AppendOnDrop<'a>(&'a mut Vec<u8>);
    impl Drop for AppendOnDrop<'_> {
        fn drop(&mut self) {
            self.0.extend_from_slice(&[7u8; 256 * 1024]);
        }
    }
    memgov::set_budget("abort-unwind", Limits::hard(MIB as u64)).unwrap();
    let mut log: Vec<u8> = {
        let _scope = memgov::component_scope("abort-unwind");
        let mut v = Vec::with_capacity(900 * 1024);
        v.resize(900 * 1024, 1u8);
        v
    };
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _scope = memgov::component_scope("abort-unwind");
        let _guard = AppendOnDrop(&mut log);
        panic!("expected: a panic at the component's hard limit");
    }));
    let _ = std::panic::take_hook();
    let charged = budget_stats(Scope::Component(memgov::component("abort-unwind"))).charged_bytes;
    println!(
        "caught {} log {} charged {charged}",
        caught.is_err(),
        log.len()
    );
}

fn child(case: &str) -> ! {
    no_core_dumps();
    match case {
        "component" => child_component(),
        "process" => child_process(),
        "realloc" => child_realloc(),
        "own-handler" => child_own_handler(),
        "callback" => child_callback_in_full_component(),
        "unwind-realloc" => child_unwind_realloc(),
        other => eprintln!("unknown case {other:?}"),
    }
    std::process::exit(0)
}

// ---- The parent ----------------------------------------------------------------------------

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs this binary as the child for `case`, killing it if it takes more than 30 s. With
/// `backtrace` false the child runs without `RUST_BACKTRACE`, so that std's allocation-error
/// hook prints no backtrace (which allocates, and would be refused in turn).
fn run_child(case: &str, backtrace: bool) -> Result<Outcome, String> {
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    cmd.env(CASE_VAR, case)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in memgov::VARIABLES {
        cmd.env_remove(var);
    }
    if backtrace {
        cmd.env("RUST_BACKTRACE", "1");
    } else {
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => output.map_err(|e| e.to_string())?,
        Err(_) => {
            // SAFETY: `pid` is our own child, not yet reaped (its waiter has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(format!("the {case:?} child hung for 30 s and was killed"));
        }
    };
    Ok(Outcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn memgov_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("memgov: allocation of"))
        .collect()
}

fn expect_sigabrt(o: &Outcome) -> Result<(), String> {
    match o.status.signal() {
        Some(libc::SIGABRT) => Ok(()),
        _ => Err(format!(
            "expected death by SIGABRT, got {}; stderr:\n{}",
            o.status, o.stderr
        )),
    }
}

fn expect_line(o: &Outcome, prefix: &str) -> Result<(), String> {
    let lines = memgov_lines(&o.stderr);
    match lines.as_slice() {
        [line] if line.starts_with(prefix) => Ok(()),
        _ => Err(format!(
            "expected one line starting with {prefix:?}; stderr:\n{}",
            o.stderr
        )),
    }
}

const COMPONENT_LINE: &str = "memgov: allocation of 2097152 bytes refused by component \
                              \"abort-child\": hard limit 1048576 bytes, ";

fn a_component_limit_aborts_with_a_line_naming_it() -> Result<(), String> {
    let o = run_child("component", false)?;
    expect_sigabrt(&o)?;
    expect_line(&o, COMPONENT_LINE)
}

fn with_backtraces_on_the_line_still_names_the_refused_request() -> Result<(), String> {
    let o = run_child("component", true)?;
    expect_sigabrt(&o)?;
    expect_line(&o, COMPONENT_LINE)
}

fn the_process_limit_aborts_with_a_line_naming_it() -> Result<(), String> {
    let o = run_child("process", false)?;
    expect_sigabrt(&o)?;
    let limit = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("limit="))
        .ok_or_else(|| format!("the child printed no limit; stdout:\n{}", o.stdout))?;
    expect_line(
        &o,
        &format!(
            "memgov: allocation of 67108864 bytes refused by the process limit: \
             hard limit {limit} bytes, "
        ),
    )
}

fn a_panic_whose_unwinding_grows_a_full_components_block_unwinds() -> Result<(), String> {
    let o = run_child("unwind-realloc", false)?;
    if !o.status.success() {
        return Err(format!(
            "the child died ({}) unwinding a panic at its component's limit; stderr:\n{}",
            o.status, o.stderr
        ));
    }
    let expected = format!("caught true log {} charged ", 900 * 1024 + 256 * 1024);
    match o.stdout.lines().find(|l| l.starts_with("caught ")) {
        Some(line) if line.starts_with(&expected) => {
            let charged: u64 = line[expected.len()..]
                .parse()
                .map_err(|_| line.to_owned())?;
            if charged <= MIB as u64 {
                Ok(())
            } else {
                Err(format!("the component's limit was passed: {line}"))
            }
        }
        _ => Err(format!("expected {expected:?}...; stdout:\n{}", o.stdout)),
    }
}

fn a_refused_realloc_names_the_size_requested() -> Result<(), String> {
    let o = run_child("realloc", false)?;
    expect_sigabrt(&o)?;
    expect_line(
        &o,
        "memgov: allocation of 1572864 bytes refused by component \"abort-realloc\": \
         hard limit 1048576 bytes, 786432 bytes live, ",
    )
}

fn a_programs_own_sigabrt_handler_is_left_alone() -> Result<(), String> {
    let o = run_child("own-handler", false)?;
    expect_sigabrt(&o)?;
    if !o.stderr.contains("own SIGABRT handler ran") {
        return Err(format!(
            "the program's handler did not run; stderr:\n{}",
            o.stderr
        ));
    }
    match memgov_lines(&o.stderr).as_slice() {
        [] => Ok(()),
        _ => Err(format!(
            "memgov replaced the program's handler; stderr:\n{}",
            o.stderr
        )),
    }
}

fn a_callback_for_a_full_component_can_allocate() -> Result<(), String> {
    let o = run_child("callback", false)?;
    if !o.status.success() {
        return Err(format!(
            "the child died ({}) in a pressure callback for its full component; stderr:\n{}",
            o.status, o.stderr
        ));
    }
    match o.stdout.trim().strip_prefix("callback formatted ") {
        Some(n) if n != "0" => Ok(()),
        _ => Err(format!("the callback did not run; stdout:\n{}", o.stdout)),
    }
}

const CASES: [Case; 7] = [
    (
        "a_panic_whose_unwinding_grows_a_full_components_block_unwinds",
        a_panic_whose_unwinding_grows_a_full_components_block_unwinds,
        None,
    ),
    (
        "a_refused_realloc_names_the_size_requested",
        a_refused_realloc_names_the_size_requested,
        None,
    ),
    (
        "a_component_limit_aborts_with_a_line_naming_it",
        a_component_limit_aborts_with_a_line_naming_it,
        None,
    ),
    (
        "the_process_limit_aborts_with_a_line_naming_it",
        the_process_limit_aborts_with_a_line_naming_it,
        None,
    ),
    (
        "a_programs_own_sigabrt_handler_is_left_alone",
        a_programs_own_sigabrt_handler_is_left_alone,
        None,
    ),
    (
        "with_backtraces_on_the_line_still_names_the_refused_request",
        with_backtraces_on_the_line_still_names_the_refused_request,
        None,
    ),
    (
        "a_callback_for_a_full_component_can_allocate",
        a_callback_for_a_full_component_can_allocate,
        None,
    ),
];

fn main() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        child(&case);
    }
    cases::run("abort_line", &CASES);
}
