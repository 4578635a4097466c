//! Allocation-size histograms per component: counted per thread on the allocation path, merged on
//! read.
//!
//! Off by default. When off, the allocation path pays a test and a predictable branch for them:
//! the switch is a bit of the limit epoch that `alloc` loads anyway (see `budget::LIMIT_EPOCH`),
//! tested before anything else so that with histograms on the allocation goes straight to the
//! fast path's twin that counts; `realloc` and the slow path pay one relaxed load and a
//! predictable branch. When on, an allocation (or a realloc, in a second
//! histogram) adds one to a bucket in the calling thread's own histogram block (a relaxed load and
//! store; the block comes from `mmap`, made on the thread's first recorded allocation). Buckets are
//! log-linear: four per power of two, so a bucket is at most 25% wide and a percentile read from
//! them is within 25% of the truth. Counts are exact: every allocation is counted, no sampling. A
//! histogram block belongs to a thread block and stays with it when a thread exits and another
//! reuses it, so nothing moves at thread exit: readers add the histograms of every block ever made,
//! and a thread that exits while a reader adds can neither vanish from the sum nor be counted
//! twice.

use crate::registry::CAPACITY;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64};

/// Buckets per histogram: sizes 0..=3 exactly, then four per power of two up to 2^41.
pub const BUCKETS: usize = 160;
/// Histogram kinds: allocation sizes, and realloc (new) sizes.
pub(crate) const KINDS: usize = 2;

/// Whether histograms are recorded.
pub(crate) static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns allocation-size recording on or off, for every thread, at any time.
///
/// ```
/// alloc_core::set_histograms(true);
/// assert!(alloc_core::histograms_enabled());
/// alloc_core::set_histograms(false);
/// ```
pub fn set_histograms(on: bool) {
    use crate::budget::{HISTOGRAMS_BIT, LIMIT_EPOCH};
    ENABLED.store(on, Relaxed);
    // The allocation fast path sees this bit and leaves the allocation to its twin that counts.
    if on {
        LIMIT_EPOCH.fetch_or(HISTOGRAMS_BIT, Release);
    } else {
        LIMIT_EPOCH.fetch_and(!HISTOGRAMS_BIT, Release);
    }
}

/// Whether allocation sizes are being recorded.
#[inline]
pub fn histograms_enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// The bucket of a size.
///
/// ```
/// use alloc_core::{histogram_bucket, histogram_bucket_floor};
/// assert_eq!(histogram_bucket(3), 3);
/// assert_eq!(histogram_bucket_floor(histogram_bucket(4096)), 4096);
/// assert_eq!(histogram_bucket_floor(histogram_bucket(5000)), 4096);
/// assert_eq!(histogram_bucket_floor(histogram_bucket(5200)), 5120);
/// ```
#[inline(always)]
pub fn histogram_bucket(size: u64) -> usize {
    if size < 4 {
        return size as usize;
    }
    let octave = 63 - size.leading_zeros() as usize; // >= 2
    let sub = ((size >> (octave - 2)) & 3) as usize;
    (4 + (octave - 2) * 4 + sub).min(BUCKETS - 1)
}

/// The smallest size in a bucket. Buckets run from 0 to `BUCKETS - 1` (the last one holds every
/// larger size too); a number past them gives the last bucket's floor.
///
/// ```
/// use alloc_core::{histogram_bucket_floor, HISTOGRAM_BUCKETS};
/// let last = histogram_bucket_floor(HISTOGRAM_BUCKETS - 1);
/// assert_eq!(histogram_bucket_floor(usize::MAX), last);
/// ```
pub fn histogram_bucket_floor(bucket: usize) -> u64 {
    let bucket = bucket.min(BUCKETS - 1);
    if bucket < 4 {
        return bucket as u64;
    }
    let octave = (bucket - 4) / 4 + 2;
    let sub = ((bucket - 4) % 4) as u64;
    (4 + sub) << (octave - 2)
}

/// One thread block's histograms, from `mmap`.
pub(crate) struct Counts {
    buckets: [[[AtomicU64; BUCKETS]; KINDS]; CAPACITY],
}

impl Counts {
    /// Owner only: counts one size.
    #[inline(always)]
    pub fn record(&self, comp: u16, kind: usize, size: u64) {
        let comp = comp as usize & (CAPACITY - 1);
        let b = &self.buckets[comp][kind & 1][histogram_bucket(size)];
        b.store(b.load(Relaxed) + 1, Relaxed);
    }

    /// Any thread: counts one size with an atomic add (the shared histograms of operations made
    /// without a thread block).
    fn record_atomic(&self, comp: u16, kind: usize, size: u64) {
        let comp = comp as usize & (CAPACITY - 1);
        self.buckets[comp][kind & 1][histogram_bucket(size)].fetch_add(1, Relaxed);
    }

    fn add_to(&self, comp: usize, kind: usize, out: &mut [u64; BUCKETS]) {
        for (o, b) in out.iter_mut().zip(&self.buckets[comp][kind & 1]) {
            *o += b.load(Relaxed);
        }
    }
}

/// Makes a thread block's histograms (cold, on the first recorded allocation); null if `mmap`
/// fails, and then that block's sizes go uncounted.
pub(crate) fn new_counts() -> *mut Counts {
    // SAFETY: a fresh anonymous mapping, zero-filled; an all-zero Counts is valid.
    let mem = unsafe {
        libc::mmap(
            ptr::null_mut(),
            std::mem::size_of::<Counts>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        mem.cast()
    }
}

/// The histograms of operations made without a thread block (before a thread has one, while it
/// is being set up, after the thread's exit hook handed it back, or when none could be made):
/// shared by every thread, made on the first such operation; null until then.
static SHARED: AtomicPtr<Counts> = AtomicPtr::new(ptr::null_mut());

/// Counts one size of an operation made without a thread block (cold: a thread makes few such
/// operations). Never allocates: the shared histograms come from `mmap`; if that fails, the
/// size goes uncounted.
#[cold]
#[inline(never)]
pub(crate) fn record_shared(comp: u16, kind: usize, size: u64) {
    let mut h = SHARED.load(Acquire);
    if h.is_null() {
        let made = new_counts();
        if made.is_null() {
            return;
        }
        h = match SHARED.compare_exchange(ptr::null_mut(), made, AcqRel, Acquire) {
            Ok(_) => made,
            Err(winner) => {
                // SAFETY: `made` is the mapping made above, never published.
                unsafe { libc::munmap(made.cast(), std::mem::size_of::<Counts>()) };
                winner
            }
        };
    }
    // SAFETY: a published mapping, never unmapped.
    unsafe { &*h }.record_atomic(comp, kind, size);
}

/// The shared histograms of operations made without a thread block, once there were any.
pub(crate) fn shared() -> Option<&'static Counts> {
    // SAFETY: a non-null `SHARED` is a mapping never unmapped.
    unsafe { SHARED.load(Acquire).as_ref() }
}

/// The merged histogram of `comp` (`kind` 0: allocation sizes, 1: realloc sizes): the sum of
/// `blocks`, the histograms of every thread block ever made, in use or not.
pub(crate) fn merged(
    comp: u16,
    kind: usize,
    blocks: impl Iterator<Item = &'static Counts>,
) -> [u64; BUCKETS] {
    let mut out = [0u64; BUCKETS];
    let comp = comp as usize & (CAPACITY - 1);
    for c in blocks {
        c.add_to(comp, kind, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_every_size() {
        let mut last = 0;
        for size in (0..100_000u64).chain([1 << 30, (1 << 40) + 12345, u64::MAX]) {
            let b = histogram_bucket(size);
            assert!(b >= last || size > 100_000, "size {size}");
            assert!(histogram_bucket_floor(b) <= size, "size {size}");
            if b + 1 < BUCKETS {
                assert!(
                    size < histogram_bucket_floor(b + 1),
                    "size {size} bucket {b}"
                );
            }
            last = b;
        }
        assert_eq!(histogram_bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_bucket_is_at_most_a_quarter_wide() {
        for b in 8..BUCKETS - 1 {
            let (lo, hi) = (histogram_bucket_floor(b), histogram_bucket_floor(b + 1));
            assert!((hi - lo) * 4 <= lo, "bucket {b}: {lo}..{hi}");
        }
    }
}
