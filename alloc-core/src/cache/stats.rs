//! [`CacheStats`]: a cache's figures.

use crate::pressure::Level;
use crate::registry::ComponentId;

/// A cache's figures ([`BoundedCache::stats`](super::BoundedCache::stats)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The name the cache goes by ([`CacheBuilder::name`](super::CacheBuilder::name); its
    /// component's, by default).
    pub name: &'static str,
    /// The component the cache belongs to.
    pub component: ComponentId,
    /// Entries held.
    pub live_entries: u64,
    /// Their total weight.
    pub live_weight: u64,
    /// The configured bound (`u64::MAX`: none but pressure).
    pub max_weight: u64,
    /// The bound now: `max_weight` at Normal, less while memory is under pressure.
    pub bound: u64,
    /// The pressure level the cache obeys.
    pub level: Level,
    /// Lookups that found their key.
    pub total_hits: u64,
    /// Lookups that did not.
    pub total_misses: u64,
    /// Entries inserted (replacements included).
    pub total_inserts: u64,
    /// Entries evicted to stay within the bound, or by
    /// [`BoundedCache::trim_to`](super::BoundedCache::trim_to).
    pub total_evictions: u64,
    /// Entries shed because memory came under pressure.
    pub total_shed: u64,
    /// Inserts refused (an entry heavier than the bound, or no memory to hold it).
    pub total_refused: u64,
    /// Entries that outlived their time to live
    /// ([`CacheBuilder::time_to_live`](super::CacheBuilder::time_to_live)).
    pub total_expired: u64,
}

impl CacheStats {
    /// Hits over lookups; `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        crate::shedding::hit_ratio(self.total_hits, self.total_misses)
    }
}
