//! Snapshots for tests: take one, run code, read what changed per component.

use alloc_core::{ComponentId, ComponentStats, Snapshot, HISTOGRAM_BUCKETS};
use std::time::{Duration, Instant};

/// The figures of every component at one moment, for diffing later. See [`snapshot`].
#[derive(Clone, Debug)]
pub struct StatsSnapshot {
    taken: Instant,
    core: Snapshot,
    /// Whether histograms were on when it was taken.
    histograms: bool,
    /// Allocation-size buckets per component, when histograms are on.
    sizes: Vec<(ComponentId, [u64; HISTOGRAM_BUCKETS])>,
}

/// Takes a snapshot of every component's figures.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
/// let before = alloc_stats::snapshot();
/// let v = { let _s = alloc_core::component_scope("diff-doc"); vec![0u8; 100] };
/// let d = before.diff();
/// let c = d.component("diff-doc").unwrap();
/// assert_eq!((c.allocs, c.live_bytes), (1, 100));
/// # drop(v);
/// ```
pub fn snapshot() -> StatsSnapshot {
    let core = alloc_core::snapshot();
    let histograms = alloc_core::histograms_enabled();
    let sizes = if histograms {
        core.components
            .iter()
            .filter(|c| c.alloc_count > 0)
            .map(|c| (c.component, c.component.size_histogram()))
            .collect()
    } else {
        Vec::new()
    };
    StatsSnapshot {
        taken: Instant::now(),
        core,
        histograms,
        sizes,
    }
}

impl StatsSnapshot {
    /// The core snapshot inside.
    pub fn core(&self) -> &Snapshot {
        &self.core
    }

    /// What changed between this snapshot and now.
    pub fn diff(&self) -> Diff {
        self.diff_to(&snapshot())
    }

    /// What changed between this snapshot and `later`.
    pub fn diff_to(&self, later: &StatsSnapshot) -> Diff {
        let components = later
            .core
            .components
            .iter()
            .map(|after| {
                let before = self
                    .core
                    .components
                    .iter()
                    .find(|c| c.component == after.component);
                let mut delta = ComponentDelta::between(before, after);
                let sizes_of = |s: &StatsSnapshot| {
                    s.sizes.iter().find(|h| h.0 == after.component).map(|h| h.1)
                };
                // Without histograms at the earlier snapshot, what they counted before it (while
                // they were last on) is unknown: no size counts rather than counts since the start.
                if let Some(later_sizes) = sizes_of(later).filter(|_| self.histograms) {
                    // A component without allocations at the earlier snapshot had none counted.
                    let earlier = sizes_of(self).unwrap_or([0; HISTOGRAM_BUCKETS]);
                    delta.size_counts = later_sizes
                        .iter()
                        .zip(earlier)
                        .map(|(a, b)| a.saturating_sub(b))
                        .collect();
                }
                delta
            })
            .collect();
        Diff {
            elapsed: later.taken.saturating_duration_since(self.taken),
            components,
        }
    }
}

/// What changed in one component between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentDelta {
    /// The component's name.
    pub name: &'static str,
    /// Blocks allocated in between.
    pub allocs: u64,
    /// Blocks freed in between.
    pub frees: u64,
    /// Blocks reallocated in between.
    pub reallocs: u64,
    /// Change in live bytes (negative when more was freed than allocated).
    pub live_bytes: i64,
    /// Bytes allocated in between (new blocks and realloc growth).
    pub allocated_bytes: u64,
    /// Bytes freed in between (freed blocks and realloc shrinkage).
    pub freed_bytes: u64,
    /// Live bytes at the later snapshot.
    pub live_bytes_after: u64,
    /// The component's peak live bytes at the later snapshot (since the process started).
    pub peak_live_bytes: u64,
    /// Allocations in between per size bucket (see [`alloc_core::histogram_bucket`]); empty unless
    /// histograms were on at both snapshots.
    pub size_counts: Vec<u64>,
}

impl ComponentDelta {
    fn between(before: Option<&ComponentStats>, after: &ComponentStats) -> ComponentDelta {
        let b = |f: fn(&ComponentStats) -> u64| before.map_or(0, f);
        ComponentDelta {
            name: after.name,
            allocs: after.alloc_count.saturating_sub(b(|c| c.alloc_count)),
            frees: after.free_count.saturating_sub(b(|c| c.free_count)),
            reallocs: after.realloc_count.saturating_sub(b(|c| c.realloc_count)),
            live_bytes: after.live_bytes as i64 - b(|c| c.live_bytes) as i64,
            allocated_bytes: after
                .total_allocated_bytes
                .saturating_sub(b(|c| c.total_allocated_bytes)),
            freed_bytes: after
                .total_freed_bytes
                .saturating_sub(b(|c| c.total_freed_bytes)),
            live_bytes_after: after.live_bytes,
            peak_live_bytes: after.peak_live_bytes,
            size_counts: Vec::new(),
        }
    }

    /// Blocks allocated in between and not freed (negative when older blocks were freed).
    pub fn live_blocks(&self) -> i64 {
        self.allocs as i64 - self.frees as i64
    }
}

/// What changed in every component between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diff {
    /// Time between the snapshots.
    pub elapsed: Duration,
    /// One entry per component registered at the later snapshot.
    pub components: Vec<ComponentDelta>,
}

impl Diff {
    /// The change in the component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentDelta> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Components that changed at all.
    pub fn changed(&self) -> impl Iterator<Item = &ComponentDelta> {
        self.components
            .iter()
            .filter(|c| c.allocs + c.frees + c.reallocs > 0)
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<20} {:>12} {:>10} {:>10} {:>10}",
            "component", "live delta", "allocs", "frees", "reallocs"
        )?;
        for c in self.changed() {
            writeln!(
                f,
                "{:<20} {:>12} {:>10} {:>10} {:>10}",
                c.name, c.live_bytes, c.allocs, c.frees, c.reallocs
            )?;
        }
        write!(f, "(over {:?})", self.elapsed)
    }
}
