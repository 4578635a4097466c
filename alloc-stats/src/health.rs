//! One call that says how memory is doing, in plain language.

use crate::history::history;
use crate::leaks::{detect_leaks, LeakConfig, LeakFinding};
use alloc_core::{
    budget_stats, emergency_reserve_stats, CacheStats, ComponentStats, Level, PoolStats,
    QueueStats, Scope,
};
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
    /// The live caches ([`alloc_core::caches`]).
    pub caches: Vec<CacheStats>,
    /// The live pools ([`alloc_core::pools`]).
    pub pools: Vec<PoolStats>,
    /// The live queues ([`alloc_core::queues`]).
    pub queues: Vec<QueueStats>,
    /// What to do about it.
    pub recommendations: Vec<String>,
}

/// Fragmentation above which [`health`] recommends compaction (with at least
/// [`WASTE_ALERT_BYTES`] at stake).
pub const FRAGMENTATION_ALERT: f64 = 1.5;

/// Bytes that must be at stake (active − allocated, or resident − active) before a ratio past
/// [`FRAGMENTATION_ALERT`] makes [`health`] recommend compaction: a small process has high ratios
/// from jemalloc's own metadata and a few kept pages, and nothing worth a compaction to win.
pub const WASTE_ALERT_BYTES: u64 = 16 << 20;

/// Shadow tag tables above this many bytes, and above a quarter of the live bytes, make [`health`]
/// recommend compaction: they mostly describe memory freed since (a table holds at most 1/8 of
/// the exact-class blocks it describes while they live).
pub const SHADOW_TABLE_ALERT_BYTES: u64 = 16 << 20;

/// Lookups a cache must have served before [`health`] judges its hit ratio.
pub const CACHE_JUDGED_AFTER: u64 = 1000;

/// A cache whose hits are fewer than this fraction of its lookups makes [`health`] say so: it
/// holds memory and gives little back.
pub const CACHE_HIT_ALERT: f64 = 0.1;

/// Pushes a queue must have taken before [`health`] judges what it lost.
pub const QUEUE_JUDGED_AFTER: u64 = 1000;

/// A queue that lost (dropped or refused) more than this fraction of the values pushed into it
/// makes [`health`] say so: its consumers fall behind its producers.
pub const QUEUE_LOSS_ALERT: f64 = 0.01;

/// Assesses memory now (seed 003's health assessment): pressure, leak findings from the history,
/// fragmentation, the biggest components, the caches, pools and queues, and recommendations.
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
    let figures = jemalloc_figures();
    let fragmentation = figures.map(|f| ratio(f.active, f.allocated));
    let resident_ratio = figures.map(|f| ratio(f.resident, f.active));
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
    if let Some(f) = figures {
        recommendations.extend(compaction_advice(f));
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
    let caches = alloc_core::caches();
    recommendations.extend(caches.iter().filter_map(cache_advice));
    let pools = alloc_core::pools();
    let queues = alloc_core::queues();
    recommendations.extend(queues.iter().filter_map(queue_advice));
    HealthReport {
        level,
        leaks,
        fragmentation,
        resident_ratio,
        top,
        shadow_table_bytes,
        caches,
        pools,
        queues,
        recommendations,
    }
}

/// What to say of a queue that has seen [`QUEUE_JUDGED_AFTER`] pushes and lost more than
/// [`QUEUE_LOSS_ALERT`] of them: nothing otherwise.
fn queue_advice(q: &QueueStats) -> Option<String> {
    let tries = q.total_pushed + q.total_refused;
    let lost = q.total_dropped() + q.total_refused;
    if tries < QUEUE_JUDGED_AFTER || (lost as f64) <= QUEUE_LOSS_ALERT * tries as f64 {
        return None;
    }
    let why = if q.total_shed > q.total_displaced + q.total_refused {
        "most were shed under memory pressure"
    } else {
        "its consumers fall behind: add consumers, or raise its capacity"
    };
    Some(format!(
        "queue {}: lost {lost} of {tries} values ({} displaced, {} refused, {} shed); {why}",
        q.name, q.total_displaced, q.total_refused, q.total_shed
    ))
}

/// What to say of a cache that has served [`CACHE_JUDGED_AFTER`] lookups with fewer hits than
/// [`CACHE_HIT_ALERT`]: nothing otherwise.
fn cache_advice(c: &CacheStats) -> Option<String> {
    let lookups = c.total_hits + c.total_misses;
    let ratio = c.hit_ratio()?;
    if lookups < CACHE_JUDGED_AFTER || ratio >= CACHE_HIT_ALERT {
        return None;
    }
    let why = if c.total_shed > c.total_evictions {
        "it sheds under pressure more than it evicts: the memory it needs is not there"
    } else {
        "it evicts entries before they are used again: make it bigger, or drop it"
    };
    Some(format!(
        "cache {}: {:.1}% of {lookups} lookups hit; {why}",
        c.name,
        100.0 * ratio
    ))
}

/// jemalloc's figures the health report judges, in bytes.
#[derive(Clone, Copy, Debug)]
struct JemallocFigures {
    allocated: u64,
    active: u64,
    resident: u64,
}

#[cfg(feature = "jemalloc")]
fn jemalloc_figures() -> Option<JemallocFigures> {
    alloc_jemalloc::stats().ok().map(|s| JemallocFigures {
        allocated: s.allocated,
        active: s.active,
        resident: s.resident,
    })
}

#[cfg(not(feature = "jemalloc"))]
fn jemalloc_figures() -> Option<JemallocFigures> {
    None
}

/// `part / whole`, 1.0 for an empty whole (as jemalloc's own ratios).
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// What to do about fragmentation and kept pages: advice only where a ratio passes
/// [`FRAGMENTATION_ALERT`] and [`WASTE_ALERT_BYTES`] are at stake.
fn compaction_advice(f: JemallocFigures) -> Vec<String> {
    let mut advice = Vec::new();
    let fragmentation = ratio(f.active, f.allocated);
    if fragmentation >= FRAGMENTATION_ALERT
        && f.active.saturating_sub(f.allocated) >= WASTE_ALERT_BYTES
    {
        advice.push(format!(
            "fragmentation {fragmentation:.2}: run memgov::jemalloc::compact()"
        ));
    }
    let kept = ratio(f.resident, f.active);
    if kept >= FRAGMENTATION_ALERT && f.resident.saturating_sub(f.active) >= WASTE_ALERT_BYTES {
        advice.push(format!(
            "resident memory is {kept:.2}x the active memory: freed pages are kept; compact(), a soft limit or a GC percent (MEMGOV_GOGC=100) returns them"
        ));
    }
    advice
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
        for c in &self.caches {
            let bound = match c.max_weight {
                u64::MAX => "unbounded".to_string(),
                max => format!("of {max}"),
            };
            writeln!(
                f,
                "cache {}: {} entries, weight {} {bound}, {} hits of {} lookups, {} shed",
                c.name,
                c.live_entries,
                c.live_weight,
                c.total_hits,
                c.total_hits + c.total_misses,
                c.total_shed
            )?;
        }
        for p in &self.pools {
            writeln!(
                f,
                "pool {}: {} idle, {} lent, {} reused of {} gets",
                p.name,
                p.live_idle,
                p.live_out,
                p.total_hits,
                p.total_hits + p.total_misses
            )?;
        }
        for q in &self.queues {
            writeln!(
                f,
                "queue {} ({}): {} of {} entries, {} pushed, {} popped, {} lost, {} refused",
                q.name,
                q.overflow,
                q.live_entries,
                q.bound,
                q.total_pushed,
                q.total_popped,
                q.total_dropped(),
                q.total_refused
            )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn figures(allocated: u64, active: u64, resident: u64) -> JemallocFigures {
        JemallocFigures {
            allocated,
            active,
            resident,
        }
    }

    #[test]
    fn a_small_process_gets_no_compaction_advice_for_high_ratios() {
        // The demo's figures, about: 1.51x resident over active, 5 MiB at stake.
        assert!(compaction_advice(figures(9 * MIB, 10 * MIB, 15 * MIB)).is_empty());
        assert!(compaction_advice(figures(2 * MIB, 6 * MIB, 6 * MIB)).is_empty());
    }

    #[test]
    fn a_large_waste_gets_advice_with_its_ratio() {
        let advice = compaction_advice(figures(100 * MIB, 162 * MIB, 170 * MIB));
        assert_eq!(
            advice,
            ["fragmentation 1.62: run memgov::jemalloc::compact()"]
        );
        let advice = compaction_advice(figures(100 * MIB, 110 * MIB, 200 * MIB));
        assert_eq!(advice.len(), 1);
        assert!(
            advice[0].starts_with("resident memory is 1.82x"),
            "{advice:?}"
        );
        // Ratios under the alert give nothing, whatever the bytes.
        assert!(compaction_advice(figures(1000 * MIB, 1400 * MIB, 1900 * MIB)).is_empty());
    }
}
