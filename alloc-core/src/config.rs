//! Configuration from environment variables, read once, outside the allocation path.
//!
//! | variable | value | example |
//! |---|---|---|
//! | `MEMGOV_LIMIT` | the process's hard limit: a size | `2GiB`, `80%` |
//! | `MEMGOV_SOFT_LIMIT` | the process's soft limit: a size | `1.5GiB`, `60%` |
//! | `MEMGOV_BUDGETS` | comma-separated `name=HARD`, `name=HARD/SOFT` or `name=/SOFT` | `pages=512MiB/400MiB,templates=64MiB` |
//! | `MEMGOV_THRESHOLDS` | recovery, warning, critical, as fractions or percentages | `70%,85%,95%` |
//! | `MEMGOV_MONITOR_INTERVAL` | the monitor's sampling interval: `us`, `ms` or `s` | `100ms` |
//! | `MEMGOV_EMERGENCY_RESERVE` | the slice of the process's hard limit kept for the threads that react to pressure: a size (`0` for none) | `1MiB`, `4MiB` |
//! | `MEMGOV_DECAY` | jemalloc decay: `auto` (the soft-limit responder, the default), `off` (leave jemalloc alone), or a fixed time for every arena: `<n>ms`, `<n>s`, `never` | `auto`, `2000ms` |
//! | `MEMGOV_BACKGROUND_THREADS` | jemalloc's background purging threads: `on` or `off` | `on` |
//! | `MEMGOV_GOGC` | the GC percent: purge when jemalloc keeps more freed pages than this percentage of the live heap; `off` (the default) leaves it to decay | `100`, `50%`, `off` |
//!
//! A size is a number (decimals allowed) and an optional unit: `B`, `KiB`, `MiB`, `GiB`, `TiB`
//! (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000), any case; or a percentage (above 0,
//! at most 100) of the memory available to the process: the cgroup v2 `memory.max`, else the cgroup
//! v1 `memory.limit_in_bytes` (of the process's cgroup, or of an ancestor where that is smaller),
//! else physical memory (a cgroup limit above physical memory gives physical memory). Whitespace
//! around values and list items is ignored. Component names are 1 to 64 characters from `A-Z a-z 0-9 _ - . :`.
//!
//! A variable with the `MEMGOV_` prefix that memgov does not read ([`VARIABLES`] and
//! [`OTHER_VARIABLES`]) is a misspelling: it is reported as malformed, with the nearest name memgov
//! reads when one is a few characters away, rather than ignored.
//!
//! Every malformed variable is reported with its name, its value and what was expected, and
//! nothing from it is applied; the others still are (a soft limit above the hard one is reported
//! against `MEMGOV_SOFT_LIMIT`, and the hard limit alone is applied).
//!
//! On Linux the variables are read when the program starts, before `main` (a constructor in
//! `.init_array`), so a program that only installs the governor gets its limits too; each error is
//! printed once to stderr then, and [`init`] returns the same errors. Elsewhere, and should the
//! constructor not run, [`init`] or the first use of memgov's API (entering a scope, setting or
//! reading a limit or a pressure level, registering a callback, reading figures) reads them. The
//! monitor thread (pressure callbacks, the emergency reserve, the soft-limit responder that
//! `MEMGOV_SOFT_LIMIT` turns on) is not started before `main`, nor are jemalloc's background
//! threads (`MEMGOV_BACKGROUND_THREADS=on`; jemalloc turns them off in a forked child): [`init`] or
//! the first use of the API starts them. Call [`init`] at the start of `main` to have them running
//! from there. Limits set in code replace those from the environment.

use crate::budget::{self, Limits};
use crate::monitor;
use crate::pressure::{self, Thresholds};
use crate::registry::MAX_NAME_LEN;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;
use std::time::Duration;

/// A malformed environment variable.
///
/// ```
/// let e = alloc_core::parse_env_var("MEMGOV_LIMIT", "12 parsecs").unwrap_err();
/// assert_eq!(e.var, "MEMGOV_LIMIT");
/// assert!(e.to_string().contains("12 parsecs"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// Its value, as found.
    pub value: String,
    /// What was expected, and what was wrong.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every malformed variable found by [`init`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const SIZE: &str = "a size such as 512MiB, 2GiB, 1.5GB, 4096 or 80%";

/// Where the memory available to the process is read from: cgroup v2, cgroup v1, physical memory.
#[derive(Clone, Debug)]
pub struct MemorySource {
    root: PathBuf,
}

impl MemorySource {
    /// Reads from the real `/sys` and `/proc`.
    pub fn system() -> MemorySource {
        MemorySource {
            root: PathBuf::from("/"),
        }
    }

    /// Reads from a copy of the file tree under `root` (`root/proc/self/cgroup`,
    /// `root/sys/fs/cgroup/<cgroup>/memory.max`,
    /// `root/sys/fs/cgroup/memory/<cgroup>/memory.limit_in_bytes`, `root/proc/meminfo`), for tests.
    pub fn under(root: impl Into<PathBuf>) -> MemorySource {
        MemorySource { root: root.into() }
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(Path::new(path))).ok()
    }

    /// The memory available to the process, in bytes: the smaller of its cgroup limit and
    /// physical memory (a cgroup limit above physical memory cannot be reached).
    ///
    /// The cgroup limit is the process's own cgroup's (named in `/proc/self/cgroup`), or the
    /// smallest of its ancestors' when that is smaller, as the kernel enforces it.
    ///
    /// ```
    /// assert!(alloc_core::MemorySource::system().available().unwrap() > 0);
    /// ```
    pub fn available(&self) -> Option<u64> {
        match (self.cgroup_memory_limit(), self.physical()) {
            (Some(limit), Some(ram)) => Some(limit.min(ram)),
            (limit, ram) => limit.or(ram),
        }
    }

    /// The cgroup v2 `memory.max`, else the cgroup v1 `memory.limit_in_bytes`, of the process's
    /// cgroup and its ancestors; `None` when none sets a limit.
    fn cgroup_memory_limit(&self) -> Option<u64> {
        self.cgroup_limit("sys/fs/cgroup", "memory.max", |c| c.is_empty())
            .or_else(|| {
                self.cgroup_limit("sys/fs/cgroup/memory", "memory.limit_in_bytes", |c| {
                    c.split(',').any(|c| c == "memory")
                })
            })
    }

    /// The directories from the process's cgroup up to `mount`, innermost first. The cgroup is the
    /// path on the line of `/proc/self/cgroup` whose controller list `mine` accepts; only `mount`
    /// when there is no such line, or its path leaves the mount (`..`, from another namespace).
    fn cgroup_dirs(&self, mount: &str, mine: impl Fn(&str) -> bool) -> Vec<String> {
        let own = self.read("proc/self/cgroup").and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                mine(controllers).then(|| path.trim().to_string())
            })
        });
        let parts: Vec<String> = own
            .map(|path| {
                path.split('/')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut dirs = Vec::new();
        if !parts.iter().any(|p| p == "." || p == "..") {
            for depth in (1..=parts.len()).rev() {
                dirs.push(format!("{mount}/{}", parts[..depth].join("/")));
            }
        }
        dirs.push(mount.to_string());
        dirs
    }

    /// The smallest limit in `file` over the process's cgroup and its ancestors under `mount`
    /// (see [`cgroup_dirs`](Self::cgroup_dirs)); `None` when none of them sets one.
    fn cgroup_limit(&self, mount: &str, file: &str, mine: impl Fn(&str) -> bool) -> Option<u64> {
        self.cgroup_dirs(mount, mine)
            .iter()
            .filter_map(|dir| self.read(&format!("{dir}/{file}")))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            // "max" (v2) does not parse; cgroup v1 writes a huge page-rounded number instead.
            .filter(|&bytes| bytes < 1 << 60)
            .min()
    }

    /// Physical memory: `MemTotal` in `/proc/meminfo`.
    fn physical(&self) -> Option<u64> {
        let meminfo = self.read("proc/meminfo")?;
        let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
        kib.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k.saturating_mul(1024))
    }
}

/// Parses a size (see the module docs); `available` gives the base of percentages.
///
/// # Errors
/// What was expected and what was wrong, for [`ConfigError::expected`].
///
/// ```
/// let mem = || Some(8 << 30);
/// assert_eq!(alloc_core::parse_size("512MiB", &mem), Ok(512 << 20));
/// assert_eq!(alloc_core::parse_size("1.5GB", &mem), Ok(1_500_000_000));
/// assert_eq!(alloc_core::parse_size("50%", &mem), Ok(4 << 30));
/// assert!(alloc_core::parse_size("150%", &mem).is_err());
/// ```
pub fn parse_size(value: &str, available: &dyn Fn() -> Option<u64>) -> Result<u64, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(format!("{SIZE} (the value is empty)"));
    }
    if let Some(number) = v.strip_suffix('%') {
        let pct = parse_decimal(number.trim())
            .ok_or_else(|| format!("{SIZE} ({number:?} is not a number)"))?;
        if !(pct > 0.0 && pct <= 100.0) {
            return Err(format!(
                "{SIZE} (a percentage must be above 0 and at most 100)"
            ));
        }
        let base = available()
            .ok_or_else(|| format!("{SIZE} (the available memory could not be read)"))?;
        let bytes = (base as f64 * pct / 100.0) as u64;
        if bytes == 0 {
            return Err(format!(
                "{SIZE} (a limit must be above 0; {}% of {base} bytes is less than a byte)",
                number.trim()
            ));
        }
        return Ok(bytes);
    }
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = (&v[..split], v[split..].trim());
    if number.is_empty() {
        return Err(format!("{SIZE} (no number before {unit:?})"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{SIZE} (unknown unit {unit:?}; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ))
        }
    };
    let bytes = if number.contains('.') {
        let x =
            parse_decimal(number).ok_or_else(|| format!("{SIZE} ({number:?} is not a number)"))?;
        let bytes = x * multiplier as f64;
        if bytes >= i64::MAX as f64 {
            return Err(format!("{SIZE} (too large: at most {} bytes)", i64::MAX));
        }
        bytes as u64
    } else {
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .filter(|&b| b <= i64::MAX as u64)
            .ok_or_else(|| format!("{SIZE} (too large: at most {} bytes)", i64::MAX))?
    };
    if bytes == 0 {
        return Err(format!("{SIZE} (a limit must be above 0)"));
    }
    Ok(bytes)
}

fn parse_decimal(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.matches('.').count() <= 1
        && s != ".";
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Parses `MEMGOV_BUDGETS`: `name=HARD[/SOFT]` or `name=/SOFT`, comma-separated.
///
/// # Errors
/// What was expected and what was wrong.
///
/// ```
/// let b = alloc_core::parse_budgets("pages=512MiB/400MiB, templates=64MiB", &|| None).unwrap();
/// assert_eq!(b[0].0, "pages");
/// assert_eq!(b[0].1, alloc_core::Limits::hard(512 << 20).with_soft(400 << 20));
/// ```
pub fn parse_budgets(
    value: &str,
    available: &dyn Fn() -> Option<u64>,
) -> Result<Vec<(String, Limits)>, String> {
    const FORM: &str = "comma-separated name=HARD, name=HARD/SOFT or name=/SOFT, e.g. pages=512MiB/400MiB,templates=64MiB";
    let mut out: Vec<(String, Limits)> = Vec::new();
    if value.trim().is_empty() {
        return Err(format!("{FORM} (the value is empty)"));
    }
    for item in value.split(',') {
        let item = item.trim();
        let Some((name, limits)) = item.split_once('=') else {
            return Err(format!("{FORM} ({item:?} has no '=')"));
        };
        let name = name.trim();
        if !valid_name(name) {
            return Err(format!(
                "{FORM} (component name {name:?} must be 1 to 64 of A-Z a-z 0-9 _ - . :)"
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("{FORM} (component {name:?} appears twice)"));
        }
        let (hard, soft) = match limits.split_once('/') {
            Some((hard, soft)) => (hard.trim(), Some(soft.trim())),
            None => (limits.trim(), None),
        };
        let size =
            |s: &str| parse_size(s, available).map_err(|e| format!("{FORM}; for {name:?}: {e}"));
        let hard = if hard.is_empty() && soft.is_some() {
            None
        } else {
            Some(size(hard)?)
        };
        let soft = soft.map(size).transpose()?;
        if let (Some(h), Some(s)) = (hard, soft) {
            if s > h {
                return Err(format!(
                    "{FORM} (for {name:?} the soft limit {s} is above the hard limit {h})"
                ));
            }
        }
        out.push((name.to_string(), Limits { hard, soft }));
    }
    Ok(out)
}

/// Parses `MEMGOV_THRESHOLDS`: three fractions or percentages, recovery,warning,critical.
///
/// # Errors
/// What was expected and what was wrong.
///
/// ```
/// let t = alloc_core::parse_thresholds("60%, 80%, 90%").unwrap();
/// assert_eq!((t.recovery, t.warning, t.critical), (0.6, 0.8, 0.9));
/// ```
pub fn parse_thresholds(value: &str) -> Result<Thresholds, String> {
    const FORM: &str =
        "three increasing fractions or percentages recovery,warning,critical, e.g. 70%,85%,95%";
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!("{FORM} (found {} values)", parts.len()));
    }
    let mut f = [0.0; 3];
    for (slot, p) in f.iter_mut().zip(&parts) {
        *slot = match p.strip_suffix('%') {
            Some(n) => parse_decimal(n.trim()).map(|x| x / 100.0),
            None => parse_decimal(p),
        }
        .ok_or_else(|| format!("{FORM} ({p:?} is not a number)"))?;
    }
    let t = Thresholds {
        recovery: f[0],
        warning: f[1],
        critical: f[2],
    };
    if pressure::validate(t).is_err() {
        return Err(format!(
            "{FORM} (need 0 < recovery < warning < critical <= 100%, at least 0.0001% apart)"
        ));
    }
    Ok(t)
}

/// Parses `MEMGOV_MONITOR_INTERVAL`: a whole number of `us`, `ms` or `s`.
///
/// # Errors
/// What was expected and what was wrong.
///
/// ```
/// assert_eq!(alloc_core::parse_interval("250ms"), Ok(std::time::Duration::from_millis(250)));
/// ```
pub fn parse_interval(value: &str) -> Result<Duration, String> {
    const FORM: &str = "a duration of at least 1ms such as 100ms, 2s or 5000us";
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = (&v[..split], v[split..].trim());
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{FORM} ({v:?} does not start with a whole number)"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return Err(format!("{FORM} (unknown unit {unit:?})")),
    };
    if d < Duration::from_millis(1) {
        return Err(format!("{FORM} (too short)"));
    }
    Ok(d)
}

/// What `MEMGOV_DECAY` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecaySetting {
    /// Start the soft-limit responder when a process soft limit is set (the default).
    Auto,
    /// Never touch jemalloc's decay.
    Off,
    /// This decay time, in milliseconds, for dirty and muzzy pages of every arena (`-1` = never);
    /// no responder.
    Fixed(isize),
}

/// Parses `MEMGOV_DECAY`: `auto`, `off`, `never`, or a whole number of `ms` or `s`.
///
/// # Errors
/// What was expected and what was wrong.
///
/// ```
/// use alloc_core::{parse_decay, DecaySetting};
/// assert_eq!(parse_decay("auto"), Ok(DecaySetting::Auto));
/// assert_eq!(parse_decay("2s"), Ok(DecaySetting::Fixed(2000)));
/// assert!(parse_decay("fast").is_err());
/// ```
pub fn parse_decay(value: &str) -> Result<DecaySetting, String> {
    const FORM: &str = "auto, off, never, or a decay time such as 0ms, 500ms or 10s";
    let v = value.trim();
    match v.to_ascii_lowercase().as_str() {
        "auto" => return Ok(DecaySetting::Auto),
        "off" => return Ok(DecaySetting::Off),
        "never" => return Ok(DecaySetting::Fixed(-1)),
        _ => {}
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = (&v[..split], v[split..].trim());
    let n: isize = number
        .parse()
        .map_err(|_| format!("{FORM} ({v:?} is none of these)"))?;
    match unit {
        "ms" => Ok(DecaySetting::Fixed(n)),
        "s" => n
            .checked_mul(1000)
            .map(DecaySetting::Fixed)
            .ok_or_else(|| format!("{FORM} (too large)")),
        _ => Err(format!("{FORM} (unknown unit {unit:?})")),
    }
}

/// Parses `MEMGOV_GOGC`: `off`, or a whole percentage (`%` optional), as Go's `GOGC`.
///
/// # Errors
/// What was expected and what was wrong.
///
/// ```
/// use alloc_core::parse_gc_percent;
/// assert_eq!(parse_gc_percent("100"), Ok(Some(100)));
/// assert_eq!(parse_gc_percent(" 50% "), Ok(Some(50)));
/// assert_eq!(parse_gc_percent("off"), Ok(None));
/// assert!(parse_gc_percent("-1").is_err()); // Go's "off" spelling; say off
/// ```
pub fn parse_gc_percent(value: &str) -> Result<Option<u32>, String> {
    const FORM: &str = "off, or a whole percentage such as 0, 50, 100 or 200%";
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let digits = v.strip_suffix('%').unwrap_or(v).trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{FORM} ({v:?} is neither)"));
    }
    digits
        .parse()
        .map(Some)
        .map_err(|_| format!("{FORM} (too large)"))
}

/// Parses `MEMGOV_BACKGROUND_THREADS`: `on`/`off` (also `true`/`false`, `1`/`0`).
///
/// # Errors
/// What was expected and what was wrong.
pub fn parse_switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err("on or off".to_string()),
    }
}

/// What one variable sets.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Setting {
    /// `MEMGOV_LIMIT`.
    HardLimit(u64),
    /// `MEMGOV_SOFT_LIMIT`.
    SoftLimit(u64),
    /// `MEMGOV_BUDGETS`.
    Budgets(Vec<(String, Limits)>),
    /// `MEMGOV_THRESHOLDS`.
    Thresholds(Thresholds),
    /// `MEMGOV_MONITOR_INTERVAL`.
    MonitorInterval(Duration),
    /// `MEMGOV_EMERGENCY_RESERVE`.
    EmergencyReserve(u64),
    /// `MEMGOV_DECAY`.
    Decay(DecaySetting),
    /// `MEMGOV_BACKGROUND_THREADS`.
    BackgroundThreads(bool),
    /// `MEMGOV_GOGC`.
    GcPercent(Option<u32>),
}

/// The variables memgov reads.
pub const VARIABLES: [&str; 9] = [
    "MEMGOV_LIMIT",
    "MEMGOV_SOFT_LIMIT",
    "MEMGOV_BUDGETS",
    "MEMGOV_THRESHOLDS",
    "MEMGOV_MONITOR_INTERVAL",
    "MEMGOV_EMERGENCY_RESERVE",
    "MEMGOV_DECAY",
    "MEMGOV_BACKGROUND_THREADS",
    "MEMGOV_GOGC",
];

/// `MEMGOV_` variables read elsewhere in memgov: the HTTP endpoint's address (alloc-stats, with
/// its `http` feature). They are not applied by [`init`], but they are not unknown either.
pub const OTHER_VARIABLES: [&str; 1] = [HTTP_ADDR_VARIABLE];

/// The variable alloc-stats's HTTP endpoint reads its address from.
pub const HTTP_ADDR_VARIABLE: &str = "MEMGOV_HTTP_ADDR";

/// The prefix every memgov variable has: a variable with it that memgov does not read is a
/// misspelling, and is reported rather than ignored.
pub const VARIABLE_PREFIX: &str = "MEMGOV_";

/// What a variable memgov does not read was expected to be: the nearest name memgov reads, when
/// one is close enough to be a misspelling, and every name.
fn expected_variable(name: &str) -> String {
    let all = || VARIABLES.iter().chain(OTHER_VARIABLES.iter()).copied();
    let list = all().collect::<Vec<_>>().join(", ");
    // Close enough: a few typed characters apart (MEMGOV_LIMT, MEMGOV_LIMITS, MEMGOV_SOFTLIMIT),
    // whatever the case; one per three characters after the prefix, so that a short name
    // (MEMGOV_GOGC) is not suggested for every other short one (MEMGOV_NOPE).
    let upper = name.to_ascii_uppercase();
    let nearest = all()
        .map(|known| (edit_distance(&upper, known), known))
        .min()
        .filter(|&(d, known)| d <= (known.len().saturating_sub(VARIABLE_PREFIX.len()) / 3).max(1));
    match nearest {
        Some((_, known)) => {
            format!("one of the variables memgov reads (did you mean {known}?): {list}")
        }
        None => format!("one of the variables memgov reads: {list}"),
    }
}

/// Levenshtein distance between two ASCII-ish names, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The error for a `MEMGOV_` variable memgov does not read, `None` for the others (memgov's own,
/// and variables without the prefix).
///
/// ```
/// let e = alloc_core::unknown_variable("MEMGOV_LIMT", "2GiB").unwrap();
/// assert_eq!(e.var, "MEMGOV_LIMT");
/// assert!(e.expected.contains("did you mean MEMGOV_LIMIT?"));
/// assert!(alloc_core::unknown_variable("MEMGOV_LIMIT", "2GiB").is_none());
/// assert!(alloc_core::unknown_variable("HOME", "/root").is_none());
/// ```
pub fn unknown_variable(name: &str, value: &str) -> Option<ConfigError> {
    let known = VARIABLES.contains(&name) || OTHER_VARIABLES.contains(&name);
    if known || !name.starts_with(VARIABLE_PREFIX) {
        return None;
    }
    Some(ConfigError {
        // Once per misspelt variable in a process (init runs once): the name must outlive it.
        var: Box::leak(name.to_owned().into_boxed_str()),
        value: value.to_string(),
        expected: expected_variable(name),
    })
}

/// The errors for every `MEMGOV_` variable in the environment that memgov does not read, in the
/// environment's order.
fn unknown_variables() -> Vec<ConfigError> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            unknown_variable(&name.to_string_lossy(), &value.to_string_lossy())
        })
        .collect()
}

/// Wraps what a jemalloc-only variable expects, for builds without jemalloc.
fn jemalloc_only<T>(parsed: Result<T, String>) -> Result<T, String> {
    if cfg!(feature = "jemalloc") {
        parsed
    } else {
        Err("nothing: this build's inner allocator is not jemalloc".to_string())
    }
}

/// Parses one variable's value with the system's memory as the base of percentages.
///
/// # Errors
/// [`ConfigError`] naming the variable, the value and what was expected (also for a variable
/// memgov does not know).
pub fn parse_env_var(var: &'static str, value: &str) -> Result<Setting, ConfigError> {
    parse_with(var, value, &|| MemorySource::system().available())
}

/// Parses one variable's value with `available` as the base of percentages.
///
/// # Errors
/// As [`parse_env_var`].
pub fn parse_with(
    var: &'static str,
    value: &str,
    available: &dyn Fn() -> Option<u64>,
) -> Result<Setting, ConfigError> {
    let setting = match var {
        "MEMGOV_LIMIT" => parse_size(value, available).map(Setting::HardLimit),
        "MEMGOV_SOFT_LIMIT" => parse_size(value, available).map(Setting::SoftLimit),
        "MEMGOV_BUDGETS" => parse_budgets(value, available).map(Setting::Budgets),
        "MEMGOV_THRESHOLDS" => parse_thresholds(value).map(Setting::Thresholds),
        "MEMGOV_MONITOR_INTERVAL" => parse_interval(value).map(Setting::MonitorInterval),
        "MEMGOV_EMERGENCY_RESERVE" => match value.trim() {
            "0" => Ok(Setting::EmergencyReserve(0)),
            _ => parse_size(value, available)
                .map(Setting::EmergencyReserve)
                .map_err(|expected| format!("0 or {expected}")),
        },
        "MEMGOV_DECAY" => jemalloc_only(parse_decay(value)).map(Setting::Decay),
        "MEMGOV_BACKGROUND_THREADS" => {
            jemalloc_only(parse_switch(value)).map(Setting::BackgroundThreads)
        }
        "MEMGOV_GOGC" => jemalloc_only(parse_gc_percent(value)).map(Setting::GcPercent),
        _ => Err(expected_variable(var)),
    };
    setting.map_err(|expected| ConfigError {
        var,
        value: value.to_string(),
        expected,
    })
}

static INIT: OnceLock<Result<(), ConfigErrors>> = OnceLock::new();

/// Reads the `MEMGOV_*` environment variables (once) and applies every well-formed one.
///
/// # Errors
/// [`ConfigErrors`] listing every malformed variable; nothing from those was applied.
///
/// ```
/// alloc_core::init().unwrap();
/// ```
pub fn init() -> Result<(), ConfigErrors> {
    let result = INIT.get_or_init(|| apply_env(&MemorySource::system()));
    monitor::end_deferral();
    result.clone()
}

/// Reads the variables when the program starts, before `main`, so that a program that only
/// installs the governor gets its `MEMGOV_` limits too (on Linux, from `.init_array`, as the C
/// library runs constructors). Errors are printed then. The monitor thread is not started before
/// `main`: the first use of memgov's API, or [`init`], starts it if the variables asked for it.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static READ_AT_START: extern "C" fn() = read_at_start;

#[cfg(target_os = "linux")]
extern "C" fn read_at_start() {
    crate::fork::register();
    monitor::defer_start();
    // Nothing may unwind out of a constructor; a panic here leaves the variables unread, and the
    // first use of the API reads them again.
    let _ = std::panic::catch_unwind(read_and_report);
}

/// The lazy path: reads the variables on first use and prints errors once.
pub(crate) fn ensure_init() {
    crate::fork::after_fork();
    if INIT.get().is_some() {
        monitor::end_deferral();
        return;
    }
    read_and_report();
    monitor::end_deferral();
}

/// Reads the variables unless that was done, and prints the errors if this call read them.
fn read_and_report() {
    let mut fresh = false;
    let result = INIT.get_or_init(|| {
        fresh = true;
        apply_env(&MemorySource::system())
    });
    if let (true, Err(errors)) = (fresh, result) {
        print_errors(errors);
    }
}

/// Prints each error on its own line to stderr. A stderr that cannot be written (closed, or a
/// pipe nobody reads) loses the lines and nothing else: `init()` still returns the errors.
///
/// Before `main` the Rust runtime has not yet ignored SIGPIPE, so a write to a pipe whose reader
/// has gone would kill the program; SIGPIPE is blocked on this thread while the lines are
/// written, and one they raise is taken before it is unblocked. Other threads, and the process's
/// disposition, which they may change meanwhile, are left alone.
fn print_errors(errors: &ConfigErrors) {
    use std::io::Write;
    // Elsewhere nothing prints before `main` (the constructor is Linux's), and after it the Rust
    // runtime ignores SIGPIPE.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _sigpipe_blocked = SigpipeBlocked::new();
    let mut stderr = std::io::stderr().lock();
    for e in &errors.0 {
        if writeln!(stderr, "memgov: ignoring {e}").is_err() {
            break;
        }
    }
}

/// SIGPIPE blocked on the calling thread for as long as this lives. On drop, a SIGPIPE that
/// became pending meanwhile (a write to a closed pipe raises it on the writing thread) is taken
/// without being delivered, and the thread's signal mask is put back as it was.
///
/// Not the process-wide disposition: ignoring SIGPIPE for the process and then putting back what
/// was found would undo a handler another thread installed meanwhile, and would discard the
/// SIGPIPEs of other threads' writes. One sent to the whole process (`kill -PIPE`) while this
/// lives, with none pending before, is taken too: it cannot be told apart from the write's.
#[cfg(any(target_os = "linux", target_os = "android"))]
struct SigpipeBlocked {
    /// The thread's mask before, when blocking succeeded.
    mask_before: Option<libc::sigset_t>,
    /// Whether a SIGPIPE was pending already (then it is not this guard's to take).
    pending_before: bool,
}

/// The set holding SIGPIPE alone.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn sigpipe_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, and sigemptyset initialises it before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        set
    }
}

/// Whether a SIGPIPE is pending for this thread or the process.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn sigpipe_pending() -> bool {
    // SAFETY: sigset_t is plain data; sigpending fills it before sigismember reads it.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl SigpipeBlocked {
    fn new() -> SigpipeBlocked {
        let block = sigpipe_set();
        // SAFETY: sigset_t is plain data; pthread_sigmask writes it on success.
        let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live sigsets; this changes only the calling thread's mask.
        let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut before) } == 0;
        SigpipeBlocked {
            mask_before: blocked.then_some(before),
            pending_before: blocked && sigpipe_pending(),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        let Some(before) = &self.mask_before else {
            return;
        };
        if !self.pending_before && sigpipe_pending() {
            let set = sigpipe_set();
            let now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: live set and timespec; SIGPIPE is blocked, so it is taken, not delivered.
            unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &now) };
        }
        // SAFETY: `before` is the mask pthread_sigmask returned for this thread when the guard
        // was made (`print_errors` makes and drops it on one thread).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, before, std::ptr::null_mut()) };
    }
}

#[cfg(feature = "jemalloc")]
fn apply_decay(d: DecaySetting) -> Result<(), String> {
    match d {
        DecaySetting::Auto => crate::responder::AUTO_START_DISABLED.store(false, Relaxed),
        DecaySetting::Off => crate::responder::AUTO_START_DISABLED.store(true, Relaxed),
        DecaySetting::Fixed(ms) => {
            crate::responder::AUTO_START_DISABLED.store(true, Relaxed);
            alloc_jemalloc::set_decay(alloc_jemalloc::Decay {
                dirty_ms: ms,
                muzzy_ms: ms,
            })
            .map_err(|e| format!("a decay jemalloc accepts ({e})"))?;
        }
    }
    Ok(())
}

#[cfg(not(feature = "jemalloc"))]
fn apply_decay(_: DecaySetting) -> Result<(), String> {
    Ok(())
}

#[cfg(feature = "jemalloc")]
fn apply_gc_percent(percent: Option<u32>) {
    crate::gc_percent::store_gc_percent(percent);
}

#[cfg(not(feature = "jemalloc"))]
fn apply_gc_percent(_: Option<u32>) {}

#[cfg(feature = "jemalloc")]
fn apply_background_threads(on: bool) -> Result<(), String> {
    alloc_jemalloc::set_background_threads(on)
        .map_err(|e| format!("a setting jemalloc accepts ({e})"))
}

#[cfg(not(feature = "jemalloc"))]
fn apply_background_threads(_: bool) -> Result<(), String> {
    Ok(())
}

/// `MEMGOV_BACKGROUND_THREADS` as read before `main`, waiting for the end of the monitor's
/// deferral: [`PENDING`] set, the setting in bit 0, and jemalloc's own setting then in bit 1.
/// jemalloc's background threads are threads, and jemalloc turns them off in a forked child: a
/// program that forks before it uses memgov would lose them.
static PENDING_BACKGROUND_THREADS: AtomicU8 = AtomicU8::new(0);
/// Marks [`PENDING_BACKGROUND_THREADS`] as holding a setting.
const PENDING: u8 = 4;

#[cfg(feature = "jemalloc")]
fn background_threads_now() -> bool {
    alloc_jemalloc::background_threads().unwrap_or(false)
}

#[cfg(not(feature = "jemalloc"))]
fn background_threads_now() -> bool {
    false
}

/// Applies `MEMGOV_BACKGROUND_THREADS` now, or when the deferral ends if it is read before `main`.
fn apply_or_defer_background_threads(on: bool) -> Result<(), String> {
    if !monitor::deferring() {
        return apply_background_threads(on);
    }
    let found = background_threads_now();
    PENDING_BACKGROUND_THREADS.store(PENDING | u8::from(on) | u8::from(found) << 1, Relaxed);
    Ok(())
}

/// Applies what the environment reader held back before `main` (called once, when the monitor's
/// deferral ends), unless code changed the setting meanwhile (code replaces the environment); a
/// refusal is printed, as the errors found before `main` were.
pub(crate) fn apply_deferred() {
    let pending = PENDING_BACKGROUND_THREADS.swap(0, Relaxed);
    if pending & PENDING == 0 || background_threads_now() != (pending & 2 != 0) {
        return;
    }
    if let Err(expected) = apply_background_threads(pending & 1 != 0) {
        let value = std::env::var_os("MEMGOV_BACKGROUND_THREADS").unwrap_or_default();
        let e = ConfigError {
            var: "MEMGOV_BACKGROUND_THREADS",
            value: value.to_string_lossy().into_owned(),
            expected,
        };
        print_errors(&ConfigErrors(vec![e]));
    }
}

fn apply_env(memory: &MemorySource) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    // Not `process_limits()`: that would read the environment, which is what this is doing.
    let mut process = budget::process_entity().limits();
    let mut process_changed = false;
    for var in VARIABLES {
        let Some(raw) = std::env::var_os(var) else {
            continue;
        };
        let value = raw.to_string_lossy();
        let setting = if raw.to_str().is_none() {
            Err(ConfigError {
                var,
                value: value.to_string(),
                expected: "valid UTF-8".into(),
            })
        } else {
            parse_with(var, &value, &|| memory.available())
        };
        match setting {
            Ok(Setting::HardLimit(b)) => {
                process.hard = Some(b);
                process_changed = true;
            }
            Ok(Setting::SoftLimit(b)) => {
                process.soft = Some(b);
                process_changed = true;
            }
            Ok(Setting::Budgets(budgets)) => {
                for (name, limits) in budgets {
                    let name: &'static str = Box::leak(name.into_boxed_str());
                    if let Err(e) = budget::budget_component(name)
                        .and_then(|c| budget::store_component(c, limits))
                    {
                        errors.push(ConfigError {
                            var,
                            value: value.to_string(),
                            expected: e.to_string(),
                        });
                    }
                }
            }
            Ok(Setting::Thresholds(t)) => {
                let _ = pressure::store_thresholds(t);
            }
            Ok(Setting::MonitorInterval(d)) => monitor::store_monitor_interval(d),
            Ok(Setting::EmergencyReserve(b)) => {
                crate::emergency_reserve::store_emergency_reserve(b)
            }
            Ok(Setting::Decay(d)) => {
                if let Err(expected) = apply_decay(d) {
                    errors.push(ConfigError {
                        var,
                        value: value.to_string(),
                        expected,
                    });
                }
            }
            Ok(Setting::GcPercent(percent)) => apply_gc_percent(percent),
            Ok(Setting::BackgroundThreads(on)) => {
                if let Err(expected) = apply_or_defer_background_threads(on) {
                    errors.push(ConfigError {
                        var,
                        value: value.to_string(),
                        expected,
                    });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    errors.extend(unknown_variables());
    if process_changed {
        if let Err(e) = budget::store_process(process) {
            // Only a soft limit above the hard one can be refused here (each size was checked
            // when parsed): report the soft limit and apply the hard one alone.
            let value = std::env::var("MEMGOV_SOFT_LIMIT").unwrap_or_default();
            errors.push(ConfigError {
                var: "MEMGOV_SOFT_LIMIT",
                value,
                expected: e.to_string(),
            });
            let _ = budget::store_process(Limits {
                hard: process.hard,
                soft: None,
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB8: u64 = 8 << 30;

    fn mem() -> Option<u64> {
        Some(GIB8)
    }

    #[test]
    fn size_grammar_table() {
        let good: &[(&str, u64)] = &[
            ("4096", 4096),
            ("1B", 1),
            ("1b", 1),
            ("1KiB", 1024),
            ("1kib", 1024),
            ("512MiB", 512 << 20),
            ("2GiB", 2 << 30),
            ("1TiB", 1 << 40),
            ("1KB", 1000),
            ("5MB", 5_000_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("1.5GiB", 3 << 29),
            ("0.5KB", 500),
            ("  64MiB  ", 64 << 20),
            ("64 MiB", 64 << 20),
            ("50%", GIB8 / 2),
            ("100%", GIB8),
            ("12.5%", GIB8 / 8),
            (" 25 %", GIB8 / 4),
        ];
        for (input, want) in good {
            assert_eq!(parse_size(input, &mem), Ok(*want), "{input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("-1", "no number"),
            ("-5MiB", "no number"),
            ("0", "above 0"),
            ("0MiB", "above 0"),
            ("18446744073709551616", "too large"),
            ("9223372036854775808", "too large"),
            ("20000000TiB", "too large"),
            ("12XB", "unknown unit"),
            ("12 parsecs", "unknown unit"),
            ("10K", "unknown unit"),
            ("150%", "at most 100"),
            ("0%", "above 0"),
            ("-5%", "not a number"),
            ("%", "not a number"),
            ("1.2.3MiB", "not a number"),
            ("MiB", "no number"),
            ("５MiB", "no number"),
            ("5ＭiB", "unknown unit"),
            ("1e9", "unknown unit"),
            ("0x100", "unknown unit"),
            ("abc", "no number"),
        ];
        for (input, why) in bad {
            let e = parse_size(input, &mem).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
            assert!(e.starts_with("a size such as"), "{input:?}: {e}");
        }
        assert!(good.len() + bad.len() >= 30);
    }

    #[test]
    fn a_percentage_smaller_than_a_byte_is_refused_like_zero() {
        let e = parse_size("0.0000000001%", &mem).unwrap_err();
        assert!(e.contains("above 0"), "{e}");
        let e = parse_with("MEMGOV_LIMIT", "0.0000000001%", &mem).unwrap_err();
        assert_eq!(e.var, "MEMGOV_LIMIT");
        assert_eq!(parse_size("0.0000001%", &mem), Ok(GIB8 / 1_000_000_000));
    }

    #[test]
    fn percentages_need_a_memory_figure() {
        assert!(parse_size("50%", &|| None)
            .unwrap_err()
            .contains("could not be read"));
    }

    #[test]
    fn budgets_grammar_table() {
        let ok = parse_budgets("pages=512MiB/400MiB,templates=64MiB, cache=/1GiB", &mem).unwrap();
        assert_eq!(
            ok,
            vec![
                (
                    "pages".to_string(),
                    Limits::hard(512 << 20).with_soft(400 << 20)
                ),
                ("templates".to_string(), Limits::hard(64 << 20)),
                ("cache".to_string(), Limits::soft(1 << 30)),
            ]
        );
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("pages", "no '='"),
            ("pages=1MiB,pages=2MiB", "appears twice"),
            ("=1MiB", "component name"),
            ("pägés=1MiB", "component name"),
            ("a b=1MiB", "component name"),
            ("pages=", "empty"),
            ("pages=1MiB/2MiB", "above the hard limit"),
            ("pages=1MiB/", "empty"),
            ("pages=lots", "no number"),
            ("pages=1MiB,,x=1", "no '='"),
        ];
        for (input, why) in bad {
            let e = parse_budgets(input, &mem).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
        }
    }

    #[test]
    fn thresholds_and_intervals() {
        assert_eq!(
            parse_thresholds("0.7,0.85,0.95").unwrap(),
            Thresholds::default()
        );
        for bad in [
            "70%,85%",
            "90%,85%,95%",
            "70%,85%,101%",
            "a,b,c",
            "0,50%,60%",
            "0.00001%,50%,60%",
        ] {
            assert!(parse_thresholds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1500us"), Ok(Duration::from_micros(1500)));
        for bad in ["", "100", "10 minutes", "500us", "-1ms", "1.5s"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decay_and_switch_grammar() {
        assert_eq!(parse_decay(" OFF "), Ok(DecaySetting::Off));
        assert_eq!(parse_decay("never"), Ok(DecaySetting::Fixed(-1)));
        assert_eq!(parse_decay("0ms"), Ok(DecaySetting::Fixed(0)));
        assert_eq!(parse_decay("1500ms"), Ok(DecaySetting::Fixed(1500)));
        for bad in [
            "",
            "fast",
            "10",
            "-5ms",
            "1.5s",
            "10 minutes",
            "99999999999999999999s",
        ] {
            assert!(parse_decay(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_switch("On"), Ok(true));
        assert_eq!(parse_switch("0"), Ok(false));
        for bad in ["", "yes please", "2"] {
            assert!(parse_switch(bad).is_err(), "{bad:?}");
        }
        let e = parse_with("MEMGOV_DECAY", "fast", &mem).unwrap_err();
        assert_eq!(e.var, "MEMGOV_DECAY");
        if cfg!(feature = "jemalloc") {
            assert!(e.expected.starts_with("auto, off, never"), "{e}");
        }
    }

    #[test]
    fn gc_percent_grammar() {
        for (good, want) in [
            ("100", Some(100)),
            (" 0 ", Some(0)),
            ("50%", Some(50)),
            ("200 %", Some(200)),
            ("OFF", None),
            ("4294967295", Some(u32::MAX)),
        ] {
            assert_eq!(parse_gc_percent(good), Ok(want), "{good:?}");
        }
        for bad in [
            "",
            "%",
            "-1",
            "+5",
            "1.5",
            "100%%",
            "ten",
            "4294967296",
            "1e3",
            "１００",
        ] {
            assert!(parse_gc_percent(bad).is_err(), "{bad:?}");
        }
        let e = parse_with("MEMGOV_GOGC", "-1", &mem).unwrap_err();
        assert_eq!((e.var, e.value.as_str()), ("MEMGOV_GOGC", "-1"));
        if cfg!(feature = "jemalloc") {
            assert_eq!(
                e.to_string(),
                "MEMGOV_GOGC=\"-1\": expected off, or a whole percentage such as 0, 50, 100 or 200% (\"-1\" is neither)"
            );
            assert_eq!(
                parse_with("MEMGOV_GOGC", "75", &mem),
                Ok(Setting::GcPercent(Some(75)))
            );
        }
    }

    #[test]
    fn emergency_reserve_grammar() {
        let reserve = |v: &str| parse_with("MEMGOV_EMERGENCY_RESERVE", v, &mem);
        assert_eq!(reserve(" 0 "), Ok(Setting::EmergencyReserve(0)));
        assert_eq!(reserve("1MiB"), Ok(Setting::EmergencyReserve(1 << 20)));
        assert_eq!(reserve("64KB"), Ok(Setting::EmergencyReserve(64_000)));
        for bad in ["", "-1KiB", "lots", "0KiB"] {
            let e = reserve(bad).unwrap_err();
            assert_eq!(e.var, "MEMGOV_EMERGENCY_RESERVE");
            assert!(e.expected.starts_with("0 or a size"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        let e = parse_with("MEMGOV_SOFT_LIMIT", "80 percent", &mem).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("MEMGOV_SOFT_LIMIT=\"80 percent\": expected a size"),
            "{text}"
        );
        let e = parse_with("MEMGOV_NOPE", "1", &mem).unwrap_err();
        assert!(e.expected.contains("MEMGOV_LIMIT"), "{e}");
        assert!(!e.expected.contains("did you mean"), "{e}");
    }

    #[test]
    fn a_misspelt_variable_is_reported_with_the_nearest_name() {
        for (name, nearest) in [
            ("MEMGOV_LIMT", "MEMGOV_LIMIT"),
            ("MEMGOV_LIMITS", "MEMGOV_LIMIT"),
            ("MEMGOV_SOFTLIMIT", "MEMGOV_SOFT_LIMIT"),
            ("MEMGOV_BUDGET", "MEMGOV_BUDGETS"),
            ("MEMGOV_HTTP_ADR", "MEMGOV_HTTP_ADDR"),
            ("MEMGOV_limit", "MEMGOV_LIMIT"),
            ("MEMGOV_GOG", "MEMGOV_GOGC"),
            ("MEMGOV_BACKGROUNDTHREAD", "MEMGOV_BACKGROUND_THREADS"),
        ] {
            let e = unknown_variable(name, "2GiB").expect(name);
            assert_eq!((e.var, e.value.as_str()), (name, "2GiB"));
            let hint = format!("did you mean {nearest}?");
            assert!(e.expected.contains(&hint), "{name}: {e}");
            assert!(e.expected.contains("MEMGOV_BACKGROUND_THREADS"), "{e}");
        }
        let e = unknown_variable("MEMGOV_COLOUR", "blue").unwrap();
        assert!(!e.expected.contains("did you mean"), "{e}");
        assert!(
            e.to_string()
                .starts_with("MEMGOV_COLOUR=\"blue\": expected one of the variables memgov reads: MEMGOV_LIMIT, "),
            "{e}"
        );
    }

    #[test]
    fn memgov_variables_and_other_variables_are_not_unknown() {
        for name in VARIABLES.iter().chain(OTHER_VARIABLES.iter()) {
            assert_eq!(unknown_variable(name, "x"), None, "{name}");
        }
        for name in ["HOME", "MEMGOV", "memgov_limit", "XMEMGOV_LIMIT", ""] {
            assert_eq!(unknown_variable(name, "x"), None, "{name}");
        }
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("MEMGOV_LIMT", "MEMGOV_LIMIT"), 1);
        assert_eq!(edit_distance("flaw", "lawn"), 2);
    }

    fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("memgov-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, content) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        root
    }

    #[test]
    fn available_memory_prefers_cgroup_v2_then_v1_then_ram() {
        let meminfo = (
            "proc/meminfo",
            "MemTotal:       16384000 kB\nMemFree: 1 kB\n",
        );
        let v2 = tree(
            "v2",
            &[("sys/fs/cgroup/memory.max", "1073741824\n"), meminfo],
        );
        assert_eq!(MemorySource::under(&v2).available(), Some(1 << 30));
        let v2max = tree("v2max", &[("sys/fs/cgroup/memory.max", "max\n"), meminfo]);
        assert_eq!(
            MemorySource::under(&v2max).available(),
            Some(16_384_000 * 1024)
        );
        let v1 = tree(
            "v1",
            &[
                ("sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n"),
                meminfo,
            ],
        );
        assert_eq!(MemorySource::under(&v1).available(), Some(512 << 20));
        let v1none = tree(
            "v1none",
            &[
                (
                    "sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                meminfo,
            ],
        );
        assert_eq!(
            MemorySource::under(&v1none).available(),
            Some(16_384_000 * 1024)
        );
        let nothing = tree("nothing", &[]);
        assert_eq!(MemorySource::under(&nothing).available(), None);
        let pct = parse_size("50%", &|| MemorySource::under(&v2).available()).unwrap();
        assert_eq!(pct, 512 << 20);
        for root in [v2, v2max, v1, v1none, nothing] {
            let _ = std::fs::remove_dir_all(root);
        }
    }

    #[test]
    fn a_cgroup_limit_above_physical_memory_gives_physical_memory() {
        let meminfo = ("proc/meminfo", "MemTotal:       16384000 kB\n");
        let ram = 16_384_000 * 1024;
        // A container limited to 64 GiB on a host with 16 GB: only the 16 GB exist.
        let v2 = tree(
            "v2-above-ram",
            &[("sys/fs/cgroup/memory.max", "68719476736\n"), meminfo],
        );
        assert_eq!(MemorySource::under(&v2).available(), Some(ram));
        let v1 = tree(
            "v1-above-ram",
            &[
                (
                    "sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "68719476736\n",
                ),
                meminfo,
            ],
        );
        assert_eq!(MemorySource::under(&v1).available(), Some(ram));
        // 50% of the available memory is half the RAM, not 32 GiB.
        let pct = parse_size("50%", &|| MemorySource::under(&v2).available()).unwrap();
        assert_eq!(pct, ram / 2);
        // Below the RAM, the cgroup limit still wins; with no meminfo, the cgroup limit alone.
        let below = tree(
            "v2-below-ram",
            &[("sys/fs/cgroup/memory.max", "1073741824\n"), meminfo],
        );
        assert_eq!(MemorySource::under(&below).available(), Some(1 << 30));
        let no_ram = tree(
            "v2-no-meminfo",
            &[("sys/fs/cgroup/memory.max", "68719476736\n")],
        );
        assert_eq!(MemorySource::under(&no_ram).available(), Some(64 << 30));
        for root in [v2, v1, below, no_ram] {
            let _ = std::fs::remove_dir_all(root);
        }
    }

    #[test]
    fn the_limit_of_the_process_cgroup_and_its_ancestors_is_read() {
        let meminfo = ("proc/meminfo", "MemTotal:       16384000 kB\n");
        // A systemd service on a cgroup v2 host: the root cgroup has no memory.max; the service's
        // own cgroup has no limit, its slice has 2 GiB.
        let service = tree(
            "v2-nested",
            &[
                ("proc/self/cgroup", "0::/system.slice/app.service\n"),
                ("sys/fs/cgroup/system.slice/memory.max", "2147483648\n"),
                ("sys/fs/cgroup/system.slice/app.service/memory.max", "max\n"),
                meminfo,
            ],
        );
        assert_eq!(MemorySource::under(&service).available(), Some(2 << 30));
        // The process's own, smaller limit wins over its parent's.
        let own = tree(
            "v2-nested-own",
            &[
                ("proc/self/cgroup", "0::/system.slice/app.service\n"),
                ("sys/fs/cgroup/system.slice/memory.max", "2147483648\n"),
                (
                    "sys/fs/cgroup/system.slice/app.service/memory.max",
                    "1073741824\n",
                ),
                meminfo,
            ],
        );
        assert_eq!(MemorySource::under(&own).available(), Some(1 << 30));
        // cgroup v1: the memory controller's line names the cgroup; the root is unlimited.
        let v1 = tree(
            "v1-nested",
            &[
                (
                    "proc/self/cgroup",
                    "12:pids:/user.slice\n5:cpu,cpuacct:/user.slice\n4:memory:/user.slice/job\n",
                ),
                (
                    "sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                (
                    "sys/fs/cgroup/memory/user.slice/job/memory.limit_in_bytes",
                    "536870912\n",
                ),
                meminfo,
            ],
        );
        assert_eq!(MemorySource::under(&v1).available(), Some(512 << 20));
        // A container with its own cgroup mounted at the root (no cgroup namespace): the path in
        // /proc/self/cgroup does not exist under the mount, the root file is the container's.
        let container = tree(
            "v2-container",
            &[
                ("proc/self/cgroup", "0::/../docker/abc\n"),
                ("sys/fs/cgroup/memory.max", "268435456\n"),
                meminfo,
            ],
        );
        assert_eq!(MemorySource::under(&container).available(), Some(256 << 20));
        for root in [service, own, v1, container] {
            let _ = std::fs::remove_dir_all(root);
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    static SIGPIPES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[cfg(any(target_os = "linux", target_os = "android"))]
    extern "C" fn count_sigpipe(_: libc::c_int) {
        SIGPIPES.fetch_add(1, Relaxed);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn handler() -> libc::sighandler_t {
        count_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t
    }

    /// The SIGPIPE disposition now.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn sigpipe_handler() -> libc::sighandler_t {
        // SAFETY: all-zero is a valid sigaction; a null new action only reads the current one.
        let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `now` is a live sigaction.
        unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut now) };
        now.sa_sigaction
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn set_sigpipe_handler(handler: libc::sighandler_t) {
        // SAFETY: all-zero is a valid sigaction (empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler;
        // SAFETY: `action` is a live sigaction; the handler only touches an atomic.
        unsafe { libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut()) };
    }

    /// Errors are printed after `main` too (a deferred setting jemalloc refuses), and before it
    /// in a program whose constructors started threads: another thread may install its own
    /// SIGPIPE handler while they print. It keeps it. (When the printing thread set SIGPIPE to
    /// ignored for the whole process and then put back what it found, the other thread's handler
    /// was lost.) And a write to a closed pipe while printing raises nothing, then or after.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn printing_errors_leaves_sigpipe_to_the_other_threads() {
        let before = sigpipe_handler();
        // Taken once: a function's address may differ between two places that name it (a
        // release build can give each codegen unit its own copy).
        let counting = handler();
        let (guarded, handler_set) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                guarded.wait();
                set_sigpipe_handler(counting);
                handler_set.wait();
            });
            let guard = SigpipeBlocked::new();
            guarded.wait();
            handler_set.wait();
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe() writes; both are closed below.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: the descriptors are this test's; the buffer is one live byte.
            let (wrote, error) = unsafe {
                libc::close(fds[0]);
                let wrote = libc::write(fds[1], b"x".as_ptr().cast(), 1);
                let error = std::io::Error::last_os_error().raw_os_error();
                libc::close(fds[1]);
                (wrote, error)
            };
            assert_eq!((wrote, error), (-1, Some(libc::EPIPE)));
            drop(guard);
        });
        let after = sigpipe_handler();
        let raised = SIGPIPES.load(Relaxed);
        set_sigpipe_handler(before);
        assert_eq!(after, counting, "the other thread's handler was lost");
        assert_eq!(raised, 0, "the write's SIGPIPE reached the handler");
    }
}
