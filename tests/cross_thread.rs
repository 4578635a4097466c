//! Cross-thread frees: a block is credited back to the component that allocated it, whichever
//! thread frees it and whatever scope that thread is in. Covers one block handed over by `join`,
//! and many blocks sent across channels between several producer and consumer threads.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::ComponentStats;
use std::sync::mpsc;
use std::thread;

/// The figures of `name` (interning it, so a component that never allocated reads as zeros).
fn stats(name: &'static str) -> ComponentStats {
    memgov::component(name).stats()
}

/// A block of exactly `size` bytes, allocated in the component named `name`.
fn block_in(name: &'static str, size: usize, fill: u8) -> Box<[u8]> {
    let _scope = memgov::component_scope(name);
    // `vec![x; n]` allocates exactly `n` bytes and `into_boxed_slice` keeps that block.
    vec![fill; size].into_boxed_slice()
}

#[test]
fn a_block_freed_on_another_thread_in_another_scope_is_credited_to_its_allocator() {
    let (a, b) = ("xt-one-a", "xt-one-b");
    memgov::component(b);

    let block = thread::spawn(move || block_in(a, 1000, 7)).join().unwrap();
    let s = stats(a);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (1000, 1, 0),
        "{s:?}"
    );

    thread::spawn(move || {
        let _scope = memgov::component_scope(b);
        assert!(block.iter().all(|&x| x == 7));
        drop(block);
    })
    .join()
    .unwrap();

    let s = stats(a);
    assert_eq!(s.live_bytes, 0, "{s:?}");
    assert_eq!(s.free_count, s.alloc_count, "{s:?}");
    assert_eq!((s.alloc_count, s.realloc_count), (1, 0), "{s:?}");
    assert_eq!((s.total_allocated_bytes, s.total_freed_bytes), (1000, 1000));
    assert_eq!((s.peak_live_bytes, s.live_inner_bytes), (1000, 0), "{s:?}");

    let s = stats(b);
    assert_eq!(
        (s.live_bytes, s.free_count, s.alloc_count),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.total_freed_bytes, 0, "{s:?}");
}

#[test]
fn a_block_freed_on_the_allocating_thread_after_a_round_trip_is_credited_once() {
    let (a, b) = ("xt-trip-a", "xt-trip-b");
    memgov::component(b);
    let block = block_in(a, 333, 1);
    // Out to another thread that reads it inside "b", and back.
    let block = thread::spawn(move || {
        let _scope = memgov::component_scope(b);
        assert_eq!(block.len(), 333);
        block
    })
    .join()
    .unwrap();
    assert_eq!(stats(a).live_bytes, 333);
    {
        let _scope = memgov::component_scope(b);
        drop(block);
    }
    let s = stats(a);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 1, 1),
        "{s:?}"
    );
    let s = stats(b);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 0, 0),
        "{s:?}"
    );
}

/// Size of the `i`-th block a producer makes: small and varied, with a few larger ones that
/// push a thread's batch over its byte threshold.
fn size_of_block(producer: usize, i: usize) -> usize {
    if i % 97 == 0 {
        200_000 + producer
    } else {
        1 + (i * 31 + producer * 7) % 700
    }
}

#[test]
fn many_blocks_sent_across_channels_are_all_credited_back() {
    const PRODUCERS: [&str; 4] = ["xt-chan-p0", "xt-chan-p1", "xt-chan-p2", "xt-chan-p3"];
    const CONSUMERS: [&str; 2] = ["xt-chan-c0", "xt-chan-c1"];
    const PER_PRODUCER: usize = 5_000;
    for c in CONSUMERS {
        memgov::component(c);
    }

    // Each producer sends to one consumer. The channels and the messages' own bookkeeping are
    // allocated outside the measured scopes: only the blocks themselves are tagged.
    let (txs, rxs): (Vec<_>, Vec<_>) = CONSUMERS
        .iter()
        .map(|_| mpsc::channel::<Box<[u8]>>())
        .unzip();
    let producers: Vec<_> = PRODUCERS
        .iter()
        .enumerate()
        .map(|(p, &name)| {
            let tx = txs[p % CONSUMERS.len()].clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let block = block_in(name, size_of_block(p, i), p as u8);
                    tx.send(block).unwrap();
                }
            })
        })
        .collect();
    drop(txs);
    for h in producers {
        h.join().unwrap();
    }

    // Every block is in flight: exact live figures, all credited to the producers.
    for (p, &name) in PRODUCERS.iter().enumerate() {
        let bytes: u64 = (0..PER_PRODUCER).map(|i| size_of_block(p, i) as u64).sum();
        let s = stats(name);
        assert_eq!(s.live_bytes, bytes, "{s:?}");
        assert_eq!(
            (s.alloc_count, s.free_count),
            (PER_PRODUCER as u64, 0),
            "{s:?}"
        );
    }

    let consumers: Vec<_> = rxs
        .into_iter()
        .zip(CONSUMERS)
        .map(|(rx, name)| {
            thread::spawn(move || {
                let mut received = 0;
                for block in rx {
                    let _scope = memgov::component_scope(name);
                    drop(block);
                    received += 1;
                }
                received
            })
        })
        .collect();
    let received: usize = consumers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(received, PRODUCERS.len() * PER_PRODUCER);

    for (p, &name) in PRODUCERS.iter().enumerate() {
        let bytes: u64 = (0..PER_PRODUCER).map(|i| size_of_block(p, i) as u64).sum();
        let s = stats(name);
        assert_eq!(s.live_bytes, 0, "{s:?}");
        assert_eq!(s.free_count, s.alloc_count, "{s:?}");
        assert_eq!(s.alloc_count, PER_PRODUCER as u64, "{s:?}");
        assert_eq!(
            (s.total_allocated_bytes, s.total_freed_bytes),
            (bytes, bytes)
        );
    }
    for name in CONSUMERS {
        let s = stats(name);
        assert_eq!(
            (s.live_bytes, s.alloc_count, s.free_count),
            (0, 0, 0),
            "{s:?}"
        );
    }
}

#[test]
fn blocks_freed_while_both_threads_are_alive_read_exactly_from_pending_batches() {
    // Neither thread exits (so neither flushes) before the figures are read: the reader must add
    // both threads' pending deltas.
    let (a, b) = ("xt-live-a", "xt-live-b");
    memgov::component(b);
    let (to_freer, blocks) = mpsc::channel::<Vec<Box<[u8]>>>();
    let (to_reader, freed) = mpsc::channel::<()>();
    let (to_allocator, done) = mpsc::channel::<()>();

    let allocator = thread::spawn(move || {
        let mut v = Vec::with_capacity(100);
        for i in 0..100 {
            v.push(block_in(a, 10 + i, 0));
        }
        to_freer.send(v).unwrap();
        done.recv().unwrap(); // stay alive, batches unflushed, until the reader is done
    });
    let freer = thread::spawn(move || {
        let v = blocks.recv().unwrap();
        {
            let _scope = memgov::component_scope(b);
            drop(v);
        }
        to_reader.send(()).unwrap();
        // Stay alive too.
        thread::park();
    });
    freed.recv().unwrap();

    let s = stats(a);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 100, 100),
        "{s:?}"
    );
    let expected: u64 = (0..100).map(|i| 10 + i).sum();
    assert_eq!(s.total_allocated_bytes, expected, "{s:?}");
    let s = stats(b);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 0, 0),
        "{s:?}"
    );

    to_allocator.send(()).unwrap();
    allocator.join().unwrap();
    freer.thread().unpark();
    freer.join().unwrap();
    let s = stats(a);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 100, 100),
        "{s:?}"
    );
}
