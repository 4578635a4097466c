//! Model checks of the pressure-event ring under loom: every interleaving (up to a bound on
//! preemptions) and every value the memory model lets a relaxed load read, of producers that
//! lap a two-slot ring and meet on one slot, with and without a consumer draining meanwhile.
//!
//! The code checked is the crate's own: `src/event_ring/ring.rs`, included below with `#[path]`.
//! That file takes its atomic type and `fence` from `super::sync`, which this file provides as
//! loom's, and leaves building a ring to its parent (the crate's is a `const` static; here
//! [`ring`] builds one with loom's atomics in each execution).
//!
//! Each pushed payload is three copies of a tag no other push uses, and each producer keeps the
//! sequence number the ring gave each of its tags. Once every producer is joined and the
//! consumer has drained the rest, [`check`] asks that every payload received is whole (its
//! three words are one tag) and is the one pushed at the position it came with, that positions
//! arrive in increasing order, and that every push was received or counted as dropped.
//!
//! `LOOM_MAX_PREEMPTIONS` and the other `LOOM_*` variables override the bounds set here; with
//! `LOOM_LOG=trace LOOM_LOCATION=1` loom prints the interleaving of a failure.

use loom::sync::Arc;
use loom::thread;

#[path = "../src/event_ring/ring.rs"]
mod ring;

use ring::{Payload, Ring, Slot};

/// The atomics [`ring`] is compiled against: loom's.
mod sync {
    pub(super) use loom::sync::atomic::{fence, AtomicU64};
}

/// Runs `f` under loom with at most 3 preemptions per execution (unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise): the three models then end in about 8 s in a debug build, and each protocol
/// fault they are known to catch (a fence, an ordering or a check of the protocol taken out)
/// shows up within 1 s. All of them pass with 4 too (about 1 minute).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A ring of `N` slots, never written (what the crate's `const` constructor builds).
fn ring<const N: usize>() -> Arc<Ring<N>> {
    Arc::new(Ring {
        slots: std::array::from_fn(|_| Slot {
            state: sync::AtomicU64::new(0),
            payload: std::array::from_fn(|_| sync::AtomicU64::new(0)),
        }),
        next: sync::AtomicU64::new(0),
        dropped: sync::AtomicU64::new(0),
    })
}

/// The payload of the push tagged `tag`: three copies, so a mix of two pushes shows.
fn payload(tag: u64) -> Payload {
    [tag; 3]
}

/// A thread that pushes the tags `tags`, and returns each one's sequence number with it.
fn producer<const N: usize>(
    ring: &Arc<Ring<N>>,
    tags: &'static [u64],
) -> thread::JoinHandle<Vec<(u64, u64)>> {
    let ring = ring.clone();
    thread::spawn(move || {
        tags.iter()
            .map(|&tag| (ring.push(payload(tag)), tag))
            .collect()
    })
}

/// Once every producer is joined and the consumer has drained the ring to its end: each
/// payload `received` (with its position) is whole and is the one pushed at that position,
/// positions increase, and every push was received or dropped.
fn check<const N: usize>(ring: &Ring<N>, pushed: &[(u64, u64)], received: &[(u64, Payload)]) {
    for &(seq, got) in received {
        let tag = pushed.iter().find(|&&(s, _)| s == seq).map(|&(_, tag)| tag);
        assert_eq!(
            Some(got),
            tag.map(payload),
            "position {seq} delivered {got:?}; pushed there: tag {tag:?}"
        );
    }
    for pair in received.windows(2) {
        assert!(pair[0].0 < pair[1].0, "out of order: {received:?}");
    }
    let dropped = ring.dropped();
    assert_eq!(
        received.len() as u64 + dropped,
        pushed.len() as u64,
        "{} received, {dropped} dropped, {} pushed",
        received.len(),
        pushed.len()
    );
}

/// Two producers push three events into two slots, so the third laps the first, and a producer
/// that stalls can meet another on one slot or fall a lap behind. The consumer drains only
/// after both are joined: it must get every event that was not overwritten or mixed, whole and
/// in order, and count the rest.
#[test]
fn producers_that_lap_and_overlap_deliver_whole_events_or_count_them() {
    model(|| {
        let ring = ring::<2>();
        let a = producer(&ring, &[1]);
        let b = producer(&ring, &[2, 3]);
        let mut pushed = a.join().unwrap();
        pushed.extend(b.join().unwrap());
        let (mut cursor, mut received) = (0, Vec::new());
        ring.drain(&mut cursor, |seq, p| received.push((seq, p)));
        assert_eq!(cursor, 3, "the drain after the producers reaches the end");
        check(&ring, &pushed, &received);
    });
}

/// One producer pushes three events into two slots (the third over the first) while the
/// consumer drains, then the consumer drains the rest: a payload read while a producer a lap
/// later writes the slot must be dropped, never delivered mixed or as the wrong event.
#[test]
fn a_drain_that_races_a_lapping_producer_delivers_whole_events_or_counts_them() {
    model(|| {
        let ring = ring::<2>();
        let p = producer(&ring, &[1, 2, 3]);
        let (mut cursor, mut received) = (0, Vec::new());
        ring.drain(&mut cursor, |seq, p| received.push((seq, p)));
        let pushed = p.join().unwrap();
        ring.drain(&mut cursor, |seq, p| received.push((seq, p)));
        assert_eq!(cursor, 3, "the drain after the producer reaches the end");
        check(&ring, &pushed, &received);
    });
}

/// Two producers, one of them lapping the ring, while the consumer drains: the two races above
/// at once.
#[test]
fn a_drain_that_races_two_producers_delivers_whole_events_or_counts_them() {
    model(|| {
        let ring = ring::<2>();
        let a = producer(&ring, &[1]);
        let b = producer(&ring, &[2, 3]);
        let (mut cursor, mut received) = (0, Vec::new());
        ring.drain(&mut cursor, |seq, p| received.push((seq, p)));
        let mut pushed = a.join().unwrap();
        pushed.extend(b.join().unwrap());
        ring.drain(&mut cursor, |seq, p| received.push((seq, p)));
        assert_eq!(cursor, 3, "the drain after the producers reaches the end");
        check(&ring, &pushed, &received);
    });
}
