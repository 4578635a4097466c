//! Exporters: a table for logs, JSON, and the Prometheus text format.

use alloc_core::{
    budget_stats, emergency_reserve_stats, BudgetStats, CacheStats, ComponentId, ComponentStats,
    Level, PoolStats, QueueStats, Scope, Snapshot,
};
use std::fmt::Write as _;

/// The snapshot as a table for logs (the same as its `Display`).
pub fn to_table(s: &Snapshot) -> String {
    s.to_string()
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Normal => "normal",
        Level::Warning => "warning",
        Level::Critical => "critical",
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt(v: Option<u64>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

fn json_budget(out: &mut String, b: &BudgetStats) {
    let _ = write!(
        out,
        "{{\"hard_limit_bytes\":{},\"soft_limit_bytes\":{},\"charged_bytes\":{},\"level\":\"{}\",\"failures\":{}}}",
        json_opt(b.limits.hard),
        json_opt(b.limits.soft),
        b.charged_bytes,
        level_name(b.level),
        b.failures
    );
}

fn has_budget(b: &BudgetStats) -> bool {
    b.limits.hard.is_some() || b.limits.soft.is_some() || b.failures > 0
}

/// The snapshot as JSON. Field names are stable:
///
/// ```text
/// {"global": {"live_bytes", "peak_live_bytes", "alloc_count", "free_count", "realloc_count",
///             "total_allocated_bytes", "total_freed_bytes", "live_inner_bytes",
///             "tag_overhead_bytes", "threads", "components", "refused_names"},
///  "budget": {"hard_limit_bytes", "soft_limit_bytes", "charged_bytes", "level", "failures"},
///  "emergency_reserve": {"target_bytes", "held_bytes", "draws", "drawn_bytes"},
///  "shadow_tables": {"resident_bytes" (null without tables), "released_bytes"},
///  "jemalloc": {"jemalloc_allocated_bytes", "jemalloc_active_bytes", "jemalloc_resident_bytes",
///               "jemalloc_mapped_bytes", "jemalloc_retained_bytes", "jemalloc_metadata_bytes",
///               "jemalloc_dirty_bytes", "jemalloc_muzzy_bytes" (these eight absent when
///               jemalloc's statistics cannot be read), "responder_running",
///               "responder_pressure_level", "responder_decay_changes_total",
///               "responder_purges_total", "responder_purged_bytes_total",
///               "responder_errors_total", "gc_percent" (null when off),
///               "gc_percent_samples_total", "gc_percent_purges_total",
///               "gc_percent_purged_bytes_total", "gc_percent_errors_total"}
///              (null without the jemalloc feature),
///  "components": [{"name", "live_bytes", "peak_live_bytes", "alloc_count", "free_count",
///                  "realloc_count", "total_allocated_bytes", "total_freed_bytes",
///                  "budget": {...} or null}],
///  "caches": [{"name", "component", "entries", "weight", "max_weight", "bound", "level",
///              "hits", "misses", "inserts", "evictions", "shed", "refused", "expired"}],
///  "pools": [{"name", "component", "idle", "lent", "max_idle", "bound", "level", "hits",
///             "misses", "returns", "discards", "shed", "detached"}],
///  "queues": [{"name", "component", "overflow", "entries", "weight", "capacity", "max_weight",
///              "bound", "weight_bound", "level", "closed", "peak_entries", "pushed", "popped",
///              "displaced", "refused", "waits", "shed"}]}
/// ```
///
/// Limits absent are `null`, and so are the weights of caches bounded by pressure alone; levels
/// are `"normal"`, `"warning"` or `"critical"`; a queue's overflow is `"drop_oldest"`,
/// `"reject"` or `"block"`. The caches, pools and queues are the live ones
/// ([`alloc_core::caches`], [`alloc_core::pools`], [`alloc_core::queues`]), and jemalloc's
/// figures are read, when the JSON is made.
///
/// ```
/// let json = alloc_stats::to_json(&alloc_core::snapshot());
/// assert!(json.starts_with("{\"global\":{\"live_bytes\":"));
/// ```
pub fn to_json(s: &Snapshot) -> String {
    let g = &s.global;
    let mut out = String::with_capacity(256 + 256 * s.components.len());
    let _ = write!(
        out,
        "{{\"global\":{{\"live_bytes\":{},\"peak_live_bytes\":{},\"alloc_count\":{},\"free_count\":{},\"realloc_count\":{},\"total_allocated_bytes\":{},\"total_freed_bytes\":{},\"live_inner_bytes\":{},\"tag_overhead_bytes\":{},\"threads\":{},\"components\":{},\"refused_names\":{}}},\"budget\":",
        g.live_bytes,
        g.peak_live_bytes,
        g.alloc_count,
        g.free_count,
        g.realloc_count,
        g.total_allocated_bytes,
        g.total_freed_bytes,
        g.live_inner_bytes,
        g.tag_overhead_bytes,
        g.threads,
        g.components,
        g.refused_names
    );
    json_budget(&mut out, &budget_stats(Scope::Process));
    let r = emergency_reserve_stats();
    let _ = write!(
        out,
        ",\"emergency_reserve\":{{\"target_bytes\":{},\"held_bytes\":{},\"draws\":{},\"drawn_bytes\":{}}}",
        r.target_bytes, r.held_bytes, r.draws, r.drawn_bytes
    );
    let _ = write!(out, ",\"shadow_tables\":{{\"resident_bytes\":");
    match alloc_core::shadow_resident_bytes() {
        Some(bytes) => {
            let _ = write!(out, "{bytes}");
        }
        None => out.push_str("null"),
    }
    let _ = write!(
        out,
        ",\"released_bytes\":{}}}",
        s.global.shadow_released_bytes
    );
    crate::export_jemalloc::json(&mut out);
    out.push_str(",\"components\":[");
    for (i, c) in s.components.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_str(&mut out, c.name);
        let _ = write!(
            out,
            ",\"live_bytes\":{},\"peak_live_bytes\":{},\"alloc_count\":{},\"free_count\":{},\"realloc_count\":{},\"total_allocated_bytes\":{},\"total_freed_bytes\":{},\"budget\":",
            c.live_bytes,
            c.peak_live_bytes,
            c.alloc_count,
            c.free_count,
            c.realloc_count,
            c.total_allocated_bytes,
            c.total_freed_bytes
        );
        let b = budget_stats(Scope::Component(c.component));
        if has_budget(&b) {
            json_budget(&mut out, &b);
        } else {
            out.push_str("null");
        }
        out.push('}');
    }
    out.push_str("],\"caches\":[");
    for (i, c) in alloc_core::caches().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_cache(&mut out, c);
    }
    out.push_str("],\"pools\":[");
    for (i, p) in alloc_core::pools().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_pool(&mut out, p);
    }
    out.push_str("],\"queues\":[");
    for (i, q) in alloc_core::queues().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_queue(&mut out, q);
    }
    out.push_str("]}");
    out
}

/// A weight bound, `null` for none (`u64::MAX`).
fn json_bound(v: u64) -> String {
    json_opt((v != u64::MAX).then_some(v))
}

fn json_cache(out: &mut String, c: &CacheStats) {
    out.push_str("{\"name\":");
    json_str(out, c.name);
    out.push_str(",\"component\":");
    json_str(out, c.component.name());
    let _ = write!(
        out,
        ",\"entries\":{},\"weight\":{},\"max_weight\":{},\"bound\":{},\"level\":\"{}\",\"hits\":{},\"misses\":{},\"inserts\":{},\"evictions\":{},\"shed\":{},\"refused\":{},\"expired\":{}}}",
        c.live_entries,
        c.live_weight,
        json_bound(c.max_weight),
        json_bound(c.bound),
        level_name(c.level),
        c.total_hits,
        c.total_misses,
        c.total_inserts,
        c.total_evictions,
        c.total_shed,
        c.total_refused,
        c.total_expired
    );
}

fn json_pool(out: &mut String, p: &PoolStats) {
    out.push_str("{\"name\":");
    json_str(out, p.name);
    out.push_str(",\"component\":");
    json_str(out, p.component.name());
    let _ = write!(
        out,
        ",\"idle\":{},\"lent\":{},\"max_idle\":{},\"bound\":{},\"level\":\"{}\",\"hits\":{},\"misses\":{},\"returns\":{},\"discards\":{},\"shed\":{},\"detached\":{}}}",
        p.live_idle,
        p.live_out,
        p.max_idle,
        p.bound,
        level_name(p.level),
        p.total_hits,
        p.total_misses,
        p.total_returns,
        p.total_discards,
        p.total_shed,
        p.total_detached
    );
}

fn json_queue(out: &mut String, q: &QueueStats) {
    out.push_str("{\"name\":");
    json_str(out, q.name);
    out.push_str(",\"component\":");
    json_str(out, q.component.name());
    let _ = write!(
        out,
        ",\"overflow\":\"{}\",\"entries\":{},\"weight\":{},\"capacity\":{},\"max_weight\":{},\"bound\":{},\"weight_bound\":{},\"level\":\"{}\",\"closed\":{},\"peak_entries\":{},\"pushed\":{},\"popped\":{},\"displaced\":{},\"refused\":{},\"waits\":{},\"shed\":{}}}",
        q.overflow,
        q.live_entries,
        q.live_weight,
        q.capacity,
        json_bound(q.max_weight),
        q.bound,
        json_bound(q.weight_bound),
        level_name(q.level),
        q.closed,
        q.peak_entries,
        q.total_pushed,
        q.total_popped,
        q.total_displaced,
        q.total_refused,
        q.total_waits,
        q.total_shed
    );
}

fn label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    value: fn(&ComponentStats) -> u64,
}

const FAMILIES: [Family<'static>; 7] = [
    Family {
        name: "memgov_live_bytes",
        help: "Bytes requested by live blocks.",
        kind: "gauge",
        value: |c| c.live_bytes,
    },
    Family {
        name: "memgov_peak_live_bytes",
        help: "Highest live bytes seen.",
        kind: "gauge",
        value: |c| c.peak_live_bytes,
    },
    Family {
        name: "memgov_live_blocks",
        help: "Live blocks.",
        kind: "gauge",
        value: |c| c.live_blocks(),
    },
    Family {
        name: "memgov_allocations_total",
        help: "Blocks allocated.",
        kind: "counter",
        value: |c| c.alloc_count,
    },
    Family {
        name: "memgov_frees_total",
        help: "Blocks freed.",
        kind: "counter",
        value: |c| c.free_count,
    },
    Family {
        name: "memgov_reallocations_total",
        help: "Blocks reallocated.",
        kind: "counter",
        value: |c| c.realloc_count,
    },
    Family {
        name: "memgov_allocated_bytes_total",
        help: "Bytes allocated (new blocks and realloc growth).",
        kind: "counter",
        value: |c| c.total_allocated_bytes,
    },
];

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, scope: &str, v: impl std::fmt::Display) {
    let _ = write!(out, "{name}{{component=\"");
    label_value(out, scope);
    let _ = writeln!(out, "\"}} {v}");
}

/// A sample of a budget family: labelled with its component, or unlabelled for the process's
/// budget (as the other process-wide families are), so that no component name, `"process"`
/// included, can repeat the process's series.
fn budget_sample(out: &mut String, name: &str, scope: Option<&str>, v: impl std::fmt::Display) {
    match scope {
        Some(component) => sample(out, name, component, v),
        None => {
            let _ = writeln!(out, "{name} {v}");
        }
    }
}

/// The snapshot in the Prometheus text exposition format (version 0.0.4): one family per figure,
/// each sample labelled `component`; in the budget families the process-wide budget's samples
/// have no label. Components that never allocated are left out. Then the live caches, pools and
/// queues, read when the text is made (labelled `cache`, `pool` or `queue`, and `component`; a
/// name two live caches share gets `#2`, `#3`... in the order they were built, so that no series
/// repeats), and with the `jemalloc` feature jemalloc's byte counts (`memgov_jemalloc_*`), the
/// soft-limit responder's figures (`memgov_responder_*`) and the GC percent's
/// (`memgov_gc_percent*`), unlabelled.
///
/// ```
/// let text = alloc_stats::to_prometheus(&alloc_core::snapshot());
/// assert!(text.contains("# TYPE memgov_live_bytes gauge"));
/// ```
pub fn to_prometheus(s: &Snapshot) -> String {
    let active: Vec<&ComponentStats> = s
        .components
        .iter()
        .filter(|c| c.alloc_count + c.realloc_count > 0)
        .collect();
    let mut out = String::with_capacity(1024 + 512 * active.len());
    for f in &FAMILIES {
        header(&mut out, f.name, f.help, f.kind);
        for c in &active {
            sample(&mut out, f.name, c.name, (f.value)(c));
        }
    }
    let mut budgets: Vec<(Option<&str>, BudgetStats)> = vec![(None, budget_stats(Scope::Process))];
    budgets.extend(
        s.components
            .iter()
            .map(|c| (Some(c.name), budget_stats(Scope::Component(c.component))))
            .filter(|(_, b)| has_budget(b)),
    );
    header(
        &mut out,
        "memgov_budget_hard_limit_bytes",
        "Hard limit of the budget (absent: none).",
        "gauge",
    );
    for (n, b) in &budgets {
        if let Some(h) = b.limits.hard {
            budget_sample(&mut out, "memgov_budget_hard_limit_bytes", *n, h);
        }
    }
    header(
        &mut out,
        "memgov_budget_soft_limit_bytes",
        "Soft limit of the budget (absent: none).",
        "gauge",
    );
    for (n, b) in &budgets {
        if let Some(v) = b.limits.soft {
            budget_sample(&mut out, "memgov_budget_soft_limit_bytes", *n, v);
        }
    }
    header(
        &mut out,
        "memgov_budget_charged_bytes",
        "Bytes charged against the budget.",
        "gauge",
    );
    for (n, b) in &budgets {
        budget_sample(&mut out, "memgov_budget_charged_bytes", *n, b.charged_bytes);
    }
    header(
        &mut out,
        "memgov_budget_refusals_total",
        "Allocations and reservations the budget refused.",
        "counter",
    );
    for (n, b) in &budgets {
        budget_sample(&mut out, "memgov_budget_refusals_total", *n, b.failures);
    }
    header(
        &mut out,
        "memgov_pressure_level",
        "Pressure level: 0 normal, 1 warning, 2 critical.",
        "gauge",
    );
    for (n, b) in &budgets {
        budget_sample(&mut out, "memgov_pressure_level", *n, b.level as u8);
    }
    header(
        &mut out,
        "memgov_threads",
        "Threads holding batched counters.",
        "gauge",
    );
    let _ = writeln!(out, "memgov_threads {}", s.global.threads);
    let r = emergency_reserve_stats();
    let reserve = [
        (
            "memgov_emergency_reserve_bytes",
            "Bytes of the process hard limit held for the threads that react to pressure.",
            "gauge",
            r.held_bytes,
        ),
        (
            "memgov_emergency_reserve_target_bytes",
            "What the emergency reserve is topped up to while the process has a hard limit.",
            "gauge",
            r.target_bytes,
        ),
        (
            "memgov_emergency_reserve_draws_total",
            "Allocations the process hard limit refused and the emergency reserve let through.",
            "counter",
            r.draws,
        ),
        (
            "memgov_emergency_reserve_drawn_bytes_total",
            "Bytes those allocations took from the emergency reserve.",
            "counter",
            r.drawn_bytes,
        ),
    ];
    for (name, help, kind, value) in reserve {
        header(&mut out, name, help, kind);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(resident) = alloc_core::shadow_resident_bytes() {
        let tables = [
            (
                "memgov_shadow_table_resident_bytes",
                "Resident bytes of memgov's shadow tag tables (tags of exact-class blocks).",
                "gauge",
                resident,
            ),
            (
                "memgov_shadow_table_released_bytes_total",
                "Shadow tag table bytes given back after the inner allocator purged what they described.",
                "counter",
                s.global.shadow_released_bytes,
            ),
        ];
        for (name, help, kind, value) in tables {
            header(&mut out, name, help, kind);
            let _ = writeln!(out, "{name} {value}");
        }
    }
    let caches = alloc_core::caches();
    prometheus_owned(&mut out, "cache", &caches, &CACHE_FAMILIES, |c| {
        (c.name, c.component)
    });
    let pools = alloc_core::pools();
    prometheus_owned(&mut out, "pool", &pools, &POOL_FAMILIES, |p| {
        (p.name, p.component)
    });
    let queues = alloc_core::queues();
    prometheus_owned(&mut out, "queue", &queues, &QUEUE_FAMILIES, |q| {
        (q.name, q.component)
    });
    crate::export_jemalloc::prometheus(&mut out);
    out
}

/// `names`, each made unique by a `#2`, `#3`... after its first use.
fn unique_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    names
        .map(|name| match seen.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => {
                *count += 1;
                format!("{name}#{count}")
            }
            None => {
                seen.push((name, 1));
                name.to_string()
            }
        })
        .collect()
}

/// A sample labelled with a cache's or pool's name (`kind`: "cache" or "pool") and component.
fn owned_sample(
    out: &mut String,
    metric: &str,
    kind: &str,
    (name, component): (&str, &str),
    v: impl std::fmt::Display,
) {
    let _ = write!(out, "{metric}{{{kind}=\"");
    label_value(out, name);
    out.push_str("\",component=\"");
    label_value(out, component);
    let _ = writeln!(out, "\"}} {v}");
}

/// A bound as a sample value: `+Inf` for none.
fn prometheus_bound(v: u64) -> String {
    if v == u64::MAX {
        "+Inf".to_string()
    } else {
        v.to_string()
    }
}

/// A metric family of the caches', pools' or queues' figures: name, help, type, and the value of
/// one item's sample.
type OwnedFamily<S, V> = (&'static str, &'static str, &'static str, fn(&S) -> V);

type CacheFamily = OwnedFamily<CacheStats, String>;

const CACHE_FAMILIES: [CacheFamily; 11] = [
    (
        "memgov_cache_entries",
        "Entries a cache holds.",
        "gauge",
        |c| c.live_entries.to_string(),
    ),
    (
        "memgov_cache_weight",
        "Total weight of a cache's entries.",
        "gauge",
        |c| c.live_weight.to_string(),
    ),
    (
        "memgov_cache_bound",
        "The most a cache may weigh now: its bound, less under pressure (+Inf: none).",
        "gauge",
        |c| prometheus_bound(c.bound),
    ),
    (
        "memgov_cache_pressure_level",
        "Pressure level a cache obeys: 0 normal, 1 warning, 2 critical.",
        "gauge",
        |c| (c.level as u8).to_string(),
    ),
    (
        "memgov_cache_hits_total",
        "Cache lookups that found their key.",
        "counter",
        |c| c.total_hits.to_string(),
    ),
    (
        "memgov_cache_misses_total",
        "Cache lookups that did not.",
        "counter",
        |c| c.total_misses.to_string(),
    ),
    (
        "memgov_cache_inserts_total",
        "Entries inserted into a cache.",
        "counter",
        |c| c.total_inserts.to_string(),
    ),
    (
        "memgov_cache_evictions_total",
        "Entries evicted to keep a cache within its bound.",
        "counter",
        |c| c.total_evictions.to_string(),
    ),
    (
        "memgov_cache_shed_total",
        "Entries a cache shed when memory came under pressure.",
        "counter",
        |c| c.total_shed.to_string(),
    ),
    (
        "memgov_cache_refused_total",
        "Entries a cache refused (heavier than its bound, or no memory).",
        "counter",
        |c| c.total_refused.to_string(),
    ),
    (
        "memgov_cache_expired_total",
        "Entries that outlived a cache's time to live.",
        "counter",
        |c| c.total_expired.to_string(),
    ),
];

type PoolFamily = OwnedFamily<PoolStats, u64>;

const POOL_FAMILIES: [PoolFamily; 10] = [
    (
        "memgov_pool_idle",
        "Objects idle in a pool.",
        "gauge",
        |p| p.live_idle,
    ),
    (
        "memgov_pool_lent",
        "Objects a pool has lent out.",
        "gauge",
        |p| p.live_out,
    ),
    (
        "memgov_pool_idle_bound",
        "The most objects a pool keeps idle now (fewer under pressure).",
        "gauge",
        |p| p.bound,
    ),
    (
        "memgov_pool_pressure_level",
        "Pressure level a pool obeys: 0 normal, 1 warning, 2 critical.",
        "gauge",
        |p| p.level as u64,
    ),
    (
        "memgov_pool_hits_total",
        "Pool gets served by an idle object.",
        "counter",
        |p| p.total_hits,
    ),
    (
        "memgov_pool_misses_total",
        "Pool gets that made a new object.",
        "counter",
        |p| p.total_misses,
    ),
    (
        "memgov_pool_returns_total",
        "Objects that came back to a pool.",
        "counter",
        |p| p.total_returns,
    ),
    (
        "memgov_pool_discards_total",
        "Objects that came back to a pool and were dropped.",
        "counter",
        |p| p.total_discards,
    ),
    (
        "memgov_pool_shed_total",
        "Idle objects a pool dropped when memory came under pressure.",
        "counter",
        |p| p.total_shed,
    ),
    (
        "memgov_pool_detached_total",
        "Objects kept for good by their borrower.",
        "counter",
        |p| p.total_detached,
    ),
];

type QueueFamily = OwnedFamily<QueueStats, String>;

const QUEUE_FAMILIES: [QueueFamily; 11] = [
    (
        "memgov_queue_entries",
        "Entries a queue holds.",
        "gauge",
        |q| q.live_entries.to_string(),
    ),
    (
        "memgov_queue_weight",
        "Total weight of a queue's entries.",
        "gauge",
        |q| q.live_weight.to_string(),
    ),
    (
        "memgov_queue_bound",
        "The most entries a queue holds now: its capacity, fewer under pressure.",
        "gauge",
        |q| q.bound.to_string(),
    ),
    (
        "memgov_queue_weight_bound",
        "The most weight a queue holds now (+Inf: none).",
        "gauge",
        |q| prometheus_bound(q.weight_bound),
    ),
    (
        "memgov_queue_pressure_level",
        "Pressure level a queue obeys: 0 normal, 1 warning, 2 critical.",
        "gauge",
        |q| (q.level as u8).to_string(),
    ),
    (
        "memgov_queue_pushed_total",
        "Values pushed into a queue.",
        "counter",
        |q| q.total_pushed.to_string(),
    ),
    (
        "memgov_queue_popped_total",
        "Values taken from a queue.",
        "counter",
        |q| q.total_popped.to_string(),
    ),
    (
        "memgov_queue_displaced_total",
        "Old entries a full queue dropped to make room for new ones.",
        "counter",
        |q| q.total_displaced.to_string(),
    ),
    (
        "memgov_queue_refused_total",
        "Pushes a queue refused (full, timed out, closed, too heavy, or no memory).",
        "counter",
        |q| q.total_refused.to_string(),
    ),
    (
        "memgov_queue_waits_total",
        "Pushes that waited for room in a full queue.",
        "counter",
        |q| q.total_waits.to_string(),
    ),
    (
        "memgov_queue_shed_total",
        "Entries a queue dropped when memory came under pressure.",
        "counter",
        |q| q.total_shed.to_string(),
    ),
];

/// The families of the live caches, pools or queues (`kind`: the label naming one), one sample
/// per item, labelled with its name (made unique) and component.
fn prometheus_owned<S, V: std::fmt::Display>(
    out: &mut String,
    kind: &str,
    items: &[S],
    families: &[OwnedFamily<S, V>],
    owner: impl Fn(&S) -> (&'static str, ComponentId),
) {
    if items.is_empty() {
        return;
    }
    let names = unique_names(items.iter().map(|i| owner(i).0));
    for (metric, help, metric_kind, value) in families {
        header(out, metric, help, metric_kind);
        for (item, name) in items.iter().zip(&names) {
            let component = owner(item).1.name();
            owned_sample(out, metric, kind, (name, component), value(item));
        }
    }
}
