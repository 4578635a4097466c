//! The component registry: a fixed-capacity table of interned component names.
//!
//! Names are interned once, when a scope is entered or a figure is read, never on the allocation
//! path. The table never allocates: names are `&'static str` and the slots are static arrays. Reading
//! is lock-free; interning a new name takes a short mutex that the allocation path never touches.
//!
//! Two ids are reserved: [`ComponentId::UNSCOPED`] (`"unscoped"`, allocations made outside any
//! scope) and [`ComponentId::OVERFLOW`] (`"overflow"`, every name that arrives when the table is
//! full). Refused names are counted ([`refused_names`]).

use std::fmt;
use std::sync::atomic::{AtomicPtr, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many components the registry holds, the two reserved ones included.
pub const CAPACITY: usize = 1024;

/// The longest component name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

const HASH_SLOTS: usize = CAPACITY * 2;

/// The identity of an interned component: an index into the registry.
///
/// ```
/// let pages = alloc_core::component("pages");
/// assert_eq!(pages.name(), "pages");
/// assert_eq!(alloc_core::component("pages"), pages);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId(pub(crate) u16);

impl ComponentId {
    /// Allocations made outside any component scope.
    pub const UNSCOPED: ComponentId = ComponentId(0);
    /// Every name interned after the registry was full.
    pub const OVERFLOW: ComponentId = ComponentId(1);

    /// The component's index in the registry (`0..CAPACITY`).
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The component's name.
    pub fn name(self) -> &'static str {
        name_of(self.0).unwrap_or("?")
    }
}

impl fmt::Debug for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComponentId({}, {:?})", self.0, self.name())
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a component name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong {
        /// The offending name.
        name: &'static str,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("component name is empty; expected 1 to 64 bytes"),
            NameError::TooLong { name } => write!(
                f,
                "component name {name:?} is {} bytes long; expected at most {MAX_NAME_LEN}",
                name.len()
            ),
        }
    }
}

impl std::error::Error for NameError {}

struct Name {
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
}

impl Name {
    const fn empty() -> Name {
        Name {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
        }
    }

    const fn fixed(name: &'static str) -> Name {
        Name {
            ptr: AtomicPtr::new(name.as_ptr().cast_mut()),
            len: AtomicUsize::new(name.len()),
        }
    }
}

static NAMES: [Name; CAPACITY] = {
    let mut names = [const { Name::empty() }; CAPACITY];
    names[0] = Name::fixed("unscoped");
    names[1] = Name::fixed("overflow");
    names
};
/// Open-addressed index from name hash to `id + 1` (0 = empty slot).
static HASH: [AtomicU16; HASH_SLOTS] = [const { AtomicU16::new(0) }; HASH_SLOTS];
static COUNT: AtomicUsize = AtomicUsize::new(2);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static INSERT: Mutex<()> = Mutex::new(());

/// Takes [`INSERT`] (for the fork handler, [`crate::fork`]).
pub(crate) fn lock_for_fork() -> std::sync::MutexGuard<'static, ()> {
    INSERT.lock().unwrap_or_else(|e| e.into_inner())
}

fn name_of(id: u16) -> Option<&'static str> {
    let slot = NAMES.get(id as usize)?;
    let ptr = slot.ptr.load(Ordering::Acquire);
    if ptr.is_null() {
        return None;
    }
    let len = slot.len.load(Ordering::Relaxed);
    // SAFETY: `ptr`/`len` were stored (len first, ptr with Release) from a `&'static str`, so they
    // describe valid UTF-8 that lives for the whole program.
    Some(unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len)) })
}

fn hash(name: &str) -> usize {
    // FNV-1a: short names, no allocation, good enough spread for a 2048-slot table.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) & (HASH_SLOTS - 1)
}

fn find(name: &str) -> Result<ComponentId, usize> {
    let mut i = hash(name);
    loop {
        let v = HASH[i].load(Ordering::Acquire);
        if v == 0 {
            return Err(i);
        }
        if name_of(v - 1) == Some(name) {
            return Ok(ComponentId(v - 1));
        }
        i = (i + 1) & (HASH_SLOTS - 1);
    }
}

/// Validates a component name without interning it.
pub(crate) fn validate(name: &'static str) -> Result<(), NameError> {
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.len() > MAX_NAME_LEN {
        Err(NameError::TooLong { name })
    } else {
        Ok(())
    }
}

/// Interns `name`, returning its id.
///
/// When the registry is full the name is refused: it maps to [`ComponentId::OVERFLOW`] and
/// [`refused_names`] goes up by one.
///
/// # Errors
/// [`NameError`] when the name is empty or longer than [`MAX_NAME_LEN`] bytes.
///
/// ```
/// let id = alloc_core::try_component("templates").unwrap();
/// assert_eq!(id.name(), "templates");
/// assert!(alloc_core::try_component("").is_err());
/// ```
pub fn try_component(name: &'static str) -> Result<ComponentId, NameError> {
    validate(name)?;
    match name {
        "unscoped" => return Ok(ComponentId::UNSCOPED),
        "overflow" => return Ok(ComponentId::OVERFLOW),
        _ => {}
    }
    if let Ok(id) = find(name) {
        return Ok(id);
    }
    Ok(insert(name))
}

/// Interns `name`, returning its id. See [`try_component`].
///
/// # Panics
/// When the name is empty or longer than [`MAX_NAME_LEN`] bytes.
///
/// ```
/// assert_eq!(alloc_core::component("cache").name(), "cache");
/// ```
pub fn component(name: &'static str) -> ComponentId {
    match try_component(name) {
        Ok(id) => id,
        Err(e) => panic!("memgov: {e}"),
    }
}

/// Looks a name up without interning it.
///
/// ```
/// assert_eq!(alloc_core::lookup_component("never-used-anywhere"), None);
/// let id = alloc_core::component("used");
/// assert_eq!(alloc_core::lookup_component("used"), Some(id));
/// ```
pub fn lookup_component(name: &str) -> Option<ComponentId> {
    match name {
        "unscoped" => Some(ComponentId::UNSCOPED),
        "overflow" => Some(ComponentId::OVERFLOW),
        _ => find(name).ok(),
    }
}

#[cold]
fn insert(name: &'static str) -> ComponentId {
    // A poisoned lock only means another thread panicked while holding it; the table is still
    // consistent (every write below is a single atomic store), so carry on.
    let _lock = INSERT.lock().unwrap_or_else(|e| e.into_inner());
    let slot = match find(name) {
        Ok(id) => return id,
        Err(slot) => slot,
    };
    let id = COUNT.load(Ordering::Relaxed);
    if id >= CAPACITY {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return ComponentId::OVERFLOW;
    }
    NAMES[id].len.store(name.len(), Ordering::Relaxed);
    NAMES[id]
        .ptr
        .store(name.as_ptr().cast_mut(), Ordering::Release);
    HASH[slot].store(id as u16 + 1, Ordering::Release);
    COUNT.store(id + 1, Ordering::Release);
    ComponentId(id as u16)
}

/// How many components are registered, the two reserved ones included.
///
/// ```
/// assert!(alloc_core::registered_components() >= 2);
/// ```
pub fn registered_components() -> usize {
    COUNT.load(Ordering::Acquire)
}

/// How many times a name was refused because the registry was full (those names count as
/// [`ComponentId::OVERFLOW`]). Each refused lookup counts, so a name refused again (a scope entered
/// in a loop) counts again: a sign of how much is going to "overflow", not a number of names.
///
/// ```
/// assert_eq!(alloc_core::refused_names(), 0);
/// ```
pub fn refused_names() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Every registered component, in registration order.
pub(crate) fn all() -> impl Iterator<Item = ComponentId> {
    (0..registered_components()).map(|i| ComponentId(i as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_resolve_to_reserved_ids() {
        assert_eq!(component("unscoped"), ComponentId::UNSCOPED);
        assert_eq!(component("overflow"), ComponentId::OVERFLOW);
        assert_eq!(ComponentId::UNSCOPED.name(), "unscoped");
    }

    #[test]
    fn interning_is_idempotent_and_distinct() {
        let a = component("registry-test-a");
        let b = component("registry-test-b");
        assert_ne!(a, b);
        assert_eq!(component("registry-test-a"), a);
        assert_eq!(lookup_component("registry-test-b"), Some(b));
    }

    #[test]
    fn bad_names_are_rejected_with_a_reason() {
        assert_eq!(try_component(""), Err(NameError::Empty));
        let long: &'static str = Box::leak("x".repeat(65).into_boxed_str());
        let err = try_component(long).unwrap_err();
        assert!(err.to_string().contains("65 bytes"), "{err}");
    }
}
