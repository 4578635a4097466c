//! A property test of `BoundedQueue` against a model: random sequences of pushes (some too heavy
//! to fit), non-waiting pushes, pops, drains and a close, on a weighted queue of each overflow
//! policy, checked after every operation against a `VecDeque`. The values taken, the entries
//! held, the total weight and every counter must match exactly; the queue's storage must be freed
//! with it.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{BoundedQueue, Overflow, PushRefusal};
use proptest::prelude::*;
use std::collections::VecDeque;

const MAX_WEIGHT: u64 = 30;

#[derive(Clone, Debug)]
enum Op {
    /// `push` (which would wait on a full `Block` queue: the model pushes with a zero timeout
    /// there instead, and expects `TimedOut`).
    Push(u64),
    TryPush(u64),
    Pop,
    Drain(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..=MAX_WEIGHT + 3).prop_map(Op::Push),
        6 => (0..=MAX_WEIGHT + 3).prop_map(Op::TryPush),
        9 => Just(Op::Pop),
        3 => (0..5usize).prop_map(Op::Drain),
        1 => Just(Op::Close),
    ]
}

fn overflow() -> impl Strategy<Value = Overflow> {
    prop_oneof![
        Just(Overflow::DropOldest),
        Just(Overflow::Reject),
        Just(Overflow::Block)
    ]
}

/// The queue as a list, oldest first: (value, weight).
struct Model {
    capacity: usize,
    overflow: Overflow,
    entries: VecDeque<(u32, u64)>,
    closed: bool,
    pushed: u64,
    popped: u64,
    displaced: u64,
    refused: u64,
    peak: u64,
}

impl Model {
    fn weight(&self) -> u64 {
        self.entries.iter().map(|e| e.1).sum()
    }

    fn fits(&self, w: u64) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < self.capacity && self.weight() + w <= MAX_WEIGHT)
    }

    fn push(&mut self, value: u32, w: u64, waits: bool) -> Result<(), PushRefusal> {
        let refuse = |m: &mut Model, cause| {
            m.refused += 1;
            Err(cause)
        };
        if w > MAX_WEIGHT {
            return refuse(self, PushRefusal::TooHeavy);
        }
        if self.closed {
            return refuse(self, PushRefusal::Closed);
        }
        while !self.fits(w) {
            match (self.overflow, waits) {
                (Overflow::DropOldest, _) => {
                    self.entries.pop_front();
                    self.displaced += 1;
                }
                (Overflow::Block, true) => return refuse(self, PushRefusal::TimedOut),
                _ => return refuse(self, PushRefusal::Full),
            }
        }
        self.entries.push_back((value, w));
        self.pushed += 1;
        self.peak = self.peak.max(self.entries.len() as u64);
        Ok(())
    }
}

fn run(capacity: usize, overflow: Overflow, ops: &[Op]) -> Result<(), TestCaseError> {
    let queue = BoundedQueue::builder("queue-model")
        .capacity(capacity)
        .max_weight(MAX_WEIGHT)
        .weigher(|v: &(u32, u64)| v.1)
        .overflow(overflow)
        .build();
    let mut model = Model {
        capacity,
        overflow,
        entries: VecDeque::new(),
        closed: false,
        pushed: 0,
        popped: 0,
        displaced: 0,
        refused: 0,
        peak: 0,
    };
    for (i, op) in ops.iter().enumerate() {
        let value = i as u32;
        match *op {
            Op::Push(w) => {
                let got = if overflow == Overflow::Block {
                    queue.push_timeout((value, w), std::time::Duration::ZERO)
                } else {
                    queue.push((value, w))
                };
                let expected = model.push(value, w, true);
                prop_assert_eq!(got.map_err(|e| e.cause), expected, "{:?}", op);
            }
            Op::TryPush(w) => {
                let got = queue.try_push((value, w)).map_err(|e| e.cause);
                prop_assert_eq!(got, model.push(value, w, false), "{:?}", op);
            }
            Op::Pop => {
                let expected = model.entries.pop_front();
                model.popped += expected.is_some() as u64;
                prop_assert_eq!(queue.try_pop(), expected);
            }
            Op::Drain(n) => {
                let k = n.min(model.entries.len());
                let expected: Vec<_> = model.entries.drain(..k).collect();
                model.popped += k as u64;
                prop_assert_eq!(queue.drain(n), expected);
            }
            Op::Close => {
                queue.close();
                model.closed = true;
            }
        }
        let s = queue.stats();
        prop_assert_eq!(s.live_entries, model.entries.len() as u64);
        prop_assert_eq!(s.live_weight, model.weight());
        prop_assert_eq!(
            (
                s.total_pushed,
                s.total_popped,
                s.total_displaced,
                s.total_refused
            ),
            (model.pushed, model.popped, model.displaced, model.refused)
        );
        prop_assert_eq!((s.peak_entries, s.closed), (model.peak, model.closed));
        prop_assert!(s.live_entries <= capacity as u64);
    }
    drop(queue);
    memgov::flush_thread();
    let live = memgov::component_stats("queue-model").map_or(0, |s| s.live_bytes);
    prop_assert_eq!(live, 0, "the queue's storage is freed with it");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_queue_matches_its_model(
        capacity in 1usize..8,
        overflow in overflow(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(capacity, overflow, &ops)?;
    }
}
