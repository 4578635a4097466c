//! The ring that carries pressure events from the threads that notice a crossing (inside the
//! allocator) to the monitor thread: many producers, one consumer, lock-free and allocation-free,
//! bounded. Events that arrive faster than the monitor drains them are dropped and counted, never
//! delivered torn.
//!
//! Each slot is a sequence lock that counts its writers. A producer takes a sequence number,
//! announces itself on its slot (one more writer), writes the fields, and leaves (one writer
//! fewer, the slot labelled with its number). The reader takes a slot's event only when no one is
//! writing it, its label is the event's number, and nothing changed while the fields were read.
//! Two producers 256 events apart can meet on one slot when one stalls in the middle of its stores
//! while the ring goes round: the second marks the slot torn and the reader skips both events. A
//! producer that stalled so long that a newer event was already written to its slot writes
//! nothing.

use crate::budget::Scope;
use crate::pressure::{EventKind, Level, PressureEvent};
use crate::registry::{ComponentId, CAPACITY};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicU64};

/// Slots in the ring: events that may wait between two monitor wake-ups.
pub(crate) const RING: usize = 256;

/// The producers writing a slot now (low bits of [`Slot::state`]).
const WRITERS: u64 = 0xffff;
/// Set when two producers wrote a slot at once: the fields may mix both events, so neither is
/// read. Cleared by the next producer that finds the slot idle.
const TORN: u64 = 1 << 16;
/// Where the sequence label starts in [`Slot::state`].
const LABEL_SHIFT: u32 = 17;

struct Slot {
    /// Packed: [`WRITERS`] in progress, the [`TORN`] bit, and from [`LABEL_SHIFT`] up the
    /// highest sequence number + 1 written into the slot (0 = never written).
    state: AtomicU64,
    /// scope (0 = process, else component id + 1) | kind << 16 | previous << 24 | level << 32
    head: AtomicU64,
    charged: AtomicU64,
    limit: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU64::new(0),
            head: AtomicU64::new(0),
            charged: AtomicU64::new(0),
            limit: AtomicU64::new(0),
        }
    }

    /// Announces a producer of event `seq`: one more writer; the first of a busy spell clears
    /// [`TORN`], a later one sets it. False, and nothing changed, when a newer event was written
    /// here already: then this one counts as overwritten (the reader sees that from the label).
    fn begin(&self, seq: u64) -> bool {
        let announced = self.state.fetch_update(Relaxed, Relaxed, |cur| {
            if cur >> LABEL_SHIFT > seq + 1 {
                return None;
            }
            let torn = if cur & WRITERS == 0 { 0 } else { TORN };
            Some((cur & !(WRITERS | TORN)) | torn | ((cur & WRITERS) + 1))
        });
        // The announcement comes before the fields for any reader that sees a field (the reader
        // checks the state again after its reads).
        fence(Release);
        announced.is_ok()
    }

    /// Writes the event's fields (after [`begin`](Self::begin)).
    fn write(&self, e: &PressureEvent) {
        let scope = match e.scope {
            Scope::Process => 0u64,
            Scope::Component(c) => c.index() as u64 + 1,
        };
        let kind = match e.kind {
            EventKind::Warning => 0u64,
            EventKind::Critical => 1,
            EventKind::Recovery => 2,
        };
        self.head.store(
            scope | kind << 16 | (e.previous as u64) << 24 | (e.level as u64) << 32,
            Relaxed,
        );
        self.charged.store(e.charged_bytes, Relaxed);
        self.limit.store(e.limit_bytes, Relaxed);
    }

    /// Leaves after writing event `seq`: one writer fewer, and the label is the newest event
    /// written here. Release: a reader that sees the label sees the fields.
    fn finish(&self, seq: u64) {
        let _ = self.state.fetch_update(Release, Relaxed, |cur| {
            let label = (cur >> LABEL_SHIFT).max(seq + 1);
            Some(label << LABEL_SHIFT | (cur & TORN) | ((cur & WRITERS) - 1))
        });
    }

    /// The event in the slot's fields.
    fn read(&self) -> PressureEvent {
        let head = self.head.load(Relaxed);
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
            charged_bytes: self.charged.load(Relaxed),
            limit_bytes: self.limit.load(Relaxed),
        }
    }
}

/// A bounded multi-producer, single-consumer ring of pressure events.
pub(crate) struct EventRing {
    slots: [Slot; RING],
    /// Events pushed so far (the next one's sequence number).
    next: AtomicU64,
    /// Events lost: overwritten before they were read, or written by two producers at once.
    dropped: AtomicU64,
}

impl EventRing {
    pub(crate) const fn new() -> EventRing {
        EventRing {
            slots: [const { Slot::new() }; RING],
            next: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq % RING as u64) as usize]
    }

    /// Adds an event. Lock-free and allocation-free: producers run inside the allocator.
    pub(crate) fn push(&self, e: PressureEvent) {
        let seq = self.next.fetch_add(1, Relaxed);
        let slot = self.slot(seq);
        if slot.begin(seq) {
            slot.write(&e);
            slot.finish(seq);
        }
    }

    /// Takes the events after `cursor` (one consumer only), in order. Events overwritten before
    /// or while they were read, and events whose slot two producers wrote at once, are counted
    /// in [`dropped`](Self::dropped); every event handed to `f` is whole.
    pub(crate) fn drain(&self, cursor: &mut u64, mut f: impl FnMut(PressureEvent)) {
        let end = self.next.load(Acquire);
        if end.saturating_sub(*cursor) > RING as u64 {
            self.dropped.fetch_add(end - *cursor - RING as u64, Relaxed);
            *cursor = end - RING as u64;
        }
        while *cursor < end {
            let slot = self.slot(*cursor);
            let state = slot.state.load(Acquire);
            let label = state >> LABEL_SHIFT;
            if state & WRITERS != 0 || label < *cursor + 1 {
                // Being written, or not yet (a producer between its number and its stores): next
                // time.
                break;
            }
            *cursor += 1;
            if label != *cursor || state & TORN != 0 {
                // Overwritten by an event 256 later, or mixed with one.
                self.dropped.fetch_add(1, Relaxed);
                continue;
            }
            let event = slot.read();
            // A producer 256 events later may have begun on the slot while it was read: then the
            // state has changed (its writer count), and this event is lost.
            fence(Acquire);
            if slot.state.load(Relaxed) != state {
                self.dropped.fetch_add(1, Relaxed);
                continue;
            }
            f(event);
        }
    }

    /// Events lost so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let first = ring.next.fetch_add(1, Relaxed);
        let slot = ring.slot(first);
        assert!(slot.begin(first));
        slot.head.store(0, Relaxed); // stalled here, part-way through its stores
        for x in 1..RING as u64 {
            ring.push(event(1000 + x));
        }
        let mut cursor = 0;
        // The reader sees the first slot still being written and waits.
        assert!(drain_all(&ring, &mut cursor).is_empty());
        ring.push(event(7)); // event 256: the same slot as event 0
                             // The stalled producer goes on with the rest of its stores: the slot now holds event
                             // 256's head with event 0's bytes.
        slot.charged.store(5, Relaxed);
        slot.limit.store(5, Relaxed);
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
        let first = ring.next.fetch_add(1, Relaxed); // stalled before `begin`
        for x in 1..=RING as u64 {
            ring.push(event(1000 + x));
        }
        // It goes on as `push` would.
        let slot = ring.slot(first);
        if slot.begin(first) {
            slot.write(&event(5));
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
}
