//! The emergency reserve after the process's hard limit is lowered below what is charged: a
//! reserve thread must not take bytes from it that carry the live bytes past the new limit
//! ("a hard limit is never exceeded ... for allocations made after the limit was set"; budget.rs:
//! "usage can only fall until it is under the limit").

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{emergency_reserve_stats, global_stats, Limits};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[test]
fn a_reserve_thread_cannot_pass_a_lowered_process_limit() {
    memgov::set_emergency_reserve(MIB as u64);
    memgov::start_monitor();
    memgov::set_process_limits(Limits::hard(1 << 30)).unwrap();
    let start = Instant::now();
    while emergency_reserve_stats().held_bytes < MIB as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the reserve never filled"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Ballast, so that an eighth of the lowered limit still covers the whole reserve (the monitor
    // then keeps holding it).
    let ballast = std::hint::black_box(vec![1u8; 16 * MIB]);
    // Nothing below allocates on this thread between lowering the limit and removing it.
    let (lowered, tried) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        let admin = s.spawn(|| {
            memgov::use_emergency_reserve();
            lowered.wait();
            let mut v: Vec<u8> = Vec::new();
            let ok = v.try_reserve_exact(768 * KIB).is_ok();
            std::hint::black_box(&mut v);
            tried.wait();
            ok
        });
        memgov::flush_thread();
        let live = global_stats().live_bytes;
        // Above the live bytes, below the live bytes plus the reserve.
        let hard = live + 256 * KIB as u64;
        memgov::set_process_limits(Limits::hard(hard)).unwrap();
        lowered.wait();
        tried.wait();
        memgov::set_process_limits(Limits::NONE).unwrap();
        let ok = admin.join().unwrap();
        assert!(
            !ok,
            "a reserve thread allocated 768 KiB past a lowered hard limit of {hard} bytes \
             ({live} bytes live before)"
        );
    });
    drop(ballast);
}
