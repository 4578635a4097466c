//! The monitor thread: runs pressure callbacks and periodic maintenance tasks, off the allocation
//! path.
//!
//! It starts on the first [`on_pressure`] / [`every`] registration, on a process hard limit (to
//! hold the emergency reserve), or on [`start_monitor`]. It sleeps until the allocation path
//! pushes a level change (and wakes it), or until the sampling interval passes (default 100 ms,
//! [`set_monitor_interval`]); then it re-evaluates every budget, delivers the level changes to the
//! callbacks in order, and runs the tasks that are due. A
//! callback or task that panics is caught and counted ([`monitor_stats`]); the monitor goes on. The
//! monitor's own allocations, the callbacks' and tasks' included, are tagged with the component
//! `"memgov"`. Callbacks do not run inside the component whose event they handle: that component
//! may be at its hard limit, where an allocation in the callback would be refused (and abort the
//! process if it was infallible) just when the callback is trying to shed memory. At the process's
//! hard limit the monitor draws on the emergency reserve, a slice of that limit kept for the
//! threads that react to pressure ([`set_emergency_reserve`](crate::set_emergency_reserve), 1 MiB
//! by default), and tops it up every round. Its rounds allocate nothing once their buffers have
//! grown; callbacks and tasks can allocate up to the reserve there. Past the reserve a Critical
//! callback should free before it allocates.
//!
//! Callbacks and tasks run one after another on this one thread: one that blocks (on a lock, on
//! I/O, in a long computation) delays every later callback and task, the sampling and the reserve's
//! top-up until it returns. Hand slow work to a thread of your own.

use crate::budget::Scope;
use crate::emergency_reserve;
use crate::pressure::{self, Level, PressureEvent};
use crate::registry::{self, ComponentId};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Callback = Arc<dyn Fn(&PressureEvent) + Send + Sync>;

struct Task {
    id: u64,
    interval: Duration,
    /// When the task runs next; `None` when that is later than an `Instant` can express (never).
    due: Mutex<Option<Instant>>,
    run: Mutex<Box<dyn FnMut() + Send>>,
}

static CALLBACKS: Mutex<Vec<(u64, Option<ComponentId>, Callback)>> = Mutex::new(Vec::new());
static TASKS: Mutex<Vec<Arc<Task>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static INTERVAL_MICROS: AtomicU64 = AtomicU64::new(100_000);
static START: Mutex<bool> = Mutex::new(false);
/// The shortest interval of a periodic task: the shortest sampling interval.
const MIN_TASK_INTERVAL: Duration = Duration::from_millis(1);

static EVENTS_DELIVERED: AtomicU64 = AtomicU64::new(0);
static CALLBACK_PANICS: AtomicU64 = AtomicU64::new(0);
static TASK_RUNS: AtomicU64 = AtomicU64::new(0);
static TASK_PANICS: AtomicU64 = AtomicU64::new(0);
static SAMPLES: AtomicU64 = AtomicU64::new(0);

/// Takes the monitor's locks, in this order, for the fork handler ([`crate::fork`]); dropping
/// the result releases them. A task's own locks are not among them: the thread that forks may be
/// running a task.
pub(crate) fn lock_for_fork() -> impl Sized {
    (lock(&START), lock(&CALLBACKS), lock(&TASKS))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Callbacks and tasks run outside these locks, so a poisoned lock can only come from a panic
    // in our own few lines; the data is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the monitor has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MonitorStats {
    /// Whether the monitor thread runs.
    pub running: bool,
    /// Sampling rounds.
    pub samples: u64,
    /// Pressure events delivered (each to every matching callback).
    pub events: u64,
    /// Callbacks that panicked.
    pub callback_panics: u64,
    /// Periodic task runs.
    pub task_runs: u64,
    /// Periodic task runs that panicked.
    pub task_panics: u64,
}

/// What the monitor has done so far.
///
/// ```
/// let s = alloc_core::monitor_stats();
/// assert_eq!(s.callback_panics, 0);
/// ```
pub fn monitor_stats() -> MonitorStats {
    crate::fork::after_fork();
    MonitorStats {
        running: pressure::monitor_started(),
        samples: SAMPLES.load(Relaxed),
        events: EVENTS_DELIVERED.load(Relaxed),
        callback_panics: CALLBACK_PANICS.load(Relaxed),
        task_runs: TASK_RUNS.load(Relaxed),
        task_panics: TASK_PANICS.load(Relaxed),
    }
}

/// Sets how often the monitor samples the budgets and checks for due tasks (default 100 ms).
///
/// ```
/// alloc_core::set_monitor_interval(std::time::Duration::from_millis(50));
/// # alloc_core::set_monitor_interval(std::time::Duration::from_millis(100));
/// ```
pub fn set_monitor_interval(interval: Duration) {
    crate::config::ensure_init();
    store_monitor_interval(interval);
}

/// [`set_monitor_interval`] without reading the environment first (the environment reader uses
/// it).
pub(crate) fn store_monitor_interval(interval: Duration) {
    let micros = interval.as_micros().clamp(1_000, u128::from(u64::MAX)) as u64;
    INTERVAL_MICROS.store(micros, Relaxed);
    pressure::wake_monitor();
}

/// The monitor's sampling interval.
pub fn monitor_interval() -> Duration {
    crate::config::ensure_init();
    Duration::from_micros(INTERVAL_MICROS.load(Relaxed))
}

/// Starts the monitor thread if it is not running.
///
/// # Panics
/// If the operating system refuses to start a thread.
///
/// ```
/// alloc_core::start_monitor();
/// assert!(alloc_core::monitor_stats().running);
/// ```
pub fn start_monitor() {
    crate::config::ensure_init();
    start_monitor_thread();
}

/// Set while the environment is read before `main`: the monitor is not started then (a program
/// may fork before it does anything else, and keep no thread started before); a start asked for
/// meanwhile waits for [`end_deferral`].
static DEFERRING: AtomicBool = AtomicBool::new(false);
/// A start asked for while [`DEFERRING`].
static START_WANTED: AtomicBool = AtomicBool::new(false);

/// Holds back the monitor's start until [`end_deferral`] (the environment reader, before `main`).
pub(crate) fn defer_start() {
    DEFERRING.store(true, Relaxed);
}

/// Ends [`defer_start`]: starts the monitor if something asked for it meanwhile. Called by every
/// use of memgov's API (through `ensure_init`), so one load when there is nothing to do.
#[inline]
pub(crate) fn end_deferral() {
    if DEFERRING.load(Relaxed) {
        end_deferral_now();
    }
}

/// Whether the monitor's start is held back (the environment is being read before `main`).
pub(crate) fn deferring() -> bool {
    DEFERRING.load(Relaxed)
}

#[cold]
fn end_deferral_now() {
    DEFERRING.store(false, Relaxed);
    crate::config::apply_deferred();
    if START_WANTED.swap(false, Relaxed) {
        start_monitor_thread();
    }
}

/// [`start_monitor`] without reading the environment first (the environment reader may start it).
pub(crate) fn start_monitor_thread() {
    if DEFERRING.load(Relaxed) {
        START_WANTED.store(true, Relaxed);
        return;
    }
    let mut started = lock(&START);
    if *started {
        return;
    }
    crate::fork::register();
    let handle = std::thread::Builder::new()
        .name("memgov-monitor".into())
        .spawn(run)
        .expect("memgov: cannot start the monitor thread");
    pressure::set_monitor(handle.thread().clone());
    *started = true;
}

/// Where a monitor starts reading pressure events: 0 (every event since the start of the
/// process) for the first, the ring's head for one a forked child starts (its parent's monitor
/// delivered the events before the fork, or would have).
static FIRST_EVENT: AtomicU64 = AtomicU64::new(0);

/// In a forked child, at the first use of the API: the parent's monitor did not come along; if
/// the parent had one, the child starts its own. (If the fork came while another thread held
/// `START`, this waits for ever: the same holds for every lock a vanished thread held.)
pub(crate) fn restart_in_child() {
    {
        let mut started = lock(&START);
        if !*started {
            return;
        }
        *started = false;
    }
    FIRST_EVENT.store(pressure::events_head(), Relaxed);
    start_monitor_thread();
}

/// Calls `f` on the monitor thread for every pressure change of the process and of every
/// component. Returns an id for [`remove_callback`]. `f` should return quickly: the monitor runs
/// every callback and task on its one thread, so one that blocks delays the others, the
/// sampling and the emergency reserve's top-up until it returns.
///
/// ```
/// let id = alloc_core::on_pressure(|event| {
///     if event.level == alloc_core::Level::Critical {
///         eprintln!("{} is critical: {} bytes", event.scope, event.charged_bytes);
///     }
/// });
/// alloc_core::remove_callback(id);
/// ```
pub fn on_pressure(f: impl Fn(&PressureEvent) + Send + Sync + 'static) -> u64 {
    register(None, Arc::new(f))
}

/// Calls `f` on the monitor thread for every pressure change of the component called `name`.
///
/// # Panics
/// When the name is invalid (see [`component`](crate::component)).
pub fn on_component_pressure(
    name: &'static str,
    f: impl Fn(&PressureEvent) + Send + Sync + 'static,
) -> u64 {
    register(Some(registry::component(name)), Arc::new(f))
}

fn register(filter: Option<ComponentId>, f: Callback) -> u64 {
    let id = NEXT_ID.fetch_add(1, Relaxed);
    lock(&CALLBACKS).push((id, filter, f));
    start_monitor();
    id
}

/// Removes a callback or periodic task by the id its registration returned; false if none had it.
/// A task that is running right now finishes that run and is not run again.
///
/// ```
/// let id = alloc_core::on_pressure(|_| {});
/// assert!(alloc_core::remove_callback(id));
/// assert!(!alloc_core::remove_callback(id));
/// ```
pub fn remove_callback(id: u64) -> bool {
    let mut callbacks = lock(&CALLBACKS);
    let before = callbacks.len();
    callbacks.retain(|(i, _, _)| *i != id);
    if callbacks.len() != before {
        return true;
    }
    drop(callbacks);
    let mut tasks = lock(&TASKS);
    let before = tasks.len();
    tasks.retain(|t| t.id != id);
    tasks.len() != before
}

/// Runs `task` on the monitor thread every `interval` (at the monitor's sampling granularity),
/// for periodic maintenance such as expiring cache entries. Returns an id for
/// [`remove_callback`]. An interval below 1 ms counts as 1 ms (the shortest sampling interval);
/// one too long to come due (`Duration::MAX`) never does.
///
/// ```
/// let id = alloc_core::every(std::time::Duration::from_secs(60), || { /* expire entries */ });
/// alloc_core::remove_callback(id);
/// ```
pub fn every(interval: Duration, task: impl FnMut() + Send + 'static) -> u64 {
    crate::config::ensure_init();
    every_internal(interval, task)
}

/// [`every`] without reading the environment first.
pub(crate) fn every_internal(interval: Duration, task: impl FnMut() + Send + 'static) -> u64 {
    let id = NEXT_ID.fetch_add(1, Relaxed);
    let interval = interval.max(MIN_TASK_INTERVAL);
    let task = Arc::new(Task {
        id,
        interval,
        due: Mutex::new(Instant::now().checked_add(interval)),
        run: Mutex::new(Box::new(task)),
    });
    lock(&TASKS).push(task);
    start_monitor_thread();
    pressure::wake_monitor();
    id
}

/// `base` scaled down by the process's pressure: all of it at Normal, half at Warning, a quarter at
/// Critical (at least 1 when `base` is not 0). Seed 001's `GetAdaptiveBufferSize`.
///
/// ```
/// assert_eq!(alloc_core::adaptive_size(1000), 1000); // no pressure
/// ```
pub fn adaptive_size(base: usize) -> usize {
    scale(base, pressure::pressure())
}

/// `base` scaled down by the pressure of the component called `name`. See [`adaptive_size`].
pub fn component_adaptive_size(name: &str, base: usize) -> usize {
    scale(base, pressure::component_pressure(name))
}

fn scale(base: usize, level: Level) -> usize {
    let scaled = match level {
        Level::Normal => base,
        Level::Warning => base / 2,
        Level::Critical => base / 4,
    };
    if base > 0 {
        scaled.max(1)
    } else {
        0
    }
}

/// Snapshots of the callback and task lists, kept by the monitor thread from round to round so
/// that a round allocates only when a list has grown (the monitor may run at the process's hard
/// limit, on its reserve).
#[derive(Default)]
struct Buffers {
    scopes: Vec<Scope>,
    events: Vec<PressureEvent>,
    callbacks: Vec<(Option<ComponentId>, Callback)>,
    due: Vec<Arc<Task>>,
}

fn deliver(event: &PressureEvent, callbacks: &mut Vec<(Option<ComponentId>, Callback)>) {
    callbacks.clear();
    callbacks.extend(
        lock(&CALLBACKS)
            .iter()
            .map(|(_, filter, f)| (*filter, Arc::clone(f))),
    );
    for (filter, f) in callbacks.drain(..) {
        let matches = match (filter, event.scope) {
            (None, _) => true,
            (Some(c), Scope::Component(s)) => c == s,
            (Some(_), Scope::Process) => false,
        };
        if !matches {
            continue;
        }
        EVENTS_DELIVERED.fetch_add(1, Relaxed);
        if catch_unwind(AssertUnwindSafe(|| f(event))).is_err() {
            CALLBACK_PANICS.fetch_add(1, Relaxed);
        }
    }
}

/// A task's own lock, or `None` if it is held. Only the monitor thread takes a task's locks, so
/// in a process that did not fork they are never held when it asks. In a forked child, one the
/// parent's monitor held at the fork (it was running the task) stays held for ever: that task is
/// skipped there, instead of the child's monitor waiting for ever. (The fork handler cannot take
/// these locks first: the thread that forks may be running the task.)
fn try_lock_task<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// When `task` runs next, if that is known and its lock is free.
fn due_at(task: &Task) -> Option<Instant> {
    try_lock_task(&task.due).and_then(|due| *due)
}

fn run_due_tasks(due: &mut Vec<Arc<Task>>) {
    let now = Instant::now();
    // Run outside the list's lock, so tasks can register or remove tasks; a task removed meanwhile
    // finishes its run and is gone from the list for the next round.
    due.clear();
    due.extend(
        lock(&TASKS)
            .iter()
            .filter(|t| due_at(t).is_some_and(|due| due <= now))
            .cloned(),
    );
    for task in due.drain(..) {
        let Some(mut run) = try_lock_task(&task.run) else {
            continue;
        };
        TASK_RUNS.fetch_add(1, Relaxed);
        if catch_unwind(AssertUnwindSafe(&mut *run)).is_err() {
            TASK_PANICS.fetch_add(1, Relaxed);
        }
        if let Some(mut due) = try_lock_task(&task.due) {
            *due = Instant::now().checked_add(task.interval);
        }
    }
}

fn next_wake() -> Duration {
    let interval = monitor_interval();
    let now = Instant::now();
    lock(&TASKS)
        .iter()
        .filter_map(|t| due_at(t).map(|due| due.saturating_duration_since(now)))
        .min()
        .map_or(interval, |d| d.min(interval))
}

fn run() {
    let _scope = crate::scope::component_scope("memgov");
    crate::thread::set_uses_emergency_reserve();
    let mut cursor = FIRST_EVENT.load(Relaxed);
    let mut buffers = Buffers::default();
    loop {
        SAMPLES.fetch_add(1, Relaxed);
        emergency_reserve::maintain();
        // Arenas jemalloc made since the last look get their hooks wrapped, so that the shadow
        // tables' pages follow jemalloc's purges.
        #[cfg(feature = "jemalloc")]
        crate::tag::shadow::hook_inner_arenas(Duration::from_secs(1));
        buffers.scopes.clear();
        buffers.scopes.extend(pressure::scopes());
        for &scope in &buffers.scopes {
            pressure::evaluate(scope);
        }
        buffers.events.clear();
        pressure::drain(&mut cursor, |e| buffers.events.push(e));
        for event in &buffers.events {
            deliver(event, &mut buffers.callbacks);
        }
        run_due_tasks(&mut buffers.due);
        std::thread::park_timeout(next_wake());
    }
}
