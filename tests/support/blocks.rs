//! Blocks the tests allocate fallibly, to see a limit refuse them.

/// A block of exactly `size` bytes in the current component; `None` when refused.
pub fn try_block(size: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    let reserved = v.try_reserve_exact(size);
    std::hint::black_box(&mut v);
    reserved.ok()?;
    Some(v)
}
