//! Layouts through the governor's `GlobalAlloc` impl: zero-size requests (made on `GLOBAL`
//! directly, since `std::alloc::alloc` forbids them by contract), alignments from 1 to 64 KiB
//! (pointers aligned, accounting exact, the tag never touching the caller's bytes), blocks that
//! are exactly a size class (shadow tags over jemalloc) keeping their own tags, `alloc_zeroed`
//! really zeroed even when it reuses freed dirty memory, `realloc` preserving contents across
//! grows and shrinks, and requests that fail leaving the figures alone.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::{ComponentStats, TAG_BYTES};
use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, GlobalAlloc, Layout};
use std::hint::black_box;

fn stats(name: &'static str) -> ComponentStats {
    memgov::component(name).stats()
}

/// Powers of two from 1 to 4096.
fn aligns() -> impl Iterator<Item = usize> {
    (0..=12).map(|k| 1usize << k)
}

fn bytes<'a>(ptr: *mut u8, len: usize) -> &'a mut [u8] {
    // SAFETY: every caller passes a live block of at least `len` bytes it owns.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

fn pattern(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8
}

/// The tag bytes a block for `size` at `align` adds to its inner request, as the README's design
/// section describes: a 2-byte trailer, except over jemalloc for a request that is (within one byte)
/// exactly a size class of 16 bytes or more, which is tagged in the shadow table when that was
/// reserved.
fn tag_bytes(size: usize, align: usize) -> u64 {
    #[cfg(feature = "jemalloc")]
    {
        use memgov::SizeClasses;
        let slack = memgov::Jemalloc.slack(size, align);
        let shadow = memgov::global_stats().shadow_reserved_bytes > 0;
        if shadow && slack < TAG_BYTES && size + slack >= 16 {
            return 0;
        }
    }
    let _ = (size, align);
    TAG_BYTES as u64
}

#[test]
fn zero_size_layouts_are_real_blocks() {
    let name = "lay-zero";
    let mut blocks = Vec::with_capacity(64);
    {
        let _scope = memgov::component_scope(name);
        for align in aligns() {
            let layout = Layout::from_size_align(0, align).unwrap();
            // SAFETY: the governor accepts zero-size layouts (the inner request is TAG_BYTES).
            let (a, z) = unsafe { (GLOBAL.alloc(layout), GLOBAL.alloc_zeroed(layout)) };
            for p in [a, z] {
                assert!(!p.is_null(), "align {align}");
                assert_eq!(p as usize % align, 0, "align {align}");
                blocks.push((p, layout));
            }
        }
    }
    let n = blocks.len() as u64;
    let s = stats(name);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, n, 0),
        "{s:?}"
    );
    assert_eq!(s.live_inner_bytes, n * TAG_BYTES as u64, "{s:?}");

    // A zero-size block can grow and shrink back to nothing.
    let (p, layout) = blocks[5];
    // SAFETY: `p` is live with `layout`; the governor accepts a zero new size.
    unsafe {
        let grown = GLOBAL.realloc(p, layout, 10);
        assert!(!grown.is_null());
        bytes(grown, 10).fill(0xEE);
        assert_eq!(stats(name).live_bytes, 10);
        let shrunk = GLOBAL.realloc(
            grown,
            Layout::from_size_align(10, layout.align()).unwrap(),
            0,
        );
        assert!(!shrunk.is_null());
        assert_eq!(shrunk as usize % layout.align(), 0);
        blocks[5].0 = shrunk;
    }
    for (p, layout) in blocks.drain(..) {
        // SAFETY: live with this layout.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    let s = stats(name);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, n, n),
        "{s:?}"
    );
    assert_eq!((s.realloc_count, s.live_inner_bytes), (2, 0), "{s:?}");
    assert_eq!(
        (s.total_allocated_bytes, s.total_freed_bytes),
        (10, 10),
        "{s:?}"
    );
}

#[test]
fn every_alignment_up_to_64k_is_honoured_and_counted_exactly() {
    let name = "lay-align";
    let sizes = [
        1, 2, 3, 7, 8, 15, 16, 63, 64, 100, 4094, 4095, 4096, 4097, 100_000,
    ];
    let mut blocks = Vec::with_capacity(1000);
    let (mut live, mut inner) = (0u64, 0u64);
    for align in aligns().chain([8192, 65536]) {
        for &size in &sizes {
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = {
                let _scope = memgov::component_scope(name);
                // SAFETY: non-zero size.
                unsafe { alloc(layout) }
            };
            assert!(!p.is_null(), "{layout:?}");
            assert_eq!(p as usize % align, 0, "{layout:?}");
            // Every byte the caller asked for is the caller's: fill them all.
            let seed = blocks.len();
            for (i, b) in bytes(p, size).iter_mut().enumerate() {
                *b = pattern(seed, i);
            }
            blocks.push((p, layout));
            live += size as u64;
            inner += size as u64 + tag_bytes(size, align);
        }
    }
    let n = blocks.len() as u64;
    let s = stats(name);
    assert_eq!((s.live_bytes, s.live_inner_bytes), (live, inner), "{s:?}");
    assert_eq!((s.alloc_count, s.free_count), (n, 0), "{s:?}");

    // No block's tag landed in another block, and no fill damaged a tag.
    let corrupt_before = memgov::global_stats().corrupt_tags;
    for (seed, (p, layout)) in blocks.into_iter().enumerate() {
        let ok = bytes(p, layout.size())
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(seed, i));
        assert!(ok, "block {seed} {layout:?} was overwritten");
        // SAFETY: live with this layout.
        unsafe { dealloc(p, layout) };
    }
    let s = stats(name);
    assert_eq!((s.live_bytes, s.live_inner_bytes), (0, 0), "{s:?}");
    assert_eq!((s.alloc_count, s.free_count), (n, n), "{s:?}");
    assert_eq!(memgov::global_stats().corrupt_tags, corrupt_before);
}

/// jemalloc's size classes from 16 bytes to 4 MiB: multiples of 16 to 128, then four per doubling.
fn classes() -> Vec<usize> {
    let mut classes: Vec<usize> = (1..=8).map(|k| 16 * k).collect();
    let mut base = 128;
    while base < 4 << 20 {
        classes.extend((1..=4).map(|i| base + i * base / 4));
        base *= 2;
    }
    classes
}

#[test]
fn blocks_that_are_exactly_a_size_class_keep_their_own_tags() {
    // Every class, its size minus one (also tagged in the shadow over jemalloc), and a few
    // over-aligned classes, many live at once and interleaved between two components, then freed
    // on another thread: a tag shared or overwritten would move bytes between the components.
    let comps = ["lay-class-a", "lay-class-b"];
    let mut requests: Vec<Layout> = Vec::new();
    for class in classes() {
        let copies = if class <= 64 * 1024 { 16 } else { 2 };
        for size in [class, class - 1] {
            for _ in 0..copies {
                requests.push(Layout::from_size_align(size, 8).unwrap());
            }
        }
    }
    for (size, align) in [
        (64, 64),
        (4096, 4096),
        (8192, 64),
        (16384, 16384),
        (1 << 20, 4096),
    ] {
        for _ in 0..8 {
            requests.push(Layout::from_size_align(size, align).unwrap());
        }
    }

    let mut expected = [(0u64, 0u64, 0u64); 2]; // (live, inner, blocks)
    let mut blocks = Vec::with_capacity(requests.len());
    for (i, layout) in requests.into_iter().enumerate() {
        let c = i % 2;
        let p = {
            let _scope = memgov::component_scope(comps[c]);
            // SAFETY: non-zero size.
            unsafe { alloc(layout) }
        };
        assert!(!p.is_null(), "{layout:?}");
        assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
        // Fill every byte: a trailer or shadow entry inside another block would be overwritten.
        bytes(p, layout.size()).fill(0xA5);
        let e = &mut expected[c];
        e.0 += layout.size() as u64;
        e.1 += layout.size() as u64 + tag_bytes(layout.size(), layout.align());
        e.2 += 1;
        blocks.push((p as usize, layout));
    }
    for (c, name) in comps.iter().enumerate() {
        let s = stats(name);
        let (live, inner, n) = expected[c];
        assert_eq!((s.live_bytes, s.live_inner_bytes), (live, inner), "{s:?}");
        assert_eq!((s.alloc_count, s.free_count), (n, 0), "{s:?}");
    }

    let corrupt_before = memgov::global_stats().corrupt_tags;
    std::thread::spawn(move || {
        let _scope = memgov::component_scope("lay-class-freer");
        for (p, layout) in blocks {
            // SAFETY: live with this layout; allocated on the test thread.
            unsafe { dealloc(p as *mut u8, layout) };
        }
    })
    .join()
    .unwrap();
    for (c, name) in comps.iter().enumerate() {
        let s = stats(name);
        let n = expected[c].2;
        assert_eq!((s.live_bytes, s.live_inner_bytes), (0, 0), "{s:?}");
        assert_eq!((s.alloc_count, s.free_count), (n, n), "{s:?}");
    }
    let s = stats("lay-class-freer");
    assert_eq!((s.alloc_count, s.free_count), (0, 0), "{s:?}");
    assert_eq!(memgov::global_stats().corrupt_tags, corrupt_before);
}

#[cfg(feature = "jemalloc")]
#[test]
fn over_jemalloc_exact_classes_cost_no_tag_bytes() {
    let name = "lay-shadow";
    // A 4096-byte request is exactly a class; 4000 is not.
    let (exact, loose) = (
        Layout::from_size_align(4096, 8).unwrap(),
        Layout::from_size_align(4000, 8).unwrap(),
    );
    let (a, b) = {
        let _scope = memgov::component_scope(name);
        // black_box: in release builds LLVM may elide an allocation nobody observes.
        // SAFETY: non-zero sizes.
        unsafe { (black_box(alloc(exact)), black_box(alloc(loose))) }
    };
    let g = memgov::global_stats();
    let s = stats(name);
    if g.shadow_reserved_bytes > 0 {
        assert_eq!(s.live_inner_bytes, 4096 + 4000 + TAG_BYTES as u64, "{s:?}");
    } else {
        // The reservation failed (strict overcommit or an address-space limit): trailers only.
        assert_eq!(
            s.live_inner_bytes,
            4096 + 4000 + 2 * TAG_BYTES as u64,
            "{s:?}"
        );
    }
    // SAFETY: live with these layouts.
    unsafe {
        dealloc(a, exact);
        dealloc(b, loose);
    }
    assert_eq!(stats(name).live_inner_bytes, 0);
}

#[test]
fn alloc_zeroed_is_zeroed_even_over_freed_dirty_memory() {
    let name = "lay-zeroed";
    let sizes = (1..=300).chain([
        511,
        512,
        513,
        1023,
        1024,
        1025,
        4094,
        4095,
        4096,
        4097,
        16_384,
        65_535,
        65_536,
        65_537,
        1 << 20,
        (1 << 20) + 1,
    ]);
    const ROUNDS: u64 = 4;
    let mut count = 0u64;
    let scope = memgov::component_scope(name);
    for size in sizes {
        for align in [1, 8, 16, 64, 4096] {
            let layout = Layout::from_size_align(size, align).unwrap();
            for round in 0..ROUNDS {
                // SAFETY: non-zero sizes; each block is freed with its own layout.
                unsafe {
                    let dirty = black_box(alloc(layout));
                    assert!(!dirty.is_null());
                    bytes(dirty, size).fill(0xFF);
                    dealloc(dirty, layout);

                    let z = black_box(alloc_zeroed(layout));
                    assert!(!z.is_null());
                    assert_eq!(z as usize % align, 0);
                    let zeroed = bytes(z, size);
                    assert!(zeroed.iter().all(|&b| b == 0), "{layout:?} round {round}");
                    zeroed.fill(0xFF);
                    dealloc(z, layout);
                }
                count += 2;
            }
        }
    }
    drop(scope);
    let s = stats(name);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, count, count),
        "{s:?}"
    );
    assert_eq!(s.live_inner_bytes, 0, "{s:?}");
}

#[test]
fn realloc_preserves_contents_across_grow_and_shrink() {
    let name = "lay-realloc";
    let steps = [
        1usize,
        10,
        100,
        5000,
        3,
        70_000,
        17,
        4096,
        4097,
        1 << 20,
        64,
        1,
    ];
    let mut expected_allocated = 0u64;
    let mut reallocs = 0u64;
    for align in aligns() {
        let mut layout = Layout::from_size_align(steps[0], align).unwrap();
        let mut p = {
            let _scope = memgov::component_scope(name);
            // SAFETY: non-zero size.
            unsafe { alloc(layout) }
        };
        assert!(!p.is_null());
        bytes(p, layout.size()).fill(0);
        expected_allocated += steps[0] as u64;
        for (k, &new_size) in steps.iter().enumerate().skip(1) {
            let old = layout.size();
            for (i, b) in bytes(p, old).iter_mut().enumerate() {
                *b = pattern(k, i);
            }
            // SAFETY: `p` is live with `layout`; the new size is non-zero.
            let q = unsafe { realloc(p, layout, new_size) };
            assert!(!q.is_null(), "align {align} {old} -> {new_size}");
            assert_eq!(q as usize % align, 0, "align {align} {old} -> {new_size}");
            let kept = old.min(new_size);
            let ok = bytes(q, kept)
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(k, i));
            assert!(ok, "align {align}: {old} -> {new_size} lost contents");
            (p, layout) = (q, Layout::from_size_align(new_size, align).unwrap());
            expected_allocated += new_size.saturating_sub(old) as u64;
            reallocs += 1;
            let s = stats(name);
            assert_eq!(s.live_bytes, new_size as u64, "{s:?}");
            assert_eq!(
                s.live_inner_bytes,
                new_size as u64 + tag_bytes(new_size, align)
            );
            assert_eq!(s.realloc_count, reallocs, "{s:?}");
            assert_eq!(s.total_allocated_bytes, expected_allocated, "{s:?}");
        }
        // SAFETY: live with `layout`.
        unsafe { dealloc(p, layout) };
    }
    let s = stats(name);
    let n = aligns().count() as u64;
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, n, n),
        "{s:?}"
    );
    assert_eq!(s.total_freed_bytes, expected_allocated, "{s:?}");
}

#[test]
fn failed_requests_return_null_and_count_nothing() {
    let name = "lay-fail";
    let _scope = memgov::component_scope(name);
    let too_big = [
        // Fits a Layout, but not with the tag added.
        Layout::from_size_align(isize::MAX as usize - 4095, 4096).unwrap(),
        Layout::from_size_align(isize::MAX as usize, 1).unwrap(),
        // Beyond the governor's own limit.
        Layout::from_size_align(1 << 62, 8).unwrap(),
        // Within it; the inner allocator refuses it (1 PiB is more than the address space).
        Layout::from_size_align(1 << 50, 8).unwrap(),
    ];
    for layout in too_big {
        // SAFETY: non-zero sizes.
        unsafe {
            assert!(black_box(alloc(layout)).is_null(), "{layout:?}");
            assert!(black_box(alloc_zeroed(layout)).is_null(), "{layout:?}");
        }
    }
    let s = stats(name);
    assert_eq!(
        (s.alloc_count, s.live_bytes, s.live_inner_bytes),
        (0, 0, 0),
        "{s:?}"
    );

    let layout = Layout::from_size_align(100, 1).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { alloc(layout) };
    assert!(!p.is_null());
    bytes(p, 100).fill(0x5A);
    for new_size in [
        isize::MAX as usize - 1,
        isize::MAX as usize,
        1 << 62,
        1 << 50,
    ] {
        // SAFETY: `p` is live with `layout`; `new_size` rounded up to align 1 fits isize.
        let q = unsafe { realloc(p, layout, new_size) };
        assert!(q.is_null(), "realloc to {new_size} succeeded");
    }
    // The block is untouched and still counted as it was.
    assert!(bytes(p, 100).iter().all(|&b| b == 0x5A));
    let s = stats(name);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.realloc_count),
        (100, 1, 0),
        "{s:?}"
    );
    assert_eq!(s.live_inner_bytes, 100 + tag_bytes(100, 1), "{s:?}");
    // SAFETY: live with `layout`.
    unsafe { dealloc(p, layout) };
    let s = stats(name);
    assert_eq!(
        (s.live_bytes, s.alloc_count, s.free_count),
        (0, 1, 1),
        "{s:?}"
    );
}
