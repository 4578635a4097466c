//! Fallible collection growth against hard limits: `Vec::try_reserve*` and
//! `HashMap::try_reserve` inside a component with a hard budget return `Err` at the limit and the
//! program goes on; each refusal adds exactly one to the budget's `failures`; a `Vec` grown up to
//! exactly the limit succeeds and one byte more does not, so the limit is never passed. The same
//! for the process-wide limit.
//!
//! Assertions run outside the limited scopes: a failed assertion's message must not be refused.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{budget_stats, component_stats, ComponentId, Limits, Scope};
use serial_test::serial;
use std::collections::HashMap;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Runs `f` inside the component `name`.
fn in_component<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    let _scope = memgov::component_scope(name);
    f()
}

fn failures(scope: Scope) -> u64 {
    budget_stats(scope).failures
}

fn charged(scope: Scope) -> u64 {
    budget_stats(scope).charged_bytes
}

fn live(name: &str) -> u64 {
    component_stats(name).unwrap().live_bytes
}

#[test]
#[serial]
fn a_vec_grows_to_exactly_the_limit_and_not_one_byte_further() {
    const HARD: usize = MIB;
    const STEP: usize = 64 * KIB;
    let name = "tr-vec";
    let comp = Scope::Component(memgov::component(name));
    memgov::set_budget(name, Limits::hard(HARD as u64)).unwrap();
    let before = failures(comp);

    let mut v: Vec<u8> = Vec::new();
    let refused = in_component(name, || v.try_reserve_exact(2 * HARD));
    assert!(refused.is_err(), "2 MiB in a 1 MiB budget");
    assert_eq!(failures(comp), before + 1);
    assert_eq!((live(name), v.capacity()), (0, 0));

    // Grow by 64 KiB steps, filling each step with its number, up to exactly the limit.
    while v.capacity() < HARD {
        let grown = in_component(name, || v.try_reserve_exact(STEP));
        assert!(
            grown.is_ok(),
            "{} bytes is under the limit",
            v.capacity() + STEP
        );
        let step = (v.capacity() / STEP) as u8;
        v.resize(v.capacity(), step);
        assert!(charged(comp) <= HARD as u64);
    }
    assert_eq!(v.capacity(), HARD);
    assert_eq!(live(name), HARD as u64);
    assert_eq!(failures(comp), before + 1);

    // At the limit every further request is refused, one failure each, and nothing changes.
    for (i, more) in [1, 16, 4 * KIB, HARD].into_iter().enumerate() {
        let exact = in_component(name, || v.try_reserve_exact(more));
        let amortized = in_component(name, || v.try_reserve(more));
        assert!(exact.is_err() && amortized.is_err(), "{more} bytes over");
        assert_eq!(failures(comp), before + 3 + 2 * i as u64);
    }
    assert_eq!((v.len(), v.capacity()), (HARD, HARD));
    assert_eq!((live(name), charged(comp)), (HARD as u64, HARD as u64));
    // The refused reallocs left the contents alone.
    for (i, chunk) in v.chunks(STEP).enumerate() {
        assert!(chunk.iter().all(|&b| b == i as u8 + 1), "chunk {i}");
    }

    // Giving memory back makes exactly that much room again.
    v.truncate(HARD - 4 * KIB);
    v.shrink_to_fit();
    memgov::flush_thread();
    assert_eq!(live(name), (HARD - 4 * KIB) as u64);
    assert!(in_component(name, || v.try_reserve_exact(4 * KIB + 1)).is_err());
    assert!(in_component(name, || v.try_reserve_exact(4 * KIB)).is_ok());
    assert_eq!(live(name), HARD as u64);
    drop(v);
    memgov::flush_thread();
    assert_eq!((live(name), charged(comp)), (0, 0));
    assert_eq!(failures(comp), before + 10);
}

#[test]
#[serial]
fn a_hash_map_refuses_to_grow_past_the_limit_and_keeps_its_entries() {
    const HARD: u64 = 256 * KIB as u64;
    let name = "tr-map";
    let comp = Scope::Component(memgov::component(name));
    memgov::set_budget(name, Limits::hard(HARD)).unwrap();
    let before = failures(comp);

    let mut map: HashMap<u64, u64> = HashMap::new();
    let refused = in_component(name, || map.try_reserve(1_000_000));
    assert!(refused.is_err(), "16 MiB of table in a 256 KiB budget");
    assert_eq!(failures(comp), before + 1);
    assert!(map.is_empty());

    // Insert until the table cannot grow any more; refusals leave the map usable.
    let mut refusals = 0;
    let mut key = 0u64;
    while refusals < 3 {
        if in_component(name, || map.try_reserve(1)).is_err() {
            refusals += 1;
            assert_eq!(failures(comp), before + 1 + refusals);
            continue;
        }
        map.insert(key, key * 3);
        key += 1;
        assert!(charged(comp) <= HARD);
    }
    let len = map.len();
    assert!(len > 1000, "only {len} entries fit");
    assert!(live(name) <= HARD);
    assert!((0..key).all(|k| map.get(&k) == Some(&(k * 3))));

    // Replacing a value needs no room, so it still works at the limit.
    map.insert(0, 42);
    assert_eq!((map.len(), map[&0]), (len, 42));
    drop(map);
    assert_eq!(live(name), 0);
}

/// Resets the process limits when dropped, so a failing test leaves no limit behind.
struct ProcessLimitGuard;

impl Drop for ProcessLimitGuard {
    fn drop(&mut self) {
        memgov::set_process_limits(Limits::NONE).unwrap();
    }
}

#[test]
#[serial]
fn the_process_limit_refuses_fallible_growth_in_any_component() {
    let name = "tr-process";
    let comp = Scope::Component(memgov::component(name));
    let unscoped = Scope::Component(ComponentId::UNSCOPED);
    let hard = charged(Scope::Process) + 8 * MIB as u64;
    let before = (failures(Scope::Process), failures(comp), failures(unscoped));
    memgov::set_process_limits(Limits::hard(hard)).unwrap();
    let reset = ProcessLimitGuard;
    // The component has no budget of its own: only the process's limit refuses.
    let mut v: Vec<u8> = Vec::new();
    let mut map: HashMap<u32, [u8; 64]> = HashMap::new();
    let too_big = in_component(name, || v.try_reserve_exact(16 * MIB));
    let too_big_map = in_component(name, || map.try_reserve(200_000));
    let fits = in_component(name, || v.try_reserve_exact(2 * MIB));
    let too_big_unscoped = Vec::<u8>::new().try_reserve_exact(16 * MIB);
    let peak = charged(Scope::Process);
    drop(reset);

    assert!(too_big.is_err() && too_big_map.is_err() && too_big_unscoped.is_err());
    assert!(fits.is_ok(), "2 MiB fits in 8 MiB of headroom");
    assert!(peak <= hard, "{peak} charged over a limit of {hard}");
    assert_eq!(v.capacity(), 2 * MIB);
    assert_eq!(live(name), 2 * MIB as u64);
    // Each refusal counts once for the process and once for the component it happened in.
    assert_eq!(failures(Scope::Process) - before.0, 3);
    assert_eq!(failures(comp) - before.1, 2);
    assert_eq!(failures(unscoped) - before.2, 1);
}
