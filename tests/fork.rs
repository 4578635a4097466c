//! A forked child gets a monitor of its own at its first use of memgov's API, if the parent had
//! one: pressure callbacks registered before the fork fire in the child for the child's events,
//! and the parent's events are not delivered again there. And the counter blocks of the threads
//! that did not come along are released then: their credit goes back to the budgets, and their
//! blocks' live bytes (memory the child has too) stay counted.
//!
//! `harness = false`: the process forks, and a child of a test harness would run on with the
//! harness's state. The parent checks the child's exit status.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{Level, Limits};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

const COMPONENT: &str = "fork-worker";
/// The component a second thread allocates in before the fork, and holds credit for.
const HELPER: &str = "fork-helper";
const MIB: usize = 1 << 20;

/// Pressure events of [`COMPONENT`] delivered in this process, and the last level.
static EVENTS: AtomicUsize = AtomicUsize::new(0);
static LAST_LEVEL: AtomicUsize = AtomicUsize::new(0);

/// Waits up to 5 s for `EVENTS` to reach `n`.
fn wait_for_events(n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while EVENTS.load(SeqCst) < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn allocate_in_component(bytes: usize) -> Vec<u8> {
    let _scope = memgov::component_scope(COMPONENT);
    black_box(vec![1u8; bytes])
}

/// The helper component's charged and live bytes.
fn helper_figures() -> (u64, u64) {
    let charged =
        memgov::budget_stats(memgov::Scope::Component(memgov::component(HELPER))).charged_bytes;
    (charged, memgov::component_stats(HELPER).unwrap().live_bytes)
}

/// The child's checks; true when they pass.
fn child(helper_live: u64) -> bool {
    let mut ok = true;
    // The first use of the API in the child (this call) releases the helper thread's block and
    // starts the child's monitor.
    if !memgov::monitor_stats().running {
        eprintln!("child: no monitor");
        ok = false;
    }
    let (charged, live) = helper_figures();
    if charged != live || live != helper_live {
        eprintln!(
            "child: helper component charged {charged}, live {live} (parent's live \
             {helper_live}): the vanished thread's credit is still charged"
        );
        ok = false;
    }
    let threads = memgov::global_stats().threads;
    if !(1..=2).contains(&threads) {
        eprintln!("child: {threads} threads hold counters; expected this one and the monitor");
        ok = false;
    }
    // 16 MiB of a 16 MiB soft limit: Critical, an event of the child's own.
    let more = allocate_in_component(2 * MIB);
    if !wait_for_events(2) {
        eprintln!(
            "child: the Critical event was not delivered ({} events)",
            EVENTS.load(SeqCst)
        );
        ok = false;
    }
    // Nothing else: the parent's Warning, delivered before the fork, is not delivered again.
    std::thread::sleep(Duration::from_millis(300));
    let (events, level) = (EVENTS.load(SeqCst), LAST_LEVEL.load(SeqCst));
    if events != 2 || level != Level::Critical as usize {
        eprintln!("child: {events} events, last level {level}; expected 2, Critical");
        ok = false;
    }
    drop(more);
    ok
}

/// Forks; the child runs `check` (this thread's code only) with 10 s to finish (`alarm`: the
/// default action of SIGALRM ends it) and `_exit`s with 0 if it returned true. True when the child
/// exited with 0: false when its check failed, it panicked, or it hung.
fn in_a_child(check: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child runs only `check` and `_exit`s; memgov and jemalloc support allocation in
    // a forked child.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: a plain call.
        unsafe { libc::alarm(10) };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(false);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Forks 20 times while another thread reads jemalloc's statistics and registers and removes
/// callbacks in a loop, taking memgov's locks over and over; each child does the same once. A
/// lock held by the other thread at the fork would stay held for ever in the child (before the
/// fork handler took them first, 40 children of 40 hung on the statistics, 20 of 40 on the
/// callbacks). A child still waiting after 10 s is killed by `alarm`.
fn forks_while_another_thread_takes_memgovs_locks() {
    use std::sync::atomic::AtomicBool;
    static STOP: AtomicBool = AtomicBool::new(false);
    let busy = std::thread::spawn(|| {
        while !STOP.load(SeqCst) {
            #[cfg(feature = "jemalloc")]
            black_box(memgov::jemalloc::stats().unwrap());
            memgov::remove_callback(memgov::on_pressure(|_| {}));
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let failed = (0..20)
        .filter(|_| {
            !in_a_child(|| {
                #[cfg(feature = "jemalloc")]
                let ok = memgov::jemalloc::stats().is_ok();
                #[cfg(not(feature = "jemalloc"))]
                let ok = true;
                memgov::remove_callback(memgov::on_pressure(|_| {}));
                ok
            })
        })
        .count();
    STOP.store(true, SeqCst);
    busy.join().unwrap();
    assert_eq!(failed, 0, "{failed} of 20 children hung or failed");
}

/// Builds a cache, finds it in the list of live caches, and drops it.
fn cache_round_trip() -> bool {
    let cache = memgov::BoundedCache::<u8, u8>::builder("fork-cache")
        .name("fork-cache")
        .build();
    let listed = memgov::caches().iter().any(|c| c.name == "fork-cache");
    drop(cache);
    listed
}

/// Forks 20 times while other threads hold a cache's lock most of the time (work inside its
/// `with`) and build, list and drop caches; each child lists the caches (which reads that cache,
/// under its lock) and builds one. Memgov's monitor takes caches' locks too, so the fork handler
/// takes them all: without that, 1 to 5 children of 20 hung, in each of five runs.
fn forks_while_other_threads_use_caches() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    static STOP: AtomicBool = AtomicBool::new(false);
    let shared = Arc::new(memgov::BoundedCache::<u8, u64>::new("fork-shared-cache", 4));
    shared.insert(0, 0).unwrap();
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                while !STOP.load(SeqCst) {
                    shared.with(&0, |v| {
                        let start = std::time::Instant::now();
                        while start.elapsed() < Duration::from_micros(200) {
                            black_box(v);
                        }
                    });
                    cache_round_trip();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let failed = (0..20)
        .filter(|_| {
            !in_a_child(|| {
                let listed = memgov::caches()
                    .iter()
                    .any(|c| c.name == "fork-shared-cache");
                listed && cache_round_trip()
            })
        })
        .count();
    STOP.store(true, SeqCst);
    for b in busy {
        b.join().unwrap();
    }
    assert_eq!(failed, 0, "{failed} of 20 children hung or failed");
}

/// Forks 20 times while a producer and a consumer pass values through a blocking queue of one
/// slot, so that its lock is taken and released, and its producer waits on it, all the time; each
/// child lists the queues (which reads that queue, under its lock) and passes a value through it.
/// The fork handler takes the queue's lock as it takes a cache's.
fn forks_while_other_threads_use_a_queue() {
    use memgov::{BoundedQueue, Overflow};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    static STOP: AtomicBool = AtomicBool::new(false);
    let queue = Arc::new(
        BoundedQueue::builder("fork-queue")
            .capacity(1)
            .overflow(Overflow::Block)
            .build(),
    );
    let producer = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            while !STOP.load(SeqCst) {
                let _ = queue.push_timeout(1u64, Duration::from_millis(1));
            }
        })
    };
    let consumer = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            while !STOP.load(SeqCst) {
                let _ = black_box(queue.pop_timeout(Duration::from_millis(1)));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let failed = (0..20)
        .filter(|_| {
            !in_a_child(|| {
                let listed = memgov::queues().iter().any(|q| q.name == "fork-queue");
                let _ = queue.try_pop();
                listed && queue.try_push(2).is_ok() && queue.try_pop() == Some(2)
            })
        })
        .count();
    STOP.store(true, SeqCst);
    producer.join().unwrap();
    consumer.join().unwrap();
    assert!(
        queue.stats().total_pushed > 0,
        "nothing went through the queue"
    );
    assert_eq!(failed, 0, "{failed} of 20 children hung or failed");
}

/// Forks from inside a cache's `with` closure, whose lock the forking thread holds: the fork
/// handler must not wait for it (it would wait for ever, as it did before it looked for the
/// holder), and the child, in which this thread holds it too, goes on using other caches. Run on a thread of its own, so that a hang fails
/// the test instead of hanging it.
fn forks_from_inside_a_cache() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cache = memgov::BoundedCache::<u8, u8>::new("fork-inside-cache", 4);
        cache.insert(1, 1).unwrap();
        let forked = cache.with(&1, |_| in_a_child(cache_round_trip));
        let _ = done_tx.send(forked == Some(true) && cache.get(&1) == Some(1));
    });
    let ok = done_rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(
        ok,
        Ok(true),
        "a fork inside a cache's closure hung or failed"
    );
}

/// Forks 20 times while another thread copies the history (alloc-stats' lock, which has fork
/// handlers of its own); each child reads it once. Without them, 11 children of 20 hung.
fn forks_while_another_thread_reads_the_history() {
    use std::sync::atomic::AtomicBool;
    static STOP: AtomicBool = AtomicBool::new(false);
    memgov::stats::start_history(memgov::stats::HistoryConfig {
        capacity: 100_000,
        interval: Duration::from_millis(1),
    });
    std::thread::sleep(Duration::from_millis(300));
    let busy = std::thread::spawn(|| {
        while !STOP.load(SeqCst) {
            black_box(memgov::stats::history());
        }
    });
    let failed = (0..20)
        .filter(|_| !in_a_child(|| !black_box(memgov::stats::history()).is_empty()))
        .count();
    STOP.store(true, SeqCst);
    busy.join().unwrap();
    memgov::stats::stop_history();
    assert_eq!(failed, 0, "{failed} of 20 children hung on the history");
}

/// Forks while the monitor runs a periodic task (one that takes 50 ms of every round): the
/// task's own lock stays held in the child, where the parent's monitor does not exist. The
/// child's monitor must go on sampling; it skips that task instead of waiting for it for ever.
fn fork_while_the_monitor_runs_a_task() {
    let slow = memgov::every(Duration::from_millis(1), || {
        std::thread::sleep(Duration::from_millis(50))
    });
    std::thread::sleep(Duration::from_millis(120));
    let sampling = in_a_child(|| {
        let before = memgov::monitor_stats().samples;
        std::thread::sleep(Duration::from_millis(500));
        let after = memgov::monitor_stats().samples;
        if after < before + 2 {
            eprintln!(
                "child: the monitor sampled {} times in 500 ms",
                after - before
            );
        }
        after >= before + 2
    });
    assert!(sampling, "the child's monitor stopped");
    memgov::remove_callback(slow);
}

fn main() {
    memgov::init().expect("no MEMGOV_ variables are set");
    memgov::set_budget(
        COMPONENT,
        Limits::hard(64 * MIB as u64).with_soft(16 * MIB as u64),
    )
    .unwrap();
    memgov::on_component_pressure(COMPONENT, |e| {
        LAST_LEVEL.store(e.level as usize, SeqCst);
        EVENTS.fetch_add(1, SeqCst);
    });
    // 14 MiB of 16: Warning, delivered in the parent before the fork.
    let held = allocate_in_component(14 * MIB);
    assert!(wait_for_events(1), "the parent's Warning was not delivered");
    assert_eq!(LAST_LEVEL.load(SeqCst), Level::Warning as usize);
    // A thread that holds blocks and credit in HELPER at the fork, and does not come along.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let blocks: Vec<Vec<u8>> = {
            let _scope = memgov::component_scope(HELPER);
            (0..100).map(|_| black_box(vec![1u8; 100])).collect()
        };
        ready_tx.send(()).unwrap();
        loop {
            black_box(&blocks);
            std::thread::park();
        }
    });
    ready_rx.recv().unwrap();
    memgov::flush_thread();
    let (charged, helper_live) = helper_figures();
    assert!(
        charged > helper_live && helper_live > 0,
        "the helper holds no credit: charged {charged}, live {helper_live}"
    );

    assert!(
        in_a_child(|| child(helper_live)),
        "the child's checks failed (its stderr says which)"
    );
    // The parent's monitor is its own: still running, and it saw none of the child's events.
    assert!(memgov::monitor_stats().running);
    assert_eq!(EVENTS.load(SeqCst), 1);
    drop(held);
    forks_while_another_thread_takes_memgovs_locks();
    forks_while_other_threads_use_caches();
    forks_while_other_threads_use_a_queue();
    forks_from_inside_a_cache();
    forks_while_another_thread_reads_the_history();
    fork_while_the_monitor_runs_a_task();
    println!(
        "fork: the child released the vanished thread's block, its monitor delivered its own \
         events and none of the parent's, and no child of 20 hung on a lock"
    );
}
