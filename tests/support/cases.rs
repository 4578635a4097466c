//! A tiny runner for `harness = false` test files whose cases re-execute the test binary as a
//! child process (so each child has its own allocator state, environment and fate).

/// A case: its name, the check, and `Some(reason)` to skip it unless `--ignored` or
/// `--include-ignored` is passed.
pub type Case = (
    &'static str,
    fn() -> Result<(), String>,
    Option<&'static str>,
);

/// Runs the cases named by the command line (all when no filter is given), prints one line per
/// case and a closing `NAME: N passed, N failed, N ignored` line, and exits non-zero on a failure.
pub fn run(suite: &str, cases: &[Case]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only_ignored = args.iter().any(|a| a == "--ignored");
    let include_ignored = only_ignored || args.iter().any(|a| a == "--include-ignored");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for (name, check, known_bug) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        if (known_bug.is_some() && !include_ignored) || (known_bug.is_none() && only_ignored) {
            if let Some(bug) = known_bug {
                println!("test {name} ... ignored, {bug}");
                ignored += 1;
            }
            continue;
        }
        match check() {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(why) => {
                println!("test {name} ... FAILED\n{why}");
                failed += 1;
            }
        }
    }
    println!("{suite}: {passed} passed, {failed} failed, {ignored} ignored");
    if failed > 0 {
        std::process::exit(1);
    }
}
