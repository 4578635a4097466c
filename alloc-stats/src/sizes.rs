//! Allocation-size histograms, merged from memgov's per-thread counts into hdrhistogram.

use alloc_core::{histogram_bucket_floor, ComponentId, HISTOGRAM_BUCKETS};
use hdrhistogram::Histogram;

/// The highest size the histograms resolve; larger ones count in the top bucket.
pub const MAX_TRACKED_SIZE: u64 = 1 << 41;

/// One component's allocation (or realloc) sizes.
///
/// Built from memgov's log-linear buckets (four per power of two): counts are exact, and a
/// percentile is the floor of the bucket it falls in, within 25% below the true size.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
/// alloc_core::set_histograms(true);
/// {
///     let _s = alloc_core::component_scope("sizes-doc");
///     for _ in 0..10 { drop(vec![0u8; 1000]); }
/// }
/// let h = alloc_stats::size_histogram("sizes-doc").unwrap();
/// assert_eq!(h.count(), 10);
/// assert!((768..=1000).contains(&h.percentile(50.0)));
/// # alloc_core::set_histograms(false);
/// ```
#[derive(Clone, Debug)]
pub struct SizeHistogram {
    buckets: [u64; HISTOGRAM_BUCKETS],
    hdr: Histogram<u64>,
}

impl SizeHistogram {
    pub(crate) fn from_buckets(buckets: [u64; HISTOGRAM_BUCKETS]) -> SizeHistogram {
        // Fixed bounds, 2 significant digits, never resized (hdrhistogram's default is not to).
        let mut hdr =
            Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_SIZE, 2).expect("valid fixed bounds");
        for (b, &n) in buckets.iter().enumerate() {
            if n > 0 {
                let v = histogram_bucket_floor(b).clamp(1, MAX_TRACKED_SIZE);
                // In range by the clamp; a count that would overflow saturates.
                let _ = hdr.record_n(v, n);
            }
        }
        SizeHistogram { buckets, hdr }
    }

    /// Allocations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The size at percentile `p` (0 to 100), rounded down to its bucket's floor; 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        // The smallest bucket holding at least `p`% of the counts, walked on our own buckets so the
        // answer is exactly a bucket floor.
        // `p * count` first: for a whole `p` it is exact, and so is its division by 100 when the
        // rank is whole (`p / 100 * count` is not: 7 / 100 * 100 is 7.000000000000001).
        let rank = ((p.clamp(0.0, 100.0) * count as f64 / 100.0).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return histogram_bucket_floor(b);
            }
        }
        histogram_bucket_floor(HISTOGRAM_BUCKETS - 1)
    }

    /// Counts per bucket (see [`alloc_core::histogram_bucket`]).
    pub fn buckets(&self) -> &[u64; HISTOGRAM_BUCKETS] {
        &self.buckets
    }

    /// The merged hdrhistogram, for its other queries.
    pub fn hdr(&self) -> &Histogram<u64> {
        &self.hdr
    }
}

/// The allocation-size histogram of the component called `name` (`None` if never registered).
pub fn size_histogram(name: &str) -> Option<SizeHistogram> {
    alloc_core::lookup_component(name).map(|c| SizeHistogram::from_buckets(c.size_histogram()))
}

/// The realloc-size histogram (new sizes) of the component called `name`.
pub fn realloc_histogram(name: &str) -> Option<SizeHistogram> {
    alloc_core::lookup_component(name).map(|c| SizeHistogram::from_buckets(c.realloc_histogram()))
}

/// The allocation-size histogram of `component`.
pub fn component_size_histogram(component: ComponentId) -> SizeHistogram {
    SizeHistogram::from_buckets(component.size_histogram())
}
