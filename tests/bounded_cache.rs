//! `BoundedCache`: its bound and order, where its memory is charged, and how it sheds when its
//! component comes under pressure.
//!
//! The pressure tests give a component a 16 MiB soft budget (default thresholds: Warning at 85%,
//! Critical at 95%, back to Normal below 70%) and move it across thresholds with 64 KiB values
//! and a ballast block, each step at least 2% away from a threshold: charged bytes exceed live
//! bytes by at most a credit per thread (256 KiB, 1.6% of the budget), and `settle` hands the test
//! thread's back.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{component_stats, BoundedCache, Level, Limits, ShedReport, Shedding};
use serial_test::serial;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const VALUE: usize = 64 * KIB;

#[path = "support/monitor.rs"]
mod monitor;
use monitor::{settle, wait_until};

/// A process limit, taken off again when dropped (a failing test must not leave the process
/// under pressure for the next one).
struct ProcessLimit;

impl ProcessLimit {
    fn set(limits: Limits) -> ProcessLimit {
        memgov::set_process_limits(limits).unwrap();
        ProcessLimit
    }
}

impl Drop for ProcessLimit {
    fn drop(&mut self) {
        memgov::set_process_limits(Limits::NONE).unwrap();
    }
}

fn start_monitor() {
    memgov::set_monitor_interval(Duration::from_millis(10));
    memgov::start_monitor();
}

fn live(name: &str) -> u64 {
    component_stats(name).map_or(0, |s| s.live_bytes)
}

/// What the shed hook saw: the report and the name of the thread it ran on.
type Reports = Arc<Mutex<Vec<(ShedReport, String)>>>;

fn recorded(reports: &Reports) -> Vec<(ShedReport, String)> {
    reports.lock().unwrap().clone()
}

/// Waits until the hook has seen `n` reports, then a little longer to catch any extra one.
fn wait_for_reports(reports: &Reports, n: usize) -> Vec<(ShedReport, String)> {
    wait_until("shed reports", || reports.lock().unwrap().len() >= n);
    settle();
    recorded(reports)
}

/// A cache weighing values by their length, recording its shed reports.
fn pressure_cache(name: &'static str, reports: &Reports) -> BoundedCache<u32, Arc<Vec<u8>>> {
    sharded_pressure_cache(name, reports, 1)
}

/// [`pressure_cache`] in `shards` shards.
fn sharded_pressure_cache(
    name: &'static str,
    reports: &Reports,
    shards: usize,
) -> BoundedCache<u32, Arc<Vec<u8>>> {
    let log = Arc::clone(reports);
    BoundedCache::builder(name)
        .shards(shards)
        .weigher(|_: &u32, v: &Arc<Vec<u8>>| v.len() as u64)
        .on_shed(move |report| {
            let thread = thread::current().name().unwrap_or("").to_string();
            log.lock().unwrap().push((*report, thread));
        })
        .build()
}

fn fill(cache: &BoundedCache<u32, Arc<Vec<u8>>>, keys: std::ops::Range<u32>) {
    for k in keys {
        cache.get_or_insert_with(k, || Arc::new(vec![1u8; VALUE]));
    }
}

#[test]
#[serial]
fn evicts_the_least_recently_used_within_its_bound() {
    let cache = BoundedCache::new("bc-order", 3);
    for k in 0..3u32 {
        assert!(cache.insert(k, k * 10).unwrap().is_none());
    }
    assert_eq!(cache.get(&0), Some(0)); // 0 is now the most recently used
    assert_eq!(cache.peek(&1), Some(10)); // a peek does not save 1
    cache.insert(3, 30).unwrap();
    assert!(
        !cache.contains_key(&1),
        "the least recently used entry is evicted"
    );
    assert!(cache.contains_key(&0) && cache.contains_key(&2) && cache.contains_key(&3));
    assert_eq!(
        cache.insert(3, 31).unwrap(),
        Some(30),
        "a replace returns the old value"
    );
    assert_eq!(cache.remove(&2), Some(20));
    assert_eq!(cache.get(&2), None);
    let s = cache.stats();
    assert_eq!(
        (
            s.live_entries,
            s.live_weight,
            s.max_weight,
            s.bound,
            s.level
        ),
        (2, 2, 3, 3, Level::Normal)
    );
    assert_eq!(
        (
            s.total_hits,
            s.total_misses,
            s.total_inserts,
            s.total_evictions,
            s.total_refused
        ),
        (1, 1, 5, 1, 0)
    );
    assert_eq!(s.hit_ratio(), Some(0.5));
    assert_eq!(cache.trim_to(1), 1);
    assert_eq!(cache.len(), 1);
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
#[serial]
fn a_weigher_bounds_the_bytes_and_refuses_what_cannot_fit() {
    let cache = BoundedCache::builder("bc-weigh")
        .max_weight(100)
        .weigher(|k: &String, v: &String| (k.len() + v.len()) as u64)
        .build();
    cache.insert("a".into(), "x".repeat(39)).unwrap(); // 40
    cache.insert("b".into(), "x".repeat(39)).unwrap(); // 80
    cache.insert("c".into(), "x".repeat(29)).unwrap(); // 110: "a" goes
    assert_eq!((cache.len(), cache.weight()), (2, 70));
    assert!(!cache.contains_key("a"));
    let refused = cache.insert("d".into(), "x".repeat(100)).unwrap_err();
    assert_eq!(
        (refused.weight, refused.bound, refused.level),
        (101, 100, Level::Normal)
    );
    assert_eq!(
        refused.to_string(),
        "cache in bc-weigh refused an entry of weight 101: its bound is 100 (pressure normal)"
    );
    let (key, value) = refused.into_entry();
    assert_eq!((key.as_str(), value.len()), ("d", 100));
    assert_eq!(
        (cache.len(), cache.weight()),
        (2, 70),
        "a refusal changes nothing"
    );
    assert_eq!(cache.stats().total_refused, 1);
    // An entry that fills the whole bound evicts everything else.
    cache.insert("e".into(), "x".repeat(99)).unwrap();
    assert_eq!((cache.len(), cache.weight()), (1, 100));
}

#[test]
#[serial]
fn its_structures_and_the_values_it_makes_belong_to_its_component() {
    memgov::flush_thread();
    assert_eq!(live("bc-memory"), 0);
    let cache = BoundedCache::new("bc-memory", 1000);
    for k in 0..100u32 {
        // Values made elsewhere keep their own component; these are made by the cache.
        cache.get_or_insert_with(format!("key-{k}"), || vec![0u8; 1000]);
    }
    let made = cache.get_or_insert_with("made-outside".to_string(), || vec![0u8; 10]);
    assert_eq!(made.len(), 10);
    {
        let _elsewhere = memgov::component_scope("bc-elsewhere");
        cache
            .insert("foreign".to_string(), vec![0u8; 5000])
            .unwrap();
    }
    memgov::flush_thread();
    let with_cache = live("bc-memory");
    // 101 values of the cache's own making, the keys it keeps (one copy in its map, one in its
    // list), and the map and list themselves.
    assert!(with_cache > 100 * 1000 + 10, "{with_cache}");
    assert!(
        live("bc-elsewhere") >= 5000,
        "the foreign value stays foreign"
    );
    assert!(
        live("bc-elsewhere") < 5000 + 64,
        "only the value is foreign: {}",
        live("bc-elsewhere")
    );
    drop(made);
    drop(cache);
    memgov::flush_thread();
    assert_eq!(
        live("bc-memory"),
        0,
        "a dropped cache gives all of its component back"
    );
    assert_eq!(live("bc-elsewhere"), 0);
}

#[test]
#[serial]
fn get_or_try_insert_with_inserts_only_what_was_made() {
    let cache: BoundedCache<&str, u64> = BoundedCache::new("bc-try", 10);
    assert_eq!(cache.get_or_try_insert_with("7", || "7".parse()), Ok(7));
    assert_eq!(cache.get_or_try_insert_with("7", || "never".parse()), Ok(7));
    assert!(cache
        .get_or_try_insert_with("x", || "x".parse::<u64>())
        .is_err());
    assert_eq!(cache.len(), 1);
    let s = cache.stats();
    assert_eq!((s.total_hits, s.total_misses, s.total_inserts), (1, 2, 1));
}

#[test]
#[serial]
fn threads_share_one_cache_within_its_bound() {
    let cache = Arc::new(BoundedCache::new("bc-threads", 64));
    let workers: Vec<_> = (0..4u32)
        .map(|t| {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let mut replaced = 0;
                for i in 0..20_000u32 {
                    let key = (t * 7 + i) % 200;
                    if cache.get(&key).is_none() {
                        // Another thread may have inserted the key since this one missed it.
                        replaced += cache.insert(key, vec![t as u8; 100]).unwrap().is_some() as u64;
                    }
                    assert!(cache.len() <= 64);
                }
                replaced
            })
        })
        .collect();
    let replaced: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let s = cache.stats();
    assert_eq!(s.live_entries, 64);
    assert_eq!(s.total_hits + s.total_misses, 80_000);
    assert_eq!(
        s.total_inserts - s.total_evictions - replaced,
        64,
        "every insert is held, was evicted or replaced another"
    );
    drop(cache);
    memgov::flush_thread();
    assert_eq!(live("bc-threads"), 0);
}

#[test]
#[serial]
fn warning_sheds_half_on_the_monitor_and_caps_growth_until_normal() {
    start_monitor();
    memgov::set_budget("bc-warning", Limits::soft(16 * MIB as u64)).unwrap();
    let reports = Reports::default();
    let cache = pressure_cache("bc-warning", &reports);
    // 13 MiB: 81%, Normal.
    fill(&cache, 0..208);
    settle();
    assert_eq!(memgov::component_pressure("bc-warning"), Level::Normal);
    assert!(recorded(&reports).is_empty());
    // Held outside the cache, 1 MiB more: 87.5%, Warning. The cache sheds to half of what it held
    // (104 values), and the component falls to 44%: Normal again, and the bound is lifted.
    let ballast = {
        let _s = memgov::component_scope("bc-warning");
        vec![1u8; MIB]
    };
    let r = wait_for_reports(&reports, 2);
    assert_eq!(r.len(), 2, "{r:?}");
    let (warn, thread_name) = &r[0];
    assert_eq!(
        thread_name, "memgov-monitor",
        "shedding runs on the monitor thread"
    );
    assert_eq!((warn.previous, warn.level), (Level::Normal, Level::Warning));
    assert_eq!(
        (warn.entries_before, warn.shed, warn.entries_after),
        (208, 104, 104)
    );
    assert_eq!(warn.weight_after, 104 * VALUE as u64);
    let (normal, _) = &r[1];
    assert_eq!(
        (normal.previous, normal.level, normal.shed),
        (Level::Warning, Level::Normal, 0)
    );
    let s = cache.stats();
    assert_eq!(
        (s.live_entries, s.total_shed, s.level, s.bound),
        (104, 104, Level::Normal, u64::MAX)
    );
    assert_eq!(memgov::component_pressure("bc-warning"), Level::Normal);

    // While the level stays at Warning (a ballast of 13 MiB keeps it there on its own), the cache
    // may hold half of what it held when the pressure began, and no more.
    cache.clear();
    fill(&cache, 0..32); // 2 MiB
    let big = {
        let _s = memgov::component_scope("bc-warning");
        vec![1u8; 11 * MIB]
    };
    // 14 MiB: 87.5%, Warning. The cache sheds to 16 values: 13 MiB, 81%, still Warning.
    wait_until("Warning", || cache.stats().level == Level::Warning);
    settle();
    assert_eq!(memgov::component_pressure("bc-warning"), Level::Warning);
    let s = cache.stats();
    assert_eq!(
        (s.level, s.live_entries, s.bound),
        (Level::Warning, 16, 16 * VALUE as u64)
    );
    fill(&cache, 100..110);
    assert_eq!(
        cache.len(),
        16,
        "inserts at Warning evict to stay within the cap"
    );
    assert!(
        !cache.contains_key(&0),
        "the least recently used went first"
    );
    assert!(cache.contains_key(&109));
    drop((big, ballast));
    wait_until("Normal", || cache.stats().level == Level::Normal);
    fill(&cache, 200..240);
    assert_eq!(cache.len(), 56, "back at Normal the cap is lifted");
    drop(cache);
    memgov::set_budget("bc-warning", Limits::NONE).unwrap();
}

#[test]
#[serial]
fn critical_clears_and_refuses_until_the_level_falls() {
    start_monitor();
    memgov::set_budget("bc-critical", Limits::soft(16 * MIB as u64)).unwrap();
    let reports = Reports::default();
    let cache = pressure_cache("bc-critical", &reports);
    fill(&cache, 0..8); // 0.5 MiB
    settle();
    // 15.5 MiB of ballast: 100%, Critical; without the cache's 0.5 MiB still 97%.
    let ballast = {
        let _s = memgov::component_scope("bc-critical");
        vec![1u8; 15 * MIB + MIB / 2]
    };
    let r = wait_for_reports(&reports, 1);
    assert_eq!(memgov::component_pressure("bc-critical"), Level::Critical);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].0.previous, r[0].0.level, r[0].0.shed),
        (Level::Normal, Level::Critical, 8)
    );
    assert!(cache.is_empty());
    let refused = cache.insert(99, Arc::new(vec![0u8; 10])).unwrap_err();
    assert_eq!(
        (refused.level, refused.bound, refused.weight),
        (Level::Critical, 0, 10)
    );
    // get_or_insert_with still hands the value over, uncached.
    assert_eq!(
        cache
            .get_or_insert_with(98, || Arc::new(vec![2u8; 3]))
            .len(),
        3
    );
    assert!(cache.is_empty());
    assert_eq!(cache.stats().total_refused, 2);
    drop(ballast);
    wait_until("Normal", || cache.stats().level == Level::Normal);
    cache.insert(99, Arc::new(vec![0u8; 10])).unwrap();
    assert_eq!(cache.len(), 1);
    drop(cache);
    memgov::set_budget("bc-critical", Limits::NONE).unwrap();
}

#[test]
#[serial]
fn the_process_level_counts_too_and_shedding_follows_the_policy() {
    start_monitor();
    let reports = Reports::default();
    let log = Arc::clone(&reports);
    let cache = BoundedCache::builder("bc-process")
        .shedding(Shedding::new(0.75, 0.25).unwrap())
        .on_shed(move |report| log.lock().unwrap().push((*report, String::new())))
        .build();
    for k in 0..100u32 {
        cache.insert(k, k).unwrap();
    }
    // The process's soft limit just below what the process holds: Critical for the process,
    // though "bc-process" has no budget at all. A 64 MiB ballast makes the threads' credits
    // (at most 256 KiB each) small beside what the process holds.
    let ballast = vec![1u8; 64 * MIB];
    memgov::flush_thread();
    let charged = memgov::budget_stats(memgov::Scope::Process).charged_bytes;
    let limit = ProcessLimit::set(Limits::soft(charged * 1000 / 975)); // 97.5%
    wait_for_reports(&reports, 1);
    assert_eq!(memgov::pressure(), Level::Critical);
    assert_eq!(memgov::shedding_level(cache.component()), Level::Critical);
    assert_eq!(cache.len(), 25, "a quarter kept at Critical");
    drop(limit);
    wait_until("Normal", || cache.stats().level == Level::Normal);
    drop(ballast);
    let r = recorded(&reports);
    assert_eq!(
        r.first().map(|(r, _)| (r.level, r.shed)),
        Some((Level::Critical, 75))
    );
}

#[test]
#[serial]
fn a_dropped_cache_is_not_called_again() {
    start_monitor();
    memgov::set_budget("bc-dropped", Limits::soft(16 * MIB as u64)).unwrap();
    let reports = Reports::default();
    let cache = pressure_cache("bc-dropped", &reports);
    fill(&cache, 0..4);
    drop(cache);
    let ballast = {
        let _s = memgov::component_scope("bc-dropped");
        vec![1u8; 15 * MIB + MIB / 2]
    };
    settle();
    assert_eq!(memgov::component_pressure("bc-dropped"), Level::Critical);
    assert!(recorded(&reports).is_empty());
    drop(ballast);
    memgov::set_budget("bc-dropped", Limits::NONE).unwrap();
    settle();
}

#[test]
#[serial]
fn what_a_rise_cuts_is_shed_by_the_monitor_even_while_others_insert() {
    start_monitor();
    // A larger budget here: the cache's own structures (about 1 MiB for 20 000 entries) are
    // part of the component's charge.
    memgov::set_budget("bc-race", Limits::soft(64 * MIB as u64)).unwrap();
    let reports = Reports::default();
    let log = Arc::clone(&reports);
    let cache = Arc::new(
        BoundedCache::builder("bc-race")
            .on_shed(move |report| log.lock().unwrap().push((*report, String::new())))
            .build(),
    );
    for k in 0..20_000u32 {
        cache.insert(k, k).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let inserter = {
        let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
        thread::spawn(move || {
            // Replacing keys the cache holds or held: an insert at the new bound evicts as a new
            // key would, but the cache's structures do not grow.
            let mut k = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                cache.insert(k, k).unwrap();
                k = (k + 1) % 20_000;
            }
        })
    };
    // 56 MiB: 89% with the cache, Warning, and shedding gives back too little to leave it.
    let ballast = {
        let _s = memgov::component_scope("bc-race");
        vec![1u8; 56 * MIB]
    };
    let r = wait_for_reports(&reports, 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    inserter.join().unwrap();
    let (report, _) = r[0];
    assert_eq!(report.level, Level::Warning);
    // Whatever was inserted meanwhile, the cut from what the cache held to what it kept was
    // made by the shedding, not by the inserts.
    assert!(
        report.shed >= report.entries_before - report.entries_after,
        "{report:?}"
    );
    assert!(
        report.entries_after <= report.entries_before / 2 + 1,
        "{report:?}"
    );
    drop(ballast);
    drop(cache);
    memgov::set_budget("bc-race", Limits::NONE).unwrap();
}

#[test]
#[serial]
fn live_caches_are_listed_by_name_until_dropped() {
    let a = BoundedCache::<u32, u32>::builder("bc-listed").build();
    let b = BoundedCache::<u32, u32>::builder("bc-listed")
        .name("bc-listed-second")
        .build();
    a.insert(1, 1).unwrap();
    a.get(&1);
    let listed = memgov::caches();
    let names: Vec<_> = listed
        .iter()
        .filter(|c| c.name.starts_with("bc-listed"))
        .map(|c| (c.name, c.component.name()))
        .collect();
    assert_eq!(
        names,
        [
            ("bc-listed", "bc-listed"),
            ("bc-listed-second", "bc-listed")
        ],
        "in the order they were built, named by their component unless named"
    );
    let first = listed.iter().find(|c| c.name == "bc-listed").unwrap();
    assert_eq!(*first, a.stats());
    // Inside `with`, the calling thread holds the cache's lock: the listing leaves it out rather
    // than wait for itself.
    let inside = a.with(&1, |_| {
        memgov::caches()
            .iter()
            .filter(|c| c.name.starts_with("bc-listed"))
            .map(|c| c.name)
            .collect::<Vec<_>>()
    });
    assert_eq!(inside, Some(vec!["bc-listed-second"]));
    drop(a);
    assert!(!memgov::caches().iter().any(|c| c.name == "bc-listed"));
    drop(b);
    assert!(!memgov::caches()
        .iter()
        .any(|c| c.name.starts_with("bc-listed")));
}

#[test]
#[serial]
fn at_its_components_hard_limit_a_cache_refuses_instead_of_aborting() {
    memgov::set_budget("bc-hard", Limits::hard(MIB as u64)).unwrap();
    // Shedding off, so that only the hard limit is at work (at 95% of it the level is Critical).
    let cache = BoundedCache::builder("bc-hard")
        .shedding(Shedding::NEVER)
        .build();
    let mut inserted = 0u64;
    let refusal = loop {
        match cache.insert(inserted, inserted) {
            Ok(_) => inserted += 1,
            Err(refused) => break refused,
        }
        assert!(
            inserted < 1 << 20,
            "a 1 MiB hard limit never refused the cache's growth"
        );
    };
    assert_eq!(refusal.cause, memgov::RefusalCause::NoMemory);
    assert_eq!(refusal.into_entry(), (inserted, inserted));
    assert!(
        memgov::budget_stats(memgov::Scope::Component(cache.component())).failures >= 1,
        "the refusal is counted against the budget"
    );
    // The process goes on, and so does the cache: what it holds is intact, replacements (which
    // need no new memory) still go in.
    assert_eq!(cache.len() as u64, inserted);
    assert_eq!(cache.get(&0), Some(0));
    assert_eq!(cache.insert(0, 7).unwrap(), Some(0));
    let s = cache.stats();
    assert_eq!((s.total_refused, s.live_entries), (1, inserted));
    drop(cache);
    memgov::flush_thread();
    assert_eq!(live("bc-hard"), 0);
    memgov::set_budget("bc-hard", Limits::NONE).unwrap();
}

#[test]
#[serial]
fn an_expired_entry_is_a_miss() {
    let cache = BoundedCache::builder("bc-ttl-lookup")
        .time_to_live(Duration::from_millis(100))
        .build();
    cache.insert("k", 1u32).unwrap();
    assert_eq!(cache.get("k"), Some(1));
    thread::sleep(Duration::from_millis(150));
    assert_eq!(cache.get("k"), None);
    assert!(!cache.contains_key("k"));
    let s = cache.stats();
    // Whether the lookup or the monitor's sweep found it first, it expired once.
    assert_eq!(
        (
            s.total_hits,
            s.total_misses,
            s.total_expired,
            s.live_entries
        ),
        (1, 1, 1, 0)
    );
}

#[test]
#[serial]
fn the_sweep_gives_expired_memory_back_without_lookups() {
    start_monitor();
    memgov::flush_thread();
    let cache = BoundedCache::builder("bc-ttl-sweep")
        .time_to_live(Duration::from_millis(50))
        .build();
    memgov::flush_thread();
    // The cache itself (its lock, counters and settings) lives in its component.
    let empty = live("bc-ttl-sweep");
    for k in 0..1000u32 {
        cache.get_or_insert_with(k, || vec![1u8; 1000]);
    }
    memgov::flush_thread();
    assert!(live("bc-ttl-sweep") >= 1_000_000);
    wait_until("the sweep", || cache.is_empty());
    let s = cache.stats();
    assert_eq!(
        (s.total_expired, s.total_misses, s.total_hits),
        (1000, 1000, 0)
    );
    // The values were dropped on the monitor thread, and the emptied cache let its map and list
    // go: the component is back to the empty cache.
    wait_until("the structures' release", || live("bc-ttl-sweep") == empty);
}

#[test]
#[serial]
fn a_replacement_lives_a_time_to_live_from_then() {
    const TTL: Duration = Duration::from_secs(1);
    let cache = BoundedCache::builder("bc-ttl-renew")
        .time_to_live(TTL)
        .build();
    let first = Instant::now();
    cache.insert(1u8, "first").unwrap();
    thread::sleep(Duration::from_millis(600));
    let replaced = Instant::now();
    cache.insert(1u8, "second").unwrap();
    while first.elapsed() < TTL + Duration::from_millis(200) {
        thread::sleep(Duration::from_millis(20));
    }
    let present = cache.peek(&1);
    assert!(
        replaced.elapsed() < TTL,
        "too slow to judge: {:?} since the replacement",
        replaced.elapsed()
    );
    assert_eq!(
        present,
        Some("second"),
        "the first insert's time is not the one that counts"
    );
    wait_until("expiry", || !cache.contains_key(&1));
    assert_eq!(cache.stats().total_expired, 1);
}

#[test]
#[serial]
fn its_own_structures_cost_under_112_bytes_an_entry() {
    // Measured by memgov itself: the component's live bytes with 100 000 u64 -> u64 entries, over
    // the empty cache's. The slab of slots (key, value, weight, birth, two pairs of links) and the
    // map from key to slot, with their growth slack; 16 of the bytes are the key and the value.
    let cache = BoundedCache::<u64, u64>::builder("bc-per-entry").build();
    memgov::flush_thread();
    let empty = live("bc-per-entry");
    for k in 0..100_000 {
        cache.insert(k, k).unwrap();
    }
    memgov::flush_thread();
    let per_entry = (live("bc-per-entry") - empty) as f64 / 100_000.0;
    println!("bytes per u64 -> u64 entry: {per_entry:.1}");
    assert!(per_entry < 112.0, "{per_entry:.1} bytes per entry");
}

/// A hasher that counts the hashers it builds, to see that the cache's map uses it.
#[derive(Clone, Default)]
struct CountingHasher(Arc<std::sync::atomic::AtomicUsize>);

impl std::hash::BuildHasher for CountingHasher {
    type Hasher = std::hash::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::hash::DefaultHasher::new()
    }
}

#[test]
#[serial]
fn the_map_hashes_with_the_hasher_given_and_keeps_it_when_emptied() {
    let hasher = CountingHasher::default();
    let built = || hasher.0.load(std::sync::atomic::Ordering::Relaxed);
    let cache = BoundedCache::<u32, u32>::builder("bc-hasher")
        .max_weight(1000)
        .hasher(hasher.clone())
        .build();
    for k in 0..1000 {
        cache.insert(k, k).unwrap();
    }
    let after_inserts = built();
    assert!(after_inserts >= 1000, "{after_inserts}");
    assert_eq!(cache.get(&7), Some(7));
    assert!(built() > after_inserts, "a lookup hashes with it");
    // Cleared: the new, empty map hashes with a clone of the same hasher.
    assert_eq!(cache.trim_to(60), 940);
    cache.clear();
    let before = built();
    cache.insert(5, 50).unwrap();
    assert_eq!(cache.get(&5), Some(50));
    assert!(built() > before);
}

#[test]
#[serial]
fn a_sharded_cache_splits_its_bound_and_is_seen_as_one() {
    memgov::flush_thread();
    let cache = BoundedCache::<u32, u32>::builder("bc-shards")
        .name("bc-sharded")
        .max_weight(1000)
        .shards(4)
        .build();
    for k in 0..4000 {
        cache.insert(k, k).unwrap();
    }
    // Each shard holds its 250 most recently used keys (about a thousand keys went to each).
    assert_eq!(cache.len(), 1000);
    for k in 3900..4000 {
        assert_eq!(cache.get(&k), Some(k), "the newest keys are all there");
    }
    assert!(!cache.contains_key(&0));
    assert_eq!(cache.remove(&3999), Some(3999));
    let s = cache.stats();
    assert_eq!(
        (s.max_weight, s.bound, s.live_entries, s.live_weight),
        (1000, 1000, 999, 999)
    );
    assert_eq!(
        (
            s.total_inserts,
            s.total_evictions,
            s.total_hits,
            s.total_misses
        ),
        (4000, 3000, 100, 0)
    );
    let listed: Vec<_> = memgov::caches()
        .into_iter()
        .filter(|c| c.name == "bc-sharded")
        .collect();
    assert_eq!(listed, [s], "listed once, with the shards' figures summed");
    // Trimmed to 100: each shard to a quarter of it.
    assert_eq!(cache.trim_to(100), 899);
    assert_eq!(cache.weight(), 100);
    cache.clear();
    assert!(cache.is_empty());
    drop(cache);
    memgov::flush_thread();
    assert_eq!(
        live("bc-shards"),
        0,
        "the shards' structures are freed with the cache"
    );
}

#[test]
#[serial]
fn threads_share_a_sharded_cache_within_its_bound() {
    let cache = Arc::new(
        BoundedCache::<u64, u64>::builder("bc-shards-threads")
            .max_weight(512)
            .shards(8)
            .build(),
    );
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                for i in 0..20_000u64 {
                    let k = (i * 7 + t) % 2000;
                    if cache.get(&k).is_none() {
                        cache.insert(k, k).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.total_hits + s.total_misses, 80_000);
    assert_eq!(s.total_inserts, s.total_misses);
    // 2000 keys over 8 shards of 64: every shard is full, and none past its share.
    assert_eq!(s.live_entries, 512, "{s:?}");
}

#[test]
#[serial]
fn a_sharded_cache_sheds_in_every_shard_and_reports_once() {
    start_monitor();
    memgov::set_budget("bc-shards-warning", Limits::soft(16 * MIB as u64)).unwrap();
    let reports = Reports::default();
    let cache = sharded_pressure_cache("bc-shards-warning", &reports, 4);
    // 13 MiB: 81%, Normal.
    fill(&cache, 0..208);
    settle();
    assert!(recorded(&reports).is_empty());
    // 1 MiB more: 87.5%, Warning. Each shard sheds to half of what it held: the cache to about
    // half, and the component back to Normal.
    let ballast = {
        let _s = memgov::component_scope("bc-shards-warning");
        vec![1u8; MIB]
    };
    let r = wait_for_reports(&reports, 2);
    assert_eq!(
        r.len(),
        2,
        "one report per change of level, not one per shard: {r:?}"
    );
    let (warn, thread_name) = &r[0];
    assert_eq!(thread_name, "memgov-monitor");
    assert_eq!((warn.previous, warn.level), (Level::Normal, Level::Warning));
    assert_eq!(warn.entries_before, 208);
    // A shard with an odd number keeps the half rounded down.
    assert!((104..=106).contains(&warn.shed), "{warn:?}");
    assert_eq!(warn.entries_after + warn.shed, 208, "{warn:?}");
    assert_eq!(cache.stats().total_shed, warn.shed);
    assert_eq!(
        (r[1].0.previous, r[1].0.level),
        (Level::Warning, Level::Normal)
    );
    drop((ballast, cache));
    memgov::set_budget("bc-shards-warning", Limits::NONE).unwrap();
}
