//! Thread teardown: allocating and freeing from a thread-local's destructor (with and without any
//! earlier allocation on that thread), threads that exit with a scope still open (a leaked guard,
//! or a guard kept in a thread-local), and threads that never enter a scope. In every case the
//! blocks stay counted after the thread is gone and frees from other threads credit back exactly.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{ComponentId, ComponentStats, ScopeGuard};
use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Mutex;
use std::thread;

fn stats(name: &'static str) -> ComponentStats {
    memgov::component(name).stats()
}

/// `(live_bytes, alloc_count, free_count)`.
fn counts(name: &'static str) -> (u64, u64, u64) {
    let s = stats(name);
    (s.live_bytes, s.alloc_count, s.free_count)
}

/// Frees `value` on a fresh thread, inside a scope of `scope`.
fn free_elsewhere<T: Send + 'static>(value: T, scope: &'static str) {
    thread::spawn(move || {
        let _scope = memgov::component_scope(scope);
        drop(value);
    })
    .join()
    .unwrap();
}

// ---- A thread-local destructor that allocates and frees ------------------------------------

/// A block the destructor leaves behind for the test to free.
static DTOR_KEPT: Mutex<Option<Box<[u8]>>> = Mutex::new(None);

/// Holds blocks allocated earlier in "td-early"; its destructor frees them and allocates in
/// "td-dtor".
struct Holder {
    early: Vec<Box<[u8]>>,
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _scope = memgov::component_scope("td-dtor");
        assert_eq!(memgov::current_component().name(), "td-dtor");
        drop(std::mem::take(&mut self.early));
        // black_box: in release builds LLVM may elide an allocation nobody observes.
        let temporary = black_box(vec![2u8; 444]);
        drop(temporary);
        let kept = vec![1u8; 333].into_boxed_slice();
        *DTOR_KEPT.lock().unwrap() = Some(kept);
    }
}

thread_local! {
    static HOLDER: RefCell<Option<Holder>> = const { RefCell::new(None) };
}

#[test]
fn a_thread_local_destructor_allocates_in_a_scope_and_frees_earlier_blocks() {
    memgov::component("td-dtor");
    thread::spawn(|| {
        // Register the thread-local before any scope, so nothing it needs is tagged.
        HOLDER.with(|_| {});
        let _scope = memgov::component_scope("td-early");
        let mut early = Vec::with_capacity(3);
        for size in [100, 200, 300] {
            early.push(vec![0u8; size].into_boxed_slice());
        }
        HOLDER.with(|h| *h.borrow_mut() = Some(Holder { early }));
    })
    .join()
    .unwrap();

    let vec_bytes = 3 * std::mem::size_of::<Box<[u8]>>() as u64;
    assert_eq!(counts("td-early"), (0, 4, 4));
    assert_eq!(stats("td-early").total_allocated_bytes, 600 + vec_bytes);
    assert_eq!(counts("td-dtor"), (333, 2, 1));
    assert_eq!(stats("td-dtor").total_allocated_bytes, 777);

    let kept = DTOR_KEPT
        .lock()
        .unwrap()
        .take()
        .expect("the destructor ran");
    assert!(kept.iter().all(|&b| b == 1));
    free_elsewhere(kept, "td-dtor-freer");
    assert_eq!(counts("td-dtor"), (0, 2, 2));
    assert_eq!(counts("td-dtor-freer"), (0, 0, 0));
}

// ---- A destructor that is the thread's first use of the allocator --------------------------

static FIRST_KEPT: Mutex<Option<Box<[u8]>>> = Mutex::new(None);
static FIRST_FOREIGN: Mutex<Option<Box<[u8]>>> = Mutex::new(None);

/// No heap of its own: registering it allocates nothing through the governor.
struct LateAllocator;

impl Drop for LateAllocator {
    fn drop(&mut self) {
        // Free a block another thread allocated, then allocate in a scope.
        drop(FIRST_FOREIGN.lock().unwrap().take());
        let _scope = memgov::component_scope("td-first");
        for size in [10, 20, 30] {
            drop(black_box(vec![0u8; size]));
        }
        *FIRST_KEPT.lock().unwrap() = Some(vec![3u8; 55].into_boxed_slice());
    }
}

thread_local! {
    static LATE: LateAllocator = const { LateAllocator };
}

#[test]
fn a_destructor_may_be_the_first_thing_on_its_thread_to_allocate() {
    memgov::component("td-first");
    let foreign = {
        let _scope = memgov::component_scope("td-foreign");
        vec![9u8; 77].into_boxed_slice()
    };
    *FIRST_FOREIGN.lock().unwrap() = Some(foreign);
    assert_eq!(counts("td-foreign"), (77, 1, 0));

    thread::spawn(|| LATE.with(|_| {})).join().unwrap();

    assert_eq!(counts("td-foreign"), (0, 1, 1));
    assert_eq!(counts("td-first"), (55, 4, 3));
    let kept = FIRST_KEPT
        .lock()
        .unwrap()
        .take()
        .expect("the destructor ran");
    free_elsewhere(kept, "td-first-freer");
    assert_eq!(counts("td-first"), (0, 4, 4));
    assert_eq!(counts("td-first-freer"), (0, 0, 0));
}

// ---- Threads that exit with a scope open ---------------------------------------------------

#[test]
fn a_thread_that_exits_with_a_leaked_guard_keeps_its_blocks_counted() {
    let name = "td-open-leaked";
    let blocks = thread::spawn(move || {
        let guard = memgov::component_scope(name);
        let mut v = Vec::with_capacity(10);
        for i in 0..10 {
            v.push(vec![0u8; 50 + i].into_boxed_slice());
        }
        std::mem::forget(guard);
        assert_eq!(
            (memgov::current_component().name(), memgov::scope_depth()),
            (name, 1)
        );
        v
    })
    .join()
    .unwrap();

    let bytes = (0..10).map(|i| 50 + i).sum::<u64>() + 10 * std::mem::size_of::<Box<[u8]>>() as u64;
    assert_eq!(counts(name), (bytes, 11, 0));

    // A new thread starts with no scope, whatever thread's counters it inherits.
    let fresh = thread::spawn(|| {
        let scope = (memgov::current_component(), memgov::scope_depth());
        drop(vec![0u8; 1000]);
        scope
    })
    .join()
    .unwrap();
    assert_eq!(fresh, (ComponentId::UNSCOPED, 0));
    assert_eq!(counts(name), (bytes, 11, 0));

    free_elsewhere(blocks, "td-open-leaked-freer");
    assert_eq!(counts(name), (0, 11, 11));
    assert_eq!(counts("td-open-leaked-freer"), (0, 0, 0));
}

thread_local! {
    /// A scope guard the thread never drops itself: it goes with the thread-locals.
    static OPEN: RefCell<Option<ScopeGuard>> = const { RefCell::new(None) };
}

#[test]
fn a_thread_that_returns_inside_a_scope_kept_in_a_thread_local() {
    let name = "td-open-tls";
    let block = thread::spawn(move || {
        OPEN.with(|_| {});
        let guard = memgov::component_scope(name);
        OPEN.with(|o| *o.borrow_mut() = Some(guard));
        vec![5u8; 4000].into_boxed_slice()
    })
    .join()
    .unwrap();
    assert_eq!(counts(name), (4000, 1, 0));
    free_elsewhere(block, "td-open-tls-freer");
    assert_eq!(counts(name), (0, 1, 1));
    assert_eq!(counts("td-open-tls-freer"), (0, 0, 0));
}

// ---- A thread that never enters a scope ----------------------------------------------------

#[test]
fn a_thread_that_never_enters_a_scope_allocates_unscoped() {
    let freer = "td-never-freer";
    let before = ComponentId::UNSCOPED.stats();
    let (block, seen) = thread::spawn(|| {
        let seen = (memgov::current_component(), memgov::scope_depth());
        (vec![1u8; 12_345].into_boxed_slice(), seen)
    })
    .join()
    .unwrap();
    assert_eq!(seen, (ComponentId::UNSCOPED, 0));

    // "unscoped" is shared with everything else the process does, so only its running totals
    // can be checked, and only from below.
    let after = ComponentId::UNSCOPED.stats();
    assert!(after.alloc_count > before.alloc_count);
    assert!(after.total_allocated_bytes >= before.total_allocated_bytes + 12_345);

    // Freed inside a named scope, it is still credited to "unscoped", not to the scope.
    free_elsewhere(block, freer);
    assert_eq!(counts(freer), (0, 0, 0));
    assert_eq!(stats(freer).total_freed_bytes, 0);
    assert!(ComponentId::UNSCOPED.stats().free_count > before.free_count);
}
