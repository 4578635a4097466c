//! Configuration from the environment, end to end: the `MEMGOV_*` variables are read once per
//! process, so each scenario runs in a child process (this binary re-executed with
//! `ENV_CONFIG_CASE` and the variables set). Good values are applied by `init()`; a malformed
//! variable makes `init()` return `ConfigErrors` naming the variable, its value and what was
//! expected, nothing from it is applied and the good variables still are. The variables are read
//! when the program starts, before `main`: a program that never calls memgov's API gets its limit
//! too, each error is printed once to stderr then, and `init()` returns the same errors.
//!
//! The grammar of each variable is covered by the unit tests in `alloc-core/src/config.rs`.
//! `harness = false`: the parent sets a fresh environment per child and reads its stderr.

#[path = "support/cases.rs"]
mod cases;
use cases::Case;

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{Limits, MemorySource, Thresholds};
use std::process::{Command, Stdio};
use std::time::Duration;

const CASE_VAR: &str = "ENV_CONFIG_CASE";
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

// ---- The children: each runs with its own environment and asserts (a panic exits 101) -------

fn percent_of_memory(percent: f64) -> u64 {
    let available = MemorySource::system()
        .available()
        .expect("available memory");
    (available as f64 * percent / 100.0) as u64
}

fn child_good_values() {
    assert_eq!(memgov::init(), Ok(()));
    let limits = memgov::process_limits();
    assert_eq!(
        limits.hard,
        Some(percent_of_memory(50.0)),
        "MEMGOV_LIMIT=50%"
    );
    assert_eq!(
        limits.soft,
        Some(percent_of_memory(40.0)),
        "MEMGOV_SOFT_LIMIT=40%"
    );
    assert_eq!(
        memgov::budget("pages"),
        Limits::hard(512 * MIB).with_soft(400 * MIB)
    );
    assert_eq!(memgov::budget("templates"), Limits::hard(64 * MIB));
    let expected = Thresholds {
        recovery: 0.6,
        warning: 0.8,
        critical: 0.9,
    };
    assert_eq!(memgov::thresholds(), expected);
    assert_eq!(memgov::monitor_interval(), Duration::from_millis(250));
    assert_eq!(memgov::emergency_reserve_stats().target_bytes, 4 * MIB);
    // Read once: a second call returns the same answer, and code can still override.
    assert_eq!(memgov::init(), Ok(()));
    memgov::set_budget("templates", Limits::hard(MIB)).unwrap();
    assert_eq!(memgov::budget("templates"), Limits::hard(MIB));
}

fn child_bad_values() {
    let errors = memgov::init().expect_err("three variables are malformed").0;
    assert_eq!(errors.len(), 3, "{errors:?}");
    let (limit, budgets, reserve) = (&errors[0], &errors[1], &errors[2]);
    assert_eq!(
        (limit.var, limit.value.as_str()),
        ("MEMGOV_LIMIT", "12 parsecs")
    );
    assert!(limit.expected.contains("a size such as"), "{limit}");
    assert!(limit.expected.contains("parsecs"), "{limit}");
    assert_eq!(budgets.var, "MEMGOV_BUDGETS");
    assert_eq!(budgets.value, "pages=512MiB/400MiB,bad name=1MiB");
    assert!(budgets.expected.contains("\"bad name\""), "{budgets}");
    assert_eq!(
        limit.to_string(),
        format!("MEMGOV_LIMIT=\"12 parsecs\": expected {}", limit.expected)
    );
    assert_eq!(
        (reserve.var, reserve.value.as_str()),
        ("MEMGOV_EMERGENCY_RESERVE", "lots")
    );
    assert!(reserve.expected.starts_with("0 or a size"), "{reserve}");
    let all = memgov::init().unwrap_err();
    assert_eq!(all.to_string(), format!("{limit}; {budgets}; {reserve}"));

    // Nothing from a malformed variable, not even its well-formed first item ...
    assert_eq!(memgov::process_limits(), Limits::NONE);
    assert_eq!(memgov::budget("pages"), Limits::NONE);
    assert_eq!(
        memgov::emergency_reserve_stats().target_bytes,
        memgov::DEFAULT_EMERGENCY_RESERVE
    );
    // ... while the good variables are applied.
    let expected = Thresholds {
        recovery: 0.6,
        warning: 0.8,
        critical: 0.9,
    };
    assert_eq!(memgov::thresholds(), expected);
    assert_eq!(memgov::monitor_interval(), Duration::from_millis(250));
    // init() returned the errors, so later API use prints nothing (the parent checks).
    let _scope = memgov::component_scope("env-bad");
    memgov::set_budget("env-bad", Limits::hard(GIB)).unwrap();
}

fn child_soft_above_hard() {
    let errors = memgov::init()
        .expect_err("the soft limit is above the hard one")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].var, errors[0].value.as_str()),
        ("MEMGOV_SOFT_LIMIT", "2GiB")
    );
    // MEMGOV_LIMIT is well-formed and not reported, so it must still apply.
    assert_eq!(memgov::process_limits(), Limits::hard(GIB));
}

fn child_lazy() {
    // No init(): entering a scope is the first use of the API.
    let scope = memgov::component_scope("env-lazy");
    drop(scope);
    assert_eq!(memgov::monitor_interval(), Duration::from_millis(250));
    assert_eq!(memgov::process_limits(), Limits::NONE);
    // More API use, and init() itself, print nothing more (the parent counts the lines).
    memgov::set_budget("env-lazy", Limits::hard(GIB)).unwrap();
    let _ = memgov::snapshot();
    let errors = memgov::init().unwrap_err().0;
    assert_eq!(errors[0].var, "MEMGOV_LIMIT");
}

fn child_misspelt() {
    let errors = memgov::init()
        .expect_err("MEMGOV_LIMT is not a variable memgov reads")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!((e.var, e.value.as_str()), ("MEMGOV_LIMT", "1GiB"));
    assert!(e.expected.contains("did you mean MEMGOV_LIMIT?"), "{e}");
    // Nothing was taken from the misspelt name; the well-spelt ones apply.
    assert_eq!(memgov::process_limits(), Limits::soft(GIB));
}

fn child_lazy_misspelt() {
    // No init(): reading limits is the first use of the API, and prints the line.
    assert_eq!(memgov::process_limits(), Limits::soft(GIB));
}

/// Settings made in code as the very first use of the API are not replaced by the environment
/// when it is read later.
fn child_code_first() {
    let mine = Thresholds {
        recovery: 0.5,
        warning: 0.6,
        critical: 0.7,
    };
    memgov::set_thresholds(mine).unwrap();
    memgov::set_monitor_interval(Duration::from_millis(40));
    memgov::set_emergency_reserve(2 * MIB);
    assert_eq!(memgov::init(), Ok(()));
    assert_eq!(memgov::thresholds(), mine);
    assert_eq!(memgov::monitor_interval(), Duration::from_millis(40));
    assert_eq!(memgov::emergency_reserve_stats().target_bytes, 2 * MIB);
}

/// No call into memgov's API before the allocations: the limit from the environment holds
/// anyway (it was read before `main`), and the monitor starts with the first API use.
fn child_no_api() {
    let mut v: Vec<u8> = Vec::new();
    assert!(
        v.try_reserve(16 * MIB as usize).is_err(),
        "MEMGOV_LIMIT=8MiB holds before any call into memgov"
    );
    assert!(v.try_reserve(MIB as usize).is_ok());
    drop(v);
    assert_eq!(memgov::process_limits(), Limits::hard(8 * MIB));
    let start = std::time::Instant::now();
    while !memgov::monitor_stats().running {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the monitor did not start with the first API use"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run with a closed stderr pipe: the limit from the environment holds, and `init()` returns the
/// soft limit's error (printing it would have failed).
fn child_closed_stderr() {
    assert_eq!(memgov::process_limits(), Limits::hard(GIB));
    assert_eq!(memgov::init().unwrap_err().0.len(), 1);
}

fn child_lazy_read() {
    // No init(): reading limits is the first use of the API.
    assert_eq!(memgov::process_limits(), Limits::hard(GIB));
}

/// `MEMGOV_DECAY=fast`, `MEMGOV_BACKGROUND_THREADS=maybe` and `MEMGOV_GOGC=-1`: all reported, and
/// jemalloc's decay and background threads and the GC percent are left as they were.
#[cfg(feature = "jemalloc")]
fn child_bad_jemalloc_values() {
    let decay = memgov::jemalloc::decay().unwrap();
    let background = memgov::jemalloc::background_threads().unwrap();
    let errors = memgov::init().expect_err("three variables are malformed").0;
    let vars: Vec<&str> = errors.iter().map(|e| e.var).collect();
    assert_eq!(
        vars,
        ["MEMGOV_DECAY", "MEMGOV_BACKGROUND_THREADS", "MEMGOV_GOGC"],
        "{errors:?}"
    );
    assert_eq!(errors[2].value, "-1");
    assert!(
        errors[2].expected.starts_with("off, or a whole percentage"),
        "{}",
        errors[2]
    );
    assert_eq!(memgov::jemalloc::gc_percent(), None);
    assert_eq!(errors[0].value, "fast");
    assert!(
        errors[0].expected.starts_with("auto, off, never"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[1].value, "maybe");
    assert_eq!(errors[1].expected, "on or off");
    assert_eq!(memgov::jemalloc::decay().unwrap(), decay);
    assert_eq!(memgov::jemalloc::background_threads().unwrap(), background);
}

/// `MEMGOV_DECAY=250ms` and `MEMGOV_BACKGROUND_THREADS=on` are applied to every arena, and
/// `MEMGOV_GOGC=150` sets the GC percent, whose task then samples on the monitor.
#[cfg(feature = "jemalloc")]
fn child_good_jemalloc_values() {
    assert_eq!(memgov::init(), Ok(()));
    let want = memgov::jemalloc::Decay {
        dirty_ms: 250,
        muzzy_ms: 250,
    };
    assert_eq!(memgov::jemalloc::decay().unwrap(), want);
    assert_eq!(memgov::jemalloc::default_dirty_decay_ms().unwrap(), 250);
    assert!(memgov::jemalloc::background_threads().unwrap());
    assert_eq!(memgov::jemalloc::gc_percent(), Some(150));
    let start = std::time::Instant::now();
    while memgov::jemalloc::gc_percent_stats().samples == 0 {
        assert!(
            start.elapsed().as_secs() < 10,
            "the GC percent's task never sampled"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // A fixed decay means no responder, even with a soft limit.
    memgov::set_process_limits(Limits::soft(GIB)).unwrap();
    assert!(!memgov::jemalloc::responder_stats().running);
}

/// Starting the soft-limit responder is the first and only use of memgov's API: its task runs on
/// the monitor, which must start although nothing else ended the start-up deferral.
#[cfg(feature = "jemalloc")]
fn child_responder_first() {
    let policy = memgov::jemalloc::ResponderPolicy {
        interval: Duration::from_millis(5),
        ..Default::default()
    };
    memgov::jemalloc::start_responder(policy).unwrap();
    let start = std::time::Instant::now();
    while memgov::jemalloc::responder_stats().samples == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the responder never sampled (monitor running: {})",
            memgov::monitor_stats().running
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `MEMGOV_BACKGROUND_THREADS=on` in a program that forks before it uses memgov (a daemon), and
/// calls `init()` in the forked process: that process has jemalloc's background threads on.
#[cfg(feature = "jemalloc")]
fn child_background_threads_after_fork() {
    // SAFETY: the process has one thread of its own here (memgov starts none before `main`); the
    // forked one calls init(), reads a jemalloc setting and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let _ = memgov::init();
        let on = memgov::jemalloc::background_threads().unwrap_or(false);
        // SAFETY: ends the forked process without running the parent's exit handlers twice.
        unsafe { libc::_exit(if on { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid place for its status.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "the forked process died");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the forked process has jemalloc's background threads off"
    );
    memgov::init().unwrap();
    assert!(memgov::jemalloc::background_threads().unwrap());
}

fn child(case: &str) -> ! {
    match case {
        #[cfg(feature = "jemalloc")]
        "responder-first" => child_responder_first(),
        #[cfg(feature = "jemalloc")]
        "background-fork" => child_background_threads_after_fork(),
        #[cfg(feature = "jemalloc")]
        "bad-jemalloc" => child_bad_jemalloc_values(),
        #[cfg(feature = "jemalloc")]
        "good-jemalloc" => child_good_jemalloc_values(),
        "good" => child_good_values(),
        "bad" => child_bad_values(),
        "soft-above-hard" => child_soft_above_hard(),
        "lazy" => child_lazy(),
        "lazy-read" => child_lazy_read(),
        "closed-stderr" => child_closed_stderr(),
        "misspelt" => child_misspelt(),
        "no-api" => child_no_api(),
        "lazy-misspelt" => child_lazy_misspelt(),
        "code-first" => child_code_first(),
        other => panic!("unknown case {other:?}"),
    }
    std::process::exit(0)
}

// ---- The parent ----------------------------------------------------------------------------

/// Runs the child for `case` with exactly the `MEMGOV_*` variables in `vars`; returns its stderr,
/// or why it failed.
fn run_child(case: &str, vars: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    cmd.env(CASE_VAR, case).stdin(Stdio::null());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with(memgov::VARIABLE_PREFIX) {
            cmd.env_remove(var);
        }
    }
    cmd.envs(vars.iter().copied());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stderr)
    } else {
        Err(format!(
            "the {case:?} child failed ({}):\n{stderr}",
            out.status
        ))
    }
}

/// The lines memgov printed for malformed variables.
fn ignoring_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("memgov: ignoring"))
        .collect()
}

/// Expects memgov's start-up lines for exactly these variables, in this order, once each.
fn expect_reported(stderr: &str, vars: &[&str]) -> Result<(), String> {
    let lines = ignoring_lines(stderr);
    let named = |l: &&str, v: &str| l.starts_with(&format!("memgov: ignoring {v}="));
    if lines.len() == vars.len() && lines.iter().zip(vars).all(|(l, v)| named(l, v)) {
        Ok(())
    } else {
        Err(format!(
            "expected one line for each of {vars:?}, got {lines:?}"
        ))
    }
}

fn expect_silent(stderr: &str) -> Result<(), String> {
    match ignoring_lines(stderr).as_slice() {
        [] => Ok(()),
        lines => Err(format!("expected no configuration lines, got {lines:?}")),
    }
}

fn good_values_are_applied_by_init() -> Result<(), String> {
    let stderr = run_child(
        "good",
        &[
            ("MEMGOV_LIMIT", "50%"),
            ("MEMGOV_SOFT_LIMIT", "40%"),
            ("MEMGOV_BUDGETS", "pages=512MiB/400MiB, templates=64MiB"),
            ("MEMGOV_THRESHOLDS", "60%,80%,90%"),
            ("MEMGOV_MONITOR_INTERVAL", "250ms"),
            ("MEMGOV_EMERGENCY_RESERVE", "4MiB"),
        ],
    )?;
    expect_silent(&stderr)
}

fn a_malformed_variable_is_reported_and_skipped_while_good_ones_apply() -> Result<(), String> {
    let stderr = run_child(
        "bad",
        &[
            ("MEMGOV_LIMIT", "12 parsecs"),
            ("MEMGOV_BUDGETS", "pages=512MiB/400MiB,bad name=1MiB"),
            ("MEMGOV_THRESHOLDS", "0.6, 0.8, 0.9"),
            ("MEMGOV_MONITOR_INTERVAL", "250ms"),
            ("MEMGOV_EMERGENCY_RESERVE", "lots"),
        ],
    )?;
    // Printed when the program started, before init() returned them too.
    expect_reported(
        &stderr,
        &["MEMGOV_LIMIT", "MEMGOV_BUDGETS", "MEMGOV_EMERGENCY_RESERVE"],
    )
}

fn a_soft_limit_above_the_hard_one_leaves_the_hard_one_applied() -> Result<(), String> {
    let stderr = run_child(
        "soft-above-hard",
        &[("MEMGOV_LIMIT", "1GiB"), ("MEMGOV_SOFT_LIMIT", "2GiB")],
    )?;
    expect_reported(&stderr, &["MEMGOV_SOFT_LIMIT"])
}

fn without_init_the_first_api_use_prints_each_error_once() -> Result<(), String> {
    let stderr = run_child(
        "lazy",
        &[
            ("MEMGOV_LIMIT", "12 parsecs"),
            ("MEMGOV_MONITOR_INTERVAL", "250ms"),
        ],
    )?;
    let prefix = "memgov: ignoring MEMGOV_LIMIT=\"12 parsecs\": expected a size such as ";
    match ignoring_lines(&stderr).as_slice() {
        [line] if line.starts_with(prefix) && line.contains("parsecs\"; use B, KiB") => Ok(()),
        _ => Err(format!(
            "expected one line starting with {prefix:?}; stderr:\n{stderr}"
        )),
    }
}

fn a_misspelt_variable_is_reported_and_the_http_address_is_not() -> Result<(), String> {
    let vars = [
        ("MEMGOV_LIMT", "1GiB"),
        ("MEMGOV_SOFT_LIMIT", "1GiB"),
        ("MEMGOV_HTTP_ADDR", "127.0.0.1:0"),
    ];
    expect_reported(&run_child("misspelt", &vars)?, &["MEMGOV_LIMT"])?;
    // Without init() the line is the same, printed when the program starts.
    let stderr = run_child("lazy-misspelt", &vars)?;
    let prefix = "memgov: ignoring MEMGOV_LIMT=\"1GiB\": expected one of the variables memgov \
                  reads (did you mean MEMGOV_LIMIT?): MEMGOV_LIMIT, ";
    match ignoring_lines(&stderr).as_slice() {
        [line] if line.starts_with(prefix) => Ok(()),
        _ => Err(format!(
            "expected one line starting with {prefix:?}; stderr:\n{stderr}"
        )),
    }
}

fn a_program_that_only_installs_the_governor_gets_its_limit() -> Result<(), String> {
    let stderr = run_child("no-api", &[("MEMGOV_LIMIT", "8MiB")])?;
    expect_silent(&stderr)
}

/// A malformed variable in a program whose stderr is a pipe nobody reads any more (`prog 2>&1 |
/// head` after `head` exited): the error is printed before `main`, where the Rust runtime has not
/// yet ignored SIGPIPE, so the write used to kill the program with it. Now the program runs, and
/// the good variable still applies.
fn a_closed_stderr_pipe_does_not_kill_the_program_before_main() -> Result<(), String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe() just opened both descriptors and nothing else owns them.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let status = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(CASE_VAR, "closed-stderr")
        .env("MEMGOV_LIMIT", "1GiB")
        .env("MEMGOV_SOFT_LIMIT", "12parsecs")
        .stdin(Stdio::null())
        .stderr(Stdio::from(write_end))
        .status()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the child with a closed stderr pipe failed: {status}"
        ))
    }
}

fn without_init_reading_limits_first_applies_the_environment() -> Result<(), String> {
    let stderr = run_child("lazy-read", &[("MEMGOV_LIMIT", "1GiB")])?;
    expect_silent(&stderr)
}

fn settings_made_in_code_first_are_not_replaced_by_the_environment() -> Result<(), String> {
    let stderr = run_child(
        "code-first",
        &[
            ("MEMGOV_THRESHOLDS", "60%,80%,90%"),
            ("MEMGOV_MONITOR_INTERVAL", "250ms"),
            ("MEMGOV_EMERGENCY_RESERVE", "4MiB"),
        ],
    )?;
    expect_silent(&stderr)
}

fn jemalloc_variables_are_applied_or_reported() -> Result<(), String> {
    if cfg!(feature = "jemalloc") {
        run_child(
            "good-jemalloc",
            &[
                ("MEMGOV_DECAY", "250ms"),
                ("MEMGOV_BACKGROUND_THREADS", "on"),
                ("MEMGOV_GOGC", "150"),
            ],
        )?;
        run_child(
            "bad-jemalloc",
            &[
                ("MEMGOV_DECAY", "fast"),
                ("MEMGOV_BACKGROUND_THREADS", "maybe"),
                ("MEMGOV_GOGC", "-1"),
            ],
        )?;
    }
    Ok(())
}

fn a_responder_started_first_samples() -> Result<(), String> {
    if cfg!(feature = "jemalloc") {
        run_child("responder-first", &[])?;
    }
    Ok(())
}

fn background_threads_hold_in_a_process_that_forks_first() -> Result<(), String> {
    if cfg!(feature = "jemalloc") {
        let stderr = run_child("background-fork", &[("MEMGOV_BACKGROUND_THREADS", "on")])?;
        expect_silent(&stderr)?;
    }
    Ok(())
}

const CASES: [Case; 12] = [
    (
        "a_closed_stderr_pipe_does_not_kill_the_program_before_main",
        a_closed_stderr_pipe_does_not_kill_the_program_before_main,
        None,
    ),
    (
        "a_responder_started_first_samples",
        a_responder_started_first_samples,
        None,
    ),
    (
        "background_threads_hold_in_a_process_that_forks_first",
        background_threads_hold_in_a_process_that_forks_first,
        None,
    ),
    (
        "a_program_that_only_installs_the_governor_gets_its_limit",
        a_program_that_only_installs_the_governor_gets_its_limit,
        None,
    ),
    (
        "a_misspelt_variable_is_reported_and_the_http_address_is_not",
        a_misspelt_variable_is_reported_and_the_http_address_is_not,
        None,
    ),
    (
        "settings_made_in_code_first_are_not_replaced_by_the_environment",
        settings_made_in_code_first_are_not_replaced_by_the_environment,
        None,
    ),
    (
        "jemalloc_variables_are_applied_or_reported",
        jemalloc_variables_are_applied_or_reported,
        None,
    ),
    (
        "good_values_are_applied_by_init",
        good_values_are_applied_by_init,
        None,
    ),
    (
        "a_malformed_variable_is_reported_and_skipped_while_good_ones_apply",
        a_malformed_variable_is_reported_and_skipped_while_good_ones_apply,
        None,
    ),
    (
        "without_init_the_first_api_use_prints_each_error_once",
        without_init_the_first_api_use_prints_each_error_once,
        None,
    ),
    (
        "a_soft_limit_above_the_hard_one_leaves_the_hard_one_applied",
        a_soft_limit_above_the_hard_one_leaves_the_hard_one_applied,
        None,
    ),
    (
        "without_init_reading_limits_first_applies_the_environment",
        without_init_reading_limits_first_applies_the_environment,
        None,
    ),
];

fn main() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        child(&case);
    }
    cases::run("env_config", &CASES);
}
