//! jemalloc's size classes, computed without a call into jemalloc.
//!
//! jemalloc 5 rounds every request up to a size class. With a 16-byte quantum (x86-64, aarch64)
//! the classes are 8, then multiples of 16 up to 128, then four classes per doubling:
//! `2^k + i * 2^(k-2)` for `i` in 1..=4. The rounding is `sz_s2u` in jemalloc's `sz.h`. Alignments
//! above the quantum are rare and take jemalloc's own answer (`nallocx`).

use std::os::raw::c_int;

/// jemalloc's quantum: the alignment every size class of 16 bytes or more has.
pub const QUANTUM: usize = 16;

/// The largest size the fast formula handles; larger requests ask jemalloc.
const FORMULA_MAX: usize = 1 << 40;

/// The number of bytes jemalloc really hands out for a request of `size` bytes aligned to `align`
/// (`align` a power of two). Returns 0 when jemalloc would refuse the request.
///
/// Equal to `nallocx(size, MALLOCX_ALIGN(align))`; the common case (`align <= 16`) is a few
/// integer instructions.
///
/// ```
/// use alloc_jemalloc::usable_size;
/// assert_eq!(usable_size(1, 1), 8);
/// assert_eq!(usable_size(17, 8), 32);
/// assert_eq!(usable_size(4096, 8), 4096);
/// assert_eq!(usable_size(4097, 8), 5120);
/// ```
#[inline]
pub fn usable_size(size: usize, align: usize) -> usize {
    if align <= QUANTUM && size <= FORMULA_MAX && size != 0 {
        if size <= 8 && align > 8 {
            return 16;
        }
        return formula(size);
    }
    nallocx(size, align)
}

/// Requests below this size (at alignments up to [`QUANTUM`]) have their slack in [`SMALL_SLACK`].
pub const SMALL_SLACK_LIMIT: usize = 16 * 1024;

/// `usable_size(size, 16) - size` for every `size < SMALL_SLACK_LIMIT`, capped at 255: one load
/// instead of the formula on the allocation path.
pub static SMALL_SLACK: [u8; SMALL_SLACK_LIMIT] = {
    let mut table = [0u8; SMALL_SLACK_LIMIT];
    let mut size = 0;
    while size < SMALL_SLACK_LIMIT {
        let slack = formula(size) - size;
        table[size] = if slack > 255 { 255 } else { slack as u8 };
        size += 1;
    }
    table
};

/// The size-class formula for alignments up to the quantum (`size <= FORMULA_MAX`).
const fn formula(size: usize) -> usize {
    if size <= 8 {
        return 8;
    }
    let lg_ceil = usize::BITS - (size - 1).leading_zeros();
    let delta = if lg_ceil - 3 < 4 {
        QUANTUM
    } else {
        1usize << (lg_ceil - 3)
    };
    (size + delta - 1) & !(delta - 1)
}

/// `usable_size(size, align) - size`, the bytes past the request that jemalloc hands out anyway.
///
/// ```
/// assert_eq!(alloc_jemalloc::slack(100, 8), 12);
/// assert_eq!(alloc_jemalloc::slack(4096, 8), 0);
/// ```
#[inline(always)]
pub fn slack(size: usize, align: usize) -> usize {
    if size < SMALL_SLACK_LIMIT && align <= QUANTUM && size > 8 {
        return SMALL_SLACK[size] as usize;
    }
    usable_size(size, align).wrapping_sub(size)
}

/// [`slack`] from the table alone: `Some` for requests under 16 KiB at alignments up to the
/// quantum (except a size of 8 bytes or less at 16-byte alignment), `None` for the rest.
///
/// ```
/// assert_eq!(alloc_jemalloc::small_slack(100, 8), Some(12));
/// assert_eq!(alloc_jemalloc::small_slack(1 << 20, 8), None);
/// ```
#[inline(always)]
pub fn small_slack(size: usize, align: usize) -> Option<usize> {
    match SMALL_SLACK.get(size) {
        Some(&slack) if small_alignment(size, align) => Some(slack as usize),
        _ => None,
    }
}

/// Whether a request of `size` bytes (under [`SMALL_SLACK_LIMIT`]) at `align` has the class the
/// size tables give: at alignments up to 8 every size does; at 16 the classes of 8 bytes and less
/// move up to 16, so those sizes do not.
///
/// ```
/// assert!(alloc_jemalloc::small_alignment(100, 8));
/// assert!(!alloc_jemalloc::small_alignment(8, 16));
/// ```
#[inline(always)]
pub fn small_alignment(size: usize, align: usize) -> bool {
    align <= 8 || (align == QUANTUM && size > 8)
}

/// [`usable_size`] as a `const fn`, for alignments up to [`QUANTUM`] and sizes up to 2^40: for
/// building tables at compile time.
///
/// ```
/// const CLASS: usize = alloc_jemalloc::usable_size_const(4097);
/// assert_eq!(CLASS, 5120);
/// ```
pub const fn usable_size_const(size: usize) -> usize {
    formula(size)
}

#[cold]
#[inline(never)]
fn nallocx(size: usize, align: usize) -> usize {
    let flags = align.trailing_zeros() as c_int; // MALLOCX_LG_ALIGN
                                                 // SAFETY: nallocx only computes a size; it accepts any size and flags and never allocates.
    unsafe { tikv_jemalloc_sys::nallocx(size.max(1), flags) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_matches_jemalloc_for_every_small_size() {
        for align in [1usize, 2, 4, 8, 16] {
            for size in 1..=70_000usize {
                assert_eq!(
                    usable_size(size, align),
                    nallocx(size, align),
                    "size {size} align {align}"
                );
            }
        }
    }

    #[test]
    fn formula_matches_jemalloc_for_large_sizes() {
        let mut size = 70_000usize;
        while size < (1 << 36) {
            for s in [size - 1, size, size + 1] {
                assert_eq!(usable_size(s, 8), nallocx(s, 8), "size {s}");
            }
            size = size * 5 / 4;
        }
    }

    #[test]
    fn slack_table_matches_jemalloc() {
        for align in [1usize, 8, 16] {
            for size in 0..SMALL_SLACK_LIMIT + 100 {
                let expected = nallocx(size, align) - size.max(if size == 0 { 0 } else { 1 });
                let got = slack(size, align);
                if size > 8 && size < SMALL_SLACK_LIMIT {
                    assert_eq!(got, expected.min(255), "size {size} align {align}");
                } else {
                    assert_eq!(
                        got,
                        nallocx(size, align).wrapping_sub(size),
                        "size {size} align {align}"
                    );
                }
            }
        }
    }

    #[test]
    fn small_slack_agrees_with_slack_wherever_it_answers() {
        for align in [1usize, 2, 4, 8, 16, 32] {
            for size in 0..SMALL_SLACK_LIMIT + 100 {
                let small = small_slack(size, align);
                let answers = size < SMALL_SLACK_LIMIT && (align <= 8 || (align == 16 && size > 8));
                assert_eq!(small.is_some(), answers, "size {size} align {align}");
                if let Some(small) = small {
                    let exact = nallocx(size, align) - size;
                    assert_eq!(small, exact.min(255), "size {size} align {align}");
                }
            }
        }
    }

    /// What `Jemalloc::alloc_small` and `dealloc_small` rely on: wherever `small_alignment`
    /// accepts a request, jemalloc's class for it is the class of its size alone, so `malloc`
    /// and `sdallocx` with no flags serve it.
    #[test]
    fn small_alignments_need_no_flags() {
        for align in [1usize, 2, 4, 8, 16] {
            for size in 1..SMALL_SLACK_LIMIT + 100 {
                if small_alignment(size, align) {
                    assert_eq!(
                        nallocx(size, 1),
                        nallocx(size, align),
                        "size {size} align {align}"
                    );
                }
            }
        }
    }

    #[test]
    fn large_alignments_ask_jemalloc() {
        for align in [32usize, 64, 4096, 1 << 16] {
            for size in [1usize, 31, 100, 4096, 5000, 1 << 20] {
                let usable = usable_size(size, align);
                assert!(usable >= size);
                assert_eq!(usable, nallocx(size, align));
            }
        }
    }
}
