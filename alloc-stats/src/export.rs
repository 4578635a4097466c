//! Exporters: a table for logs, JSON, and the Prometheus text format.

use alloc_core::{
    budget_stats, emergency_reserve_stats, BudgetStats, ComponentStats, Level, Scope, Snapshot,
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
///  "components": [{"name", "live_bytes", "peak_live_bytes", "alloc_count", "free_count",
///                  "realloc_count", "total_allocated_bytes", "total_freed_bytes",
///                  "budget": {...} or null}]}
/// ```
///
/// Limits absent are `null`; levels are `"normal"`, `"warning"` or `"critical"`.
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
    out.push_str("]}");
    out
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
/// have no label. Components that never allocated are left out.
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
    out
}
