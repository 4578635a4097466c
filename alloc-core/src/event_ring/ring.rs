//! The ring's protocol: a bounded multi-producer, single-consumer ring of fixed-size payloads,
//! lock-free and allocation-free, that drops and counts what it cannot deliver whole (see the
//! [parent module](super) for what it carries and why).
//!
//! This file is compiled twice: in the crate, against std's atomics, and in
//! `alloc-core/tests/loom_event_ring.rs`, against loom's, which model-checks it. So it names
//! nothing of the crate: it takes the atomic type and `fence` from `super::sync`, and leaves the
//! constructors to its parent (the crate's ring is a static, which needs a `const` constructor,
//! and loom's atomics have none), so the fields they need are visible there.
//!
//! Each slot is a sequence lock that counts its writers. A producer takes a sequence number,
//! announces itself on its slot (one more writer), writes the payload, and leaves (one writer
//! fewer, the slot labelled with its number). The reader takes a slot's payload only when no one
//! is writing it, its label is the payload's number, and nothing changed while the payload was
//! read. Two producers `N` events apart can meet on one slot when one stalls in the middle of
//! its stores while the ring goes round: the second marks the slot torn and the reader skips
//! both events. A producer that stalled so long that a newer event was already written to its
//! slot writes nothing.

use super::sync::{fence, AtomicU64};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Words of payload in one event.
pub(crate) const WORDS: usize = 3;

/// What one event carries: its words are written by one producer, and read together or not at
/// all.
pub(crate) type Payload = [u64; WORDS];

/// The producers writing a slot now (low bits of [`Slot::state`]).
const WRITERS: u64 = 0xffff;
/// Set when two producers wrote a slot at once: the payload may mix both events, so neither is
/// read. Cleared by the next producer that finds the slot idle.
const TORN: u64 = 1 << 16;
/// Where the sequence label starts in [`Slot::state`].
const LABEL_SHIFT: u32 = 17;

/// One event's place in the ring: a sequence lock that counts its writers.
pub(crate) struct Slot {
    /// Packed: [`WRITERS`] in progress, the [`TORN`] bit, and from [`LABEL_SHIFT`] up the
    /// highest sequence number + 1 written into the slot (0 = never written).
    pub(super) state: AtomicU64,
    /// The event's words.
    pub(super) payload: [AtomicU64; WORDS],
}

impl Slot {
    /// Announces a producer of event `seq`: one more writer; the first of a busy spell clears
    /// [`TORN`], a later one sets it. False, and nothing changed, when a newer event was written
    /// here already: then this one counts as overwritten (the reader sees that from the label).
    ///
    /// Acquire: the payload stores of every producer that left the slot before come before this
    /// one's. Without it, nothing orders one producer's stores to a word before the next one's,
    /// and the word may end holding the older value; a reader that then sees the newer label
    /// takes the older event for the newer one (the model check found this: event 0's payload
    /// delivered as event 2 in a ring of two slots).
    pub(super) fn begin(&self, seq: u64) -> bool {
        let announced = self.state.fetch_update(Acquire, Relaxed, |cur| {
            if cur >> LABEL_SHIFT > seq + 1 {
                return None;
            }
            let torn = if cur & WRITERS == 0 { 0 } else { TORN };
            Some((cur & !(WRITERS | TORN)) | torn | ((cur & WRITERS) + 1))
        });
        // The announcement comes before the payload for any reader that sees a word of it (the
        // reader checks the state again after its reads).
        fence(Release);
        announced.is_ok()
    }

    /// Writes the event's payload (after [`begin`](Self::begin)).
    pub(super) fn write(&self, payload: Payload) {
        for (word, value) in self.payload.iter().zip(payload) {
            word.store(value, Relaxed);
        }
    }

    /// Leaves after writing event `seq`: one writer fewer, and the label is the newest event
    /// written here. Release: a reader that sees the label sees the payload.
    pub(super) fn finish(&self, seq: u64) {
        let _ = self.state.fetch_update(Release, Relaxed, |cur| {
            let label = (cur >> LABEL_SHIFT).max(seq + 1);
            Some(label << LABEL_SHIFT | (cur & TORN) | ((cur & WRITERS) - 1))
        });
    }

    /// The payload as it is now (whole only if the state did not change meanwhile).
    fn read(&self) -> Payload {
        self.payload.each_ref().map(|word| word.load(Relaxed))
    }
}

/// A bounded multi-producer, single-consumer ring of `N` slots.
pub(crate) struct Ring<const N: usize> {
    /// The slots; event `seq` goes to slot `seq % N`.
    pub(super) slots: [Slot; N],
    /// Events pushed so far (the next one's sequence number).
    pub(super) next: AtomicU64,
    /// Events lost: overwritten before they were read, or written by two producers at once.
    pub(super) dropped: AtomicU64,
}

impl<const N: usize> Ring<N> {
    /// The slot of event `seq`.
    pub(super) fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq % N as u64) as usize]
    }

    /// Adds an event; returns its sequence number. Lock-free and allocation-free: producers run
    /// inside the allocator.
    pub(crate) fn push(&self, payload: Payload) -> u64 {
        let seq = self.next.fetch_add(1, Relaxed);
        let slot = self.slot(seq);
        if slot.begin(seq) {
            slot.write(payload);
            slot.finish(seq);
        }
        seq
    }

    /// Takes the events after `cursor` (one consumer only), in order, handing `f` each one's
    /// sequence number and payload. Events overwritten before or while they were read, and
    /// events whose slot two producers wrote at once, are counted in
    /// [`dropped`](Self::dropped); every payload handed to `f` is whole.
    pub(crate) fn drain(&self, cursor: &mut u64, mut f: impl FnMut(u64, Payload)) {
        let end = self.next.load(Acquire);
        if end.saturating_sub(*cursor) > N as u64 {
            self.dropped.fetch_add(end - *cursor - N as u64, Relaxed);
            *cursor = end - N as u64;
        }
        while *cursor < end {
            let seq = *cursor;
            let slot = self.slot(seq);
            let state = slot.state.load(Acquire);
            let label = state >> LABEL_SHIFT;
            if state & WRITERS != 0 || label < seq + 1 {
                // Being written, or not yet (a producer between its number and its stores): next
                // time.
                break;
            }
            *cursor += 1;
            if label != seq + 1 || state & TORN != 0 {
                // Overwritten by an event `N` later, or mixed with one.
                self.dropped.fetch_add(1, Relaxed);
                continue;
            }
            let payload = slot.read();
            // A producer `N` events later may have begun on the slot while it was read: then
            // the state has changed (its writer count), and this event is lost.
            fence(Acquire);
            if slot.state.load(Relaxed) != state {
                self.dropped.fetch_add(1, Relaxed);
                continue;
            }
            f(seq, payload);
        }
    }

    /// Events lost so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// The sequence number the next event will get: a consumer that starts here reads only
    /// events pushed from now on.
    #[allow(dead_code)] // used by the crate, not by the model check
    pub(crate) fn head(&self) -> u64 {
        self.next.load(Acquire)
    }

    /// In a forked child, where only the forking thread lives on: a producer that had taken its
    /// sequence number at the fork and not yet left its slot is gone, and the consumer would wait
    /// at that event for ever (and later producers on the slot would find it busy). Each such
    /// event's slot is labelled with it, marked [`TORN`] (its payload may be half-written, so the
    /// consumer counts it as dropped) and left with no writer. Atomic loads and stores only
    /// (async-signal-safe), and only sound with no other thread running.
    #[allow(dead_code)] // used by the crate, not by the model check
    pub(crate) fn forget_writers(&self) {
        let next = self.next.load(Relaxed);
        for seq in next.saturating_sub(N as u64)..next {
            let slot = self.slot(seq);
            let state = slot.state.load(Relaxed);
            let label = (state >> LABEL_SHIFT).max(seq + 1);
            if state & WRITERS != 0 || state >> LABEL_SHIFT < seq + 1 {
                slot.state.store(label << LABEL_SHIFT | TORN, Release);
            }
        }
    }
}
