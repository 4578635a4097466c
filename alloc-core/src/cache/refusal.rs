//! [`CacheRefusal`]: an entry a [`BoundedCache`](super::BoundedCache) would not take, handed back
//! with why.

use crate::pressure::Level;
use crate::registry::ComponentId;
use std::fmt;

/// An entry a [`BoundedCache`](super::BoundedCache) would not take: it alone weighs more than the
/// cache's bound, or the cache could not get the memory to hold it. Holds the key and value,
/// handed back.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> =
/// #     alloc_core::Governor::with_inner(std::alloc::System);
/// let cache = alloc_core::BoundedCache::builder("doc-refusal")
///     .max_weight(10)
///     .weigher(|_k: &u8, v: &String| v.len() as u64)
///     .build();
/// let refused = cache.insert(1, "x".repeat(11)).unwrap_err();
/// assert_eq!(refused.to_string(),
///     "cache in doc-refusal refused an entry of weight 11: its bound is 10 (pressure normal)");
/// let (key, value) = refused.into_entry();
/// assert_eq!((key, value.len()), (1, 11));
/// ```
pub struct CacheRefusal<K, V> {
    pub(super) key: K,
    pub(super) value: V,
    /// The component of the cache that refused.
    pub component: ComponentId,
    /// Why.
    pub cause: RefusalCause,
    /// The entry's weight.
    pub weight: u64,
    /// The cache's bound when it refused.
    pub bound: u64,
    /// The level the cache obeyed.
    pub level: Level,
}

impl<K, V> CacheRefusal<K, V> {
    /// The key and value that were refused.
    pub fn into_entry(self) -> (K, V) {
        (self.key, self.value)
    }
}

impl<K, V> fmt::Debug for CacheRefusal<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheRefusal")
            .field("component", &self.component)
            .field("cause", &self.cause)
            .field("weight", &self.weight)
            .field("bound", &self.bound)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl<K, V> fmt::Display for CacheRefusal<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            RefusalCause::TooHeavy => write!(
                f,
                "cache in {} refused an entry of weight {}: its bound is {} (pressure {})",
                self.component.name(),
                self.weight,
                self.bound,
                self.level
            ),
            RefusalCause::NoMemory => write!(
                f,
                "cache in {} refused an entry of weight {}: a hard limit refused the memory to hold it (pressure {})",
                self.component.name(),
                self.weight,
                self.level
            ),
        }
    }
}

/// Why a [`BoundedCache`](super::BoundedCache) refused an entry ([`CacheRefusal::cause`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalCause {
    /// The entry alone weighs more than the cache's bound (lowered under pressure).
    TooHeavy,
    /// The cache's map or list had to grow, and a hard limit (its component's or the process's)
    /// refused the memory.
    NoMemory,
}

impl<K, V> std::error::Error for CacheRefusal<K, V> {}
