//! Budgets: hard and soft byte limits for the whole process and for each component, and the
//! charge counters that make hard limits exact.
//!
//! # How a hard limit stays exact under batching
//! Every component, and the process as a whole, has a shared `charged` counter: the bytes of its
//! live blocks plus the credit that threads hold for it. A thread allocating `n` bytes first spends
//! `n` of its own credit for the component and for the process (a relaxed load and store each). Only
//! when a credit runs out does it charge more to the shared counter, with a compare-exchange that
//! refuses to pass the hard limit: [`CREDIT_CHUNK`] at a time while the limit is far, exactly what
//! it needs once the limit is within [`NEAR_LIMIT`]. Frees give credit back to the freeing thread;
//! credit above [`MAX_CREDIT`] goes back to the shared counter.
//!
//! So at every instant `live <= charged <= hard limit`: no allocation is ever handed out past a hard
//! limit, whatever the concurrency. When a limit changes, a limit epoch moves on and every thread
//! hands back all its credit before it spends any more, so credit charged under a higher limit is
//! never spent under a lower one: once `set_budget` (or `set_process_limits`) has returned, an
//! allocation that starts afterwards is checked against the new limit. While a lowered limit is
//! below what is already charged, threads hold no credit at all (frees give bytes straight back,
//! allocations charge exactly what they need), so usage can only fall until it is under the limit. The price is that an allocation can be refused while other
//! threads hold unspent credit: at most `MAX_CREDIT` (256 KiB) per thread per component, and the
//! same for the process limit. Threads return their credit at exit and on
//! [`flush_thread`](crate::flush_thread).
//!
//! The process's charged bytes also hold the emergency reserve
//! ([`set_emergency_reserve`](crate::set_emergency_reserve)): a slice of the process's hard limit
//! charged in advance for the threads that react to pressure, which take their bytes from it when
//! the limit refuses them. Being charged already, it keeps `live <= charged <= hard limit` true.

use crate::pressure::{self, Level};
use crate::registry::{self, ComponentId, NameError, CAPACITY};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize};

mod entity;

pub use entity::NEAR_LIMIT;
use entity::NONE;
pub(crate) use entity::{Entity, EPOCH_STEP};

/// The atomics that [`entity`] is written against: std's here. The model check
/// (`tests/loom_budget.rs`) includes the same file with loom's.
mod sync {
    pub(super) use std::hint::spin_loop;
    pub(super) use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicU8};
}

/// Credit a thread charges at a time while the limit is far.
pub const CREDIT_CHUNK: i64 = 64 * 1024;
/// Credit a thread keeps after frees; beyond this it goes back to the shared counter.
pub const MAX_CREDIT: i64 = 256 * 1024;

/// A pair of byte limits. `None` means no limit.
///
/// ```
/// let l = alloc_core::Limits::hard(64 << 20).with_soft(48 << 20);
/// assert_eq!((l.hard, l.soft), (Some(64 << 20), Some(48 << 20)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Allocations that would take the live bytes past this fail.
    pub hard: Option<u64>,
    /// Pressure levels are fractions of this (of `hard` when there is no soft limit).
    pub soft: Option<u64>,
}

impl Limits {
    /// No limits.
    pub const NONE: Limits = Limits {
        hard: None,
        soft: None,
    };

    /// A hard limit only.
    pub const fn hard(bytes: u64) -> Limits {
        Limits {
            hard: Some(bytes),
            soft: None,
        }
    }

    /// A soft limit only.
    pub const fn soft(bytes: u64) -> Limits {
        Limits {
            hard: None,
            soft: Some(bytes),
        }
    }

    /// These limits with a soft limit of `bytes`.
    pub const fn with_soft(self, bytes: u64) -> Limits {
        Limits {
            soft: Some(bytes),
            ..self
        }
    }

    /// These limits with a hard limit of `bytes`.
    pub const fn with_hard(self, bytes: u64) -> Limits {
        Limits {
            hard: Some(bytes),
            ..self
        }
    }
}

/// An allocation or reservation that a hard limit refused.
///
/// ```
/// alloc_core::set_budget("refusals", alloc_core::Limits::hard(1000)).unwrap();
/// let e = alloc_core::reserve("refusals", 1200).unwrap_err();
/// assert_eq!((e.limit, e.requested, e.shortfall()), (1000, 1200, 200));
/// assert!(e.to_string().contains("\"refusals\""), "{e}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetExceeded {
    /// The component whose budget refused, or `None` for the process-wide limit.
    pub component: Option<ComponentId>,
    /// The hard limit, in bytes.
    pub limit: u64,
    /// Bytes charged against the limit when the request was refused.
    pub charged: u64,
    /// Bytes requested.
    pub requested: u64,
}

impl BudgetExceeded {
    /// How many bytes over the limit the request would have gone (at most `u64::MAX`: a request
    /// can be that large).
    pub fn shortfall(&self) -> u64 {
        match self.limit.checked_sub(self.charged) {
            Some(room) => self.requested.saturating_sub(room),
            None => self.requested.saturating_add(self.charged - self.limit),
        }
    }
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.component {
            Some(c) => write!(f, "component {:?}", c.name())?,
            None => f.write_str("the process")?,
        }
        write!(
            f,
            " would exceed its hard limit of {} bytes: {} charged, {} requested, {} short",
            self.limit,
            self.charged,
            self.requested,
            self.shortfall()
        )
    }
}

impl std::error::Error for BudgetExceeded {}

/// Why limits could not be set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitError {
    /// The component name was not accepted.
    Name(NameError),
    /// A limit does not fit in an `i64`.
    TooLarge {
        /// The offending value.
        bytes: u64,
    },
    /// The registry is full, so the name maps to "overflow", which every refused name shares: a
    /// budget for it would limit all of them.
    RegistryFull {
        /// The refused name.
        name: &'static str,
    },
    /// The soft limit is above the hard limit.
    SoftAboveHard {
        /// The soft limit.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::Name(e) => e.fmt(f),
            LimitError::TooLarge { bytes } => {
                write!(
                    f,
                    "limit of {bytes} bytes is too large; expected at most {}",
                    i64::MAX
                )
            }
            LimitError::RegistryFull { name } => {
                write!(
                    f,
                    "cannot set a budget for component {name:?}: the registry is full \
                     ({CAPACITY} components) and refused the name; expected a registered name"
                )
            }
            LimitError::SoftAboveHard { soft, hard } => {
                write!(
                    f,
                    "soft limit {soft} is above hard limit {hard}; expected soft <= hard"
                )
            }
        }
    }
}

impl std::error::Error for LimitError {}

impl From<NameError> for LimitError {
    fn from(e: NameError) -> Self {
        LimitError::Name(e)
    }
}

impl Entity {
    /// No limits, nothing charged.
    const fn new() -> Entity {
        Entity {
            charged: AtomicI64::new(0),
            hard: AtomicU64::new(NONE),
            soft: AtomicU64::new(NONE),
            limits_seq: AtomicU64::new(0),
            level: AtomicU8::new(0),
            failures: AtomicU64::new(0),
            over: AtomicBool::new(false),
        }
    }

    pub fn limits(&self) -> Limits {
        let (hard, soft) = self.limit_pair();
        let set = |v: u64| Some(v).filter(|&v| v != NONE);
        Limits {
            hard: set(hard),
            soft: set(soft),
        }
    }

    /// The limit pressure levels are fractions of: the soft limit, else the hard one.
    pub fn pressure_base(&self) -> Option<u64> {
        let l = self.limits();
        l.soft.or(l.hard)
    }

    pub fn charged(&self) -> u64 {
        self.charged.load(Relaxed).max(0) as u64
    }

    /// The error for a refused request of `requested` bytes.
    pub fn refusal(&self, component: Option<ComponentId>, requested: u64) -> BudgetExceeded {
        BudgetExceeded {
            component,
            limit: self.limits().hard.unwrap_or(u64::MAX),
            charged: self.charged(),
            requested,
        }
    }
}

static COMPONENTS: [CachePadded<Entity>; CAPACITY] =
    [const { CachePadded::new(Entity::new()) }; CAPACITY];
static PROCESS: CachePadded<Entity> = CachePadded::new(Entity::new());
/// True once any limit has been set: until then nothing needs re-evaluating pressure.
pub(crate) static ANY_LIMIT: AtomicBool = AtomicBool::new(false);
/// Moves on by [`EPOCH_STEP`] on every limit change. Threads compare it with the epoch of their
/// credit before spending any, and hand their credit back when it moved: credit charged under a
/// higher limit must not be spent under a lower one. Bit 0 ([`HISTOGRAMS_BIT`]) is set while
/// size histograms are on: `alloc` tests it in the epoch it loads for the fast path's compare,
/// and takes the fast path's twin that counts sizes while it is set. A block's epoch never has
/// it, so a plain fast path that loaded the epoch before histograms came on declines at the
/// compare, and the twin, which compares with the bit set, declines once they are off again.
pub(crate) static LIMIT_EPOCH: AtomicU64 = AtomicU64::new(0);
/// The bit of [`LIMIT_EPOCH`] that says histograms are on.
pub(crate) const HISTOGRAMS_BIT: u64 = 1;

/// The limit epoch, [`HISTOGRAMS_BIT`] included (acquire: a thread that sees a new epoch sees
/// the limits stored before it moved).
#[inline(always)]
pub(crate) fn limit_epoch() -> u64 {
    LIMIT_EPOCH.load(Acquire)
}

/// The limit epoch without [`HISTOGRAMS_BIT`]: what a thread's credit is charged under.
#[inline(always)]
pub(crate) fn credit_epoch() -> u64 {
    limit_epoch() & !HISTOGRAMS_BIT
}
/// How many budgets have more bytes charged than their hard limit allows (a limit was lowered
/// below usage). While any has, threads spend no credit at all: every allocation charges exactly
/// what it needs, so none can pass a limit, until usage is back under every limit.
static OVER_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Whether some budget is over its hard limit (see [`OVER_LIMIT`]).
#[inline]
pub(crate) fn strict() -> bool {
    OVER_LIMIT.load(Relaxed) != 0
}

#[inline(always)]
pub(crate) fn component_entity(comp: u16) -> &'static Entity {
    &COMPONENTS[comp as usize & (CAPACITY - 1)]
}

#[inline(always)]
pub(crate) fn process_entity() -> &'static Entity {
    &PROCESS
}

/// Which budget a figure or an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The process as a whole.
    Process,
    /// One component.
    Component(ComponentId),
}

impl Scope {
    pub(crate) fn entity(self) -> &'static Entity {
        match self {
            Scope::Process => process_entity(),
            Scope::Component(c) => component_entity(c.0),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Process => f.write_str("process"),
            Scope::Component(c) => write!(f, "component {:?}", c.name()),
        }
    }
}

/// Serialises limit changes: they are the writers of each budget's limits sequence lock.
static LIMIT_STORES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`LIMIT_STORES`] (for the fork handler, [`crate::fork`]).
pub(crate) fn lock_for_fork() -> std::sync::MutexGuard<'static, ()> {
    LIMIT_STORES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn store(entity: &Entity, limits: Limits) -> Result<(), LimitError> {
    for bytes in [limits.hard, limits.soft].into_iter().flatten() {
        if bytes > i64::MAX as u64 {
            return Err(LimitError::TooLarge { bytes });
        }
    }
    if let (Some(hard), Some(soft)) = (limits.hard, limits.soft) {
        if soft > hard {
            return Err(LimitError::SoftAboveHard { soft, hard });
        }
    }
    // Before the limits, so that the epoch step that publishes them publishes this too.
    ANY_LIMIT.store(true, Relaxed);
    {
        // `set_limits` calls must not overlap. Off the allocation path: only code that sets a
        // limit takes this lock.
        let _one_at_a_time = LIMIT_STORES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entity.set_limits(limits.hard.unwrap_or(NONE), limits.soft.unwrap_or(NONE));
    }
    crate::abort_line::install();
    Ok(())
}

/// Sets the process-wide limits (replacing the previous ones). Limits can be raised, lowered and
/// removed at any time; lowering one below what is already live makes new allocations fail and
/// puts the process at [`Level::Critical`] until usage falls.
///
/// A hard limit starts the monitor thread if it is not running, to hold the emergency reserve
/// ([`set_emergency_reserve`](crate::set_emergency_reserve); unless that is 0).
///
/// # Errors
/// [`LimitError`] when a limit exceeds `i64::MAX` or the soft limit is above the hard one.
///
/// # Panics
/// If the monitor thread has to be started and the system refuses a new thread.
///
/// ```
/// alloc_core::set_process_limits(alloc_core::Limits::hard(1 << 40)).unwrap();
/// assert_eq!(alloc_core::process_limits().hard, Some(1 << 40));
/// alloc_core::set_process_limits(alloc_core::Limits::NONE).unwrap();
/// ```
pub fn set_process_limits(limits: Limits) -> Result<(), LimitError> {
    crate::config::ensure_init();
    store_process(limits)
}

/// [`set_process_limits`] without reading the environment first (the environment reader uses it).
pub(crate) fn store_process(limits: Limits) -> Result<(), LimitError> {
    store(process_entity(), limits)?;
    pressure::evaluate(Scope::Process);
    crate::emergency_reserve::hold_when_wanted();
    #[cfg(feature = "jemalloc")]
    crate::responder::auto_start();
    Ok(())
}

/// The process-wide limits.
pub fn process_limits() -> Limits {
    crate::config::ensure_init();
    process_entity().limits()
}

/// Sets the limits of the component called `name` (replacing the previous ones).
///
/// # Errors
/// [`LimitError`] for an invalid name, a name the full registry refuses
/// ([`LimitError::RegistryFull`]), a limit above `i64::MAX`, or a soft limit above the hard one.
///
/// ```
/// alloc_core::set_budget("pages", alloc_core::Limits::hard(512 << 20).with_soft(400 << 20)).unwrap();
/// assert_eq!(alloc_core::budget("pages").soft, Some(400 << 20));
/// ```
pub fn set_budget(name: &'static str, limits: Limits) -> Result<(), LimitError> {
    set_component_budget(budget_component(name)?, limits)
}

/// The component a budget for `name` applies to. A name the full registry refuses is an error:
/// it maps to "overflow", and a budget there would limit every refused name at once.
pub(crate) fn budget_component(name: &'static str) -> Result<ComponentId, LimitError> {
    let id = registry::try_component(name)?;
    if id == ComponentId::OVERFLOW && name != "overflow" {
        return Err(LimitError::RegistryFull { name });
    }
    Ok(id)
}

/// Sets the limits of `component`. See [`set_budget`].
///
/// # Errors
/// As [`set_budget`].
pub fn set_component_budget(component: ComponentId, limits: Limits) -> Result<(), LimitError> {
    crate::config::ensure_init();
    store_component(component, limits)
}

/// [`set_component_budget`] without reading the environment first.
pub(crate) fn store_component(component: ComponentId, limits: Limits) -> Result<(), LimitError> {
    store(component_entity(component.0), limits)?;
    pressure::evaluate(Scope::Component(component));
    Ok(())
}

/// The limits of the component called `name` (none if it was never registered).
pub fn budget(name: &str) -> Limits {
    crate::config::ensure_init();
    registry::lookup_component(name).map_or(Limits::NONE, |c| component_entity(c.0).limits())
}

/// How a budget stands right now.
///
/// ```
/// let b = alloc_core::budget_stats(alloc_core::Scope::Process);
/// assert!(b.charged_bytes >= b.limits.hard.map_or(0, |_| 0));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetStats {
    /// Whose budget.
    pub scope: Scope,
    /// Its limits.
    pub limits: Limits,
    /// Live bytes plus the credit threads hold (what hard limits are checked against).
    pub charged_bytes: u64,
    /// The pressure level.
    pub level: Level,
    /// Allocations and reservations refused.
    pub failures: u64,
}

/// How the budget of `scope` stands.
pub fn budget_stats(scope: Scope) -> BudgetStats {
    crate::config::ensure_init();
    let e = scope.entity();
    BudgetStats {
        scope,
        limits: e.limits(),
        charged_bytes: e.charged(),
        level: Level::from_u8(e.level.load(Relaxed)),
        failures: e.failures.load(Relaxed),
    }
}

/// Counts a refusal against `comp` (and the process) and remembers it for the abort line.
#[cold]
#[inline(never)]
pub(crate) fn refused(comp: u16, by_process: bool, requested: u64) {
    component_entity(comp).failures.fetch_add(1, Relaxed);
    if by_process {
        process_entity().failures.fetch_add(1, Relaxed);
    }
    let entity = if by_process {
        process_entity()
    } else {
        component_entity(comp)
    };
    crate::abort_line::remember(
        comp,
        by_process,
        entity.limits().hard.unwrap_or(0),
        entity.charged(),
        requested,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    /// A charge racing with a lowered limit: whichever lands first, once both are done `over`
    /// says whether the charged bytes are above the new limit (else threads would go on keeping
    /// freed bytes as credit while usage is over it).
    #[test]
    fn a_charge_racing_a_lowered_limit_leaves_over_right() {
        let e: &'static Entity = Box::leak(Box::new(Entity::new()));
        let mut wrong = 0;
        for _ in 0..20_000 {
            e.charged.store(1000, Relaxed);
            store(e, Limits::hard(2000)).unwrap();
            let start = Barrier::new(2);
            std::thread::scope(|s| {
                s.spawn(|| {
                    start.wait();
                    store(e, Limits::hard(1100)).unwrap();
                });
                start.wait();
                // Refused when it sees the lower limit; else it lands above it.
                let _ = e.charge(500, 500);
            });
            let truth = e.charged.load(Relaxed) > e.hard.load(Relaxed) as i64;
            wrong += usize::from(e.over.load(Relaxed) != truth);
            e.uncharge(e.charged.load(Relaxed));
        }
        assert_eq!(wrong, 0, "over was wrong after {wrong} of 20 000 races");
    }
}
