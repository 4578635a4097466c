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
//! Each thread batches its statistics (one record per component) and folds a record into the
//! shared counters every [`BATCH_OPS`] operations of one kind, and as soon as the batch's live
//! bytes moved [`BATCH_BYTES`] either way (checked on the operations that take the slow path, so
//! a batch's live bytes stay within `BATCH_BYTES + MAX_CREDIT` of zero). Readers ([`snapshot`],
//! [`component_stats`], [`global_stats`]) add every thread's pending deltas, so once the threads
//! are quiet the figures are exact. Budgets never wait for a flush: hard limits and pressure levels
//! are checked against charged bytes, which exceed the live bytes by at most [`MAX_CREDIT`] per
//! thread and component (see [`Limits`]).
//!
//! Peak figures are exact for a single thread; with several threads allocating in one component
//! at once, a peak is assembled from per-thread batches and can be off by what the other threads'
//! batches held unflushed: less than `BATCH_BYTES + MAX_CREDIT` per thread and component.
//!
//! # Layout
//! * `registry`: interned component names (capacity [`CAPACITY`]).
//! * `scope`: scope guards and the future wrapper.
//! * `tag`: where a block's component tag lives: a 2-byte trailer in the size-class slack, or a
//!   shadow table for exact-class requests.
//! * `thread`: per-thread state and batching.
//! * `counters`: shared per-component records.
//! * `global`: the `GlobalAlloc` impl.
//! * `stats`: reading the figures.
//! * `budget`, `reservation`: hard and soft limits, per-thread credit, the admission API.
//! * `pressure`, `monitor`: pressure levels, and the thread that runs callbacks and tasks.
//! * `cache`, `pool`, `queue`, `shedding`, `shed_registry`: a bounded LRU cache, an object pool
//!   and a bounded queue that belong to a component and shed under pressure, and the list of the
//!   live ones.
//! * `emergency_reserve`: the slice of the process's hard limit kept for the threads that react
//!   to pressure.
//! * `config`: the `MEMGOV_*` environment variables.
//! * `histogram`: allocation-size histograms.
//! * `abort_line`: the one line written before an infallible allocation aborts.
//! * `responder` (jemalloc): purge and decay driven by pressure (`GOMEMLIMIT`).
//! * `gc_percent` (jemalloc): purges that keep freed pages within a percentage of the live heap
//!   (`GOGC`).

mod abort_line;
mod budget;
mod cache;
mod config;
mod counters;
mod emergency_reserve;
mod event_ring;
mod fork;
mod fx_hash;
#[cfg(feature = "jemalloc")]
mod gc_percent;
mod global;
mod histogram;
mod monitor;
mod owned_lock;
mod pool;
mod pressure;
mod queue;
mod registry;
mod reservation;
#[cfg(feature = "jemalloc")]
mod responder;
mod scope;
mod shed_registry;
mod shedding;
mod stats;
mod tag;
mod thread;

pub use budget::{
    budget, budget_stats, process_limits, set_budget, set_component_budget, set_process_limits,
    BudgetExceeded, BudgetStats, LimitError, Limits, Scope, CREDIT_CHUNK, MAX_CREDIT, NEAR_LIMIT,
};
pub use cache::{BoundedCache, CacheBuilder, CacheRefusal, CacheStats, RefusalCause};
pub use config::{
    init, parse_budgets, parse_decay, parse_env_var, parse_gc_percent, parse_interval, parse_size,
    parse_switch, parse_thresholds, parse_with, unknown_variable, ConfigError, ConfigErrors,
    DecaySetting, MemorySource, Setting, HTTP_ADDR_VARIABLE, OTHER_VARIABLES, VARIABLES,
    VARIABLE_PREFIX,
};
pub use emergency_reserve::{
    emergency_reserve_stats, set_emergency_reserve, use_emergency_reserve, EmergencyReserveStats,
    DEFAULT_EMERGENCY_RESERVE,
};
#[cfg(feature = "jemalloc")]
pub use gc_percent::{
    effective_gc_percent, gc_percent, gc_percent_bound, gc_percent_stats, set_gc_percent,
    GcPercentStats, GC_PERCENT_FLOOR, GC_PERCENT_INTERVAL,
};
pub use global::{DefaultInner, Governor};
pub use histogram::{
    histogram_bucket, histogram_bucket_floor, histograms_enabled, set_histograms,
    BUCKETS as HISTOGRAM_BUCKETS,
};
pub use monitor::{
    adaptive_size, component_adaptive_size, every, monitor_interval, monitor_stats,
    on_component_pressure, on_pressure, remove_callback, set_monitor_interval, start_monitor,
    MonitorStats,
};
pub use pool::{Pool, PoolBuilder, PoolStats, Pooled};
pub use pressure::{
    component_pressure, dropped_events, pressure, set_thresholds, thresholds, EventKind, Level,
    PressureEvent, ThresholdError, Thresholds,
};
pub use queue::{
    BoundedQueue, Overflow, PopFuture, PopTimeoutError, PushError, PushFuture, PushRefusal,
    QueueBuilder, QueueStats,
};
pub use registry::{
    component, lookup_component, refused_names, registered_components, try_component, ComponentId,
    NameError, CAPACITY, MAX_NAME_LEN,
};
pub use reservation::{reserve, reserve_in, try_with_budget, Reservation};
#[cfg(feature = "jemalloc")]
pub use responder::{
    responder_stats, start_responder, stop_responder, PressureSource, ResponderPolicy,
    ResponderStats,
};
pub use scope::{
    component_scope, current_component, scope_depth, scoped, try_component_scope, try_enter,
    InComponent, ScopeError, ScopeGuard, Scoped,
};
pub use shed_registry::{caches, pools, queues};
pub use shedding::{shedding_level, ShedReport, Shedding, SheddingError};
pub use stats::{
    component_stats, flush_thread, global_stats, shadow_resident_bytes, snapshot, try_snapshot,
    ComponentStats, GlobalStats, Snapshot,
};
pub use tag::{tag_shift, SizeClasses, SMALL_LIMIT, TAG_BYTES};

/// A thread folds a component's batched statistics into the shared counters every this many
/// operations of one kind (allocations, frees or reallocs, each counted on its own).
pub const BATCH_OPS: u64 = thread::FLUSH_OPS;
/// A thread also folds its batched statistics into the shared counters as soon as a batch's live
/// bytes (one component's, or every component's together) moved this many bytes either way.
pub const BATCH_BYTES: u64 = thread::FLUSH_BYTES;
/// How deeply component scopes may nest on one thread.
pub const MAX_SCOPE_DEPTH: usize = thread::MAX_DEPTH;
