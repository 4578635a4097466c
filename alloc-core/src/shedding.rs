//! How much a [`BoundedCache`](crate::BoundedCache), a [`Pool`](crate::Pool) or a
//! [`BoundedQueue`](crate::BoundedQueue) keeps while memory is under pressure, and which level it obeys: the higher of the process's and its own
//! component's ([`shedding_level`]). How they hear of a change is `shed_registry`'s part.

use crate::budget::Scope;
use crate::pressure::Level;
use crate::registry::ComponentId;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

/// What a cache or pool keeps under pressure: the fraction of its contents it keeps at Warning
/// and at Critical.
///
/// A [`BoundedCache`](crate::BoundedCache) takes the fractions of what it held when the pressure
/// began (it left Normal); a [`Pool`](crate::Pool) of its `max_idle`; a
/// [`BoundedQueue`](crate::BoundedQueue) of its capacity and `max_weight`. While the level stays up,
/// what is kept is also the most it may hold, so shed memory does not grow straight back; back at
/// Normal the configured bounds apply again. A fraction of 1 leaves it alone at that level:
/// nothing shed, nothing capped.
///
/// ```
/// use alloc_core::{Level, Shedding};
/// let s = Shedding::default();
/// let kept = [Level::Normal, Level::Warning, Level::Critical].map(|l| s.kept(l));
/// assert_eq!(kept, [1.0, 0.5, 0.0]);
/// let gentle = Shedding::new(0.75, 0.25).unwrap();
/// assert!(Shedding::new(0.25, 0.75).is_err()); // keeps more at Critical than at Warning
/// # let _ = gentle;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shedding {
    warning: f64,
    critical: f64,
}

impl Shedding {
    /// Half kept at Warning, nothing at Critical (the seed documents' "evict on warning, clear on
    /// critical").
    pub const DEFAULT: Shedding = Shedding {
        warning: 0.5,
        critical: 0.0,
    };

    /// Half kept at Warning, a quarter at Critical: the fractions
    /// [`adaptive_size`](crate::adaptive_size) scales a buffer by, and a
    /// [`BoundedQueue`](crate::BoundedQueue)'s default.
    pub const ADAPTIVE: Shedding = Shedding {
        warning: 0.5,
        critical: 0.25,
    };

    /// Pressure ignored: nothing shed and nothing capped at any level.
    pub const NEVER: Shedding = Shedding {
        warning: 1.0,
        critical: 1.0,
    };

    /// Keeps `warning` of the contents at Warning and `critical` at Critical.
    ///
    /// # Errors
    /// [`SheddingError`] unless `0 <= critical <= warning <= 1`.
    pub fn new(warning: f64, critical: f64) -> Result<Shedding, SheddingError> {
        let fraction = |f: f64| (0.0..=1.0).contains(&f);
        if fraction(warning) && fraction(critical) && critical <= warning {
            Ok(Shedding { warning, critical })
        } else {
            Err(SheddingError { warning, critical })
        }
    }

    /// The fraction kept at `level` (1 at Normal).
    pub fn kept(&self, level: Level) -> f64 {
        match level {
            Level::Normal => 1.0,
            Level::Warning => self.warning,
            Level::Critical => self.critical,
        }
    }

    /// `amount` scaled by the fraction kept at `level`, rounded down. `u64::MAX` stands for
    /// "unbounded": any fraction of it but 0 is itself.
    pub(crate) fn keep(&self, level: Level, amount: u64) -> u64 {
        let kept = self.kept(level);
        if kept <= 0.0 {
            0
        } else if amount == u64::MAX || kept >= 1.0 {
            amount
        } else {
            // Exact for every amount up to 2^53, and never above `amount`: the cast saturates.
            ((amount as f64) * kept) as u64
        }
    }
}

impl Default for Shedding {
    fn default() -> Self {
        Shedding::DEFAULT
    }
}

/// Shedding fractions outside `0 <= critical <= warning <= 1`.
///
/// ```
/// let e = alloc_core::Shedding::new(1.5, 0.0).unwrap_err();
/// assert_eq!(e.to_string(), "shedding fractions must satisfy 0 <= critical <= warning <= 1, got warning 1.5 and critical 0");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SheddingError {
    /// The fraction asked for at Warning.
    pub warning: f64,
    /// The fraction asked for at Critical.
    pub critical: f64,
}

impl fmt::Display for SheddingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shedding fractions must satisfy 0 <= critical <= warning <= 1, got warning {} and critical {}",
            self.warning, self.critical
        )
    }
}

impl std::error::Error for SheddingError {}

/// The level a cache or pool in `component` obeys: the higher of the process's and the
/// component's.
///
/// ```
/// let pages = alloc_core::component("shedding-doc");
/// assert_eq!(alloc_core::shedding_level(pages), alloc_core::Level::Normal);
/// ```
pub fn shedding_level(component: ComponentId) -> Level {
    let level = |scope: Scope| Level::from_u8(scope.entity().level.load(Relaxed));
    crate::config::ensure_init();
    level(Scope::Process).max(level(Scope::Component(component)))
}

/// `hits` over `hits + misses`; `None` when both are 0 (a cache's or pool's hit ratio).
pub(crate) fn hit_ratio(hits: u64, misses: u64) -> Option<f64> {
    let tries = hits + misses;
    (tries > 0).then(|| hits as f64 / tries as f64)
}

/// The hook a cache or pool calls with its [`ShedReport`] after a change of level.
pub(crate) type ShedHook = Box<dyn Fn(&ShedReport) + Send + Sync>;

/// What a cache or pool did when the pressure level it obeys changed, for the
/// [`on_shed`](crate::CacheBuilder::on_shed) hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShedReport {
    /// The component the cache or pool belongs to.
    pub component: ComponentId,
    /// The level before.
    pub previous: Level,
    /// The level now.
    pub level: Level,
    /// Entries (idle objects, for a pool) held before.
    pub entries_before: u64,
    /// Their weight before (for a pool, their number).
    pub weight_before: u64,
    /// Entries held after.
    pub entries_after: u64,
    /// Their weight after.
    pub weight_after: u64,
    /// Entries shed.
    pub shed: u64,
}

impl fmt::Display for ShedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}: shed {} of {} entries, weight {} -> {}",
            self.component.name(),
            self.previous,
            self.level,
            self.shed,
            self.entries_before,
            self.weight_before,
            self.weight_after
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_checked() {
        assert!(Shedding::new(1.0, 1.0).is_ok());
        assert!(Shedding::new(0.0, 0.0).is_ok());
        for (w, c) in [
            (-0.1, 0.0),
            (1.1, 0.0),
            (0.5, 0.6),
            (f64::NAN, 0.0),
            (0.5, f64::NAN),
        ] {
            assert!(Shedding::new(w, c).is_err(), "{w} {c}");
        }
    }

    #[test]
    fn keep_rounds_down_and_leaves_unbounded_alone() {
        let s = Shedding::DEFAULT;
        assert_eq!(s.keep(Level::Warning, 7), 3);
        assert_eq!(s.keep(Level::Critical, 7), 0);
        assert_eq!(s.keep(Level::Normal, 7), 7);
        assert_eq!(s.keep(Level::Warning, u64::MAX), u64::MAX);
        assert_eq!(s.keep(Level::Critical, u64::MAX), 0);
        assert_eq!(Shedding::NEVER.keep(Level::Critical, 1 << 60), 1 << 60);
        assert_eq!(Shedding::ADAPTIVE.keep(Level::Critical, 1024), 256);
    }
}
