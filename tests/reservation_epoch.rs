//! A spent reservation must cover the calling thread's next allocations in its component
//! (reservation.rs: "its next allocations in this component spend the reserved bytes instead of
//! charging the budgets again"), even when some limit changed since the thread last charged.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

#[path = "support/blocks.rs"]
mod blocks;
use blocks::try_block;

use memgov::{budget_stats, Limits, Scope};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

const N: usize = 64 * 1024;

#[test]
fn a_spent_reservation_is_not_handed_to_another_thread() {
    let name = "review-res-epoch";
    let comp = memgov::component(name);
    memgov::set_budget("review-res-other", Limits::hard(1 << 30)).unwrap();
    let mut refused = 0;
    for _ in 0..200 {
        let charged = budget_stats(Scope::Component(comp)).charged_bytes;
        memgov::set_budget(name, Limits::hard(charged + N as u64)).unwrap();
        let stage = AtomicU32::new(0);
        let stop = AtomicBool::new(false);
        let a_ok = std::thread::scope(|s| {
            s.spawn(|| {
                while stage.load(SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                stage.store(2, SeqCst);
                let mut held = None;
                while held.is_none() && !stop.load(SeqCst) {
                    let _g = memgov::component_scope(name);
                    held = try_block(N);
                }
                while !stop.load(SeqCst) {
                    std::hint::spin_loop();
                }
                drop(held);
                memgov::flush_thread();
            });
            let a = s.spawn(|| {
                let r = memgov::reserve(name, N as u64).expect("the room is N");
                stage.store(1, SeqCst);
                while stage.load(SeqCst) != 2 {
                    std::hint::spin_loop();
                }
                // Any limit change makes this thread's credit epoch stale.
                memgov::set_budget("review-res-other", Limits::hard(1 << 30)).unwrap();
                r.spend();
                let got = {
                    let _g = memgov::component_scope(name);
                    try_block(N)
                };
                let ok = got.is_some();
                drop(got);
                memgov::flush_thread();
                ok
            });
            let ok = a.join().unwrap();
            stop.store(true, SeqCst);
            ok
        });
        refused += u32::from(!a_ok);
    }
    memgov::set_budget(name, Limits::NONE).unwrap();
    assert_eq!(
        refused, 0,
        "a spent reservation's own allocation was refused {refused} times in 200"
    );
}
