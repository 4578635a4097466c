//! Admission: ask a budget for bytes before allocating them, and degrade gracefully when it says no.

use crate::budget::{self, BudgetExceeded, Scope};
use crate::pressure;
use crate::registry::{self, ComponentId};
use crate::thread;
use std::fmt;

/// Bytes held against a component's budget (and the process's) until dropped or spent.
///
/// A reservation counts against the hard limits exactly like live bytes, so code can ask before
/// it allocates and choose another path (serve from disk, shrink a batch, reject a request) when
/// the answer is no. [`spend`](Reservation::spend) turns it into credit for allocations on the
/// calling thread in that component, so the bytes it covers are not counted twice.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
/// use alloc_core::{reserve, set_budget, Limits};
/// set_budget("batches", Limits::hard(1 << 20)).unwrap();
/// let mut r = reserve("batches", 256 * 1024).unwrap();
/// assert!(r.try_grow(512 * 1024).is_ok());
/// let err = reserve("batches", 512 * 1024).unwrap_err(); // 768 KiB held: no room for 512 more
/// assert_eq!(err.limit, 1 << 20);
/// r.shrink(512 * 1024);
/// drop(r);
/// assert!(reserve("batches", 900 * 1024).is_ok());
/// ```
#[must_use = "a reservation is given back when dropped"]
pub struct Reservation {
    component: ComponentId,
    bytes: u64,
}

impl Reservation {
    /// The component the bytes are reserved in.
    pub fn component(&self) -> ComponentId {
        self.component
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reserves `more` bytes on top.
    ///
    /// # Errors
    /// [`BudgetExceeded`] when the component's or the process's hard limit refuses; the
    /// reservation is unchanged.
    pub fn try_grow(&mut self, more: u64) -> Result<(), BudgetExceeded> {
        charge(self.component, more)?;
        self.bytes += more;
        Ok(())
    }

    /// Gives `less` bytes back (all of them, if `less` is larger than what is held).
    pub fn shrink(&mut self, less: u64) {
        let less = less.min(self.bytes);
        uncharge(self.component, less);
        self.bytes -= less;
    }

    /// Turns the reservation into credit for the calling thread: its next allocations in this
    /// component spend the reserved bytes instead of charging the budgets again. Credit the thread
    /// does not use goes back to the budgets as usual (when it exceeds the thread's credit cap, on
    /// [`flush_thread`](crate::flush_thread), and at thread exit).
    pub fn spend(mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        if !thread::give_credit(self.component.0, bytes) {
            uncharge(self.component, bytes);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        uncharge(self.component, self.bytes);
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("component", &self.component)
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn charge(component: ComponentId, bytes: u64) -> Result<(), BudgetExceeded> {
    let Ok(amount) = i64::try_from(bytes) else {
        // More than any limit can hold: refused, and counted like any other refusal.
        budget::refused(component.0, false, bytes);
        return Err(budget::component_entity(component.0).refusal(Some(component), bytes));
    };
    let entity = budget::component_entity(component.0);
    if !entity.charge_reserved(amount) {
        budget::refused(component.0, false, bytes);
        return Err(entity.refusal(Some(component), bytes));
    }
    let process = budget::process_entity();
    if !process.charge_reserved(amount) {
        entity.uncharge(amount);
        budget::refused(component.0, true, bytes);
        return Err(process.refusal(None, bytes));
    }
    pressure::evaluate(Scope::Component(component));
    pressure::evaluate(Scope::Process);
    Ok(())
}

fn uncharge(component: ComponentId, bytes: u64) {
    if bytes == 0 {
        return;
    }
    budget::component_entity(component.0).uncharge(bytes as i64);
    budget::process_entity().uncharge(bytes as i64);
    pressure::evaluate(Scope::Component(component));
    pressure::evaluate(Scope::Process);
}

/// Reserves `bytes` in the component called `name`, against its hard limit and the process's.
///
/// # Errors
/// [`BudgetExceeded`] naming the component (or the process), the limit, what was charged and
/// what was asked. Without a hard limit, a reservation that would take the charged bytes past
/// 2^62 is refused too (with `limit` `u64::MAX`). An invalid name is reported as a refusal by the `"overflow"` component with
/// limit 0; use [`reserve_in`] with an id to avoid names altogether.
///
/// ```
/// let r = alloc_core::reserve("uploads", 4096).unwrap();
/// assert_eq!(r.bytes(), 4096);
/// ```
pub fn reserve(name: &'static str, bytes: u64) -> Result<Reservation, BudgetExceeded> {
    match registry::try_component(name) {
        Ok(id) => reserve_in(id, bytes),
        Err(_) => Err(invalid_name(bytes)),
    }
}

/// The refusal of a reservation under an invalid name.
fn invalid_name(bytes: u64) -> BudgetExceeded {
    BudgetExceeded {
        component: Some(ComponentId::OVERFLOW),
        limit: 0,
        charged: 0,
        requested: bytes,
    }
}

/// Reserves `bytes` in `component`. See [`reserve`].
///
/// # Errors
/// [`BudgetExceeded`] when a hard limit refuses.
pub fn reserve_in(component: ComponentId, bytes: u64) -> Result<Reservation, BudgetExceeded> {
    crate::config::ensure_init();
    charge(component, bytes)?;
    Ok(Reservation { component, bytes })
}

/// Runs `f` inside the component called `name` if `bytes` can be reserved there first; the
/// reservation is spent as credit for `f`'s allocations on this thread.
///
/// # Errors
/// [`BudgetExceeded`] when the reservation is refused; `f` does not run.
///
/// # Panics
/// As [`component_scope`](crate::component_scope), when 64 scopes are already open on this
/// thread: then nothing is reserved and `f` does not run.
///
/// ```
/// let v = alloc_core::try_with_budget("thumbnails", 64 * 1024, || vec![0u8; 64 * 1024]).unwrap();
/// assert_eq!(v.len(), 64 * 1024);
/// ```
pub fn try_with_budget<R>(
    name: &'static str,
    bytes: u64,
    f: impl FnOnce() -> R,
) -> Result<R, BudgetExceeded> {
    let Ok(component) = registry::try_component(name) else {
        return Err(invalid_name(bytes));
    };
    // The scope first: were it refused after the reservation, `f` would run in the outer
    // component on credit spent for this one.
    let _scope = match crate::scope::try_enter(component) {
        Ok(scope) => scope,
        Err(e) => panic!("{e}"),
    };
    let reservation = reserve_in(component, bytes)?;
    reservation.spend();
    Ok(f())
}
