//! One call that says how memory is doing, in plain language.

use crate::history::history;
use crate::leaks::{detect_leaks, LeakConfig, LeakFinding};
use alloc_core::{budget_stats, emergency_reserve_stats, ComponentStats, Level, Scope};
use std::fmt;

/// The health of the process's memory.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HealthReport {
    /// The process's pressure level.
    pub level: Level,
    /// Suspected leaks in the history (empty when no history is kept).
    pub leaks: Vec<LeakFinding>,
    /// jemalloc's `active / allocated` (1.0 = no fragmentation), when jemalloc is the allocator.
    pub fragmentation: Option<f64>,
    /// jemalloc's `resident / active`: resident memory holding no live data, relative to what does.
    pub resident_ratio: Option<f64>,
    /// The five components with the most live bytes.
    pub top: Vec<ComponentStats>,
    /// Resident bytes of memgov's own shadow tag tables ([`alloc_core::shadow_resident_bytes`]),
    /// where there are tables.
    pub shadow_table_bytes: Option<u64>,
    /// What to do about it.
    pub recommendations: Vec<String>,
}

/// Fragmentation above which [`health`] recommends compaction.
pub const FRAGMENTATION_ALERT: f64 = 1.5;

/// Shadow tag tables above this many bytes, and above a quarter of the live bytes, make [`health`]
/// recommend compaction: they mostly describe memory freed since (a table holds at most 1/8 of
/// the exact-class blocks it describes while they live).
pub const SHADOW_TABLE_ALERT_BYTES: u64 = 16 << 20;

/// Assesses memory now (seed 003's health assessment): pressure, leak findings from the history,
/// fragmentation, the biggest components, and recommendations.
///
/// ```
/// let report = alloc_stats::health();
/// println!("{report}");
/// ```
pub fn health() -> HealthReport {
    let level = budget_stats(Scope::Process).level;
    let leaks = detect_leaks(&history(), &LeakConfig::default());
    let mut top = alloc_core::snapshot().components;
    top.sort_by_key(|c| std::cmp::Reverse(c.live_bytes));
    top.truncate(5);
    let (fragmentation, resident_ratio) = jemalloc_ratios();
    let mut recommendations = Vec::new();
    match level {
        Level::Critical => recommendations
            .push("pressure is critical: shed caches and reject work now".to_string()),
        Level::Warning => {
            recommendations.push("pressure is at warning: shrink caches and batches".to_string())
        }
        Level::Normal => {}
    }
    let reserve = emergency_reserve_stats();
    if reserve.full_bytes > 0 && reserve.held_bytes < reserve.full_bytes / 2 {
        recommendations.push(format!(
            "emergency reserve at {} of {} bytes: the threads that react to pressure are allocating at the hard limit; free memory now or raise the limit",
            reserve.held_bytes, reserve.full_bytes
        ));
    }
    if let Some(f) = fragmentation.filter(|&f| f >= FRAGMENTATION_ALERT) {
        recommendations.push(format!(
            "fragmentation {f:.2}: run memgov::jemalloc::compact()"
        ));
    }
    if let Some(r) = resident_ratio.filter(|&r| r >= FRAGMENTATION_ALERT) {
        recommendations.push(format!(
            "resident memory is {r:.2}x the active memory: freed pages are kept; compact() or a soft limit returns them"
        ));
    }
    let shadow_table_bytes = alloc_core::shadow_resident_bytes();
    let live = alloc_core::global_stats().live_bytes;
    if let Some(t) = shadow_table_bytes.filter(|&t| t > SHADOW_TABLE_ALERT_BYTES && t > live / 4) {
        recommendations.push(format!(
            "memgov's shadow tag tables hold {t} bytes for {live} live bytes: they mostly describe freed memory; run memgov::jemalloc::compact()"
        ));
    }
    for leak in &leaks {
        recommendations.push(format!("possible leak: {leak}"));
    }
    HealthReport {
        level,
        leaks,
        fragmentation,
        resident_ratio,
        top,
        shadow_table_bytes,
        recommendations,
    }
}

#[cfg(feature = "jemalloc")]
fn jemalloc_ratios() -> (Option<f64>, Option<f64>) {
    match alloc_jemalloc::stats() {
        Ok(s) => (Some(s.fragmentation()), Some(s.resident_ratio())),
        Err(_) => (None, None),
    }
}

#[cfg(not(feature = "jemalloc"))]
fn jemalloc_ratios() -> (Option<f64>, Option<f64>) {
    (None, None)
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pressure: {}", self.level)?;
        if let Some(x) = self.fragmentation {
            writeln!(f, "fragmentation (active/allocated): {x:.2}")?;
        }
        if let Some(t) = self.shadow_table_bytes {
            writeln!(f, "memgov shadow tag tables: {t} bytes resident")?;
        }
        for c in &self.top {
            writeln!(f, "  {:<20} {:>14} live bytes", c.name, c.live_bytes)?;
        }
        if self.recommendations.is_empty() {
            write!(f, "no action needed")
        } else {
            for (i, r) in self.recommendations.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(f, "- {r}")?;
            }
            Ok(())
        }
    }
}
