//! After a pressure episode the soft-limit responder restores the decay times every arena had
//! when it started, not arena 0's times everywhere; and starts from two threads at once leave one
//! task, which `stop_responder` removes.
#![cfg(feature = "jemalloc")]

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::jemalloc::{self, Decay};
use serial_test::serial;
use std::time::{Duration, Instant};

fn wait_for(level: memgov::Level) {
    let start = Instant::now();
    while jemalloc::responder_stats().level != level {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never reached {level:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[serial]
fn recovery_restores_each_arenas_own_decay() {
    // An allocation past jemalloc's oversize threshold (8 MiB) creates its huge arena, which
    // jemalloc gives decay times of its own (0: purge at once) unlike the other arenas.
    drop(std::hint::black_box(vec![1u8; 32 << 20]));
    // SAFETY: `opt.narenas` is an unsigned; the huge arena comes right after the automatic ones.
    let huge = unsafe { jemalloc::raw::read::<u32>("opt.narenas") }.unwrap();
    jemalloc::refresh().unwrap();
    assert!(jemalloc::arena_initialized(huge).unwrap());
    let huge_before = jemalloc::arena_decay(huge).unwrap();
    let arena0_before = jemalloc::decay().unwrap();
    let default_before = Decay {
        dirty_ms: jemalloc::default_dirty_decay_ms().unwrap(),
        muzzy_ms: jemalloc::default_muzzy_decay_ms().unwrap(),
    };
    assert_ne!(
        huge_before, arena0_before,
        "this test needs jemalloc's defaults"
    );

    jemalloc::start_responder(jemalloc::ResponderPolicy {
        interval: Duration::from_millis(5),
        ..Default::default()
    })
    .unwrap();
    memgov::set_process_limits(memgov::Limits::soft(1)).unwrap();
    wait_for(memgov::Level::Critical);
    memgov::set_process_limits(memgov::Limits::NONE).unwrap();
    wait_for(memgov::Level::Normal);
    jemalloc::stop_responder();

    assert_eq!(jemalloc::decay().unwrap(), arena0_before);
    assert_eq!(
        jemalloc::arena_decay(huge).unwrap(),
        huge_before,
        "huge arena {huge}"
    );
    assert_eq!(
        Decay {
            dirty_ms: jemalloc::default_dirty_decay_ms().unwrap(),
            muzzy_ms: jemalloc::default_muzzy_decay_ms().unwrap(),
        },
        default_before
    );
}

#[test]
#[serial]
fn concurrent_starts_leave_no_task_behind() {
    let policy = jemalloc::ResponderPolicy {
        interval: Duration::from_millis(1),
        ..Default::default()
    };
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(move || {
                for _ in 0..200 {
                    jemalloc::start_responder(policy).unwrap();
                }
            });
        }
    });
    jemalloc::stop_responder();
    // Let a round that was running finish, then watch for 100 ms.
    std::thread::sleep(Duration::from_millis(20));
    let runs = memgov::monitor_stats().task_runs;
    std::thread::sleep(Duration::from_millis(100));
    let more = memgov::monitor_stats().task_runs - runs;
    assert_eq!(more, 0, "{more} task runs after the responder was stopped");
    assert!(!jemalloc::responder_stats().running);
}
