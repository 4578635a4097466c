//! A small service whose parts allocate under their own components, then the figures as a table.
//!
//! `cargo run --release --example demo`

use memgov::InComponent;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

/// Renders a page: allocations tagged "pages" (templates come from their own component).
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
    let templates = load_templates();

    // Sessions live in a map owned by the main thread; workers render pages and send them back,
    // so page bytes are freed on another thread than the one that allocated them.
    let mut sessions: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::scope(|s| {
        for worker in 0..4 {
            let tx = tx.clone();
            let templates = &templates;
            s.spawn(move || {
                for i in 0..2_000 {
                    tx.send(render_page(worker * 10_000 + i, templates))
                        .unwrap();
                }
            });
        }
        drop(tx);
        let mut cached = Vec::new();
        for (n, page) in rx.into_iter().enumerate() {
            let _scope = memgov::component_scope("sessions");
            sessions.insert(n as u64, vec![0u8; 64 + n % 200]);
            if n % 16 == 0 {
                cached.push(page); // a page cache that keeps every 16th page alive
            }
        }
        println!("cached {} pages", cached.len());
        let pages = memgov::component_stats("pages").unwrap();
        println!(
            "pages: {} live bytes in {} blocks kept by the cache, {} allocations, peak {} bytes",
            pages.live_bytes,
            pages.live_blocks(),
            pages.alloc_count,
            pages.peak_live_bytes
        );
    });

    // An async job, polled in its own component.
    let report = block_on(
        async { (0..1000).map(|i| format!("line {i}\n")).collect::<String>() }.in_component("jobs"),
    );

    println!("\n{}", memgov::snapshot());
    println!(
        "\njob report: {} bytes; sessions: {}",
        report.len(),
        sessions.len()
    );
}
