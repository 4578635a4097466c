//! A small service whose parts allocate under their own components, with a page cache that sheds
//! memory when its budget comes under pressure and a bounded queue between its workers and the
//! cache; then the figures as a table.
//!
//! `cargo run --release --example demo`
//! (`MEMGOV_BUDGETS=pages=/4MiB cargo run --release --example demo` to give "pages" another soft
//! budget; the demo sets `pages=/8MiB` itself when the environment does not.)

use memgov::{BoundedCache, BoundedQueue, InComponent, Limits, Overflow, Pool};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

/// Renders a page: allocations tagged "pages". The rows are written into a scratch buffer from a
/// pool (component "render-buffers"), reused from one page to the next.
fn render_page(id: usize, templates: &HashMap<String, String>, scratch: &Pool<String>) -> String {
    let _scope = memgov::component_scope("pages");
    let layout = &templates["layout"];
    let mut body = scratch.get();
    for row in 0..(id % 50) {
        let _ = write!(body, "<tr><td>{id}</td><td>{row}</td></tr>");
    }
    layout.replace("{body}", &body)
}

fn load_templates() -> HashMap<String, String> {
    let _scope = memgov::component_scope("templates");
    let mut t = HashMap::new();
    t.insert(
        "layout".to_string(),
        "<html><body><table>{body}</table></body></html>".to_string(),
    );
    for i in 0..100 {
        t.insert(format!("partial-{i}"), "x".repeat(512));
    }
    t
}

/// Polls a future to completion on this thread (no async runtime needed).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn main() {
    // The MEMGOV_ variables were read before main, and each malformed one printed then; init()
    // returns them too, and starts the monitor thread if they asked for it.
    if let Err(errors) = memgov::init() {
        eprintln!(
            "running without {} malformed MEMGOV_ variable(s)",
            errors.0.len()
        );
    }
    if memgov::budget("pages") == Limits::NONE {
        memgov::set_budget("pages", Limits::soft(8 << 20)).expect("a valid budget");
    }
    println!("pages budget: {:?}", memgov::budget("pages"));

    let templates = load_templates();
    // Scratch buffers for rendering: up to 8 kept idle (fewer under pressure), cleared on return.
    let scratch = Pool::builder("render-buffers")
        .max_idle(8)
        .reset(|buf: &mut String| {
            buf.clear();
            true
        })
        .build(|| String::with_capacity(4096));
    // Pressure callbacks run on memgov's monitor thread, never inside an allocation.
    memgov::on_component_pressure("pages", |event| {
        println!(
            "  pressure: pages {} -> {} at {} of {} bytes",
            event.previous, event.level, event.charged_bytes, event.limit_bytes
        );
    });

    // The page cache: bounded by nothing but pressure on "pages" (and on the process). It sheds
    // on memgov's monitor thread (after the callback above, registered first): half of what it
    // held at Warning, everything at Critical, and it reacts to the level as it is when it runs.
    let cache = BoundedCache::builder("pages")
        .weigher(|_: &u64, page: &String| page.capacity() as u64) // its heap bytes
        .on_shed(|shed| {
            println!(
                "    cache: {} -> {}, shed {} of {} pages ({} -> {} bytes)",
                shed.previous,
                shed.level,
                shed.shed,
                shed.entries_before,
                shed.weight_before,
                shed.weight_after
            )
        })
        .build();

    // Workers render pages into a bounded queue (seed 001's ring buffer in place of an unbounded
    // channel): at most 256 pages in flight, fewer under pressure, and a worker waits for room
    // rather than piling pages up. The main thread caches every one it takes. Page bytes are
    // allocated on the workers and freed on whichever thread evicts them.
    let rendered = BoundedQueue::builder("page-queue")
        .capacity(256)
        .overflow(Overflow::Block)
        .build();
    let workers_left = AtomicUsize::new(4);
    let mut sessions: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    std::thread::scope(|s| {
        for worker in 0..4 {
            let (templates, scratch) = (&templates, &scratch);
            let (rendered, workers_left) = (&rendered, &workers_left);
            s.spawn(move || {
                for i in 0..4_000 {
                    let page = render_page(worker * 10_000 + i, templates, scratch);
                    rendered
                        .push(page)
                        .expect("the queue closes after the last worker");
                    if i % 500 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                if workers_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                    rendered.close(); // the consumer takes what is left, then gets None
                }
            });
        }
        let mut n = 0u64;
        while let Some(page) = rendered.pop() {
            n += 1;
            // Refused only while "pages" is critical: the page is dropped uncached.
            let _ = cache.insert(n, page);
            let _scope = memgov::component_scope("sessions");
            sessions.insert(n, vec![0u8; 64 + n as usize % 200]);
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // let the monitor deliver the last events

    // An async job, polled in its own component.
    let report = block_on(
        async { (0..1000).map(|i| format!("line {i}\n")).collect::<String>() }.in_component("jobs"),
    );

    let pages = memgov::component_stats("pages").unwrap();
    let cached = cache.stats();
    println!(
        "\npages: {} live bytes, {} pages cached ({} bytes), peak {} bytes; 16000 rendered, {} shed under pressure, {} refused",
        pages.live_bytes,
        cached.live_entries,
        cached.live_weight,
        pages.peak_live_bytes,
        cached.total_shed,
        cached.total_refused
    );
    let buffers = scratch.stats();
    println!(
        "render buffers: {} made, {} reused for 16000 pages, {} idle",
        buffers.total_misses, buffers.total_hits, buffers.live_idle
    );
    let queued = rendered.stats();
    println!(
        "page queue: {} pages passed, at most {} in flight (bound {} now), {} pushes waited for room",
        queued.total_popped, queued.peak_entries, queued.bound, queued.total_waits
    );
    println!("\n{}", memgov::snapshot());
    println!(
        "\njob report: {} bytes; sessions: {}",
        report.len(),
        sessions.len()
    );
    // The health report: pressure, fragmentation, the biggest components, and what to do.
    println!("\nhealth:\n{}", memgov::stats::health());
}
