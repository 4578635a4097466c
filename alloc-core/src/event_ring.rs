//! The ring that carries pressure events from the threads that notice a crossing (inside the
//! allocator) to the monitor thread: many producers, one consumer, lock-free and allocation-free,
//! bounded. Events that arrive faster than the monitor drains them are dropped and counted, never
//! delivered torn.
//!
//! The ring's protocol is in [`ring`], which the model check `tests/loom_event_ring.rs`
//! compiles against loom's atomics; this module gives it std's, builds the crate's ring (a
//! `const` constructor, for the static in [`pressure`](mod@crate::pressure)), and packs an event
//! into the three words the ring carries.

use crate::budget::Scope;
use crate::pressure::{EventKind, Level, PressureEvent};
use crate::registry::{ComponentId, CAPACITY};
use std::sync::atomic::AtomicU64;

mod ring;

use ring::{Payload, Ring, Slot, WORDS};

/// The atomics that [`ring`] is written against: std's here. The model check
/// (`tests/loom_event_ring.rs`) includes the same file with loom's.
mod sync {
    pub(super) use std::sync::atomic::{fence, AtomicU64};
}

/// Slots in the ring: events that may wait between two monitor wake-ups.
pub(crate) const RING: usize = 256;

impl Slot {
    /// A slot never written.
    const fn new() -> Slot {
        Slot {
            state: AtomicU64::new(0),
            payload: [const { AtomicU64::new(0) }; WORDS],
        }
    }
}

/// A bounded multi-producer, single-consumer ring of pressure events.
pub(crate) struct EventRing {
    /// The events, each packed by [`pack`].
    ring: Ring<RING>,
}

impl EventRing {
    /// An empty ring.
    pub(crate) const fn new() -> EventRing {
        EventRing {
            ring: Ring {
                slots: [const { Slot::new() }; RING],
                next: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            },
        }
    }

    /// Adds an event. Lock-free and allocation-free: producers run inside the allocator.
    pub(crate) fn push(&self, e: PressureEvent) {
        self.ring.push(pack(&e));
    }

    /// Takes the events after `cursor` (one consumer only), in order. Events overwritten before
    /// or while they were read, and events whose slot two producers wrote at once, are counted
    /// in [`dropped`](Self::dropped); every event handed to `f` is whole.
    pub(crate) fn drain(&self, cursor: &mut u64, mut f: impl FnMut(PressureEvent)) {
        self.ring.drain(cursor, |_, payload| f(unpack(payload)));
    }

    /// Events lost so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.ring.dropped()
    }

    /// Where a consumer starts to read only events pushed from now on.
    pub(crate) fn head(&self) -> u64 {
        self.ring.head()
    }

    /// In a forked child: forgets the producers that were writing at the fork (see
    /// [`Ring::forget_writers`]). Async-signal-safe.
    pub(crate) fn forget_writers(&self) {
        self.ring.forget_writers();
    }
}

/// An event as the ring's three words: scope (0 = process, else component id + 1) | kind << 16
/// | previous << 24 | level << 32, then the charged bytes, then the limit.
fn pack(e: &PressureEvent) -> Payload {
    let scope = match e.scope {
        Scope::Process => 0u64,
        Scope::Component(c) => c.index() as u64 + 1,
    };
    let kind = match e.kind {
        EventKind::Warning => 0u64,
        EventKind::Critical => 1,
        EventKind::Recovery => 2,
    };
    [
        scope | kind << 16 | (e.previous as u64) << 24 | (e.level as u64) << 32,
        e.charged_bytes,
        e.limit_bytes,
    ]
}

/// The event that [`pack`] made these words from.
fn unpack([head, charged_bytes, limit_bytes]: Payload) -> PressureEvent {
    let scope = match head & 0xffff {
        0 => Scope::Process,
        c if (c as usize) <= CAPACITY => Scope::Component(ComponentId((c - 1) as u16)),
        _ => Scope::Process,
    };
    let kind = match (head >> 16) & 0xff {
        0 => EventKind::Warning,
        1 => EventKind::Critical,
        _ => EventKind::Recovery,
    };
    PressureEvent {
        scope,
        kind,
        previous: Level::from_u8((head >> 24) as u8),
        level: Level::from_u8((head >> 32) as u8),
        charged_bytes,
        limit_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn event(x: u64) -> PressureEvent {
        PressureEvent {
            scope: Scope::Component(ComponentId((x % 1000) as u16)),
            kind: EventKind::Warning,
            previous: Level::Normal,
            level: Level::Warning,
            charged_bytes: x,
            limit_bytes: x,
        }
    }

    /// Whether an event has the fields one producer wrote together.
    fn whole(e: &PressureEvent) -> bool {
        e.charged_bytes == e.limit_bytes
            && e.scope == Scope::Component(ComponentId((e.charged_bytes % 1000) as u16))
    }

    fn drain_all(ring: &EventRing, cursor: &mut u64) -> Vec<PressureEvent> {
        let mut out = Vec::new();
        ring.drain(cursor, |e| out.push(e));
        out
    }

    /// Events pushed by two threads while a third drains: every event read has the fields one
    /// producer wrote together (charged and limit equal, the scope matching them), never a mix
    /// of an event and the one that overwrote it.
    #[test]
    fn drained_events_are_never_torn() {
        const PER_THREAD: u64 = 300_000;
        let ring = EventRing::new();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let producers: Vec<_> = (0..2u64)
                .map(|t| {
                    let ring = &ring;
                    s.spawn(move || {
                        for i in 0..PER_THREAD {
                            ring.push(event((i << 1 | t) + 1));
                        }
                    })
                })
                .collect();
            let (ring, done) = (&ring, &done);
            let reader = s.spawn(move || {
                let (mut cursor, mut read, mut torn) = (0u64, 0u64, 0u64);
                while !done.load(Relaxed) {
                    ring.drain(&mut cursor, |e| {
                        read += 1;
                        torn += u64::from(!whole(&e));
                    });
                }
                (read, torn)
            });
            for p in producers {
                p.join().unwrap();
            }
            done.store(true, Relaxed);
            let (read, torn) = reader.join().unwrap();
            assert!(read > 0);
            assert_eq!(torn, 0, "{torn} of {read} events were torn");
        });
    }

    /// A producer stalls in the middle of its stores while the ring goes round, and the producer
    /// 256 events later writes the same slot meanwhile: neither event is delivered, both are
    /// counted as dropped. (Before writers were counted, the slot kept the second event's scope
    /// and charged bytes with the first one's limit and label, delivered as the first event.)
    #[test]
    fn two_producers_on_one_slot_deliver_neither_event() {
        let ring = EventRing::new();
        let first = ring.ring.next.fetch_add(1, Relaxed);
        let slot = ring.ring.slot(first);
        assert!(slot.begin(first));
        slot.payload[0].store(0, Relaxed); // stalled here, part-way through its stores
        for x in 1..RING as u64 {
            ring.push(event(1000 + x));
        }
        let mut cursor = 0;
        // The reader sees the first slot still being written and waits.
        assert!(drain_all(&ring, &mut cursor).is_empty());
        // Event 256: the same slot as event 0.
        ring.push(event(7));
        // The stalled producer goes on with the rest of its stores: the slot now holds event
        // 256's head word with event 0's bytes.
        slot.payload[1].store(5, Relaxed);
        slot.payload[2].store(5, Relaxed);
        slot.finish(first);
        let read = drain_all(&ring, &mut cursor);
        assert!(read.iter().all(whole));
        assert_eq!(read.len(), RING - 1, "events 1 to 255, not 0 nor 256");
        assert_eq!(ring.dropped(), 2);
    }

    /// A producer stalls after taking its number and before announcing itself, while the ring
    /// goes round and the event 256 later is written to its slot: it then writes nothing, so
    /// the later event is delivered as it was written.
    #[test]
    fn a_producer_that_falls_a_lap_behind_writes_nothing() {
        let ring = EventRing::new();
        let first = ring.ring.next.fetch_add(1, Relaxed); // stalled before `begin`
        for x in 1..=RING as u64 {
            ring.push(event(1000 + x));
        }
        // It goes on as `push` would.
        let slot = ring.ring.slot(first);
        if slot.begin(first) {
            slot.write(pack(&event(5)));
            slot.finish(first);
        }
        let mut cursor = 0;
        let read = drain_all(&ring, &mut cursor);
        assert_eq!(read.len(), RING, "events 1 to 256");
        assert_eq!(read.last().unwrap().charged_bytes, 1000 + RING as u64);
        assert!(read.iter().all(whole));
        assert_eq!(ring.dropped(), 1, "event 0");
    }

    /// More events than the ring holds between two drains: the oldest are counted as dropped and
    /// the newest 256 delivered in order.
    #[test]
    fn an_overflowing_ring_keeps_the_newest_events() {
        let ring = EventRing::new();
        for x in 0..1000 {
            ring.push(event(x));
        }
        let mut cursor = 0;
        let read = drain_all(&ring, &mut cursor);
        let charged: Vec<u64> = read.iter().map(|e| e.charged_bytes).collect();
        assert_eq!(charged, (1000 - RING as u64..1000).collect::<Vec<_>>());
        assert_eq!(ring.dropped(), 1000 - RING as u64);
        assert_eq!(cursor, 1000);
    }

    /// Producers that vanished in the middle of a push (their threads did not come along into a
    /// forked child) held up the consumer at their events for ever, and every producer after
    /// them on those slots, until `forget_writers` (the child's fork handler) let them go.
    #[test]
    fn producers_lost_mid_push_hold_nothing_up_once_forgotten() {
        let ring = EventRing::new();
        ring.push(event(1));
        // Event 1: announced and half written, never finished.
        let lost = ring.ring.next.fetch_add(1, Relaxed);
        assert!(ring.ring.slot(lost).begin(lost));
        ring.ring.slot(lost).write(pack(&event(2)));
        // Event 2: its number taken, nothing else.
        ring.ring.next.fetch_add(1, Relaxed);
        ring.push(event(4));
        let mut cursor = 0;
        assert_eq!(drain_all(&ring, &mut cursor).len(), 1, "held up at event 1");
        assert_eq!(drain_all(&ring, &mut cursor).len(), 0, "still held up");
        ring.forget_writers();
        let read = drain_all(&ring, &mut cursor);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].charged_bytes, 4);
        assert_eq!(ring.dropped(), 2, "the lost events");
        // The slot takes events again when the ring comes round to it.
        for x in 0..RING as u64 {
            ring.push(event(100 + x));
        }
        let read = drain_all(&ring, &mut cursor);
        assert_eq!(read.len(), RING);
        assert!(read.iter().all(whole));
        assert_eq!(cursor, ring.head());
    }
}
