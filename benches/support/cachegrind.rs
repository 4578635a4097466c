//! Running this bench binary under `valgrind --tool=cachegrind` and reading what it counted:
//! for the plain runners whose figures must not move with the machine's load.

use std::process::Command;

/// Whether valgrind can be run.
pub fn available() -> bool {
    Command::new("valgrind").arg("--version").output().is_ok()
}

/// What cachegrind counted for one run of `exe loop <args>`: instructions, L1 data misses,
/// mispredicted branches.
pub fn count(exe: &str, args: &[&str]) -> Result<[u64; 3], String> {
    let out = Command::new("valgrind")
        .args([
            "--tool=cachegrind",
            "--cache-sim=yes",
            "--branch-sim=yes",
            "--cachegrind-out-file=/dev/null",
            exe,
            "loop",
        ])
        .args(args)
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("valgrind failed ({}): {stderr}", out.status));
    }
    // "==123== I   refs:      88,450,572", "==123== D1  misses:   314,693  ( ...", ...
    let field = |label: &str| -> Result<u64, String> {
        stderr
            .lines()
            .find_map(|l| l.split_once(label))
            .and_then(|(_, rest)| rest.split_whitespace().next().map(|n| n.replace(',', "")))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {label:?} in valgrind's output: {stderr}"))
    };
    Ok([
        field("I   refs:")?,
        field("D1  misses:")?,
        field("Mispredicts:")?,
    ])
}
