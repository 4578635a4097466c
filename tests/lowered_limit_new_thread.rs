//! A thread started while a component is over a lowered hard limit must not turn the bytes it
//! frees into credit it can spend: "while a lowered limit is below what is already charged,
//! threads hold no credit at all" (budget.rs).

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

#[path = "support/blocks.rs"]
mod blocks;
use blocks::try_block;

use memgov::{component_stats, Limits};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[test]
fn a_thread_started_over_a_lowered_limit_cannot_allocate_from_freed_bytes() {
    let name = "review-new-thread-over";
    memgov::set_budget(name, Limits::hard(4 * MIB as u64)).unwrap();
    let mut blocks: Vec<Option<Vec<u8>>> = Vec::with_capacity(4);
    {
        let _s = memgov::component_scope(name);
        blocks.extend((0..3).map(|_| try_block(MIB)));
    }
    assert!(blocks.iter().all(Option::is_some));
    memgov::flush_thread();
    memgov::set_budget(name, Limits::hard(2 * MIB as u64)).unwrap();
    let mut b = blocks.pop().unwrap().unwrap();
    // A new thread (its block is claimed while the component is over its limit) gives back
    // 128 KiB: 2.875 MiB stays live, still over the 2 MiB limit.
    let extra_ok = std::thread::spawn(move || {
        b.truncate(0);
        b.shrink_to(MIB - 128 * KIB);
        let extra = {
            let _s = memgov::component_scope(name);
            try_block(128 * KIB)
        };
        let ok = extra.is_some();
        drop(extra);
        drop(b);
        ok
    })
    .join()
    .unwrap();
    let live = component_stats(name).unwrap().live_bytes;
    assert!(
        !extra_ok,
        "a new thread allocated 128 KiB over a 2 MiB hard limit (component at {live} bytes after)"
    );
}
