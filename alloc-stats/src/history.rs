//! A bounded history of samples, taken by memgov's monitor thread.

use alloc_core::ComponentId;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One sample of the process.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Live bytes, all components.
    pub live_bytes: u64,
    /// Live blocks (allocations minus frees), all components.
    pub live_blocks: u64,
    /// Threads in the process (`/proc/self/status`), when it could be read.
    pub threads: Option<u64>,
    /// Resident bytes of the process (`/proc/self/statm`), when it could be read.
    pub resident_bytes: Option<u64>,
    /// Per component: (component, live bytes, live blocks).
    pub components: Vec<(ComponentId, u64, u64)>,
}

impl Sample {
    /// Takes a sample now.
    pub fn now() -> Sample {
        let snap = alloc_core::snapshot();
        Sample {
            at: Instant::now(),
            live_bytes: snap.global.live_bytes,
            live_blocks: snap
                .global
                .alloc_count
                .saturating_sub(snap.global.free_count),
            threads: os_threads(),
            resident_bytes: resident(),
            components: snap
                .components
                .iter()
                .filter(|c| c.alloc_count > 0)
                .map(|c| (c.component, c.live_bytes, c.live_blocks()))
                .collect(),
        }
    }

    /// The live bytes of `component` in this sample (0 if it had none).
    pub fn live_of(&self, component: ComponentId) -> u64 {
        self.components
            .iter()
            .find(|c| c.0 == component)
            .map_or(0, |c| c.1)
    }

    /// The live blocks of `component` in this sample (0 if it had none).
    pub fn blocks_of(&self, component: ComponentId) -> u64 {
        self.components
            .iter()
            .find(|c| c.0 == component)
            .map_or(0, |c| c.2)
    }
}

fn os_threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

/// How the history is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Samples kept (the oldest is dropped first). Default 100, as in the seed documents.
    pub capacity: usize,
    /// Time between samples. Default 1 s.
    pub interval: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            capacity: 100,
            interval: Duration::from_secs(1),
        }
    }
}

struct Ring {
    config: HistoryConfig,
    samples: VecDeque<Sample>,
    task: Option<u64>,
    /// Which start made it: a sampling task adds to the ring of its own start only.
    generation: u64,
}

static RING: Mutex<Option<Ring>> = Mutex::new(None);
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

fn lock() -> std::sync::MutexGuard<'static, Option<Ring>> {
    RING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether [`register_fork_handlers`] ran.
static FORK_HANDLERS: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// [`RING`]'s lock, held by the thread that forks from [`hold_across_fork`] until
    /// [`release_after_fork`] drops it.
    static HELD: Cell<Option<MutexGuard<'static, Option<Ring>>>> = const { Cell::new(None) };
}

/// Registers fork handlers that take [`RING`]'s lock before a fork and release it after, in the
/// parent and the child, so that a fork while another thread reads or adds to the history does
/// not leave the lock held for ever in the child. The lock nests with no other: these handlers
/// may run before or after memgov's own.
fn register_fork_handlers() {
    if FORK_HANDLERS.swap(true, Relaxed) {
        return;
    }
    // SAFETY: registers handlers that stay valid for the life of the process (plain functions).
    unsafe {
        libc::pthread_atfork(
            Some(hold_across_fork),
            Some(release_after_fork),
            Some(release_after_fork),
        )
    };
}

extern "C" fn hold_across_fork() {
    let guard = lock();
    let _ = HELD.try_with(|h| h.set(Some(guard)));
}

extern "C" fn release_after_fork() {
    let _ = HELD.try_with(|h| drop(h.take()));
}

/// Starts (or restarts, emptied) the history: the monitor thread takes a [`Sample`] every
/// `config.interval` and keeps the last `config.capacity`.
///
/// ```
/// alloc_stats::start_history(alloc_stats::HistoryConfig::default());
/// alloc_stats::stop_history();
/// ```
pub fn start_history(config: HistoryConfig) {
    register_fork_handlers();
    let capacity = config.capacity.max(2);
    let generation = GENERATIONS.fetch_add(1, Relaxed) + 1;
    let task = alloc_core::every(config.interval, move || {
        let sample = Sample::now();
        if let Some(ring) = lock().as_mut().filter(|r| r.generation == generation) {
            if ring.samples.len() == ring.config.capacity {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample);
        }
    });
    // One swap under the lock: of two starts at once, the later swap's ring stays and the
    // earlier one's task is removed with the ring it replaced.
    let replaced = lock().replace(Ring {
        config: HistoryConfig { capacity, ..config },
        samples: VecDeque::with_capacity(capacity),
        task: Some(task),
        generation,
    });
    remove_task(replaced);
}

/// Stops sampling and drops the history.
pub fn stop_history() {
    let stopped = lock().take();
    remove_task(stopped);
}

/// Removes the sampling task of a ring taken out of [`RING`] (outside its lock: the task takes it).
fn remove_task(ring: Option<Ring>) {
    if let Some(task) = ring.and_then(|r| r.task) {
        alloc_core::remove_callback(task);
    }
}

/// The samples kept so far, oldest first (empty when the history is not running).
pub fn history() -> Vec<Sample> {
    lock()
        .as_ref()
        .map_or_else(Vec::new, |r| r.samples.iter().cloned().collect())
}
