//! The soft-limit responder: the `GOMEMLIMIT` of Rust. Keeps jemalloc's resident memory under the
//! process's soft limit by tuning decay and purging, on the monitor thread.
//!
//! Freed memory is not returned to the system at once: jemalloc keeps dirty pages for
//! `dirty_decay_ms` (10 s by default) in case they are needed again, so a program can free 500 MiB
//! and stay 500 MiB bigger for seconds. The responder watches pressure against the process's soft
//! limit (the hard limit when there is no soft one) and acts, like Go's GC working harder as the
//! heap nears `GOMEMLIMIT`:
//!
//! | level | decay (dirty / muzzy) | purge |
//! |---|---|---|
//! | Normal | what jemalloc had when the responder started | no |
//! | Warning | 100 ms / 0 ms | no |
//! | Critical | 0 ms / 0 ms (freed pages go back at once) | every arena, at most once per 250 ms |
//!
//! The rate limit on purges is the twin of Go's GC CPU limiter: the responder cannot spin purging.
//! Levels use the same thresholds and hysteresis as every budget ([`Thresholds`](crate::Thresholds)).
//!
//! Pressure comes from one of two places ([`PressureSource`]):
//! * **resident** (the default): jemalloc's `stats.resident`, sampled every 50 ms. This is what
//!   the operating system charges the process for, dirty pages included, so it is what a soft limit
//!   on memory should watch.
//! * **charged**: memgov's counted bytes (the process budget's pressure level). Live data only:
//!   dirty pages never raise it, so it reacts to growth of the heap itself, not to what jemalloc
//!   keeps.
//!
//! Every action is counted ([`responder_stats`]). The responder starts when a process soft limit is
//! set (unless `MEMGOV_DECAY` says `off` or a fixed decay), or explicitly with [`start_responder`].

use crate::budget;
use crate::monitor;
use crate::pressure::{self, Level};
use alloc_jemalloc::Decay;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the responder measures pressure from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PressureSource {
    /// jemalloc's resident bytes (what the system charges the process for).
    #[default]
    Resident,
    /// memgov's charged bytes for the process (live data plus thread credit).
    Charged,
}

/// How the responder acts. See the module docs for the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponderPolicy {
    /// What pressure is measured from.
    pub source: PressureSource,
    /// Decay times at Warning.
    pub warning: Decay,
    /// Decay times at Critical.
    pub critical: Decay,
    /// Purge at Critical (rate-limited by `min_purge_interval`).
    pub purge_at_critical: bool,
    /// The least time between two purges.
    pub min_purge_interval: Duration,
    /// How often resident bytes are sampled.
    pub interval: Duration,
}

impl Default for ResponderPolicy {
    fn default() -> Self {
        ResponderPolicy {
            source: PressureSource::Resident,
            warning: Decay {
                dirty_ms: 100,
                muzzy_ms: 0,
            },
            critical: Decay {
                dirty_ms: 0,
                muzzy_ms: 0,
            },
            purge_at_critical: true,
            min_purge_interval: Duration::from_millis(250),
            interval: Duration::from_millis(50),
        }
    }
}

/// What the responder has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponderStats {
    /// Whether it runs.
    pub running: bool,
    /// Its current level.
    pub level: Level,
    /// Samples taken.
    pub samples: u64,
    /// Decay changes made (entering Warning or Critical, or restoring on recovery).
    pub decay_changes: u64,
    /// Purges made.
    pub purges: u64,
    /// Purges skipped because the last one was too recent.
    pub purges_rate_limited: u64,
    /// Bytes of resident memory the purges gave back, as measured around them.
    pub purged_bytes: u64,
    /// Controls that failed (each is otherwise ignored: the responder goes on).
    pub errors: u64,
    /// The highest resident bytes seen in a sample.
    pub resident_peak: u64,
}

/// The decay times jemalloc had when the responder started: the defaults for new arenas, and
/// each initialised arena's own (they differ: jemalloc's huge arena purges at once by default).
#[derive(Clone, Debug)]
struct Restore {
    defaults: Decay,
    arenas: Vec<(u32, Decay)>,
}

impl Restore {
    fn take() -> Result<Restore, alloc_jemalloc::CtlError> {
        let defaults = Decay {
            dirty_ms: alloc_jemalloc::default_dirty_decay_ms()?,
            muzzy_ms: alloc_jemalloc::default_muzzy_decay_ms()?,
        };
        let mut arenas = Vec::new();
        for i in 0..alloc_jemalloc::arena_count()? {
            // An arena that is not initialised fails the read: it has no times of its own yet.
            if let Ok(d) = alloc_jemalloc::arena_decay(i) {
                arenas.push((i, d));
            }
        }
        Ok(Restore { defaults, arenas })
    }

    /// Puts the times back: the defaults everywhere (arenas created since get them), then each
    /// arena's own.
    fn apply(&self) -> Result<(), alloc_jemalloc::CtlError> {
        alloc_jemalloc::set_decay(self.defaults)?;
        for &(i, d) in &self.arenas {
            if d != self.defaults {
                alloc_jemalloc::set_arena_decay(i, d)?;
            }
        }
        Ok(())
    }
}

struct State {
    policy: ResponderPolicy,
    restore: Restore,
    task: Option<u64>,
    last_purge: Option<Instant>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Set by `MEMGOV_DECAY=off` or a fixed decay: no automatic start.
pub(crate) static AUTO_START_DISABLED: AtomicBool = AtomicBool::new(false);
static LEVEL: AtomicU8 = AtomicU8::new(0);
static SAMPLES: AtomicU64 = AtomicU64::new(0);
static DECAY_CHANGES: AtomicU64 = AtomicU64::new(0);
static PURGES: AtomicU64 = AtomicU64::new(0);
static RATE_LIMITED: AtomicU64 = AtomicU64::new(0);
static PURGED: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static RESIDENT_PEAK: AtomicU64 = AtomicU64::new(0);

/// Takes the responder's state lock (for the fork handler, [`crate::fork`]); dropping the
/// result releases it.
pub(crate) fn lock_for_fork() -> impl Sized {
    lock()
}

fn lock() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the responder with `policy` (restarting it if it runs). It remembers jemalloc's decay
/// times now, to restore them on recovery and on [`stop_responder`].
///
/// # Errors
/// [`alloc_jemalloc::CtlError`] when the current decay times cannot be read.
///
/// ```
/// alloc_core::start_responder(alloc_core::ResponderPolicy::default()).unwrap();
/// assert!(alloc_core::responder_stats().running);
/// alloc_core::stop_responder();
/// ```
pub fn start_responder(policy: ResponderPolicy) -> Result<(), alloc_jemalloc::CtlError> {
    // Reads the environment if that was not done, and ends the start-up deferral of the monitor,
    // which runs the responder's task.
    crate::config::ensure_init();
    start_responder_internal(policy)
}

/// [`start_responder`] without reading the environment first (the environment reader starts the
/// responder through [`auto_start`]).
fn start_responder_internal(policy: ResponderPolicy) -> Result<(), alloc_jemalloc::CtlError> {
    stop_responder();
    // The rest under the lock, which `tick` takes first: no tick runs between the level's reset
    // and the state's publication, and of two starts at once, the later one stops the earlier
    // one's task (else it would go on ticking, twice per interval after the next start).
    let mut guard = lock();
    if let Some(raced) = guard.take() {
        if let Some(task) = raced.task {
            monitor::remove_callback(task);
        }
        if LEVEL.swap(Level::Normal as u8, Relaxed) != Level::Normal as u8 {
            act(raced.restore.apply());
        }
    }
    let restore = Restore::take()?;
    LEVEL.store(Level::Normal as u8, Relaxed);
    let task = monitor::every_internal(policy.interval, tick);
    *guard = Some(State {
        policy,
        restore,
        task: Some(task),
        last_purge: None,
    });
    RUNNING.store(true, Relaxed);
    Ok(())
}

/// Stops the responder and restores the decay times it found.
pub fn stop_responder() {
    let Some(state) = lock().take() else { return };
    RUNNING.store(false, Relaxed);
    if let Some(task) = state.task {
        monitor::remove_callback(task);
    }
    if LEVEL.swap(Level::Normal as u8, Relaxed) != Level::Normal as u8 {
        act(state.restore.apply());
        DECAY_CHANGES.fetch_add(1, Relaxed);
    }
}

/// What the responder has done so far.
pub fn responder_stats() -> ResponderStats {
    ResponderStats {
        running: RUNNING.load(Relaxed),
        level: Level::from_u8(LEVEL.load(Relaxed)),
        samples: SAMPLES.load(Relaxed),
        decay_changes: DECAY_CHANGES.load(Relaxed),
        purges: PURGES.load(Relaxed),
        purges_rate_limited: RATE_LIMITED.load(Relaxed),
        purged_bytes: PURGED.load(Relaxed),
        errors: ERRORS.load(Relaxed),
        resident_peak: RESIDENT_PEAK.load(Relaxed),
    }
}

/// Starts the responder with the default policy when a process soft limit is set and nothing
/// disabled it.
pub(crate) fn auto_start() {
    if RUNNING.load(Relaxed) || AUTO_START_DISABLED.load(Relaxed) {
        return;
    }
    if budget::process_entity().limits().soft.is_some()
        && start_responder_internal(ResponderPolicy::default()).is_err()
    {
        ERRORS.fetch_add(1, Relaxed);
    }
}

fn act(result: Result<(), alloc_jemalloc::CtlError>) {
    if result.is_err() {
        ERRORS.fetch_add(1, Relaxed);
    }
}

/// One sample, on the monitor thread.
fn tick() {
    let mut guard = lock();
    let Some(state) = guard.as_mut() else { return };
    SAMPLES.fetch_add(1, Relaxed);
    let resident = match alloc_jemalloc::refresh()
        .and_then(|()| alloc_jemalloc::stats_read("stats.resident"))
    {
        Ok(r) => r,
        Err(_) => {
            ERRORS.fetch_add(1, Relaxed);
            return;
        }
    };
    RESIDENT_PEAK.fetch_max(resident, Relaxed);
    let current = Level::from_u8(LEVEL.load(Relaxed));
    let next = match state.policy.source {
        PressureSource::Charged => pressure::pressure(),
        PressureSource::Resident => match budget::process_entity().pressure_base() {
            Some(base) => pressure::next_level(current, resident, base),
            None => Level::Normal,
        },
    };
    if next != current {
        LEVEL.store(next as u8, Relaxed);
        act(match next {
            Level::Normal => state.restore.apply(),
            Level::Warning => alloc_jemalloc::set_decay(state.policy.warning).map(|_| ()),
            Level::Critical => alloc_jemalloc::set_decay(state.policy.critical).map(|_| ()),
        });
        DECAY_CHANGES.fetch_add(1, Relaxed);
    }
    if next == Level::Critical && state.policy.purge_at_critical {
        let due = state
            .last_purge
            .is_none_or(|t| t.elapsed() >= state.policy.min_purge_interval);
        if due {
            state.last_purge = Some(Instant::now());
            match alloc_jemalloc::purge_all()
                .and_then(|()| alloc_jemalloc::refresh())
                .and_then(|()| alloc_jemalloc::stats_read("stats.resident"))
            {
                Ok(after) => {
                    PURGES.fetch_add(1, Relaxed);
                    PURGED.fetch_add(resident.saturating_sub(after), Relaxed);
                }
                Err(_) => {
                    ERRORS.fetch_add(1, Relaxed);
                }
            }
        } else {
            RATE_LIMITED.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are the ones the module docs and the README give.
    #[test]
    fn default_policy_is_the_documented_one() {
        let p = ResponderPolicy::default();
        assert_eq!(
            p.warning,
            Decay {
                dirty_ms: 100,
                muzzy_ms: 0
            }
        );
        assert_eq!(
            p.critical,
            Decay {
                dirty_ms: 0,
                muzzy_ms: 0
            }
        );
        assert_eq!(p.min_purge_interval, Duration::from_millis(250));
        assert_eq!(p.interval, Duration::from_millis(50));
        assert_eq!(p.source, PressureSource::Resident);
    }
}
