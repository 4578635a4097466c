//! jemalloc's figures in the exporters: its byte counts (allocated, active, resident, mapped,
//! retained, metadata, dirty, muzzy), and what the two policies that purge it have done (the
//! soft-limit responder and the GC percent). Read when the text is made; without the `jemalloc`
//! feature, or when jemalloc's statistics cannot be read, the byte counts are left out.

use std::fmt::Write as _;

/// A figure of the Prometheus families below: name, help, type, value.
type Gauge = (&'static str, &'static str, &'static str, u64);

/// jemalloc's byte counts and the policies' figures, as Prometheus families.
#[cfg(feature = "jemalloc")]
fn families() -> Vec<Gauge> {
    let mut f = Vec::with_capacity(24);
    if let Ok(s) = alloc_jemalloc::stats() {
        f.extend([
            (
                "memgov_jemalloc_allocated_bytes",
                "Bytes jemalloc has handed out (the governor's blocks, tags included).",
                "gauge",
                s.allocated,
            ),
            (
                "memgov_jemalloc_active_bytes",
                "Bytes in jemalloc's active pages.",
                "gauge",
                s.active,
            ),
            (
                "memgov_jemalloc_resident_bytes",
                "Bytes of jemalloc's pages that are resident (what the system charges for).",
                "gauge",
                s.resident,
            ),
            (
                "memgov_jemalloc_mapped_bytes",
                "Bytes in jemalloc's mapped extents.",
                "gauge",
                s.mapped,
            ),
            (
                "memgov_jemalloc_retained_bytes",
                "Bytes jemalloc keeps mapped but not resident.",
                "gauge",
                s.retained,
            ),
            (
                "memgov_jemalloc_metadata_bytes",
                "Bytes of jemalloc's own metadata.",
                "gauge",
                s.metadata,
            ),
            (
                "memgov_jemalloc_dirty_bytes",
                "Bytes of freed pages jemalloc keeps dirty (resident, reusable at once).",
                "gauge",
                s.dirty,
            ),
            (
                "memgov_jemalloc_muzzy_bytes",
                "Bytes of freed pages jemalloc keeps muzzy (advised away, still mapped).",
                "gauge",
                s.muzzy,
            ),
        ]);
    }
    let r = alloc_core::responder_stats();
    f.extend([
        (
            "memgov_responder_running",
            "Whether the soft-limit responder runs (1) or not (0).",
            "gauge",
            u64::from(r.running),
        ),
        (
            "memgov_responder_pressure_level",
            "The responder's pressure level: 0 normal, 1 warning, 2 critical.",
            "gauge",
            r.level as u64,
        ),
        (
            "memgov_responder_decay_changes_total",
            "Decay changes the responder made.",
            "counter",
            r.decay_changes,
        ),
        (
            "memgov_responder_purges_total",
            "Purges the responder made.",
            "counter",
            r.purges,
        ),
        (
            "memgov_responder_purged_bytes_total",
            "Resident bytes the responder's purges gave back.",
            "counter",
            r.purged_bytes,
        ),
        (
            "memgov_responder_errors_total",
            "jemalloc controls the responder could not apply.",
            "counter",
            r.errors,
        ),
    ]);
    let g = alloc_core::gc_percent_stats();
    if let Some(percent) = g.percent {
        f.push((
            "memgov_gc_percent",
            "The GC percent: freed pages kept past this percentage of the live heap are purged (absent: off).",
            "gauge",
            u64::from(percent),
        ));
    }
    f.extend([
        (
            "memgov_gc_percent_samples_total",
            "Samples the GC percent's task took.",
            "counter",
            g.samples,
        ),
        (
            "memgov_gc_percent_purges_total",
            "Purges the GC percent made.",
            "counter",
            g.purges,
        ),
        (
            "memgov_gc_percent_purged_bytes_total",
            "Resident bytes the GC percent's purges gave back.",
            "counter",
            g.purged_bytes,
        ),
        (
            "memgov_gc_percent_errors_total",
            "Samples or purges of the GC percent that failed.",
            "counter",
            g.errors,
        ),
    ]);
    f
}

#[cfg(not(feature = "jemalloc"))]
fn families() -> Vec<Gauge> {
    Vec::new()
}

/// Appends jemalloc's families (unlabelled: they are the process's) to Prometheus text.
pub(crate) fn prometheus(out: &mut String) {
    for (name, help, kind, value) in families() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Appends `,"jemalloc":{...}` to a JSON object: the same figures, named by their Prometheus
/// names less `memgov_` (`null` without jemalloc); the GC percent is `null` when off.
pub(crate) fn json(out: &mut String) {
    out.push_str(",\"jemalloc\":");
    if !cfg!(feature = "jemalloc") {
        out.push_str("null");
        return;
    }
    out.push('{');
    let mut percent_seen = false;
    for (i, (name, _, _, value)) in families().into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key = name.strip_prefix("memgov_").unwrap_or(name);
        percent_seen |= key == "gc_percent";
        let _ = write!(out, "\"{key}\":{value}");
    }
    if !percent_seen {
        out.push_str(",\"gc_percent\":null");
    }
    out.push('}');
}
