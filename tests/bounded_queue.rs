//! `BoundedQueue`: the three overflow policies, weights, closing, where its storage is charged,
//! hard limits, many producers and consumers, the list of live queues, and what each policy does
//! under pressure.
//!
//! The pressure test gives the queues' component a 16 MiB soft budget (default thresholds) and
//! moves it across thresholds with a ballast block, each step at least 2% away from a threshold.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{
    component_stats, BoundedQueue, Level, Limits, Overflow, PopTimeoutError, PushRefusal,
    ShedReport, Shedding,
};
use serial_test::serial;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[path = "support/monitor.rs"]
mod monitor;
use monitor::{settle, wait_until};

fn live(name: &str) -> u64 {
    memgov::flush_thread();
    component_stats(name).map_or(0, |s| s.live_bytes)
}

#[test]
#[serial]
fn drop_oldest_keeps_the_newest() {
    let q = BoundedQueue::new("queue-drop-oldest", 4);
    for i in 0..10 {
        q.push(i).unwrap();
    }
    assert_eq!(q.len(), 4);
    assert_eq!(q.try_pop(), Some(6));
    assert_eq!(q.drain(2), [7, 8]);
    assert_eq!(q.drain(usize::MAX), [9]);
    assert_eq!(q.try_pop(), None);
    let s = q.stats();
    assert_eq!(
        (
            s.total_pushed,
            s.total_popped,
            s.total_displaced,
            s.peak_entries
        ),
        (10, 4, 6, 4)
    );
    assert_eq!((s.total_refused, s.total_dropped()), (0, 6));
}

#[test]
#[serial]
fn reject_hands_the_value_back() {
    let q = BoundedQueue::builder("queue-reject")
        .capacity(2)
        .overflow(Overflow::Reject)
        .build();
    q.push(String::from("a")).unwrap();
    q.try_push(String::from("b")).unwrap();
    let refused = q.push(String::from("c")).unwrap_err();
    assert_eq!(refused.cause, PushRefusal::Full);
    assert_eq!((refused.bound, refused.level), (2, Level::Normal));
    assert_eq!(refused.into_value(), "c");
    // `push_timeout` does not wait on a queue that rejects.
    let start = Instant::now();
    let refused = q.push_timeout(String::from("d"), Duration::from_secs(5));
    assert_eq!(refused.unwrap_err().cause, PushRefusal::Full);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(q.drain(10), ["a", "b"]);
    let s = q.stats();
    assert_eq!(
        (s.total_pushed, s.total_refused, s.total_displaced),
        (2, 2, 0)
    );
}

#[test]
#[serial]
fn block_waits_for_room_or_until_its_timeout() {
    let q = Arc::new(
        BoundedQueue::builder("queue-block")
            .capacity(2)
            .overflow(Overflow::Block)
            .build(),
    );
    q.push(1).unwrap();
    q.push(2).unwrap();
    assert_eq!(q.try_push(3).unwrap_err().cause, PushRefusal::Full);
    let start = Instant::now();
    let refused = q.push_timeout(3, Duration::from_millis(50)).unwrap_err();
    assert_eq!(refused.cause, PushRefusal::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        refused.to_string(),
        "queue in queue-block refused a value: still full at its bound of 2 entries when the wait timed out (pressure normal)"
    );
    // A producer that waits as long as it takes: it is through once a consumer pops.
    let producer = {
        let q = Arc::clone(&q);
        thread::spawn(move || q.push(3))
    };
    wait_until("the producer to wait", || q.stats().total_waits == 2);
    assert_eq!(q.len(), 2, "the waiting producer has not pushed");
    assert_eq!(q.pop(), Some(1));
    producer.join().unwrap().unwrap();
    assert_eq!(q.drain(10), [2, 3]);
    let s = q.stats();
    assert_eq!((s.total_pushed, s.total_refused, s.peak_entries), (3, 2, 2));
}

#[test]
#[serial]
fn weights_bound_the_queue_and_a_value_too_heavy_is_refused() {
    let q = BoundedQueue::builder("queue-weights")
        .capacity(100)
        .max_weight(10)
        .weigher(|s: &String| s.len() as u64)
        .build();
    q.push("aaaa".to_string()).unwrap();
    q.push("bbbb".to_string()).unwrap();
    // 4 + 4 + 3 > 10: the oldest makes room.
    q.push("ccc".to_string()).unwrap();
    let s = q.stats();
    assert_eq!(
        (s.live_entries, s.live_weight, s.total_displaced),
        (2, 7, 1)
    );
    let refused = q.push("x".repeat(11)).unwrap_err();
    assert_eq!((refused.cause, refused.weight), (PushRefusal::TooHeavy, 11));
    assert_eq!(q.drain(10), ["bbbb", "ccc"]);
    assert_eq!(q.stats().live_weight, 0);
}

#[test]
#[serial]
fn close_refuses_pushes_and_lets_consumers_drain() {
    let q = Arc::new(
        BoundedQueue::builder("queue-close")
            .capacity(1)
            .overflow(Overflow::Block)
            .build(),
    );
    q.push(1).unwrap();
    let waiting_producer = {
        let q = Arc::clone(&q);
        thread::spawn(move || q.push(2))
    };
    wait_until("the producer to wait", || q.stats().total_waits == 1);
    let empty = Arc::new(BoundedQueue::<u8>::new("queue-close-empty", 1));
    let waiting_consumer = {
        let empty = Arc::clone(&empty);
        thread::spawn(move || empty.pop())
    };
    q.close();
    empty.close();
    let refused = waiting_producer.join().unwrap().unwrap_err();
    assert_eq!(
        (refused.cause, refused.into_value()),
        (PushRefusal::Closed, 2)
    );
    assert_eq!(waiting_consumer.join().unwrap(), None);
    assert!(q.is_closed());
    assert_eq!(q.push(3).unwrap_err().cause, PushRefusal::Closed);
    assert_eq!(q.pop(), Some(1), "what was queued is still taken");
    assert_eq!(q.pop(), None);
    assert_eq!(
        q.pop_timeout(Duration::from_secs(5)),
        Err(PopTimeoutError::Closed)
    );
    let open = BoundedQueue::<u8>::new("queue-close-open", 1);
    assert_eq!(
        open.pop_timeout(Duration::from_millis(20)),
        Err(PopTimeoutError::TimedOut)
    );
}

#[test]
#[serial]
fn storage_is_charged_to_the_queue_grows_to_its_capacity_only_and_is_freed() {
    assert_eq!(live("queue-memory"), 0);
    let q = BoundedQueue::<u64>::new("queue-memory", 1000);
    assert_eq!(live("queue-memory"), 0, "no storage before the first push");
    for i in 0..100_000 {
        q.push(i).unwrap();
    }
    let held = live("queue-memory");
    // 1000 slots of 8 bytes; the storage doubles from 8 slots and stops at the capacity.
    assert!((8000..=8 * 1024).contains(&held), "{held}");
    drop(q);
    assert_eq!(live("queue-memory"), 0);
}

#[test]
#[serial]
fn a_hard_limit_refuses_growth_and_the_queue_goes_on() {
    memgov::set_budget("queue-hard", Limits::hard(4 * KIB as u64)).unwrap();
    let q = BoundedQueue::<[u8; 64]>::new("queue-hard", 1000);
    let mut pushed = 0;
    let refused = loop {
        match q.push([7; 64]) {
            Ok(()) => pushed += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused.cause, PushRefusal::NoMemory);
    assert!(
        refused
            .to_string()
            .contains("a hard limit refused the memory"),
        "{refused}"
    );
    // The storage doubles from 8 slots by realloc, each charged its growth only: 64 slots of 64
    // bytes are exactly the 4 KiB limit (an exact size class, tagged in the shadow table, no
    // trailer), and 128 would be past it.
    assert_eq!(pushed, 64);
    assert_eq!(q.drain(usize::MAX).len(), 64);
    assert!(live("queue-hard") <= 4 * KIB as u64);
    drop(q);
    memgov::set_budget("queue-hard", Limits::NONE).unwrap();
}

/// `producers` threads push `per_producer` values each through `q` (with `push`), and
/// `consumers` threads take them (with `pop`) until the queue is closed and empty: every value
/// arrives once, and the queue never held more than `capacity`.
fn pass_through(
    q: &Arc<BoundedQueue<u64>>,
    (producers, per_producer, consumers): (u64, u64, usize),
    push: fn(&BoundedQueue<u64>, u64),
    pop: fn(&BoundedQueue<u64>) -> Option<u64>,
) {
    let producers: Vec<_> = (0..producers)
        .map(|p| {
            let q = Arc::clone(q);
            thread::spawn(move || {
                for i in 0..per_producer {
                    push(&q, p * per_producer + i);
                }
            })
        })
        .collect();
    let total = producers.len() as u64 * per_producer;
    let consumers: Vec<_> = (0..consumers)
        .map(|_| {
            let q = Arc::clone(q);
            thread::spawn(move || {
                let (mut sum, mut n) = (0u64, 0u64);
                while let Some(v) = pop(&q) {
                    sum += v;
                    n += 1;
                }
                (sum, n)
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.close();
    let (sum, n) = consumers
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |(s, n), (s2, n2)| (s + s2, n + n2));
    assert_eq!((n, sum), (total, total * (total - 1) / 2));
    let s = q.stats();
    assert_eq!((s.total_pushed, s.total_popped), (total, total));
    assert!(s.peak_entries <= s.capacity);
    assert_eq!((s.total_displaced, s.total_refused), (0, 0));
}

#[test]
#[serial]
fn many_producers_and_consumers_lose_nothing_through_a_blocking_queue() {
    let q = Arc::new(
        BoundedQueue::builder("queue-mpmc")
            .capacity(64)
            .overflow(Overflow::Block)
            .build(),
    );
    pass_through(
        &q,
        (4, 50_000, 4),
        |q, v| q.push(v).unwrap(),
        BoundedQueue::pop,
    );
}

#[test]
#[serial]
fn live_queues_are_listed_by_name_until_dropped() {
    let q = BoundedQueue::<u8>::builder("queue-listed")
        .name("inbox")
        .build();
    q.push(1).unwrap();
    let listed: Vec<_> = memgov::queues()
        .into_iter()
        .filter(|q| q.name == "inbox")
        .collect();
    assert_eq!(listed, [q.stats()]);
    assert_eq!(listed[0].component.name(), "queue-listed");
    assert_eq!(listed[0].overflow, Overflow::DropOldest);
    drop(q);
    assert!(!memgov::queues().iter().any(|q| q.name == "inbox"));
}

/// 256 KiB, allocated in the pressure test's component.
fn chunk() -> Vec<u8> {
    let _s = memgov::component_scope("queue-pressure");
    vec![1u8; 256 * KIB]
}

#[test]
#[serial]
fn pressure_lowers_the_bounds_and_each_policy_keeps_its_promise() {
    memgov::set_monitor_interval(Duration::from_millis(10));
    memgov::start_monitor();
    memgov::set_budget("queue-pressure", Limits::soft(16 * MIB as u64)).unwrap();
    let reports: Arc<Mutex<Vec<ShedReport>>> = Arc::default();
    let log = Arc::clone(&reports);
    // The queue that carries the weight, default shedding (half, then a quarter).
    let buffers = BoundedQueue::builder("queue-pressure")
        .name("buffers")
        .capacity(16)
        .on_shed(move |r| log.lock().unwrap().push(*r))
        .build();
    // Two small ones in the same component that keep what they accepted.
    let rejecting = BoundedQueue::builder("queue-pressure")
        .name("rejecting")
        .capacity(16)
        .overflow(Overflow::Reject)
        .build();
    let blocking = Arc::new(
        BoundedQueue::builder("queue-pressure")
            .name("blocking")
            .capacity(16)
            .overflow(Overflow::Block)
            .shedding(Shedding::new(0.5, 0.0).unwrap())
            .build(),
    );
    for i in 0..16u32 {
        buffers.push(chunk()).unwrap();
        rejecting.push(i).unwrap();
    }
    blocking.push(0u32).unwrap();
    // 16 buffers: 4 MiB, 25%.
    settle();
    // 10 MiB of ballast: 14 MiB, 87.5%, Warning. Half the buffers go: 12 MiB, 75%, still
    // Warning (recovery is below 70%).
    let ballast = {
        let _s = memgov::component_scope("queue-pressure");
        vec![1u8; 10 * MIB]
    };
    // The level changes before the shedding ends: wait for the report, sent once it has.
    wait_until("Warning", || reports.lock().unwrap().len() == 1);
    let s = buffers.stats();
    assert_eq!((s.live_entries, s.bound, s.total_shed), (8, 8, 8));
    buffers.push(chunk()).unwrap();
    assert_eq!(
        buffers.stats().live_entries,
        8,
        "a new buffer displaces an old one"
    );
    // The rejecting queue keeps its 16 and takes nothing until it is under its bound of 8.
    let s = rejecting.stats();
    assert_eq!((s.live_entries, s.bound, s.total_shed), (16, 8, 0));
    assert_eq!(rejecting.push(99).unwrap_err().cause, PushRefusal::Full);
    assert_eq!(rejecting.drain(9).len(), 9);
    rejecting.push(99).unwrap();
    // 5.5 MiB more: 17.5 MiB, 109%, Critical. A quarter of the buffers are kept: 16.5 MiB,
    // 103%, still Critical.
    let more = {
        let _s = memgov::component_scope("queue-pressure");
        vec![1u8; 5 * MIB + MIB / 2]
    };
    wait_until("Critical", || reports.lock().unwrap().len() == 2);
    assert_eq!(buffers.stats().live_entries, 4);
    // The blocking queue keeps nothing at Critical but one entry, which it holds: a producer
    // waits until the level falls.
    assert_eq!(blocking.bound(), 1);
    let producer = {
        let blocking = Arc::clone(&blocking);
        thread::spawn(move || blocking.push(1))
    };
    wait_until("the producer to wait", || blocking.stats().total_waits == 1);
    drop((more, ballast));
    wait_until("Normal", || reports.lock().unwrap().len() == 3);
    producer.join().unwrap().unwrap();
    assert_eq!(blocking.drain(10), [0, 1]);
    for _ in 0..12 {
        buffers.push(chunk()).unwrap();
    }
    assert_eq!(
        buffers.stats().live_entries,
        16,
        "back at Normal, the capacity again"
    );
    let r = reports.lock().unwrap().clone();
    let steps: Vec<_> = r.iter().map(|r| (r.previous, r.level, r.shed)).collect();
    assert_eq!(
        steps,
        [
            (Level::Normal, Level::Warning, 8),
            (Level::Warning, Level::Critical, 4),
            (Level::Critical, Level::Normal, 0),
        ]
    );
    drop((buffers, rejecting, blocking));
    memgov::set_budget("queue-pressure", Limits::NONE).unwrap();
}

/// A waker that counts its wake-ups.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, std::task::Waker) {
    let count = Arc::new(CountingWaker(Default::default()));
    (Arc::clone(&count), std::task::Waker::from(count))
}

fn wakes(w: &CountingWaker) -> usize {
    w.0.load(std::sync::atomic::Ordering::SeqCst)
}

/// Polls `fut` once with `waker`.
fn poll_once<F: std::future::Future + Unpin>(
    fut: &mut F,
    waker: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    std::pin::Pin::new(fut).poll(&mut std::task::Context::from_waker(waker))
}

/// Runs `fut` to completion on this thread, parking between polls (a minimal executor).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

#[test]
#[serial]
fn an_async_pop_waits_for_a_push_and_ends_at_close() {
    use std::task::Poll;
    let q = BoundedQueue::<u32>::new("queue-async-pop", 4);
    let (count, waker) = counting_waker();
    let mut pop = q.pop_async();
    assert!(poll_once(&mut pop, &waker).is_pending());
    assert!(
        poll_once(&mut pop, &waker).is_pending(),
        "a second poll registers once"
    );
    q.push(5).unwrap();
    assert_eq!(wakes(&count), 1, "the push woke the task");
    assert_eq!(poll_once(&mut pop, &waker), Poll::Ready(Some(5)));
    drop(pop);
    let mut pop = q.pop_async();
    assert!(poll_once(&mut pop, &waker).is_pending());
    q.close();
    assert_eq!(wakes(&count), 2, "closing woke it");
    assert_eq!(poll_once(&mut pop, &waker), Poll::Ready(None));
    // Across threads, with a parking executor.
    let q = Arc::new(BoundedQueue::<u32>::new("queue-async-pop", 4));
    let consumer = {
        let q = Arc::clone(&q);
        thread::spawn(move || block_on(async { (q.pop_async().await, q.pop_async().await) }))
    };
    thread::sleep(Duration::from_millis(20));
    q.push(1).unwrap();
    q.close();
    assert_eq!(consumer.join().unwrap(), (Some(1), None));
}

#[test]
#[serial]
fn an_async_push_waits_for_room_without_blocking_the_thread() {
    use std::task::Poll;
    let q = BoundedQueue::builder("queue-async-push")
        .capacity(1)
        .overflow(Overflow::Block)
        .build();
    q.push(1).unwrap();
    let (count, waker) = counting_waker();
    let mut push = q.push_async(2);
    assert!(poll_once(&mut push, &waker).is_pending());
    assert!(poll_once(&mut push, &waker).is_pending());
    assert_eq!(
        q.stats().total_waits,
        1,
        "one wait, however often it is polled"
    );
    assert_eq!(q.pop(), Some(1));
    assert_eq!(wakes(&count), 1, "the pop woke the task");
    assert!(matches!(poll_once(&mut push, &waker), Poll::Ready(Ok(()))));
    drop(push);
    // Closed while it waits: the value comes back.
    let mut push = q.push_async(3);
    assert!(poll_once(&mut push, &waker).is_pending());
    q.close();
    assert_eq!(wakes(&count), 2);
    match poll_once(&mut push, &waker) {
        Poll::Ready(Err(e)) => assert_eq!((e.cause, e.into_value()), (PushRefusal::Closed, 3)),
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.is_ok())),
    }
    assert_eq!(q.drain(10), [2]);
    // Policies that never wait are ready at the first poll.
    let dropping = BoundedQueue::new("queue-async-push", 1);
    dropping.push(1).unwrap();
    assert!(matches!(
        poll_once(&mut dropping.push_async(2), &waker),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(dropping.drain(10), [2]);
}

#[test]
#[serial]
fn a_woken_future_dropped_before_its_poll_passes_the_wake_up_on() {
    use std::task::Poll;
    let q = BoundedQueue::<u32>::new("queue-async-cancel", 4);
    let (first_count, first_waker) = counting_waker();
    let (second_count, second_waker) = counting_waker();
    let mut first = q.pop_async();
    let mut second = q.pop_async();
    assert!(poll_once(&mut first, &first_waker).is_pending());
    assert!(poll_once(&mut second, &second_waker).is_pending());
    q.push(9).unwrap();
    assert_eq!((wakes(&first_count), wakes(&second_count)), (1, 0));
    // The first task gives up (a timeout fired, say) without taking the entry.
    drop(first);
    assert_eq!(
        wakes(&second_count),
        1,
        "the entry's wake-up went to the next task"
    );
    assert_eq!(poll_once(&mut second, &second_waker), Poll::Ready(Some(9)));
    // A future dropped while it waits, not woken, just leaves.
    let mut third = q.pop_async();
    assert!(poll_once(&mut third, &first_waker).is_pending());
    drop(third);
    q.push(10).unwrap();
    assert_eq!(
        wakes(&first_count),
        1,
        "nobody is woken for a future that left"
    );
}

#[test]
#[serial]
fn async_producers_and_consumers_lose_nothing() {
    let q = Arc::new(
        BoundedQueue::builder("queue-async-mpmc")
            .capacity(16)
            .overflow(Overflow::Block)
            .build(),
    );
    pass_through(
        &q,
        (2, 20_000, 2),
        |q, v| block_on(q.push_async(v)).unwrap(),
        |q| block_on(q.pop_async()),
    );
}
