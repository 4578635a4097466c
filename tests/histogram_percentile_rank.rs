//! A percentile is the smallest bucket holding at least `p`% of the counts, exactly: p7 of 100
//! sizes is the 7th, even where `p / 100 * count` rounds above an integer in floating point.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::stats;
use std::hint::black_box;

#[test]
fn a_percentile_at_an_exact_rank_is_that_rank() {
    memgov::set_histograms(true);
    {
        let _scope = memgov::component_scope("hist-rank");
        for i in 0..100 {
            let size = if i < 7 { 8 } else { 1000 };
            drop(black_box(vec![0u8; size]));
        }
    }
    memgov::set_histograms(false);
    let h = stats::size_histogram("hist-rank").unwrap();
    assert_eq!(h.count(), 100);
    // 7 of the 100 sizes are 8 bytes: p7 is 8 (so is p14 of 50 of them, and so on).
    assert_eq!(h.percentile(7.0), 8, "p7 of 7 x 8 B + 93 x 1000 B");
    assert_eq!(h.percentile(8.0), 896);
}
