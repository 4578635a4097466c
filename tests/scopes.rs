//! Component scopes: nesting (the innermost scope wins and dropping a guard restores the one
//! below), guards dropped out of order, reallocs staying with the block's component whatever scope
//! they run in, the `try_component_scope` errors, and the future wrapper polled from two threads
//! by a hand-written executor.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{ComponentId, ComponentStats, InComponent, NameError, ScopeError};
use std::alloc::{alloc, dealloc, realloc, Layout};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ThreadId};

fn stats(name: &'static str) -> ComponentStats {
    memgov::component(name).stats()
}

fn current() -> &'static str {
    memgov::current_component().name()
}

/// `(live_bytes, alloc_count, free_count, realloc_count)`.
fn counts(name: &'static str) -> (u64, u64, u64, u64) {
    let s = stats(name);
    (s.live_bytes, s.alloc_count, s.free_count, s.realloc_count)
}

/// One raw block with an exact layout, freed on drop.
struct Raw {
    ptr: *mut u8,
    layout: Layout,
}

impl Raw {
    fn new(size: usize) -> Raw {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // black_box: in release builds LLVM may elide an allocation nobody observes.
        // SAFETY: every size used in this file is non-zero.
        let ptr = black_box(unsafe { alloc(layout) });
        assert!(!ptr.is_null());
        Raw { ptr, layout }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated with `layout` and not freed.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

#[test]
fn the_innermost_scope_wins_and_dropping_restores_the_one_below() {
    let (outer, inner) = ("sc-nest-outer", "sc-nest-inner");
    assert_eq!(memgov::current_component(), ComponentId::UNSCOPED);
    assert_eq!(memgov::scope_depth(), 0);

    let g_outer = memgov::component_scope(outer);
    assert_eq!((current(), memgov::scope_depth()), (outer, 1));
    assert_eq!(g_outer.component(), memgov::component(outer));
    let a = Raw::new(100);
    let (b, c);
    {
        let _g = memgov::component_scope(inner);
        assert_eq!((current(), memgov::scope_depth()), (inner, 2));
        b = Raw::new(200);
        // The same component nested in itself is fine and changes nothing.
        {
            let _again = memgov::component_scope(inner);
            assert_eq!((current(), memgov::scope_depth()), (inner, 3));
        }
        assert_eq!((current(), memgov::scope_depth()), (inner, 2));
    }
    assert_eq!((current(), memgov::scope_depth()), (outer, 1));
    c = Raw::new(300);
    drop(g_outer);
    assert_eq!(memgov::current_component(), ComponentId::UNSCOPED);
    assert_eq!(memgov::scope_depth(), 0);

    assert_eq!(counts(outer), (400, 2, 0, 0));
    assert_eq!(counts(inner), (200, 1, 0, 0));
    drop((a, b, c));
    assert_eq!(counts(outer), (0, 2, 2, 0));
    assert_eq!(counts(inner), (0, 1, 1, 0));
    assert_eq!(stats(outer).peak_live_bytes, 400);
}

#[test]
fn an_outer_guard_dropped_first_waits_for_the_inner_one() {
    let (base, outer, inner) = ("sc-ooo-base", "sc-ooo-outer", "sc-ooo-inner");
    let g_base = memgov::component_scope(base);
    let g_outer = memgov::component_scope(outer);
    let g_inner = memgov::component_scope(inner);
    assert_eq!((current(), memgov::scope_depth()), (inner, 3));

    drop(g_outer);
    // The inner scope is still open, so it stays current; the outer one waits, inert.
    assert_eq!((current(), memgov::scope_depth()), (inner, 3));
    let a = Raw::new(11);

    drop(g_inner);
    // Both close together and the scope below the outer one is current again.
    assert_eq!((current(), memgov::scope_depth()), (base, 1));
    let b = Raw::new(13);

    drop(g_base);
    assert_eq!(
        (memgov::current_component(), memgov::scope_depth()),
        (ComponentId::UNSCOPED, 0)
    );
    assert_eq!(counts(inner), (11, 1, 0, 0));
    assert_eq!(counts(base), (13, 1, 0, 0));
    assert_eq!(counts(outer), (0, 0, 0, 0));
    drop((a, b));
}

#[test]
fn out_of_order_drops_with_a_scope_opened_in_between() {
    let (x, a, b, c) = ("sc-ooo2-x", "sc-ooo2-a", "sc-ooo2-b", "sc-ooo2-c");
    let gx = memgov::component_scope(x);
    let ga = memgov::component_scope(a);
    let gb = memgov::component_scope(b);
    drop(ga); // inert, below b
    assert_eq!((current(), memgov::scope_depth()), (b, 3));
    let gc = memgov::component_scope(c);
    assert_eq!((current(), memgov::scope_depth()), (c, 4));
    drop(gb); // inert, below c
    assert_eq!((current(), memgov::scope_depth()), (c, 4));
    drop(gc); // c, b and a all close
    assert_eq!((current(), memgov::scope_depth()), (x, 1));
    drop(gx);
    assert_eq!(memgov::scope_depth(), 0);

    // The bottom guard dropped first while nothing is below it: unscoped afterwards.
    let g1 = memgov::component_scope(a);
    let g2 = memgov::component_scope(b);
    drop(g1);
    assert_eq!((current(), memgov::scope_depth()), (b, 2));
    drop(g2);
    assert_eq!(
        (memgov::current_component(), memgov::scope_depth()),
        (ComponentId::UNSCOPED, 0)
    );
}

#[test]
fn realloc_in_another_scope_stays_with_the_blocks_component() {
    let (x, y) = ("sc-realloc-x", "sc-realloc-y");
    memgov::component(y);
    let layout = Layout::from_size_align(100, 16).unwrap();
    let ptr = {
        let _x = memgov::component_scope(x);
        // SAFETY: non-zero size.
        unsafe { alloc(layout) }
    };
    assert!(!ptr.is_null());
    // SAFETY: `ptr` has 100 writable bytes.
    unsafe { ptr.write_bytes(0xAB, 100) };
    assert_eq!(counts(x), (100, 1, 0, 0));

    let ptr = {
        let _y = memgov::component_scope(y);
        // SAFETY: `ptr` is live with `layout`; the new size is non-zero.
        let grown = unsafe { realloc(ptr, layout, 5000) };
        assert!(!grown.is_null());
        assert_eq!(counts(x), (5000, 1, 0, 1));
        // SAFETY: as above, now with 5000 bytes.
        let shrunk = unsafe { realloc(grown, Layout::from_size_align(5000, 16).unwrap(), 10) };
        assert!(!shrunk.is_null());
        shrunk
    };
    // SAFETY: the first 10 bytes were preserved by both reallocs.
    assert!(unsafe { std::slice::from_raw_parts(ptr, 10) }
        .iter()
        .all(|&b| b == 0xAB));
    let s = stats(x);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count, s.realloc_count),
        (10, 1, 0, 2)
    );
    assert_eq!(
        (s.total_allocated_bytes, s.total_freed_bytes),
        (5000, 4990),
        "{s:?}"
    );
    assert_eq!(s.peak_live_bytes, 5000);
    assert_eq!(counts(y), (0, 0, 0, 0));
    assert_eq!(stats(y).total_allocated_bytes, 0);

    {
        let _y = memgov::component_scope(y);
        // SAFETY: `ptr` is live with 10 bytes at align 16.
        unsafe { dealloc(ptr, Layout::from_size_align(10, 16).unwrap()) };
    }
    assert_eq!(counts(x), (0, 1, 1, 2));
    assert_eq!(counts(y), (0, 0, 0, 0));
}

#[test]
fn vec_growth_in_another_scope_stays_with_the_vecs_component() {
    let (x, y) = ("sc-vec-x", "sc-vec-y");
    memgov::component(y);
    let mut v: Vec<u8> = {
        let _x = memgov::component_scope(x);
        Vec::with_capacity(16)
    };
    {
        let _y = memgov::component_scope(y);
        for i in 0..10_000u32 {
            v.push(i as u8);
        }
    }
    let s = stats(x);
    assert_eq!(s.live_bytes, v.capacity() as u64, "{s:?}");
    assert_eq!((s.alloc_count, s.free_count), (1, 0), "{s:?}");
    assert!(s.realloc_count >= 1, "{s:?}");
    assert_eq!(counts(y), (0, 0, 0, 0));

    {
        let _y = memgov::component_scope(y);
        v.shrink_to_fit();
    }
    assert_eq!(stats(x).live_bytes, 10_000);
    drop(v);
    let s = stats(x);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 1, 1),
        "{s:?}"
    );
    assert_eq!(counts(y), (0, 0, 0, 0));
}

#[test]
fn try_component_scope_rejects_bad_names() {
    assert_eq!(
        memgov::try_component_scope("").unwrap_err(),
        ScopeError::Name(NameError::Empty)
    );
    let long: &'static str = Box::leak("n".repeat(memgov::MAX_NAME_LEN + 1).into_boxed_str());
    let err = memgov::try_component_scope(long).unwrap_err();
    assert_eq!(err, ScopeError::Name(NameError::TooLong { name: long }));
    assert!(err.to_string().contains("65 bytes"), "{err}");
    assert_eq!(memgov::lookup_component(long), None);
    assert_eq!(memgov::scope_depth(), 0);

    // Exactly MAX_NAME_LEN bytes is accepted.
    let max: &'static str = Box::leak("m".repeat(memgov::MAX_NAME_LEN).into_boxed_str());
    let g = memgov::try_component_scope(max).unwrap();
    assert_eq!(current(), max);
    drop(g);
    assert_eq!(memgov::current_component(), ComponentId::UNSCOPED);
}

#[test]
#[should_panic(expected = "empty")]
fn component_scope_panics_on_an_empty_name() {
    let _g = memgov::component_scope("");
}

#[test]
fn more_than_max_depth_scopes_is_too_deep() {
    assert_eq!(memgov::MAX_SCOPE_DEPTH, 64);
    let name = "sc-deep";
    let mut guards = Vec::with_capacity(memgov::MAX_SCOPE_DEPTH);
    for depth in 1..=memgov::MAX_SCOPE_DEPTH {
        guards.push(memgov::try_component_scope(name).unwrap());
        assert_eq!(memgov::scope_depth(), depth);
    }
    let err = memgov::try_component_scope("sc-deep-one-more").unwrap_err();
    assert_eq!(
        err,
        ScopeError::TooDeep {
            component: "sc-deep-one-more"
        }
    );
    assert!(err.to_string().contains("64 scopes"), "{err}");
    assert_eq!(
        memgov::try_enter(memgov::component("sc-deep-one-more")).unwrap_err(),
        err
    );
    // The failed attempts left the stack alone.
    assert_eq!((current(), memgov::scope_depth()), (name, 64));

    // Dropping one frees a level again.
    guards.pop();
    let g = memgov::try_component_scope("sc-deep-one-more").unwrap();
    assert_eq!((current(), memgov::scope_depth()), ("sc-deep-one-more", 64));
    drop(g);
    while let Some(g) = guards.pop() {
        drop(g);
    }
    assert_eq!(
        (memgov::current_component(), memgov::scope_depth()),
        (ComponentId::UNSCOPED, 0)
    );
}

// ---- The future wrapper, with a hand-written two-thread executor ----------------------------

/// Returns `Pending` once (waking itself first), then `Ready`.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// What a step of the job saw while it ran.
#[derive(Clone, Copy, Debug)]
struct Seen {
    thread: ThreadId,
    component: ComponentId,
    depth: usize,
}

const STEPS: usize = 12;

fn step_size(i: usize) -> usize {
    1000 + 17 * i
}

/// What the job returns: its blocks, and what each step saw.
type JobOutput = (Vec<Box<[u8]>>, Vec<Seen>);

/// The job: allocates a block at every step and records where it ran.
async fn job() -> JobOutput {
    let mut blocks = Vec::with_capacity(STEPS);
    let mut seen = Vec::with_capacity(STEPS);
    for i in 0..STEPS {
        blocks.push(vec![i as u8; step_size(i)].into_boxed_slice());
        seen.push(Seen {
            thread: thread::current().id(),
            component: memgov::current_component(),
            depth: memgov::scope_depth(),
        });
        YieldOnce(false).await;
    }
    (blocks, seen)
}

/// Bytes and blocks the job allocates: its two vectors and one block per step.
fn job_bytes() -> (u64, u64) {
    let vecs = STEPS * (std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<Seen>());
    let steps: usize = (0..STEPS).map(step_size).sum();
    ((vecs + steps) as u64, STEPS as u64 + 2)
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Polls `task` alternately on two worker threads, handing the pinned box back and forth over
/// channels, until it is ready. The first worker runs inside scope `worker_scope`, the second
/// outside any scope; after every poll each checks that its own scope is current again.
fn run_on_two_threads<T: Send + 'static>(
    task: Task<T>,
    worker_scope: &'static str,
) -> (T, [ThreadId; 2]) {
    let (to_a, a_rx) = mpsc::channel::<Task<T>>();
    let (to_b, b_rx) = mpsc::channel::<Task<T>>();
    let (done_tx, done_rx) = mpsc::channel::<T>();

    let worker = move |rx: mpsc::Receiver<Task<T>>,
                       next: mpsc::Sender<Task<T>>,
                       done: mpsc::Sender<T>,
                       scope: Option<&'static str>| {
        move || {
            let _g = scope.map(memgov::component_scope);
            let home = memgov::current_component();
            let home_depth = memgov::scope_depth();
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            for mut task in rx {
                flag.0.store(false, Ordering::SeqCst);
                let poll = task.as_mut().poll(&mut Context::from_waker(&waker));
                assert_eq!(
                    memgov::current_component(),
                    home,
                    "scope leaked out of poll"
                );
                assert_eq!(memgov::scope_depth(), home_depth);
                match poll {
                    Poll::Ready(out) => {
                        done.send(out).unwrap();
                        return;
                    }
                    Poll::Pending => {
                        assert!(flag.0.load(Ordering::SeqCst), "pending without a wake");
                        if next.send(task).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    let a = thread::spawn(worker(a_rx, to_b, done_tx.clone(), Some(worker_scope)));
    let b = thread::spawn(worker(b_rx, to_a.clone(), done_tx, None));
    let ids = [a.thread().id(), b.thread().id()];
    to_a.send(task).unwrap();
    drop(to_a);
    let out = done_rx.recv().unwrap();
    a.join().unwrap();
    b.join().unwrap();
    (out, ids)
}

fn check_job_ran_in(name: &'static str, worker_scope: &'static str, task: Task<JobOutput>) {
    memgov::component(name);
    assert_eq!(
        counts(name),
        (0, 0, 0, 0),
        "the wrapper allocates nothing itself"
    );

    let ((blocks, seen), workers) = run_on_two_threads(task, worker_scope);

    // Every step ran inside the job's scope, alternately on the two workers.
    assert_eq!(seen.len(), STEPS);
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.component.name(), name, "step {i}: {s:?}");
        assert_eq!(s.thread, workers[i % 2], "step {i}: {s:?}");
        let below = if i % 2 == 0 { 1 } else { 0 };
        assert_eq!(s.depth, below + 1, "step {i}: {s:?}");
    }
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(b.len(), step_size(i));
    }

    let (bytes, count) = job_bytes();
    let s = stats(name);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (bytes, count, 0),
        "{s:?}"
    );
    assert_eq!(s.realloc_count, 0, "{s:?}");
    drop((blocks, seen));
    let s = stats(name);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, count, count),
        "{s:?}"
    );
}

#[test]
fn scoped_future_polled_from_two_threads_tags_every_step() {
    let task: Task<_> = Box::pin(memgov::scoped("sc-job-scoped", job()));
    check_job_ran_in("sc-job-scoped", "sc-job-scoped-worker", task);
}

#[test]
fn in_component_future_polled_from_two_threads_tags_every_step() {
    let task: Task<_> = Box::pin(job().in_component("sc-job-ext"));
    check_job_ran_in("sc-job-ext", "sc-job-ext-worker", task);
}
