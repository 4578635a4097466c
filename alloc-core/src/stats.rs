//! Reading the figures: per-component and global statistics, and snapshots of all of them.

use crate::counters::{self, Delta, Shared};
use crate::registry::{self, ComponentId};
use crate::{global, thread};
use std::fmt;

/// The figures of one component.
///
/// `live_*` are current values, `peak_*` maxima, `total_*` and `*_count` running totals since the
/// process started.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
/// let v = {
///     let _scope = alloc_core::component_scope("stats-doc");
///     Vec::<u8>::with_capacity(100)
/// };
/// let s = alloc_core::component_stats("stats-doc").unwrap();
/// assert_eq!((s.live_bytes, s.alloc_count, s.free_count), (100, 1, 0));
/// drop(v);
/// let s = alloc_core::component_stats("stats-doc").unwrap();
/// assert_eq!((s.live_bytes, s.peak_live_bytes, s.free_count), (0, 100, 1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentStats {
    /// The component.
    pub component: ComponentId,
    /// Its name.
    pub name: &'static str,
    /// Bytes requested by live blocks.
    pub live_bytes: u64,
    /// The highest `live_bytes` seen (see the crate docs for how exact it is under concurrency).
    pub peak_live_bytes: u64,
    /// Blocks allocated.
    pub alloc_count: u64,
    /// Blocks freed.
    pub free_count: u64,
    /// Blocks reallocated (a realloc is neither an allocation nor a free).
    pub realloc_count: u64,
    /// Bytes allocated: new blocks plus realloc growth.
    pub total_allocated_bytes: u64,
    /// Bytes freed: freed blocks plus realloc shrinkage.
    pub total_freed_bytes: u64,
    /// Bytes of live blocks as requested from the inner allocator, tags included.
    pub live_inner_bytes: u64,
}

impl ComponentStats {
    /// Blocks currently live (`alloc_count - free_count`).
    pub fn live_blocks(&self) -> u64 {
        self.alloc_count.saturating_sub(self.free_count)
    }
}

/// Process-wide figures: the sum over all components, plus what the registry and the threads look
/// like.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GlobalStats {
    /// Bytes requested by live blocks, all components together.
    pub live_bytes: u64,
    /// The highest `live_bytes` seen.
    pub peak_live_bytes: u64,
    /// Blocks allocated.
    pub alloc_count: u64,
    /// Blocks freed.
    pub free_count: u64,
    /// Blocks reallocated.
    pub realloc_count: u64,
    /// Bytes allocated: new blocks plus realloc growth.
    pub total_allocated_bytes: u64,
    /// Bytes freed: freed blocks plus realloc shrinkage.
    pub total_freed_bytes: u64,
    /// Bytes of live blocks as requested from the inner allocator, tags included.
    pub live_inner_bytes: u64,
    /// `live_inner_bytes - live_bytes`: what the tags add to the requests.
    pub tag_overhead_bytes: u64,
    /// Address space reserved for the shadow tag tables (not memory: only touched pages become
    /// resident). 0 when exact-class requests use trailers.
    pub shadow_reserved_bytes: u64,
    /// Shadow-table bytes given back to the system so far: table pages for address ranges the
    /// inner allocator gave back (jemalloc's purges, once its arenas are hooked; see the README).
    pub shadow_released_bytes: u64,
    /// Components registered (the two reserved ones included).
    pub components: usize,
    /// Names refused because the registry was full.
    pub refused_names: u64,
    /// Frees whose tag held no valid component (a sign of a buffer overrun).
    pub corrupt_tags: u64,
    /// Threads currently holding batched counters.
    pub threads: usize,
    /// Per-thread counter blocks ever made (they are recycled, so this tracks peak thread count).
    pub thread_blocks: usize,
}

/// Every component's figures and the global ones, read together.
///
/// ```
/// let snap = alloc_core::snapshot();
/// assert!(snap.component("unscoped").is_some());
/// println!("{snap}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Process-wide figures.
    pub global: GlobalStats,
    /// One entry per registered component, in registration order.
    pub components: Vec<ComponentStats>,
}

impl Snapshot {
    /// The figures of the component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentStats> {
        self.components.iter().find(|c| c.name == name)
    }
}

fn merge(shared: Delta, pending: Delta) -> Delta {
    let live = shared.live + pending.live;
    let peak = shared.high.max(shared.live.max(0) + pending.high).max(live);
    Delta {
        live: live.max(0),
        high: peak.max(0),
        allocated: shared.allocated + pending.allocated,
        allocs: shared.allocs + pending.allocs,
        frees: shared.frees + pending.frees,
        reallocs: shared.reallocs + pending.reallocs,
        tag: (shared.tag + pending.tag).max(0),
    }
}

fn component_from(id: ComponentId, shared: &Shared, pending: Delta) -> ComponentStats {
    let d = merge(shared.load(), pending);
    ComponentStats {
        component: id,
        name: id.name(),
        live_bytes: d.live as u64,
        peak_live_bytes: d.high as u64,
        alloc_count: d.allocs,
        free_count: d.frees,
        realloc_count: d.reallocs,
        total_allocated_bytes: d.allocated,
        total_freed_bytes: d.allocated.saturating_sub(d.live as u64),
        live_inner_bytes: (d.live + d.tag) as u64,
    }
}

impl ComponentId {
    /// This component's figures, including every thread's batched deltas.
    ///
    /// ```
    /// let id = alloc_core::component("id-stats");
    /// assert_eq!(id.stats().live_bytes, 0);
    /// ```
    pub fn stats(self) -> ComponentStats {
        let shared = counters::component(self.0).unwrap_or_else(|| counters::global());
        counters::consistent(|| component_from(self, shared, thread::pending(Some(self.0))))
    }
}

impl ComponentId {
    /// This component's allocation-size histogram: counts per bucket (see
    /// [`histogram_bucket`](crate::histogram_bucket)), all threads together. All zero while
    /// histograms are off ([`set_histograms`](crate::set_histograms)).
    pub fn size_histogram(self) -> [u64; crate::HISTOGRAM_BUCKETS] {
        thread::histogram(self.0, 0)
    }

    /// This component's histogram of realloc (new) sizes.
    pub fn realloc_histogram(self) -> [u64; crate::HISTOGRAM_BUCKETS] {
        thread::histogram(self.0, 1)
    }
}

/// The figures of the component called `name`; `None` if no such component was ever registered.
///
/// ```
/// assert!(alloc_core::component_stats("no-such-component").is_none());
/// ```
pub fn component_stats(name: &str) -> Option<ComponentStats> {
    crate::config::ensure_init();
    look_for_new_arenas();
    registry::lookup_component(name).map(ComponentId::stats)
}

/// Off the allocation path, on a reader's thread: a chance to wrap the extent hooks of jemalloc
/// arenas made since the last look, so that the shadow tables follow their purges. At most one
/// look a second across the process; a look does not allocate.
#[inline]
fn look_for_new_arenas() {
    #[cfg(feature = "jemalloc")]
    crate::tag::shadow::hook_inner_arenas(std::time::Duration::from_secs(1));
}

/// Live bytes of the whole process (shared counter plus every thread's pending delta). Never
/// allocates.
pub(crate) fn global_live_bytes() -> u64 {
    counters::consistent_within(REFUSAL_TRIES, || {
        (counters::global().load().live + thread::pending(None).live).max(0) as u64
    })
}

/// How often a read made inside the allocator (for the abort line, on a refusal) retries while
/// another thread is flushing: a few, then it takes what it read. Readers outside the allocator
/// retry far longer.
const REFUSAL_TRIES: u32 = 16;

/// Live bytes of `comp`, read inside the allocator on a refusal (see [`REFUSAL_TRIES`]).
pub(crate) fn component_live_bytes(comp: ComponentId) -> u64 {
    let shared = counters::component(comp.0).unwrap_or_else(|| counters::global());
    counters::consistent_within(REFUSAL_TRIES, || {
        component_from(comp, shared, thread::pending(Some(comp.0))).live_bytes
    })
}

/// The process-wide figures.
///
/// ```
/// let g = alloc_core::global_stats();
/// assert!(g.components >= 2);
/// ```
pub fn global_stats() -> GlobalStats {
    crate::config::ensure_init();
    look_for_new_arenas();
    let d = counters::consistent(|| merge(counters::global().load(), thread::pending(None)));
    let (threads, thread_blocks) = thread::block_counts();
    GlobalStats {
        live_bytes: d.live as u64,
        peak_live_bytes: d.high as u64,
        alloc_count: d.allocs,
        free_count: d.frees,
        realloc_count: d.reallocs,
        total_allocated_bytes: d.allocated,
        total_freed_bytes: d.allocated.saturating_sub(d.live as u64),
        live_inner_bytes: (d.live + d.tag) as u64,
        tag_overhead_bytes: d.tag as u64,
        shadow_reserved_bytes: crate::tag::shadow::reserved_bytes() as u64,
        shadow_released_bytes: crate::tag::shadow::released_bytes() as u64,
        components: registry::registered_components(),
        refused_names: registry::refused_names(),
        corrupt_tags: global::corrupt_tags(),
        threads,
        thread_blocks,
    }
}

/// Every component's figures and the global ones.
///
/// Each figure adds every thread's batched deltas, so once threads are quiet (joined, or parked
/// without allocating) the snapshot is exact: the per-component live bytes add up to the global
/// live bytes. While threads run, each figure may lag by the drift documented in the crate docs.
/// The snapshot's own `Vec` is allocated in the caller's current component.
pub fn snapshot() -> Snapshot {
    crate::config::ensure_init();
    let components: Vec<ComponentStats> = registry::all().map(ComponentId::stats).collect();
    assemble(components)
}

/// [`snapshot`] that reports a refused allocation instead of aborting: at a hard limit (the
/// process's, or the caller's component's) the snapshot's `Vec` may be refused, and the
/// infallible [`snapshot`] would then end the process. Reading the other figures
/// ([`global_stats`], [`component_stats`], [`budget_stats`](crate::budget_stats)) allocates
/// nothing once memgov has read its environment (the first memgov call does). (Memgov's own
/// readers, the monitor and the HTTP endpoint, draw on the emergency reserve instead.)
///
/// # Errors
/// The `TryReserveError` of the refused `Vec`.
///
/// ```
/// let snap = alloc_core::try_snapshot().expect("no limit refuses this");
/// assert!(snap.component("unscoped").is_some());
/// ```
pub fn try_snapshot() -> Result<Snapshot, std::collections::TryReserveError> {
    crate::config::ensure_init();
    let count = registry::registered_components();
    let mut components = Vec::new();
    components.try_reserve_exact(count)?;
    // A name registered meanwhile waits for the next snapshot: pushing past the capacity could
    // reallocate, infallibly.
    components.extend(registry::all().take(count).map(ComponentId::stats));
    Ok(assemble(components))
}

/// A [`Snapshot`] of `components` and the global figures read now.
fn assemble(components: Vec<ComponentStats>) -> Snapshot {
    let mut global = global_stats();
    // The process-wide peak is at least any one component's peak (the others are never negative);
    // batching can hide that when the peaks were assembled from different threads' batches.
    let top = components
        .iter()
        .map(|c: &ComponentStats| c.peak_live_bytes)
        .max()
        .unwrap_or(0);
    global.peak_live_bytes = global.peak_live_bytes.max(top);
    Snapshot { global, components }
}

/// Resident bytes of the shadow tag tables now (see the README's design section): memory memgov
/// itself holds for the tags of exact-class blocks. `None` where there are no tables (over the
/// system allocator, or where the reservation failed) or `/proc/self/smaps` cannot be read. It
/// reads and parses that file, so it is for reports (the health report and the exporters use
/// it), not for loops.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// // Over the system allocator every tag is a trailer: there are no tables.
/// assert_eq!(alloc_core::shadow_resident_bytes(), None);
/// ```
pub fn shadow_resident_bytes() -> Option<u64> {
    crate::tag::shadow::resident_bytes()
}

/// Folds the calling thread's batched statistics into the shared counters now and returns its
/// unspent budget credit.
///
/// Readers already include every thread's pending deltas, so this is only needed to hand credit
/// back before a thread idles (credit it holds counts against hard limits) or to refresh the
/// shared counters.
///
/// ```
/// alloc_core::flush_thread();
/// ```
pub fn flush_thread() {
    let _ = thread::with_state(|st| st.flush());
}

impl fmt::Display for Snapshot {
    /// A table for logs: one row per component with live bytes or activity.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:>14} {:>14} {:>12} {:>12} {:>10}",
            "component", "live bytes", "peak bytes", "allocs", "frees", "reallocs"
        )?;
        for c in self
            .components
            .iter()
            .filter(|c| c.alloc_count + c.realloc_count > 0)
        {
            writeln!(
                f,
                "{:<20} {:>14} {:>14} {:>12} {:>12} {:>10}",
                c.name,
                c.live_bytes,
                c.peak_live_bytes,
                c.alloc_count,
                c.free_count,
                c.realloc_count
            )?;
        }
        let g = &self.global;
        write!(
            f,
            "{:<20} {:>14} {:>14} {:>12} {:>12} {:>10}\n(inner allocator asked for {} live bytes, trailer tags {} bytes; threads holding counters: {})",
            "TOTAL", g.live_bytes, g.peak_live_bytes, g.alloc_count, g.free_count, g.realloc_count,
            g.live_inner_bytes, g.tag_overhead_bytes, g.threads
        )
    }
}
