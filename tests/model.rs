//! Model test: random sequences of allocations, reallocs, frees and scope changes run on four
//! threads at once (blocks change hands through a shared pool), then every component's figures
//! are compared, exactly, with a simple model that credits each block to the component that was
//! current when it was allocated.
//!
//! Blocks are made with `std::alloc::{alloc, realloc, dealloc}` and explicit layouts so every byte
//! count is known. Zero-size requests go to `GLOBAL` directly, since `std::alloc::alloc` forbids
//! them by contract (the governor itself accepts them).

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{ComponentId, ScopeGuard};
use proptest::prelude::*;
use proptest::sample::Index;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

const NAMES: [&str; 6] = [
    "model-0", "model-1", "model-2", "model-3", "model-4", "model-5",
];
/// The model's slot for blocks allocated outside every scope (not compared: "unscoped" is shared
/// with everything else the process does).
const UNSCOPED: usize = NAMES.len();
/// Component the main thread frees leftovers in; it must never be credited with anything.
const CLEANUP: &str = "model-cleanup";
const THREADS: usize = 4;
const MAX_OPS: usize = 300;
const ALIGNS: [usize; 5] = [1, 8, 16, 64, 4096];

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align: usize,
    },
    Realloc {
        which: Index,
        size: usize,
    },
    Free {
        which: Index,
    },
    Enter {
        comp: usize,
    },
    /// Drops the innermost guard this thread holds.
    Exit,
    /// Drops some guard this thread holds, out of order.
    ExitAny {
        which: Index,
    },
    /// Moves a block into the shared pool.
    Give {
        which: Index,
    },
    /// Takes the most recently given block out of the shared pool.
    Take,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5000usize, prop::sample::select(&ALIGNS[..]))
            .prop_map(|(size, align)| Op::Alloc { size, align }),
        2 => (any::<Index>(), 0..5000usize).prop_map(|(which, size)| Op::Realloc { which, size }),
        3 => any::<Index>().prop_map(|which| Op::Free { which }),
        2 => (0..NAMES.len()).prop_map(|comp| Op::Enter { comp }),
        1 => Just(Op::Exit),
        1 => any::<Index>().prop_map(|which| Op::ExitAny { which }),
        2 => any::<Index>().prop_map(|which| Op::Give { which }),
        2 => Just(Op::Take),
    ]
}

/// A live block and the model's idea of who owns it.
#[derive(Debug)]
struct Block {
    ptr: *mut u8,
    layout: Layout,
    /// Index into `NAMES`, or `UNSCOPED`.
    owner: usize,
}

// SAFETY: a Block is a uniquely owned heap allocation; any thread may free it.
unsafe impl Send for Block {}

impl Block {
    /// Fills the block with a byte that identifies its size, so reallocs can be checked.
    fn fill(&self) {
        // SAFETY: the block has `layout.size()` writable bytes.
        unsafe {
            self.ptr
                .write_bytes(self.layout.size() as u8, self.layout.size())
        }
    }

    /// Checks the alignment, and that the first `len` bytes still hold `want`.
    fn check(&self, len: usize, want: u8) {
        // SAFETY: the block has at least `len <= layout.size()` initialised bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, len) };
        assert!(
            bytes.iter().all(|&b| b == want),
            "block contents damaged: {self:?}"
        );
        assert_eq!(
            self.ptr as usize % self.layout.align(),
            0,
            "misaligned: {self:?}"
        );
    }
}

fn raw_alloc(layout: Layout) -> *mut u8 {
    // SAFETY: non-zero sizes satisfy `alloc`'s contract; zero sizes go to the governor, which
    // accepts them.
    let ptr = unsafe {
        if layout.size() == 0 {
            GLOBAL.alloc(layout)
        } else {
            std::alloc::alloc(layout)
        }
    };
    assert!(!ptr.is_null());
    ptr
}

fn raw_realloc(block: &Block, size: usize) -> *mut u8 {
    // SAFETY: the block is live with its layout; zero sizes go to the governor directly.
    let ptr = unsafe {
        if size == 0 {
            GLOBAL.realloc(block.ptr, block.layout, 0)
        } else {
            std::alloc::realloc(block.ptr, block.layout, size)
        }
    };
    assert!(!ptr.is_null());
    ptr
}

fn raw_free(block: Block) {
    block.check(block.layout.size(), block.layout.size() as u8);
    // SAFETY: the block is live with its layout.
    unsafe { std::alloc::dealloc(block.ptr, block.layout) }
}

/// Expected changes of one component's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    live: i64,
    allocs: u64,
    frees: u64,
    reallocs: u64,
    allocated: u64,
}

type Model = [Counts; NAMES.len() + 1];

/// Runs one thread's ops; returns the blocks it still holds and its part of the model.
fn run_thread(ops: &[Op], ids: &[ComponentId], pool: &Mutex<Vec<Block>>) -> (Vec<Block>, Model) {
    // Everything the thread itself needs is allocated up front, outside every scope, so the
    // only allocations made inside scopes are the ops' own blocks.
    let mut mine: Vec<Block> = Vec::with_capacity(MAX_OPS * THREADS);
    let mut guards: Vec<(ScopeGuard, usize)> = Vec::with_capacity(MAX_OPS);
    let mut model = Model::default();

    for op in ops {
        let current = guards.last().map_or(UNSCOPED, |&(_, comp)| comp);
        match op {
            &Op::Alloc { size, align } => {
                let layout = Layout::from_size_align(size, align).unwrap();
                let block = Block {
                    ptr: raw_alloc(layout),
                    layout,
                    owner: current,
                };
                block.fill();
                let m = &mut model[current];
                m.live += size as i64;
                m.allocs += 1;
                m.allocated += size as u64;
                mine.push(block);
            }
            Op::Realloc { which, size } if !mine.is_empty() => {
                let i = which.index(mine.len());
                let block = &mut mine[i];
                let old = block.layout.size();
                let ptr = raw_realloc(block, *size);
                block.ptr = ptr;
                block.layout = Layout::from_size_align(*size, block.layout.align()).unwrap();
                block.check(old.min(*size), old as u8);
                block.fill();
                let m = &mut model[block.owner];
                m.live += *size as i64 - old as i64;
                m.reallocs += 1;
                m.allocated += size.saturating_sub(old) as u64;
            }
            Op::Free { which } if !mine.is_empty() => {
                let block = mine.swap_remove(which.index(mine.len()));
                let m = &mut model[block.owner];
                m.live -= block.layout.size() as i64;
                m.frees += 1;
                raw_free(block);
            }
            &Op::Enter { comp } => {
                if let Ok(guard) = memgov::try_enter(ids[comp]) {
                    guards.push((guard, comp));
                }
            }
            Op::Exit => {
                guards.pop();
            }
            Op::ExitAny { which } if !guards.is_empty() => {
                drop(guards.remove(which.index(guards.len())));
            }
            Op::Give { which } if !mine.is_empty() => {
                let block = mine.swap_remove(which.index(mine.len()));
                pool.lock().unwrap().push(block);
            }
            Op::Take => {
                if let Some(block) = pool.lock().unwrap().pop() {
                    mine.push(block);
                }
            }
            _ => {}
        }
        let now = guards
            .last()
            .map_or(ComponentId::UNSCOPED, |&(_, comp)| ids[comp]);
        assert_eq!(memgov::current_component(), now);
    }
    drop(guards);
    assert_eq!(memgov::scope_depth(), 0);
    (mine, model)
}

/// `Counts` read from the governor for each compared component.
fn read(ids: &[ComponentId]) -> Vec<Counts> {
    ids.iter()
        .map(|id| {
            let s = id.stats();
            Counts {
                live: s.live_bytes as i64,
                allocs: s.alloc_count,
                frees: s.free_count,
                reallocs: s.realloc_count,
                allocated: s.total_allocated_bytes,
            }
        })
        .collect()
}

fn diff(after: &[Counts], before: &[Counts]) -> Vec<Counts> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| Counts {
            live: a.live - b.live,
            allocs: a.allocs - b.allocs,
            frees: a.frees - b.frees,
            reallocs: a.reallocs - b.reallocs,
            allocated: a.allocated - b.allocated,
        })
        .collect()
}

fn check_case(threads: [Vec<Op>; THREADS]) {
    let ids: Vec<ComponentId> = NAMES.iter().map(|&n| memgov::component(n)).collect();
    let cleanup = memgov::component(CLEANUP);
    let before = read(&ids);
    let cleanup_before = cleanup.stats();
    let pool = Mutex::new(Vec::with_capacity(MAX_OPS * THREADS));

    let results: Vec<(Vec<Block>, Model)> = std::thread::scope(|s| {
        let handles: Vec<_> = threads
            .iter()
            .map(|ops| s.spawn(|| run_thread(ops, &ids, &pool)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut model = Model::default();
    for (_, m) in &results {
        for (total, part) in model.iter_mut().zip(m) {
            total.live += part.live;
            total.allocs += part.allocs;
            total.frees += part.frees;
            total.reallocs += part.reallocs;
            total.allocated += part.allocated;
        }
    }
    // Quiesced with blocks still live: exact.
    assert_eq!(
        diff(&read(&ids), &before),
        model[..NAMES.len()],
        "with blocks live"
    );

    // The main thread frees the leftovers inside a scope of its own.
    let mut leftovers: Vec<Block> = results.into_iter().flat_map(|(b, _)| b).collect();
    leftovers.append(&mut pool.into_inner().unwrap());
    {
        let _cleanup = memgov::try_enter(cleanup).unwrap();
        for block in leftovers.drain(..) {
            let m = &mut model[block.owner];
            m.live -= block.layout.size() as i64;
            m.frees += 1;
            raw_free(block);
        }
    }
    let after = diff(&read(&ids), &before);
    assert_eq!(after, model[..NAMES.len()], "after freeing everything");
    assert!(after.iter().all(|c| c.live == 0 && c.allocs == c.frees));
    let c = cleanup.stats();
    assert_eq!(
        (c.alloc_count, c.free_count, c.realloc_count, c.live_bytes),
        (
            cleanup_before.alloc_count,
            cleanup_before.free_count,
            cleanup_before.realloc_count,
            0
        )
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn figures_match_the_model(
        threads in prop::array::uniform4(prop::collection::vec(op(), 0..MAX_OPS))
    ) {
        check_case(threads);
    }
}
