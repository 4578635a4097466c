//! Stress: 8 threads make over 10 million allocations, frees and reallocs across 64 components,
//! handing batches of live blocks to each other over channels so that a large share of blocks is
//! freed (or reallocated) by a thread other than the one that allocated them, while another thread
//! purges jemalloc's arenas (and so the shadow tables) over and over. Afterwards every
//! component is back to its baseline, its counts match what the threads did exactly, and the
//! process-wide figures equal the sum over components.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::ComponentId;
use serial_test::serial;
use std::alloc::{alloc, dealloc, realloc, Layout};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Instant;

const THREADS: usize = 8;
const COMPONENTS: usize = 64;
const OPS_PER_THREAD: u64 = 1_300_000;
/// Blocks per hand-off.
const BATCH: usize = 64;
/// Blocks a thread holds at most.
const HELD: usize = 512;
const ALIGN: usize = 8;

/// A live block: where it is, how big, and which component the model says owns it.
struct Blk {
    ptr: *mut u8,
    size: usize,
    owner: usize,
    /// The thread that allocated it.
    thread: usize,
}

// SAFETY: a Blk is a uniquely owned heap allocation; any thread may free it.
unsafe impl Send for Blk {}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).unwrap()
}

/// What one thread did, per component.
struct Tally {
    allocs: [u64; COMPONENTS],
    frees: [u64; COMPONENTS],
    reallocs: [u64; COMPONENTS],
    ops: u64,
    /// Frees of blocks another thread allocated.
    foreign_frees: u64,
}

struct Worker {
    thread: usize,
    ids: Vec<ComponentId>,
    rng: u64,
    held: Vec<Blk>,
    tally: Tally,
}

impl Worker {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn random_scope(&mut self) -> memgov::ScopeGuard {
        let c = self.next() as usize % COMPONENTS;
        memgov::try_enter(self.ids[c]).unwrap()
    }

    fn alloc(&mut self) {
        let r = self.next();
        let owner = (r >> 8) as usize % COMPONENTS;
        let size = 1 + (r >> 20) as usize % 128;
        let ptr = {
            let _scope = memgov::try_enter(self.ids[owner]).unwrap();
            // SAFETY: non-zero size.
            unsafe { alloc(layout(size)) }
        };
        assert!(!ptr.is_null());
        let thread = self.thread;
        self.held.push(Blk {
            ptr,
            size,
            owner,
            thread,
        });
        self.tally.allocs[owner] += 1;
        self.tally.ops += 1;
    }

    /// Frees `blk` inside a random scope, which must not matter.
    fn free(&mut self, blk: Blk) {
        let _scope = self.random_scope();
        // SAFETY: `blk` is live with this layout.
        unsafe { dealloc(blk.ptr, layout(blk.size)) };
        self.tally.frees[blk.owner] += 1;
        self.tally.foreign_frees += u64::from(blk.thread != self.thread);
        self.tally.ops += 1;
    }

    fn realloc(&mut self, i: usize) {
        let new_size = 1 + (self.next() >> 20) as usize % 256;
        let _scope = self.random_scope();
        let blk = &mut self.held[i];
        // SAFETY: `blk` is live with this layout; the new size is non-zero.
        let ptr = unsafe { realloc(blk.ptr, layout(blk.size), new_size) };
        assert!(!ptr.is_null());
        (blk.ptr, blk.size) = (ptr, new_size);
        self.tally.reallocs[blk.owner] += 1;
        self.tally.ops += 1;
    }

    fn run(mut self, to_next: Sender<Vec<Blk>>, from_prev: Receiver<Vec<Blk>>) -> Tally {
        let mut step = 0u64;
        while self.tally.ops < OPS_PER_THREAD {
            step += 1;
            if step % 48 == 0 {
                // Take what the previous thread handed over: free half, keep half.
                while let Ok(batch) = from_prev.try_recv() {
                    for (k, blk) in batch.into_iter().enumerate() {
                        if k % 2 == 0 && self.held.len() < HELD {
                            self.held.push(blk);
                        } else {
                            self.free(blk);
                        }
                    }
                }
                // And hand a batch on to the next thread (the Vec is made outside any scope).
                if self.held.len() >= BATCH {
                    let at = self.held.len() - BATCH;
                    to_next.send(self.held.split_off(at)).unwrap();
                }
            }
            let r = self.next() % 8;
            if self.held.len() < 16 || (r < 4 && self.held.len() < HELD) {
                self.alloc();
            } else if r < 5 {
                let i = self.next() as usize % self.held.len();
                self.realloc(i);
            } else {
                let i = self.next() as usize % self.held.len();
                let blk = self.held.swap_remove(i);
                self.free(blk);
            }
        }
        while let Some(blk) = self.held.pop() {
            self.free(blk);
        }
        drop(to_next);
        for batch in from_prev {
            for blk in batch {
                self.free(blk);
            }
        }
        self.tally
    }
}

/// Purges every jemalloc arena, which gives back the shadow-table pages of what it purges; nothing
/// over the system allocator (no tables there).
fn purge_arenas() {
    #[cfg(feature = "jemalloc")]
    memgov::jemalloc::compact().unwrap();
}

#[test]
#[serial]
fn eight_threads_ten_million_ops_sixty_four_components() {
    let ids: Vec<ComponentId> = (0..COMPONENTS)
        .map(|i| memgov::component(Box::leak(format!("stress-{i:02}").into_boxed_str())))
        .collect();
    let before: Vec<_> = ids.iter().map(|id| id.stats()).collect();
    for s in &before {
        assert_eq!(
            (s.live_bytes, s.alloc_count, s.free_count),
            (0, 0, 0),
            "{s:?}"
        );
    }

    let start = Instant::now();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| channel()).unzip();
    let mut receivers: Vec<Option<Receiver<Vec<Blk>>>> = receivers.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let worker = Worker {
                thread: t,
                ids: ids.clone(),
                rng: 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
                held: Vec::with_capacity(HELD + BATCH),
                tally: Tally {
                    allocs: [0; COMPONENTS],
                    frees: [0; COMPONENTS],
                    reallocs: [0; COMPONENTS],
                    ops: 0,
                    foreign_frees: 0,
                },
            };
            // Thread t sends to t + 1 and receives from t - 1.
            let to_next = senders[(t + 1) % THREADS].clone();
            let from_prev = receivers[t].take().unwrap();
            std::thread::spawn(move || worker.run(to_next, from_prev))
        })
        .collect();
    drop(senders);
    // Meanwhile jemalloc purges every arena over and over, so the shadow tables give pages back
    // while blocks whose tags live there are allocated, handed over and freed (a tag released
    // while its block lived would credit the free to component 0 and leave a component above
    // its baseline below).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut compactions = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                purge_arenas();
                compactions += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            compactions
        })
    };
    let tallies: Vec<Tally> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let compactions = compactor.join().unwrap();
    assert!(compactions > 0);

    let ops: u64 = tallies.iter().map(|t| t.ops).sum();
    let foreign: u64 = tallies.iter().map(|t| t.foreign_frees).sum();
    println!(
        "{ops} operations ({foreign} cross-thread frees) on {THREADS} threads in {elapsed:?}, \
         {compactions} compactions, {} shadow-table bytes released",
        memgov::global_stats().shadow_released_bytes
    );
    assert!(ops >= 10_000_000, "{ops}");
    assert!(foreign > 100_000, "{foreign}");

    for (c, id) in ids.iter().enumerate() {
        let allocs: u64 = tallies.iter().map(|t| t.allocs[c]).sum();
        let frees: u64 = tallies.iter().map(|t| t.frees[c]).sum();
        let reallocs: u64 = tallies.iter().map(|t| t.reallocs[c]).sum();
        assert_eq!(allocs, frees);
        let s = id.stats();
        let b = &before[c];
        assert_eq!(s.live_bytes, 0, "{s:?}");
        assert_eq!(s.alloc_count, s.free_count, "{s:?}");
        assert_eq!(s.alloc_count - b.alloc_count, allocs, "{s:?}");
        assert_eq!(s.realloc_count - b.realloc_count, reallocs, "{s:?}");
        assert_eq!(s.live_inner_bytes, 0, "{s:?}");
        assert_eq!(s.total_allocated_bytes, s.total_freed_bytes, "{s:?}");
    }

    // Quiet now: the process-wide figures are the sum over components.
    let snap = memgov::snapshot();
    let live: u64 = snap.components.iter().map(|c| c.live_bytes).sum();
    let allocs: u64 = snap.components.iter().map(|c| c.alloc_count).sum();
    let frees: u64 = snap.components.iter().map(|c| c.free_count).sum();
    let reallocs: u64 = snap.components.iter().map(|c| c.realloc_count).sum();
    let inner: u64 = snap.components.iter().map(|c| c.live_inner_bytes).sum();
    let g = &snap.global;
    assert_eq!(g.live_bytes, live, "{snap}");
    assert_eq!(g.live_inner_bytes, inner, "{snap}");
    assert_eq!(
        (g.alloc_count, g.free_count, g.realloc_count),
        (allocs, frees, reallocs)
    );
    assert_eq!(g.corrupt_tags, 0);
}
