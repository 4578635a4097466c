//! alloc-stats: snapshot diffs with allocations on several threads, the assertion macros passing
//! and failing with the figures in their messages, JSON parsed back, and Prometheus text checked
//! line by line against the exposition format.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::stats;
use serial_test::serial;
use std::collections::HashMap;
use std::hint::black_box;

fn in_scope<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    let _scope = memgov::component_scope(name);
    f()
}

#[test]
#[serial]
fn a_diff_counts_what_several_threads_did_exactly() {
    let before = stats::snapshot();
    let kept: Vec<Vec<Box<[u8]>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    in_scope("diff-workers", || {
                        let mut kept = Vec::new();
                        for i in 0..100 {
                            let b = vec![t as u8; 100 + i].into_boxed_slice();
                            if i % 2 == 0 {
                                kept.push(b);
                            }
                        }
                        kept
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let d = before.diff();
    let c = d.component("diff-workers").unwrap();
    // Per thread: 100 boxes (+ the Vec holding the kept ones, which grows by reallocs).
    let kept_bytes: i64 = (0..100)
        .filter(|i| i % 2 == 0)
        .map(|i| 100 + i)
        .sum::<i64>()
        * 4;
    let vec_bytes: i64 = kept
        .iter()
        .map(|v| (v.capacity() * std::mem::size_of::<Box<[u8]>>()) as i64)
        .sum();
    assert_eq!(c.allocs, 4 * 101, "{c:?}");
    assert_eq!(c.frees, 4 * 50, "{c:?}");
    assert_eq!(c.live_bytes, kept_bytes + vec_bytes, "{c:?}");
    assert_eq!(c.live_blocks(), 4 * 51);
    assert!(d.changed().any(|c| c.name == "diff-workers"));
    drop(kept);
    let after = before.diff();
    memgov::assert_no_leaks!(after, "diff-workers");
}

#[test]
#[serial]
fn the_assertions_pass_on_good_code() {
    in_scope("ok-parser", || {
        // black_box: in release builds LLVM may elide an allocation nobody observes.
        let tokens: Vec<u32> = black_box((0..10).collect());
        assert_eq!(tokens.len(), 10);
    });
    memgov::assert_no_leaks!("ok-parser");
    memgov::assert_max_live!("ok-parser", 64 * 1024);
    memgov::assert_allocations!("ok-parser", at_most = 10);
    memgov::assert_allocations!("ok-parser", at_least = 1);
    let before = stats::snapshot();
    in_scope("ok-parser", || drop(black_box(String::from("x"))));
    memgov::assert_allocations!(before.diff(), "ok-parser", exactly = 1);
}

#[test]
#[serial]
#[should_panic(expected = "component \"leaky\" leaked: live 4096 bytes in 1 blocks")]
fn assert_no_leaks_fails_with_the_figures() {
    let leaked = in_scope("leaky", || black_box(vec![0u8; 4096]));
    std::mem::forget(leaked);
    memgov::assert_no_leaks!("leaky");
}

#[test]
#[serial]
#[should_panic(expected = "component \"leaky-diff\" leaked 512 bytes in 1 blocks")]
fn assert_no_leaks_on_a_diff_fails_with_the_figures() {
    let before = stats::snapshot();
    std::mem::forget(in_scope("leaky-diff", || black_box(vec![0u8; 512])));
    memgov::assert_no_leaks!(before.diff(), "leaky-diff");
}

#[test]
#[serial]
#[should_panic(expected = "component \"big\" peaked at 100000 live bytes, more than 65536")]
fn assert_max_live_fails_with_the_figures() {
    in_scope("big", || drop(black_box(vec![0u8; 100_000])));
    memgov::assert_max_live!("big", 64 * 1024);
}

#[test]
#[serial]
#[should_panic(expected = "component \"chatty\" made 20 allocations, more than 10")]
fn assert_allocations_fails_with_the_figures() {
    in_scope("chatty", || {
        for i in 0..20 {
            drop(black_box(vec![0u8; i + 1]));
        }
    });
    memgov::assert_allocations!("chatty", at_most = 10);
}

#[test]
#[serial]
fn one_diff_serves_several_assertions() {
    let before = stats::snapshot();
    in_scope("diff-reused", || drop(black_box(String::from("x"))));
    let d = before.diff();
    memgov::assert_allocations!(d, "diff-reused", at_least = 1);
    memgov::assert_allocations!(d, "diff-reused", exactly = 1);
    memgov::assert_no_leaks!(d, "diff-reused");
}

#[test]
#[serial]
#[should_panic(expected = "no component named \"never-registered\"")]
fn an_unknown_component_is_reported() {
    memgov::assert_no_leaks!("never-registered");
}

#[test]
#[serial]
#[should_panic(expected = "no component named \"never-registered-in-diff\"")]
fn an_unknown_component_in_a_diff_is_reported() {
    let before = stats::snapshot();
    memgov::assert_no_leaks!(before.diff(), "never-registered-in-diff");
}

#[test]
#[serial]
#[should_panic(expected = "no component named \"never-registered-in-diff\"")]
fn an_unknown_component_in_a_diff_is_reported_by_assert_allocations() {
    let before = stats::snapshot();
    memgov::assert_allocations!(before.diff(), "never-registered-in-diff", at_most = 10);
}

#[test]
#[serial]
fn json_parses_back_with_the_documented_fields() {
    // Exact-class blocks (64 bytes) put their tags in the shadow tables over jemalloc.
    drop(black_box(vec![0u8; 64]));
    memgov::set_budget("json-budget", memgov::Limits::hard(1 << 30)).unwrap();
    let v = in_scope("json \"quoted\"\nname", || black_box(vec![0u8; 777]));
    in_scope("json-budget", || drop(vec![0u8; 10]));
    let text = stats::to_json(&memgov::snapshot());
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for field in [
        "live_bytes",
        "peak_live_bytes",
        "alloc_count",
        "free_count",
        "realloc_count",
        "total_allocated_bytes",
        "total_freed_bytes",
        "live_inner_bytes",
        "tag_overhead_bytes",
        "threads",
        "components",
        "refused_names",
    ] {
        assert!(json["global"][field].is_u64(), "global.{field} in {text}");
    }
    assert!(json["budget"]["charged_bytes"].is_u64());
    let reserve = memgov::emergency_reserve_stats();
    assert_eq!(
        json["emergency_reserve"]["target_bytes"],
        reserve.target_bytes
    );
    for field in ["held_bytes", "draws", "drawn_bytes"] {
        assert!(
            json["emergency_reserve"][field].is_u64(),
            "emergency_reserve.{field} in {text}"
        );
    }
    let tables = &json["shadow_tables"];
    assert!(tables["released_bytes"].is_u64(), "{text}");
    match memgov::shadow_resident_bytes() {
        Some(_) => assert!(tables["resident_bytes"].is_u64(), "{text}"),
        None => assert!(tables["resident_bytes"].is_null(), "{text}"),
    }
    let components = json["components"].as_array().unwrap();
    let quoted = components
        .iter()
        .find(|c| c["name"] == "json \"quoted\"\nname")
        .expect("escaped name round-trips");
    assert_eq!(quoted["live_bytes"], 777);
    assert!(quoted["budget"].is_null());
    let budgeted = components
        .iter()
        .find(|c| c["name"] == "json-budget")
        .unwrap();
    assert_eq!(budgeted["budget"]["hard_limit_bytes"], 1u64 << 30);
    assert_eq!(
        budgeted["budget"]["soft_limit_bytes"],
        serde_json::Value::Null
    );
    assert_eq!(budgeted["budget"]["level"], "normal");
    drop(v);
}

/// A strict reading of the text exposition format: every sample's family has exactly one HELP
/// and one TYPE before it, names and labels are well-formed, values are numbers, counters end in
/// `_total`, and no sample repeats. Returns the samples.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut cs = n.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, ()> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{line}");
            assert!(
                helps.insert(name.to_string(), ()).is_none(),
                "second HELP: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(parts.next().is_none(), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {line}");
            }
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "second TYPE: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        assert!(
            types.contains_key(name) && helps.contains_key(name),
            "no TYPE/HELP before {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let mut rest = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("{line}"));
                // name="value" pairs separated by commas, each value escaped.
                let mut label_names = Vec::new();
                while !rest.is_empty() {
                    let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        valid_name(label) && !label.contains(':'),
                        "label {label} in {line}"
                    );
                    assert!(!label_names.contains(&label), "repeated label in {line}");
                    label_names.push(label);
                    let mut escaped = false;
                    let mut end = None;
                    for (i, c) in after.char_indices() {
                        if escaped {
                            assert!(matches!(c, '\\' | '"' | 'n'), "bad escape in {line}");
                            escaped = false;
                        } else if c == '\\' {
                            escaped = true;
                        } else if c == '"' {
                            end = Some(i);
                            break;
                        } else {
                            assert!(c != '\n', "unescaped newline in {line}");
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("unterminated value in {line}"));
                    rest = &after[end + 1..];
                    if !rest.is_empty() {
                        rest = rest.strip_prefix(',').unwrap_or_else(|| panic!("{line}"));
                    }
                }
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "repeated sample {line}"
        );
    }
    samples
}

#[test]
#[serial]
fn prometheus_text_is_well_formed_and_carries_the_figures() {
    memgov::set_budget(
        "prom-budget",
        memgov::Limits::hard(1 << 20).with_soft(1 << 19),
    )
    .unwrap();
    let v = in_scope("prom \"odd\" \\ name", || black_box(vec![0u8; 3000]));
    let w = in_scope("prom-budget", || black_box(vec![0u8; 1000]));
    let text = stats::to_prometheus(&memgov::snapshot());
    let samples = parse_prometheus(&text);
    assert_eq!(
        samples[r#"memgov_live_bytes{component="prom \"odd\" \\ name"}"#], 3000.0,
        "{text}"
    );
    assert_eq!(
        samples[r#"memgov_live_bytes{component="prom-budget"}"#],
        1000.0
    );
    assert_eq!(
        samples[r#"memgov_budget_hard_limit_bytes{component="prom-budget"}"#],
        (1 << 20) as f64
    );
    assert_eq!(
        samples[r#"memgov_budget_soft_limit_bytes{component="prom-budget"}"#],
        (1 << 19) as f64
    );
    assert_eq!(
        samples[r#"memgov_pressure_level{component="prom-budget"}"#],
        0.0
    );
    assert!(samples.contains_key("memgov_budget_charged_bytes"));
    assert!(samples["memgov_threads"] >= 1.0);
    assert_eq!(
        samples["memgov_emergency_reserve_target_bytes"],
        memgov::emergency_reserve_stats().target_bytes as f64
    );
    for name in [
        "memgov_emergency_reserve_bytes",
        "memgov_emergency_reserve_draws_total",
        "memgov_emergency_reserve_drawn_bytes_total",
    ] {
        assert!(samples.contains_key(name), "{name} in {text}");
    }
    // The shadow tables' figures, where there are tables (over jemalloc, outside valgrind).
    if let Some(resident) = memgov::shadow_resident_bytes() {
        assert!(resident > 0);
        assert!(
            samples["memgov_shadow_table_resident_bytes"] > 0.0,
            "{text}"
        );
        assert!(samples.contains_key("memgov_shadow_table_released_bytes_total"));
    } else {
        assert!(!text.contains("memgov_shadow_table"), "{text}");
    }
    drop((v, w));
}

#[test]
#[serial]
fn a_component_called_process_does_not_collide_with_the_process_budget() {
    memgov::set_budget("process", memgov::Limits::hard(1 << 30)).unwrap();
    let text = stats::to_prometheus(&memgov::snapshot());
    memgov::set_budget("process", memgov::Limits::default()).unwrap();
    // parse_prometheus fails on a repeated sample.
    let samples = parse_prometheus(&text);
    assert_eq!(
        samples[r#"memgov_budget_hard_limit_bytes{component="process"}"#],
        (1u64 << 30) as f64,
        "{text}"
    );
}

#[test]
#[serial]
fn caches_and_pools_are_exported_and_judged() {
    let pages = memgov::BoundedCache::builder("export-pages")
        .max_weight(100)
        .build();
    // A second cache with the same name: its series must not repeat the first's.
    let again = memgov::BoundedCache::<u32, u32>::builder("export-pages").build();
    for k in 0..1000u32 {
        // Every lookup misses: keys are never looked up again before they are evicted.
        assert!(pages.get(&k).is_none());
        pages.insert(k, k).unwrap();
    }
    let buffers = memgov::Pool::builder("export-buffers")
        .name("buffers \"quoted\"")
        .build(|| vec![0u8; 64]);
    let lent = buffers.get();

    let text = stats::to_prometheus(&memgov::snapshot());
    let samples = parse_prometheus(&text);
    let cache = |metric: &str, name: &str| {
        samples[&format!("{metric}{{cache=\"{name}\",component=\"export-pages\"}}")]
    };
    assert_eq!(
        cache("memgov_cache_entries", "export-pages"),
        100.0,
        "{text}"
    );
    assert_eq!(cache("memgov_cache_misses_total", "export-pages"), 1000.0);
    assert_eq!(cache("memgov_cache_evictions_total", "export-pages"), 900.0);
    assert_eq!(cache("memgov_cache_bound", "export-pages"), 100.0);
    assert_eq!(cache("memgov_cache_expired_total", "export-pages"), 0.0);
    assert_eq!(cache("memgov_cache_bound", "export-pages#2"), f64::INFINITY);
    assert_eq!(cache("memgov_cache_entries", "export-pages#2"), 0.0);
    let pool = |metric: &str| {
        samples
            [&format!("{metric}{{pool=\"buffers \\\"quoted\\\"\",component=\"export-buffers\"}}")]
    };
    assert_eq!(pool("memgov_pool_lent"), 1.0, "{text}");
    assert_eq!(pool("memgov_pool_misses_total"), 1.0);

    let json: serde_json::Value =
        serde_json::from_str(&stats::to_json(&memgov::snapshot())).expect("valid JSON");
    let caches = json["caches"].as_array().unwrap();
    let first = caches.iter().find(|c| c["name"] == "export-pages").unwrap();
    assert_eq!(
        (
            &first["entries"],
            &first["max_weight"],
            &first["misses"],
            &first["level"]
        ),
        (&100.into(), &100.into(), &1000.into(), &"normal".into())
    );
    let second = caches
        .iter()
        .filter(|c| c["name"] == "export-pages")
        .nth(1)
        .expect("both caches in the JSON list");
    assert!(second["max_weight"].is_null() && second["bound"].is_null());
    assert_eq!(second["expired"], 0);
    let pools = json["pools"].as_array().unwrap();
    let p = pools
        .iter()
        .find(|p| p["name"] == "buffers \"quoted\"")
        .unwrap();
    assert_eq!(
        (&p["lent"], &p["component"]),
        (&1.into(), &"export-buffers".into())
    );

    let health = stats::health();
    let advice = health
        .recommendations
        .iter()
        .find(|r| r.starts_with("cache export-pages:"))
        .expect("a cache that never hits is reported");
    assert_eq!(
        advice,
        "cache export-pages: 0.0% of 1000 lookups hit; it evicts entries before they are used again: make it bigger, or drop it"
    );
    let shown = health.to_string();
    assert!(
        shown.contains(
            "cache export-pages: 100 entries, weight 100 of 100, 0 hits of 1000 lookups, 0 shed"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("pool buffers \"quoted\": 0 idle, 1 lent, 0 reused of 1 gets"),
        "{shown}"
    );
    drop((lent, buffers, pages, again));
    let text = stats::to_prometheus(&memgov::snapshot());
    // The components stay (as every component does); their caches' and pools' series go.
    assert!(!text.contains("cache=\"export-pages"), "{text}");
    assert!(!text.contains("pool=\"buffers"), "{text}");
}

#[test]
#[serial]
fn queues_are_exported_and_judged() {
    let inbox = memgov::BoundedQueue::builder("export-inbox")
        .name("inbox")
        .capacity(10)
        .build();
    // 2000 pushes into 10 slots with no consumer: 1990 displaced.
    for i in 0..2000u32 {
        inbox.push(i).unwrap();
    }
    let outbox = memgov::BoundedQueue::builder("export-inbox")
        .name("outbox")
        .capacity(4)
        .max_weight(1 << 20)
        .weigher(|v: &Vec<u8>| v.len() as u64)
        .overflow(memgov::Overflow::Reject)
        .build();
    outbox.push(vec![0; 100]).unwrap();

    let text = stats::to_prometheus(&memgov::snapshot());
    let samples = parse_prometheus(&text);
    let queue = |metric: &str, name: &str| {
        samples[&format!("{metric}{{queue=\"{name}\",component=\"export-inbox\"}}")]
    };
    assert_eq!(queue("memgov_queue_entries", "inbox"), 10.0, "{text}");
    assert_eq!(queue("memgov_queue_pushed_total", "inbox"), 2000.0);
    assert_eq!(queue("memgov_queue_displaced_total", "inbox"), 1990.0);
    assert_eq!(queue("memgov_queue_weight_bound", "inbox"), f64::INFINITY);
    assert_eq!(queue("memgov_queue_weight", "outbox"), 100.0);
    assert_eq!(
        queue("memgov_queue_weight_bound", "outbox"),
        (1 << 20) as f64
    );
    assert_eq!(queue("memgov_queue_bound", "outbox"), 4.0);

    let json: serde_json::Value =
        serde_json::from_str(&stats::to_json(&memgov::snapshot())).expect("valid JSON");
    let queues = json["queues"].as_array().unwrap();
    let inbox_json = queues.iter().find(|q| q["name"] == "inbox").unwrap();
    assert_eq!(
        (
            &inbox_json["overflow"],
            &inbox_json["entries"],
            &inbox_json["displaced"],
            &inbox_json["max_weight"],
            &inbox_json["closed"]
        ),
        (
            &"drop_oldest".into(),
            &10.into(),
            &1990.into(),
            &serde_json::Value::Null,
            &false.into()
        )
    );
    let outbox_json = queues.iter().find(|q| q["name"] == "outbox").unwrap();
    assert_eq!(
        (&outbox_json["overflow"], &outbox_json["weight"]),
        (&"reject".into(), &100.into())
    );

    let health = stats::health();
    let advice = health
        .recommendations
        .iter()
        .find(|r| r.starts_with("queue inbox:"))
        .expect("a queue that loses most of its values is reported");
    assert_eq!(
        advice,
        "queue inbox: lost 1990 of 2000 values (1990 displaced, 0 refused, 0 shed); its consumers fall behind: add consumers, or raise its capacity"
    );
    assert!(
        !health
            .recommendations
            .iter()
            .any(|r| r.starts_with("queue outbox")),
        "a queue that lost nothing is not"
    );
    let shown = health.to_string();
    assert!(
        shown.contains(
            "queue inbox (drop_oldest): 10 of 10 entries, 2000 pushed, 0 popped, 1990 lost, 0 refused"
        ),
        "{shown}"
    );
    drop((inbox, outbox));
    let text = stats::to_prometheus(&memgov::snapshot());
    assert!(!text.contains("queue=\""), "{text}");
}

#[test]
#[serial]
fn jemalloc_and_its_policies_are_exported() {
    let text = stats::to_prometheus(&memgov::snapshot());
    let samples = parse_prometheus(&text);
    let json: serde_json::Value =
        serde_json::from_str(&stats::to_json(&memgov::snapshot())).expect("valid JSON");
    if !cfg!(feature = "jemalloc") {
        assert!(
            !samples.keys().any(|k| k.starts_with("memgov_jemalloc_")),
            "{text}"
        );
        assert!(json["jemalloc"].is_null());
        return;
    }
    #[cfg(feature = "jemalloc")]
    {
        let resident = samples["memgov_jemalloc_resident_bytes"];
        let allocated = samples["memgov_jemalloc_allocated_bytes"];
        assert!(resident > 0.0 && allocated > 0.0, "{text}");
        assert!(samples["memgov_jemalloc_active_bytes"] >= allocated * 0.9);
        assert_eq!(samples["memgov_responder_running"], 0.0);
        assert!(
            !samples.contains_key("memgov_gc_percent"),
            "the GC percent is off: {text}"
        );
        let j = &json["jemalloc"];
        assert!(j["jemalloc_resident_bytes"].as_u64().unwrap() > 0, "{j}");
        assert!(j["gc_percent"].is_null(), "{j}");
        assert_eq!(j["responder_purges_total"], 0);

        let previous = memgov::jemalloc::set_gc_percent(Some(150));
        let text = stats::to_prometheus(&memgov::snapshot());
        assert_eq!(
            parse_prometheus(&text)["memgov_gc_percent"],
            150.0,
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&stats::to_json(&memgov::snapshot())).unwrap();
        assert_eq!(json["jemalloc"]["gc_percent"], 150);
        memgov::jemalloc::set_gc_percent(previous);
    }
}
