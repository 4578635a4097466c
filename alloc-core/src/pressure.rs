//! Pressure levels with hysteresis, and the queue of level changes the monitor thread turns into
//! callbacks.
//!
//! A budget's usage is its charged bytes (live bytes plus the credit threads hold, see
//! `budget.rs`) as a fraction of its soft limit (of its hard limit when it has no soft one). With
//! the default thresholds a budget enters [`Level::Warning`] at 85% and [`Level::Critical`] at 95%,
//! and comes down only below a lower threshold: from Critical to Warning below 85%, to Normal below
//! 70%. A program hovering around one threshold therefore does not flap.
//!
//! Levels are re-evaluated where usage changes by a credit chunk (never more than once per 64 KiB
//! charged or returned, off the allocation path's fast half), when limits change, and by the
//! monitor every sampling interval. A change is pushed onto a fixed ring of events (atomics only:
//! this can run inside the allocator) and the monitor thread is woken to run the callbacks.

use crate::budget::{self, Scope};
use crate::event_ring::EventRing;
use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicPtr, AtomicU32};
use std::thread::Thread;

/// How close a budget is to its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Level {
    /// Below the warning threshold (or recovered below the recovery threshold).
    #[default]
    Normal = 0,
    /// At or above the warning threshold: time to shed optional memory.
    Warning = 1,
    /// At or above the critical threshold: shed everything that can be shed.
    Critical = 2,
}

impl Level {
    pub(crate) fn from_u8(v: u8) -> Level {
        match v {
            1 => Level::Warning,
            2 => Level::Critical,
            _ => Level::Normal,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Normal => "normal",
            Level::Warning => "warning",
            Level::Critical => "critical",
        })
    }
}

/// The pressure thresholds, as fractions of a budget's soft limit.
///
/// ```
/// let t = alloc_core::Thresholds::default();
/// assert_eq!((t.recovery, t.warning, t.critical), (0.70, 0.85, 0.95));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Below this, a budget at Warning or Critical recovers to Normal.
    pub recovery: f64,
    /// At or above this, Normal becomes Warning; below it, Critical recovers to Warning.
    pub warning: f64,
    /// At or above this, the level is Critical.
    pub critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            recovery: 0.70,
            warning: 0.85,
            critical: 0.95,
        }
    }
}

/// Thresholds that are not `0 < recovery < warning < critical <= 1`, at least a millionth apart
/// (they are kept in millionths of the limit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThresholdError {
    /// The rejected thresholds.
    pub thresholds: Thresholds,
}

impl fmt::Display for ThresholdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.thresholds;
        write!(
            f,
            "pressure thresholds {}/{}/{} are invalid; expected 0 < recovery < warning < critical <= 1, \
             at least a millionth apart",
            t.recovery, t.warning, t.critical
        )
    }
}

impl std::error::Error for ThresholdError {}

// Thresholds in millionths of the limit.
static RECOVERY: AtomicU32 = AtomicU32::new(700_000);
static WARNING: AtomicU32 = AtomicU32::new(850_000);
static CRITICAL: AtomicU32 = AtomicU32::new(950_000);

/// Sets the pressure thresholds for every budget.
///
/// # Errors
/// [`ThresholdError`] unless `0 < recovery < warning < critical <= 1`, at least a millionth
/// apart.
///
/// ```
/// use alloc_core::Thresholds;
/// alloc_core::set_thresholds(Thresholds { recovery: 0.6, warning: 0.8, critical: 0.9 }).unwrap();
/// assert!(alloc_core::set_thresholds(Thresholds { recovery: 0.9, warning: 0.8, critical: 0.95 }).is_err());
/// alloc_core::set_thresholds(Thresholds::default()).unwrap();
/// ```
pub fn set_thresholds(t: Thresholds) -> Result<(), ThresholdError> {
    crate::config::ensure_init();
    store_thresholds(t)
}

/// [`set_thresholds`] without reading the environment first (the environment reader uses it).
pub(crate) fn store_thresholds(t: Thresholds) -> Result<(), ThresholdError> {
    let [recovery, warning, critical] = validate(t)?;
    RECOVERY.store(recovery, Relaxed);
    WARNING.store(warning, Relaxed);
    CRITICAL.store(critical, Relaxed);
    for scope in scopes() {
        evaluate(scope);
    }
    Ok(())
}

/// Checks `t` and returns it in millionths, as kept: the order must hold after rounding too, or
/// a recovery threshold below a millionth would be 0 and no budget could ever recover.
pub(crate) fn validate(t: Thresholds) -> Result<[u32; 3], ThresholdError> {
    let ok =
        0.0 < t.recovery && t.recovery < t.warning && t.warning < t.critical && t.critical <= 1.0;
    let millionths = |f: f64| (f * 1e6).round() as u32;
    let m = [
        millionths(t.recovery),
        millionths(t.warning),
        millionths(t.critical),
    ];
    if ok && 0 < m[0] && m[0] < m[1] && m[1] < m[2] {
        Ok(m)
    } else {
        Err(ThresholdError { thresholds: t })
    }
}

/// The pressure thresholds in force.
pub fn thresholds() -> Thresholds {
    crate::config::ensure_init();
    let f = |a: &AtomicU32| f64::from(a.load(Relaxed)) / 1e6;
    Thresholds {
        recovery: f(&RECOVERY),
        warning: f(&WARNING),
        critical: f(&CRITICAL),
    }
}

/// The level a budget at `current` moves to with `charged` bytes against a base of `base`.
pub(crate) fn next_level(current: Level, charged: u64, base: u64) -> Level {
    let at = |a: &AtomicU32| (u128::from(base) * u128::from(a.load(Relaxed)) / 1_000_000) as u64;
    let (recovery, warning, critical) = (at(&RECOVERY), at(&WARNING), at(&CRITICAL));
    match current {
        _ if charged >= critical => Level::Critical,
        Level::Normal if charged >= warning => Level::Warning,
        Level::Normal => Level::Normal,
        _ if charged < recovery => Level::Normal,
        Level::Critical if charged < warning => Level::Warning,
        other => other,
    }
}

/// What changed, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The level rose to Warning.
    Warning,
    /// The level rose to Critical.
    Critical,
    /// The level fell.
    Recovery,
}

/// A change of pressure level, delivered to callbacks on the monitor thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PressureEvent {
    /// Whose budget.
    pub scope: Scope,
    /// Warning, Critical or Recovery.
    pub kind: EventKind,
    /// The level before.
    pub previous: Level,
    /// The level now.
    pub level: Level,
    /// Charged bytes when the change was seen.
    pub charged_bytes: u64,
    /// The limit the level is a fraction of (the soft limit, else the hard one).
    pub limit_bytes: u64,
}

/// Re-evaluates the level of `scope`; pushes an event and wakes the monitor when it changes.
/// Never allocates.
pub(crate) fn evaluate(scope: Scope) {
    let e = scope.entity();
    let current = Level::from_u8(e.level.load(Relaxed));
    let (charged, base) = usage(scope);
    let next = match base {
        Some(base) => next_level(current, charged, base),
        None => Level::Normal,
    };
    if next == current
        || e.level
            .compare_exchange(current as u8, next as u8, Relaxed, Relaxed)
            .is_err()
    {
        return;
    }
    let kind = match next {
        _ if next < current => EventKind::Recovery,
        Level::Critical => EventKind::Critical,
        _ => EventKind::Warning,
    };
    push(PressureEvent {
        scope,
        kind,
        previous: current,
        level: next,
        charged_bytes: charged,
        limit_bytes: base.unwrap_or(0),
    });
    wake_monitor();
}

/// What pressure levels measure for `scope`: its charged bytes and the limit they are a fraction
/// of (the soft limit, else the hard one). For the process, the emergency reserve counts in
/// neither: it is charged to the process but is not the program's use, and the program can only
/// reach the hard limit less the reserve.
fn usage(scope: Scope) -> (u64, Option<u64>) {
    let e = scope.entity();
    match scope {
        Scope::Component(_) => (e.charged(), e.pressure_base()),
        Scope::Process => {
            let reserve = crate::emergency_reserve::held();
            let limits = e.limits();
            let base = limits
                .soft
                .or(limits.hard.map(|hard| hard.saturating_sub(reserve).max(1)));
            (e.charged().saturating_sub(reserve), base)
        }
    }
}

/// Every scope that has limits: the process and each limited component.
pub(crate) fn scopes() -> impl Iterator<Item = Scope> {
    std::iter::once(Scope::Process).chain(
        crate::registry::all()
            .filter(|c| budget::component_entity(c.0).pressure_base().is_some())
            .map(Scope::Component),
    )
}

/// The process's pressure level.
///
/// ```
/// assert_eq!(alloc_core::pressure(), alloc_core::Level::Normal);
/// ```
pub fn pressure() -> Level {
    crate::config::ensure_init();
    Level::from_u8(budget::process_entity().level.load(Relaxed))
}

/// The pressure level of the component called `name` (Normal if it has no budget).
pub fn component_pressure(name: &str) -> Level {
    crate::config::ensure_init();
    crate::registry::lookup_component(name).map_or(Level::Normal, |c| {
        Level::from_u8(budget::component_entity(c.0).level.load(Relaxed))
    })
}

// The event ring: multi-producer (any thread, inside the allocator), single consumer (the monitor).
static EVENTS: EventRing = EventRing::new();

fn push(e: PressureEvent) {
    EVENTS.push(e);
}

/// Takes the events after `cursor` (monitor only), in order; see [`EventRing::drain`].
pub(crate) fn drain(cursor: &mut u64, f: impl FnMut(PressureEvent)) {
    EVENTS.drain(cursor, f);
}

/// Pressure events lost: more than 256 arrived between two monitor wake-ups, or (rarer) two
/// threads wrote one slot of the ring at once, one stalled while 256 more events arrived.
pub fn dropped_events() -> u64 {
    EVENTS.dropped()
}

/// Where the monitor starts reading events: those pushed from now on.
pub(crate) fn events_head() -> u64 {
    EVENTS.head()
}

/// In a forked child: forgets the event producers that were writing at the fork.
/// Async-signal-safe.
pub(crate) fn forget_event_writers() {
    EVENTS.forget_writers();
}

/// The monitor thread's handle, once one was started: a leaked box, replaced (and the old one
/// leaked too) only when a forked child starts a monitor of its own, so that a waker that loaded
/// the old pointer can still use it.
static MONITOR: AtomicPtr<Thread> = AtomicPtr::new(std::ptr::null_mut());

/// Records the monitor thread just started.
pub(crate) fn set_monitor(thread: Thread) {
    MONITOR.store(Box::into_raw(Box::new(thread)), Release);
}

/// Whether a monitor thread was started (in this process: a forked child starts with its
/// parent's answer until it starts its own).
pub(crate) fn monitor_started() -> bool {
    !MONITOR.load(Acquire).is_null()
}

/// Wakes the monitor thread if it runs. Lock-free and allocation-free (a futex wake).
pub(crate) fn wake_monitor() {
    // SAFETY: a non-null MONITOR is a box leaked by `set_monitor`, never freed.
    if let Some(t) = unsafe { MONITOR.load(Acquire).as_ref() } {
        t.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_follows_the_thresholds() {
        use Level::*;
        let base = 1000;
        let steps = [
            (Normal, 840, Normal),
            (Normal, 850, Warning),
            (Warning, 700, Warning),
            (Warning, 699, Normal),
            (Warning, 950, Critical),
            (Critical, 860, Critical),
            (Critical, 849, Warning),
            (Critical, 600, Normal),
            (Normal, 2000, Critical),
        ];
        for (from, charged, to) in steps {
            assert_eq!(next_level(from, charged, base), to, "{from:?} at {charged}");
        }
    }
}
