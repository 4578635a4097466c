//! A [`BoundedCache`](super::BoundedCache)'s shards put together: which shard a key lives in,
//! the cache's figures summed over its shards, and the one registration through which the monitor
//! has every shard read its level (with one [`ShedReport`] for the cache), the exporters read the
//! figures, and the fork handler takes every shard's lock.

use super::shared::Shared;
use super::CacheStats;
use crate::fx_hash::FxBuildHasher;
use crate::owned_lock;
use crate::registry::ComponentId;
use crate::shed_registry::{Figures, Shed};
use crate::shedding::{ShedHook, ShedReport};
use std::any::Any;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// The cache's shards (one, unless it was built with more), each a least-recently-used list of
/// its own behind its own lock, with a share of the bound.
pub(super) struct Shards<K, V, S> {
    pub(super) name: &'static str,
    pub(super) component: ComponentId,
    /// The bound the cache was built with, over all its shards.
    pub(super) max_weight: u64,
    pub(super) shards: Box<[Arc<Shared<K, V, S>>]>,
    pub(super) on_shed: Option<ShedHook>,
}

/// `max_weight` split over `n` shards: each holds at most this much (rounded up, so that the
/// shards together may hold `n - 1` more than `max_weight`); `u64::MAX` stays unbounded.
pub(super) fn share(max_weight: u64, n: usize) -> u64 {
    if max_weight == u64::MAX {
        max_weight
    } else {
        max_weight.div_ceil(n as u64)
    }
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher + Clone> Shards<K, V, S> {
    /// The shard `key` lives in, picked from the high 32 bits of its FxHash (the well-mixed ones
    /// of a multiplicative hash). FxHash, whatever the maps' hasher: hashing the key a second time
    /// with SipHash cost a sharded lookup a third more instructions (`cargo bench --bench
    /// cache_counts`). Keys chosen to land in one shard only bring back the contention sharding
    /// avoids: the bound and every entry stay safe, and the maps keep their own hasher.
    pub(super) fn of<Q: Hash + ?Sized>(&self, key: &Q) -> &Shared<K, V, S> {
        let n = self.shards.len();
        if n == 1 {
            return &self.shards[0];
        }
        let bits = FxBuildHasher::default().hash_one(key) >> 32;
        &self.shards[((bits * n as u64) >> 32) as usize]
    }

    /// The cache's figures: the shards' summed, at the highest level any of them obeys.
    pub(super) fn stats(&self) -> CacheStats {
        let mut total = CacheStats {
            name: self.name,
            component: self.component,
            live_entries: 0,
            live_weight: 0,
            max_weight: self.max_weight,
            bound: 0,
            level: crate::pressure::Level::Normal,
            total_hits: 0,
            total_misses: 0,
            total_inserts: 0,
            total_evictions: 0,
            total_shed: 0,
            total_refused: 0,
            total_expired: 0,
        };
        for shard in self.shards.iter() {
            let s = shard.stats();
            total.live_entries += s.live_entries;
            total.live_weight += s.live_weight;
            total.bound = total.bound.saturating_add(s.bound);
            total.level = total.level.max(s.level);
            total.total_hits += s.total_hits;
            total.total_misses += s.total_misses;
            total.total_inserts += s.total_inserts;
            total.total_evictions += s.total_evictions;
            total.total_shed += s.total_shed;
            total.total_refused += s.total_refused;
            total.total_expired += s.total_expired;
        }
        total
    }

    /// Drops every expired entry of every shard (the monitor's periodic task).
    pub(super) fn sweep(&self) {
        for shard in self.shards.iter() {
            shard.sweep();
        }
    }

    /// Whether the calling thread holds a shard's lock (it is inside `with`).
    fn held_here(&self) -> bool {
        self.shards.iter().any(|s| s.state.held_here())
    }
}

/// The shards' reports of one change of level as one: the figures summed.
fn merge(reports: &[ShedReport]) -> Option<ShedReport> {
    let (first, rest) = reports.split_first()?;
    Some(rest.iter().fold(*first, |mut total, r| {
        total.entries_before += r.entries_before;
        total.weight_before = total.weight_before.saturating_add(r.weight_before);
        total.entries_after += r.entries_after;
        total.weight_after = total.weight_after.saturating_add(r.weight_after);
        total.shed += r.shed;
        total
    }))
}

impl<
        K: Hash + Eq + Clone + Send + 'static,
        V: Send + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    > Shed for Shards<K, V, S>
{
    fn figures(&self) -> Option<Figures> {
        (!self.held_here()).then(|| Figures::Cache(self.stats()))
    }

    fn hold_for_fork(self: Arc<Self>) -> Option<Box<dyn Any>> {
        let held: Vec<Box<dyn Any>> = self
            .shards
            .iter()
            .filter_map(|shard| owned_lock::hold_for_fork(Arc::clone(shard), |s| &s.state))
            .collect();
        Some(Box::new(held))
    }

    fn refresh_level(&self) {
        // Read once for every shard: the frees of one shard's shedding can move the level before
        // the next shard looks, and the shards are to shed as one cache would. Read again after:
        // a call racing this one (the build's and the monitor's) may have applied a newer level
        // that this call then overwrote, so the last call to finish applies the latest.
        loop {
            let level = crate::shedding::shedding_level(self.component);
            let mut reports: Vec<ShedReport> = Vec::new();
            for shard in self.shards.iter() {
                if let Some(report) = shard.move_to(level) {
                    // A report that cannot be kept (a hard limit on memgov's own memory) is
                    // lost; the shedding itself is done.
                    if reports.try_reserve(1).is_ok() {
                        reports.push(report);
                    }
                }
            }
            if let (Some(hook), Some(report)) = (&self.on_shed, merge(&reports)) {
                hook(&report);
            }
            if crate::shedding::shedding_level(self.component) == level {
                return;
            }
        }
    }
}
