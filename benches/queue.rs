//! `BoundedQueue` against what a program would write without it, in one run: a
//! `Mutex<VecDeque>` (no bound, no waiting, no figures) and std's bounded channel,
//! `std::sync::mpsc::sync_channel` (a bound and waiting, no figures, no pressure). The governor
//! is the global allocator throughout, as it must be for the queue to account its memory.
//!
//! `cargo bench --bench queue`; `benches/README.md` has the figures and the ratios.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use memgov::{BoundedQueue, Overflow};
use std::collections::VecDeque;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

/// The bound of every queue and channel.
const CAPACITY: usize = 1024;

/// Entries each queue holds while the pair is measured, so that a push and a pop never meet at
/// an empty queue.
const HELD: u64 = 512;

fn blocking_queue() -> BoundedQueue<u64> {
    BoundedQueue::builder("bench-queue")
        .capacity(CAPACITY)
        .overflow(Overflow::Block)
        .build()
}

/// A push and a pop on one thread, the queue holding [`HELD`] entries.
fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue-pair");
    g.bench_function("mutex-vecdeque", |b| {
        let q = Mutex::new((0..HELD).collect::<VecDeque<u64>>());
        b.iter(|| {
            q.lock().unwrap().push_back(black_box(1));
            black_box(q.lock().unwrap().pop_front())
        })
    });
    g.bench_function("sync-channel", |b| {
        let (tx, rx) = sync_channel(CAPACITY);
        for i in 0..HELD {
            tx.send(i).unwrap();
        }
        b.iter(|| {
            tx.send(black_box(1)).unwrap();
            black_box(rx.recv().unwrap())
        })
    });
    g.bench_function("bounded-queue", |b| {
        let q = blocking_queue();
        for i in 0..HELD {
            q.push(i).unwrap();
        }
        b.iter(|| {
            q.push(black_box(1)).unwrap();
            black_box(q.pop())
        })
    });
    g.finish();
}

/// `iters` values from a producer thread to a consumer thread through `send` and `recv`; the
/// time per value.
fn handoff<S, R>(iters: u64, send: S, mut recv: R) -> Duration
where
    S: Fn(u64) + Send + 'static,
    R: FnMut() -> u64,
{
    let began = Instant::now();
    let producer = std::thread::spawn(move || {
        for i in 0..iters {
            send(i);
        }
    });
    let mut sum = 0u64;
    for _ in 0..iters {
        sum = sum.wrapping_add(recv());
    }
    producer.join().unwrap();
    black_box(sum);
    began.elapsed()
}

/// One producer thread and one consumer thread (this one), the producer waiting whenever
/// [`CAPACITY`] values are in flight.
fn producer_consumer(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue-handoff");
    g.bench_function("sync-channel", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = sync_channel(CAPACITY);
            handoff(
                iters,
                move |v| tx.send(v).unwrap(),
                move || rx.recv().unwrap(),
            )
        })
    });
    g.bench_function("bounded-queue", |b| {
        b.iter_custom(|iters| {
            let q = Arc::new(blocking_queue());
            let tx = Arc::clone(&q);
            handoff(
                iters,
                move |v| tx.push(v).unwrap(),
                move || q.pop().unwrap(),
            )
        })
    });
    // The consumer takes what is queued, up to 256 at a time, under one lock.
    g.bench_function("bounded-queue-drain", |b| {
        b.iter_custom(|iters| {
            let q = Arc::new(blocking_queue());
            let tx = Arc::clone(&q);
            let mut batch = VecDeque::with_capacity(256);
            handoff(
                iters,
                move |v| tx.push(v).unwrap(),
                move || {
                    if batch.is_empty() && q.drain_into(256, &mut batch) == 0 {
                        return q.pop().unwrap();
                    }
                    batch.pop_front().unwrap()
                },
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = pairs, producer_consumer
}
criterion_main!(benches);
