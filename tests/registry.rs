//! The component registry filled to capacity (in its own process, since the registry is
//! process-wide and never shrinks): names interned concurrently get distinct ids, every name past
//! `CAPACITY` maps to "overflow" and is counted by `refused_names`, allocations under a refused name
//! are counted in "overflow", and names interned before the registry filled keep working.
//!
//! One test, in phases, because every phase depends on how full the registry is.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{ComponentId, InComponent, LimitError, Limits, NameError, CAPACITY};
use std::collections::HashSet;
use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::thread;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Interning the same names from several threads at once gives one id per name.
fn concurrent_interning_agrees() -> Vec<(&'static str, ComponentId)> {
    let names: Vec<&'static str> = (0..50).map(|i| leak(format!("reg-shared-{i}"))).collect();
    let per_thread: Vec<Vec<ComponentId>> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let names = &names;
                s.spawn(move || {
                    // Each thread walks the names in a different order.
                    let mut ids = vec![ComponentId::UNSCOPED; names.len()];
                    for k in 0..names.len() {
                        let i = (k * 7 + t * 13) % names.len();
                        ids[i] = memgov::component(names[i]);
                    }
                    ids
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ids in &per_thread[1..] {
        assert_eq!(ids, &per_thread[0]);
    }
    let distinct: HashSet<_> = per_thread[0].iter().collect();
    assert_eq!(distinct.len(), names.len());
    names
        .into_iter()
        .zip(per_thread[0].iter().copied())
        .collect()
}

/// Fills the registry from four threads at once with more names than it has room for.
/// Returns the names that were accepted.
fn fill_concurrently() -> Vec<(&'static str, ComponentId)> {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 300;
    let room = CAPACITY - memgov::registered_components();
    assert!(
        THREADS * PER_THREAD > room,
        "the test must overfill the registry"
    );
    let refused_before = memgov::refused_names();

    let results: Vec<(&'static str, ComponentId)> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let name = leak(format!("reg-fill-{t}-{i}"));
                            (name, memgov::component(name))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });

    assert_eq!(memgov::registered_components(), CAPACITY);
    let accepted: Vec<_> = results
        .iter()
        .copied()
        .filter(|&(_, id)| id != ComponentId::OVERFLOW)
        .collect();
    assert_eq!(accepted.len(), room);
    let ids: HashSet<_> = accepted.iter().map(|&(_, id)| id).collect();
    assert_eq!(ids.len(), room, "two names got the same id");
    assert!(ids
        .iter()
        .all(|id| id.index() >= 2 && id.index() < CAPACITY));
    assert_eq!(
        memgov::refused_names() - refused_before,
        (THREADS * PER_THREAD - room) as u64
    );
    for &(name, id) in &accepted {
        assert_eq!(id.name(), name);
        assert_eq!(memgov::lookup_component(name), Some(id));
    }
    for &(name, id) in &results {
        if id == ComponentId::OVERFLOW {
            assert_eq!(memgov::lookup_component(name), None, "{name}");
        }
    }
    accepted
}

fn refused_names_map_to_overflow(earlier: &[(&'static str, ComponentId)]) {
    let refused = leak("reg-refused".to_string());
    let before = memgov::refused_names();
    assert_eq!(memgov::try_component(refused), Ok(ComponentId::OVERFLOW));
    assert_eq!(memgov::component(refused), ComponentId::OVERFLOW);
    // Every refused intern is counted, the same name again included.
    assert_eq!(memgov::refused_names(), before + 2);
    assert_eq!(memgov::lookup_component(refused), None);
    assert!(memgov::component_stats(refused).is_none());
    assert_eq!(memgov::registered_components(), CAPACITY);

    // Names interned before the registry filled still resolve, and cost no refusal.
    for &(name, id) in earlier {
        assert_eq!(memgov::component(name), id);
        assert_eq!(memgov::try_component(name), Ok(id));
    }
    assert_eq!(memgov::component("unscoped"), ComponentId::UNSCOPED);
    assert_eq!(memgov::component("overflow"), ComponentId::OVERFLOW);
    // Bad names are still errors, not refusals.
    assert_eq!(memgov::try_component(""), Err(NameError::Empty));
    let long = leak("x".repeat(65));
    assert!(matches!(
        memgov::try_component(long),
        Err(NameError::TooLong { .. })
    ));
    assert_eq!(memgov::refused_names(), before + 2);
    assert_eq!(memgov::global_stats().refused_names, before + 2);
}

fn allocations_under_a_refused_name_count_as_overflow(last: ComponentId) {
    let refused = leak("reg-refused-alloc".to_string());
    let overflow = || {
        let s = ComponentId::OVERFLOW.stats();
        (s.live_bytes, s.alloc_count, s.free_count)
    };
    let before = overflow();

    let block = {
        let scope = memgov::component_scope(refused);
        assert_eq!(scope.component(), ComponentId::OVERFLOW);
        assert_eq!(memgov::current_component(), ComponentId::OVERFLOW);
        // black_box: in release builds LLVM may elide an allocation nobody observes.
        black_box(vec![0u8; 1234].into_boxed_slice())
    };
    assert_eq!(overflow(), (before.0 + 1234, before.1 + 1, before.2));

    // The future wrapper with a refused name, polled to completion.
    let mut fut =
        Box::pin(async { black_box(vec![0u8; 66].into_boxed_slice()) }.in_component(refused));
    let Poll::Ready(from_future) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("the future is ready at once");
    };
    drop(fut);
    assert_eq!(overflow(), (before.0 + 1300, before.1 + 2, before.2));

    drop((block, from_future));
    assert_eq!(overflow(), (before.0, before.1 + 2, before.2 + 2));

    // The last registered component works like any other.
    let block = {
        let _scope = memgov::try_enter(last).unwrap();
        black_box(vec![0u8; 4321].into_boxed_slice())
    };
    let s = last.stats();
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (4321, 1, 0),
        "{s:?}"
    );
    drop(block);
    let s = last.stats();
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 1, 1),
        "{s:?}"
    );
}

/// A budget for a name the full registry refused is refused too: it would otherwise land on
/// "overflow", which every refused name shares, while `budget(name)` kept saying there is none.
fn budgets_for_refused_names_are_refused(earlier: &[(&'static str, ComponentId)]) {
    let refused = leak("reg-refused-budget".to_string());
    let overflow_before = memgov::budget("overflow");
    let e = memgov::set_budget(refused, Limits::hard(1 << 20)).unwrap_err();
    assert_eq!(e, LimitError::RegistryFull { name: refused });
    let text = e.to_string();
    assert!(text.contains("\"reg-refused-budget\""), "{text}");
    assert!(text.contains(&format!("{CAPACITY}")), "{text}");
    assert_eq!(memgov::budget("overflow"), overflow_before);
    assert_eq!(memgov::budget(refused), Limits::NONE);
    // Names registered before the registry filled, and "overflow" itself, still take budgets.
    let (name, _) = earlier[0];
    memgov::set_budget(name, Limits::hard(1 << 30)).unwrap();
    assert_eq!(memgov::budget(name), Limits::hard(1 << 30));
    memgov::set_budget(name, Limits::NONE).unwrap();
    memgov::set_budget("overflow", Limits::soft(1 << 40)).unwrap();
    assert_eq!(memgov::budget("overflow"), Limits::soft(1 << 40));
    memgov::set_budget("overflow", Limits::NONE).unwrap();
}

fn a_full_registry_still_reports() {
    let snap = memgov::snapshot();
    assert_eq!(snap.components.len(), CAPACITY);
    assert_eq!(snap.global.components, CAPACITY);
    assert_eq!(snap.global.refused_names, memgov::refused_names());
    assert!(snap.component("overflow").is_some());
    assert!(snap.component("reg-refused").is_none());
    let table = snap.to_string();
    assert!(table.contains("overflow"), "{table}");
}

#[test]
fn the_registry_fills_up_and_refuses_gracefully() {
    assert_eq!(memgov::refused_names(), 0);
    let shared = concurrent_interning_agrees();
    let accepted = fill_concurrently();
    let last = accepted.iter().map(|&(_, id)| id).max().unwrap();
    assert_eq!(last.index(), CAPACITY - 1);

    let mut earlier = shared;
    earlier.extend_from_slice(&accepted[..20]);
    refused_names_map_to_overflow(&earlier);
    budgets_for_refused_names_are_refused(&earlier);
    allocations_under_a_refused_name_count_as_overflow(last);
    a_full_registry_still_reports();
}
