//! The history kept by the monitor thread, a leak found in it as it happens, and the health report.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::stats::{self, HistoryConfig, LeakKind};
use serial_test::serial;
use std::time::{Duration, Instant};

#[test]
#[serial]
fn a_component_leaking_while_sampled_is_reported_with_its_rate() {
    stats::start_history(HistoryConfig {
        capacity: 40,
        interval: Duration::from_millis(10),
    });
    let leaky = memgov::component("history-leaky");
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(1000);
    // Leak for at least 500 ms and until at least 20 samples are in (at 10 ms, about 50; a slow
    // machine gets more time rather than a failure, up to a generous deadline).
    let start = Instant::now();
    for round in 1u32.. {
        let _scope = memgov::try_enter(leaky).unwrap();
        kept.push(vec![1u8; 4096]);
        drop(_scope);
        std::thread::sleep(Duration::from_millis(1));
        let elapsed = start.elapsed();
        if round % 16 == 0
            && elapsed >= Duration::from_millis(500)
            && (stats::history().len() >= 20 || elapsed >= Duration::from_secs(30))
        {
            break;
        }
    }
    let samples = stats::history();
    assert!(
        samples.len() >= 20 && samples.len() <= 40,
        "{} samples",
        samples.len()
    );
    assert!(samples.windows(2).all(|w| w[0].at <= w[1].at));
    let report = stats::health();
    let leak = report
        .leaks
        .iter()
        .find(|f| f.kind == LeakKind::Bytes(leaky))
        .expect("the leak is found");
    assert!(leak.rate_per_sec > 100_000.0, "{leak}");
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.contains("possible leak") && r.contains("history-leaky")),
        "{report}"
    );
    assert_eq!(report.top[0].name, "history-leaky", "{report}");
    stats::stop_history();
    assert!(stats::history().is_empty());
    drop(kept);
}

/// Restarts from two threads at once leave one sampling task, which `stop_history` removes: the
/// monitor runs no task once the history is stopped.
#[test]
#[serial]
fn concurrent_restarts_leave_no_sampling_task_behind() {
    let config = HistoryConfig {
        capacity: 10,
        interval: Duration::from_millis(1),
    };
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(move || {
                for _ in 0..300 {
                    stats::start_history(config);
                }
            });
        }
    });
    stats::stop_history();
    // Let a round that was running finish, then watch for 100 ms.
    std::thread::sleep(Duration::from_millis(20));
    let runs = memgov::monitor_stats().task_runs;
    std::thread::sleep(Duration::from_millis(100));
    let more = memgov::monitor_stats().task_runs - runs;
    assert_eq!(more, 0, "{more} task runs after the history was stopped");
    assert!(stats::history().is_empty());
}
