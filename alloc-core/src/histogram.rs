//! Allocation-size histograms per component: counted per thread on the allocation path, merged on
//! read.
//!
//! Off by default. When off, the allocation path pays one relaxed load and a predictable branch.
//! When on, an allocation (or a realloc, in a second histogram) adds one to a bucket in the
//! calling thread's own histogram block (a relaxed load and store; the block comes from `mmap`,
//! made on the thread's first recorded allocation). Buckets are log-linear: four per power of two,
//! so a bucket is at most 25% wide and a percentile read from them is within 25% of the truth.
//! Counts are exact: every allocation is counted, no sampling. Readers add every thread's
//! histogram and the ones folded in from threads that exited.

use crate::registry::CAPACITY;
use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
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
    // The allocation fast path sees this bit and leaves counting to the slow path.
    if on {
        LIMIT_EPOCH.fetch_or(HISTOGRAMS_BIT, Release);
    } else {
        LIMIT_EPOCH.fetch_and(!HISTOGRAMS_BIT, Release);
    }
}

/// Whether allocation sizes are being recorded.
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

/// The smallest size in a bucket.
pub fn histogram_bucket_floor(bucket: usize) -> u64 {
    if bucket < 4 {
        return bucket as u64;
    }
    let octave = (bucket - 4) / 4 + 2;
    let sub = ((bucket - 4) % 4) as u64;
    (4 + sub) << (octave - 2)
}

/// One thread's histograms, from `mmap`.
pub(crate) struct Counts {
    buckets: [[[AtomicU64; BUCKETS]; KINDS]; CAPACITY],
    /// Components with any count, one bit each.
    touched: [AtomicU64; CAPACITY / 64],
}

impl Counts {
    /// Owner only: counts one size.
    #[inline(always)]
    pub fn record(&self, comp: u16, kind: usize, size: u64) {
        let comp = comp as usize & (CAPACITY - 1);
        let b = &self.buckets[comp][kind & 1][histogram_bucket(size)];
        b.store(b.load(Relaxed) + 1, Relaxed);
        let t = &self.touched[comp / 64];
        let bit = 1u64 << (comp % 64);
        let word = t.load(Relaxed);
        if word & bit == 0 {
            t.store(word | bit, Relaxed);
        }
    }

    fn add_to(&self, comp: usize, kind: usize, out: &mut [u64; BUCKETS]) {
        for (o, b) in out.iter_mut().zip(&self.buckets[comp][kind]) {
            *o += b.load(Relaxed);
        }
    }

    /// Owner only (thread exit): folds every touched component into the retired counts, zeroed.
    fn retire(&self) {
        for (w, word) in self.touched.iter().enumerate() {
            let mut bits = word.swap(0, Relaxed);
            while bits != 0 {
                let comp = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                for kind in 0..KINDS {
                    for (i, b) in self.buckets[comp][kind].iter().enumerate() {
                        let n = b.swap(0, Relaxed);
                        if let (true, Some(r)) = (n != 0, retired()) {
                            r.buckets[comp][kind][i].fetch_add(n, Relaxed);
                        }
                    }
                }
            }
        }
    }
}

static RETIRED: AtomicPtr<Counts> = AtomicPtr::new(ptr::null_mut());

fn map_counts() -> *mut Counts {
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

/// The counts of exited threads, mapped on first use (`None` only if that mapping failed: those
/// counts are then lost).
fn retired() -> Option<&'static Counts> {
    let mut p = RETIRED.load(Acquire);
    if p.is_null() {
        let fresh = map_counts();
        match RETIRED.compare_exchange(ptr::null_mut(), fresh, Release, Acquire) {
            Ok(_) => p = fresh,
            Err(winner) => {
                if !fresh.is_null() {
                    // SAFETY: our own mapping, never shared.
                    unsafe { libc::munmap(fresh.cast(), std::mem::size_of::<Counts>()) };
                }
                p = winner;
            }
        }
    }
    // SAFETY: a mapping of a Counts that is never unmapped.
    unsafe { p.as_ref() }
}

/// Makes a thread's histogram block (cold, on its first recorded allocation).
pub(crate) fn new_counts() -> *mut Counts {
    map_counts()
}

/// Folds a thread's counts into the retired ones (thread exit).
pub(crate) fn retire(counts: &Counts) {
    counts.retire();
}

/// The merged histogram of `comp` (`kind` 0: allocation sizes, 1: realloc sizes), across live
/// threads and exited ones.
pub(crate) fn merged(
    comp: u16,
    kind: usize,
    live: impl Iterator<Item = &'static Counts>,
) -> [u64; BUCKETS] {
    let mut out = [0u64; BUCKETS];
    let comp = comp as usize & (CAPACITY - 1);
    // SAFETY: a non-null pointer is the retired mapping, never unmapped.
    if let Some(r) = unsafe { RETIRED.load(Acquire).as_ref() } {
        r.add_to(comp, kind, &mut out);
    }
    for c in live {
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
