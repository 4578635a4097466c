//! A reader racing a thread that hands credit back must never see a component's peak above the
//! truth: here nothing is ever live in the component, so its peak must stay 0 while a thread
//! turns reservations into credit (`Reservation::spend`) and hands the credit back
//! (`flush_thread`).

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

#[test]
fn a_credit_hand_back_never_shows_a_component_peak_above_the_truth() {
    let name = "review-record-high-race";
    let comp = memgov::component(name);
    let stop = AtomicBool::new(false);
    let (worst, reads) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(SeqCst) {
                memgov::reserve(name, 1 << 20).unwrap().spend();
                memgov::flush_thread();
            }
        });
        let reader = s.spawn(|| {
            let (mut worst, mut reads) = (0u64, 0u64);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) && worst == 0 {
                worst = worst.max(comp.stats().peak_live_bytes);
                reads += 1;
            }
            (worst, reads)
        });
        let r = reader.join().unwrap();
        stop.store(true, SeqCst);
        r
    });
    assert_eq!(
        worst, 0,
        "component {name:?} never had a live byte, yet a reader saw a peak of {worst} bytes \
         (after {reads} reads)"
    );
}
