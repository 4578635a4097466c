//! What jemalloc's own entry points cost, before any wrapper does any work: the `malloc` +
//! `sdallocx` pair that tikv-jemallocator (and so raw jemalloc in `alloc_pair`) calls for ordinary
//! layouts, against the `mallocx` calls a design with per-component arenas would have to make.
//!
//! A design that gives each component its own jemalloc arena (so a free finds its component from
//! the address, with no tag) must pass the arena on every allocation, and an explicit thread cache
//! too: the automatic one hands out cached blocks of any arena. This bench measures those calls
//! with nothing around them.
//!
//! `cargo bench --bench jemalloc_entry_points`; `benches/README.md` has the figures.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::os::raw::{c_int, c_void};
use std::time::Duration;
use tikv_jemalloc_sys as sys;

/// One way of calling jemalloc: the flags passed to `mallocx` (`None`: plain `malloc`) and to
/// `sdallocx`.
#[derive(Clone, Copy)]
struct EntryPoint {
    name: &'static str,
    alloc_flags: Option<c_int>,
    free_flags: c_int,
}

/// A fresh index from one of jemalloc's `*.create` controls (`arenas.create`, `tcache.create`).
fn create(control: &[u8]) -> usize {
    // SAFETY: both controls named here read as `unsigned` and create the object as a side effect.
    let index: u32 = unsafe { tikv_jemalloc_ctl::raw::read(control) }
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(control)));
    index as usize
}

fn entry_points() -> [EntryPoint; 6] {
    let arena = sys::MALLOCX_ARENA(create(b"arenas.create\0"));
    let tcache = sys::MALLOCX_TCACHE(create(b"tcache.create\0"));
    let arena_tcache = sys::MALLOCX_TCACHE(create(b"tcache.create\0"));
    [
        EntryPoint {
            name: "malloc",
            alloc_flags: None,
            free_flags: 0,
        },
        EntryPoint {
            name: "mallocx-no-flags",
            alloc_flags: Some(0),
            free_flags: 0,
        },
        EntryPoint {
            name: "mallocx-arena-automatic-tcache",
            alloc_flags: Some(arena),
            free_flags: 0,
        },
        EntryPoint {
            name: "mallocx-explicit-tcache",
            alloc_flags: Some(tcache),
            free_flags: tcache,
        },
        EntryPoint {
            name: "mallocx-arena-explicit-tcache",
            alloc_flags: Some(arena | arena_tcache),
            free_flags: arena_tcache,
        },
        EntryPoint {
            name: "mallocx-arena-no-tcache",
            alloc_flags: Some(arena | sys::MALLOCX_TCACHE_NONE),
            free_flags: sys::MALLOCX_TCACHE_NONE,
        },
    ]
}

fn pair(entry: EntryPoint, size: usize) {
    // SAFETY: the size is non-zero, the flags name an arena and thread caches created above and
    // never destroyed, and the block is freed once, with the size it was asked for.
    unsafe {
        let block: *mut c_void = match entry.alloc_flags {
            None => sys::malloc(black_box(size)),
            Some(flags) => sys::mallocx(black_box(size), flags),
        };
        assert!(!block.is_null());
        sys::sdallocx(black_box(block), size, entry.free_flags);
    }
}

fn pairs(c: &mut Criterion) {
    let entries = entry_points();
    for size in [16usize, 64, 4096] {
        let mut g = c.benchmark_group(format!("entry-pair-{size}B"));
        for entry in entries {
            g.bench_function(entry.name, |b| b.iter(|| pair(entry, size)));
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = pairs
}
criterion_main!(benches);
