//! An inner allocator that refuses on demand: a refused `alloc`, `alloc_zeroed` or `realloc`
//! returns null and leaves every figure and budget as it was, on the fast path (small requests
//! with credit in hand) and the slow path (the first operation, a flush due, no credit) alike.
//!
//! `harness = false`: the refusals are switched on around single operations, and nothing between
//! them may allocate (a panic message would), so checks collect failures into a fixed array and
//! report after the last refusal.

use memgov::{budget_stats, component_stats, Governor, Limits, Scope, SizeClasses};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The system allocator, except that while `REFUSE` is set every request returns null.
struct Flaky;

static REFUSE: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to System, or refuses (null), which GlobalAlloc allows.
unsafe impl GlobalAlloc for Flaky {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if REFUSE.load(Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if REFUSE.load(Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if REFUSE.load(Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// SAFETY: KNOWN is false (the default): nothing is promised.
unsafe impl SizeClasses for Flaky {}

#[global_allocator]
static GLOBAL: Governor<Flaky> = Governor::with_inner(Flaky);

/// The figures a refusal must leave alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Figures {
    live: u64,
    allocs: u64,
    frees: u64,
    reallocs: u64,
    total: u64,
    charged: u64,
}

fn figures(name: &str) -> Figures {
    memgov::flush_thread();
    let s = component_stats(name).expect("component registered");
    let id = memgov::lookup_component(name).expect("component registered");
    Figures {
        live: s.live_bytes,
        allocs: s.alloc_count,
        frees: s.free_count,
        reallocs: s.realloc_count,
        total: s.total_allocated_bytes,
        charged: budget_stats(Scope::Component(id)).charged_bytes,
    }
}

/// One refused request of each kind, made while `REFUSE` is set. Returns how many came back
/// non-null (none should).
fn refused_round(layout: Layout, held: *mut u8) -> usize {
    REFUSE.store(true, Relaxed);
    // SAFETY: non-zero sizes; `held` is live with `layout`, and a refused realloc leaves it so.
    let results = unsafe {
        [
            GLOBAL.alloc(layout),
            GLOBAL.alloc_zeroed(layout),
            GLOBAL.realloc(held, layout, layout.size() * 2),
        ]
    };
    REFUSE.store(false, Relaxed);
    results.iter().filter(|p| !p.is_null()).count()
}

fn main() {
    let name = "inner-failure";
    // A budget makes the charged figure meaningful; it is far above what the test uses.
    memgov::set_budget(name, Limits::hard(1 << 30)).unwrap();
    // Made outside the scope, so that the component's live bytes end at zero.
    let mut failures: Vec<(usize, Figures, Figures, usize)> = Vec::with_capacity(4096);
    // With histograms on, a refused allocation must not be counted either.
    memgov::set_histograms(true);
    let scope = memgov::component_scope(name);
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: non-zero size.
    let held = unsafe { GLOBAL.alloc(layout) };
    assert!(!held.is_null());

    // Enough rounds to pass several flush points (every 1024 operations of a kind), so both
    // halves of the path see refusals, with successful pairs between to move the counts on.
    for round in 0..3000 {
        let before = figures(name);
        // Successful pairs first, so that the record is listed and holds credit: the refusals
        // then take the fast path, except when a flush falls due among them.
        let pairs = 2 + round % 7;
        for _ in 0..pairs {
            // SAFETY: non-zero size; freed with the same layout.
            unsafe {
                let p = GLOBAL.alloc(layout);
                assert!(!p.is_null());
                GLOBAL.dealloc(p, layout);
            }
        }
        let granted = refused_round(layout, held);
        let after = figures(name);
        let expected = Figures {
            allocs: before.allocs + pairs as u64,
            frees: before.frees + pairs as u64,
            total: before.total + (pairs * layout.size()) as u64,
            ..before
        };
        if (after != expected || granted != 0) && failures.len() < failures.capacity() {
            failures.push((round, expected, after, granted));
        }
    }
    // SAFETY: live with `layout`.
    unsafe { GLOBAL.dealloc(held, layout) };
    drop(scope);
    let end = figures(name);
    let sizes = {
        // Read in another component: the histogram allocates.
        let _reader = memgov::component_scope("inner-failure-reader");
        memgov::stats::size_histogram(name).expect("component registered")
    };

    if let Some((round, expected, got, granted)) = failures.first() {
        panic!(
            "{} of 3000 rounds changed the figures or got memory; first, round {round}: \
             granted {granted}, expected {expected:?}, got {got:?}",
            failures.len()
        );
    }
    assert_eq!((end.live, end.allocs - end.frees), (0, 0), "{end:?}");
    assert_eq!(
        sizes.count(),
        end.allocs,
        "sizes counted vs allocations made"
    );
    println!(
        "inner_failure: 3000 rounds of refused alloc, alloc_zeroed and realloc: figures unchanged"
    );
}
