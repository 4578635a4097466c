//! A small service whose parts allocate under their own components, with a page cache that sheds
//! memory when its budget comes under pressure; then the figures as a table.
//!
//! `cargo run --release --example demo`
//! (`MEMGOV_BUDGETS=pages=/4MiB cargo run --release --example demo` to give "pages" another soft
//! budget; the demo sets `pages=/8MiB` itself when the environment does not.)

use memgov::{EventKind, InComponent, Level, Limits};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

/// Renders a page: allocations tagged "pages".
fn render_page(id: usize, templates: &HashMap<String, String>) -> String {
    let _scope = memgov::component_scope("pages");
    let layout = &templates["layout"];
    let mut body = String::with_capacity(256);
    for row in 0..(id % 50) {
        body.push_str(&format!("<tr><td>{id}</td><td>{row}</td></tr>"));
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

/// A least-recently-inserted page cache. Its bytes belong to "pages", whoever evicts them.
#[derive(Default)]
struct PageCache {
    order: VecDeque<u64>,
    pages: HashMap<u64, String>,
}

impl PageCache {
    fn insert(&mut self, key: u64, page: String) {
        let _scope = memgov::component_scope("pages");
        self.order.push_back(key);
        self.pages.insert(key, page);
    }

    /// Drops the oldest half.
    fn evict_half(&mut self) -> usize {
        let n = self.order.len() / 2;
        for key in self.order.drain(..n) {
            self.pages.remove(&key);
        }
        self.pages.shrink_to_fit();
        n
    }

    fn clear(&mut self) -> usize {
        let n = self.pages.len();
        self.order = VecDeque::new();
        self.pages = HashMap::new();
        n
    }
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
    let cache = Arc::new(Mutex::new(PageCache::default()));

    // Pressure callbacks run on memgov's monitor thread, never inside an allocation.
    let shed = Arc::clone(&cache);
    memgov::on_component_pressure("pages", move |event| {
        let mut cache = shed.lock().unwrap();
        let action = match (event.kind, event.level) {
            (EventKind::Critical, _) => format!("cleared {} pages", cache.clear()),
            (EventKind::Warning, _) | (EventKind::Recovery, Level::Warning) => {
                format!("evicted {} pages", cache.evict_half())
            }
            (EventKind::Recovery, _) => "back to normal".to_string(),
        };
        println!(
            "  pressure: pages {} -> {} at {} of {} bytes: {action}",
            event.previous, event.level, event.charged_bytes, event.limit_bytes
        );
    });

    // Workers render pages; the main thread caches every one it receives. Page bytes are
    // allocated on the workers and freed on whichever thread evicts them.
    let mut sessions: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::scope(|s| {
        for worker in 0..4 {
            let tx = tx.clone();
            let templates = &templates;
            s.spawn(move || {
                for i in 0..4_000 {
                    tx.send(render_page(worker * 10_000 + i, templates))
                        .unwrap();
                    if i % 500 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
        }
        drop(tx);
        for (n, page) in rx.into_iter().enumerate() {
            cache.lock().unwrap().insert(n as u64, page);
            let _scope = memgov::component_scope("sessions");
            sessions.insert(n as u64, vec![0u8; 64 + n % 200]);
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // let the monitor deliver the last events

    // An async job, polled in its own component.
    let report = block_on(
        async { (0..1000).map(|i| format!("line {i}\n")).collect::<String>() }.in_component("jobs"),
    );

    let pages = memgov::component_stats("pages").unwrap();
    println!(
        "\npages: {} live bytes in {} cached pages, peak {} bytes, {} pages rendered",
        pages.live_bytes,
        cache.lock().unwrap().pages.len(),
        pages.peak_live_bytes,
        16_000
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
