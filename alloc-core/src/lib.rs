//! The governing allocator at the heart of memgov.
//!
//! [`Governor`] wraps an inner `GlobalAlloc` (jemalloc or the system allocator) and tags every
//! block with the component that allocated it: the innermost [`component_scope`] open on the
//! allocating thread, or `"unscoped"`. Frees are credited back to that component, whichever thread
//! or scope frees the block, and a realloc stays inside it.
//!
//! # The allocation path
//! `alloc`, `alloc_zeroed`, `realloc` and `dealloc` never allocate, take a lock, panic or format.
//! They touch one `const` thread-local and the calling thread's own counter block with relaxed
//! loads and stores; shared counters are written only when a batch is flushed.
//!
//! # How fresh the figures are
//! Each thread batches its counter changes (one record per component) and folds them into the
//! shared counters once its operations have cost [`BATCH_BUDGET`], each costing its bytes plus
//! [`BATCH_OP_COST`]. Readers ([`snapshot`], [`component_stats`], [`global_stats`]) add every
//! thread's pending deltas, so once the threads are quiet the figures are exact. While threads run,
//! the shared counters alone lag by less than `BATCH_BUDGET` bytes (1 MiB) and
//! `BATCH_BUDGET / BATCH_OP_COST` operations (1024) per running thread.
//!
//! Peak figures are exact for a single thread; with several threads allocating in one component
//! at once, a peak is assembled from per-thread batches and can be off by the same drift.
//!
//! # Layout
//! * `registry`: interned component names (capacity [`CAPACITY`]).
//! * `scope`: scope guards and the future wrapper.
//! * `tag`: the 2-byte trailer that carries a block's component.
//! * `thread`: per-thread state and batching.
//! * `counters`: shared per-component records.
//! * `global`: the `GlobalAlloc` impl.
//! * `stats`: reading the figures.

mod counters;
mod global;
mod registry;
mod scope;
mod stats;
mod tag;
mod thread;

pub use global::{DefaultInner, Governor};
pub use registry::{
    component, lookup_component, refused_names, registered_components, try_component, ComponentId,
    NameError, CAPACITY, MAX_NAME_LEN,
};
pub use scope::{
    component_scope, current_component, scope_depth, scoped, try_component_scope, try_enter,
    InComponent, ScopeError, ScopeGuard, Scoped,
};
pub use stats::{
    component_stats, flush_thread, global_stats, snapshot, ComponentStats, GlobalStats, Snapshot,
};
pub use tag::{SizeClasses, TAG_BYTES};

/// A thread folds its batched deltas into the shared counters once its operations cost this much.
pub const BATCH_BUDGET: i64 = thread::FLUSH_BUDGET;
/// What one operation costs against [`BATCH_BUDGET`] on top of its bytes.
pub const BATCH_OP_COST: i64 = thread::OP_COST;
/// How deeply component scopes may nest on one thread.
pub const MAX_SCOPE_DEPTH: usize = thread::MAX_DEPTH;
