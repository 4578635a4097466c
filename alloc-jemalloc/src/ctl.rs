//! Typed jemalloc controls: decay times, purges, background threads, the thread cache.

use crate::error::CtlError;
use crate::raw;

/// `MALLCTL_ARENAS_ALL`: the pseudo-arena index that means every arena.
pub const ARENAS_ALL: u32 = 4096;

macro_rules! control {
    ($(#[$doc:meta])* get $get:ident, $name:literal, $t:ty) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`CtlError`] when jemalloc refuses the read.
        pub fn $get() -> Result<$t, CtlError> {
            // SAFETY: jemalloc documents this control with this type.
            unsafe { raw::read::<$t>($name) }
        }
    };
    ($(#[$doc:meta])* get $get:ident, set $set:ident, $name:literal, $t:ty) => {
        control!($(#[$doc])* get $get, $name, $t);

        #[doc = concat!("Sets `", $name, "`.")]
        ///
        /// # Errors
        /// [`CtlError`] when jemalloc refuses the value.
        pub fn $set(value: $t) -> Result<(), CtlError> {
            // SAFETY: jemalloc documents this control with this type.
            unsafe { raw::write::<$t>($name, value) }
        }
    };
}

control!(
    /// Whether jemalloc's background purging threads are on (`background_thread`).
    get background_threads, set set_background_threads, "background_thread", bool
);
control!(
    /// The most background threads jemalloc may run (`max_background_threads`).
    get max_background_threads, set set_max_background_threads, "max_background_threads", usize
);
control!(
    /// How many background threads run now (`stats.background_thread.num_threads`; refreshed by
    /// [`refresh`](crate::refresh)).
    get running_background_threads, "stats.background_thread.num_threads", usize
);
control!(
    /// The dirty decay time, in ms, that arenas created from now on get (`arenas.dirty_decay_ms`).
    get default_dirty_decay_ms, set set_default_dirty_decay_ms, "arenas.dirty_decay_ms", isize
);
control!(
    /// The muzzy decay time, in ms, that arenas created from now on get (`arenas.muzzy_decay_ms`).
    get default_muzzy_decay_ms, set set_default_muzzy_decay_ms, "arenas.muzzy_decay_ms", isize
);
control!(
    /// The dirty decay time jemalloc was started with (`opt.dirty_decay_ms`).
    get startup_dirty_decay_ms, "opt.dirty_decay_ms", isize
);
control!(
    /// The muzzy decay time jemalloc was started with (`opt.muzzy_decay_ms`).
    get startup_muzzy_decay_ms, "opt.muzzy_decay_ms", isize
);
control!(
    /// How many arena slots there are (`arenas.narenas`); some may not be initialised yet.
    get arena_count, "arenas.narenas", u32
);
control!(
    /// jemalloc's page size (`arenas.page`).
    get page_size, "arenas.page", usize
);

/// Decay times: how long jemalloc keeps freed pages before returning them to the system, in
/// milliseconds. `-1` means never, `0` means at once.
///
/// ```
/// let d = alloc_jemalloc::decay().unwrap();
/// assert!(d.dirty_ms >= -1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decay {
    /// Dirty pages (freed, still holding data) become muzzy or are purged after this long.
    pub dirty_ms: isize,
    /// Muzzy pages (advised away lazily) are purged after this long.
    pub muzzy_ms: isize,
}

/// Whether arena `i` exists (`arena.<i>.initialized`).
///
/// jemalloc answers this from the view it took at the last `epoch`, so an arena created since
/// (by a new thread, or `arenas.create`) would read as absent: this advances the epoch first.
///
/// # Errors
/// [`CtlError`] for an index beyond `arenas.narenas`.
pub fn arena_initialized(i: u32) -> Result<bool, CtlError> {
    crate::refresh()?;
    arena_initialized_at_last_refresh(i)
}

/// `arena.<i>.initialized` as jemalloc saw it at the last `epoch` (for loops that refresh once).
pub(crate) fn arena_initialized_at_last_refresh(i: u32) -> Result<bool, CtlError> {
    // SAFETY: `arena.<i>.initialized` is a bool.
    unsafe { raw::read::<bool>(&format!("arena.{i}.initialized")) }
}

/// The decay times of arena 0 (every process has it).
///
/// # Errors
/// [`CtlError`] when jemalloc refuses the read.
pub fn decay() -> Result<Decay, CtlError> {
    arena_decay(0)
}

/// The decay times of arena `i`.
///
/// # Errors
/// [`CtlError`] when the arena does not exist or is not initialised.
pub fn arena_decay(i: u32) -> Result<Decay, CtlError> {
    // SAFETY: both controls are ssize_t.
    unsafe {
        Ok(Decay {
            dirty_ms: raw::read::<isize>(&format!("arena.{i}.dirty_decay_ms"))?,
            muzzy_ms: raw::read::<isize>(&format!("arena.{i}.muzzy_decay_ms"))?,
        })
    }
}

/// The longest decay time jemalloc accepts, in ms (its `NSTIME_SEC_MAX`, 18446744072 s).
const DECAY_MS_MAX: u64 = 18_446_744_072 * 1000;

/// `ms` is a decay time jemalloc accepts (-1, or 0 to [`DECAY_MS_MAX`]), else EINVAL for `name`.
fn check_decay_ms(name: &str, ms: isize) -> Result<(), CtlError> {
    if ms < -1 || (ms > 0 && ms as u64 > DECAY_MS_MAX) {
        return Err(CtlError::new(name, libc::EINVAL));
    }
    Ok(())
}

/// Sets the decay times of arena `i` alone (`arena.<i>.dirty_decay_ms`, `arena.<i>.muzzy_decay_ms`).
///
/// # Errors
/// [`CtlError`] (EINVAL) for a time below -1 or past jemalloc's longest, before anything is
/// changed; [`CtlError`] when the arena does not exist or is not initialised.
///
/// ```
/// let before = alloc_jemalloc::arena_decay(0).unwrap();
/// alloc_jemalloc::set_arena_decay(0, alloc_jemalloc::Decay { dirty_ms: 500, muzzy_ms: 0 }).unwrap();
/// assert_eq!(alloc_jemalloc::arena_decay(0).unwrap().dirty_ms, 500);
/// alloc_jemalloc::set_arena_decay(0, before).unwrap();
/// ```
pub fn set_arena_decay(i: u32, d: Decay) -> Result<(), CtlError> {
    check_decay_ms("arena.<i>.dirty_decay_ms", d.dirty_ms)?;
    check_decay_ms("arena.<i>.muzzy_decay_ms", d.muzzy_ms)?;
    // SAFETY: both controls are ssize_t.
    unsafe {
        raw::write::<isize>(&format!("arena.{i}.dirty_decay_ms"), d.dirty_ms)?;
        raw::write::<isize>(&format!("arena.{i}.muzzy_decay_ms"), d.muzzy_ms)
    }
}

/// Sets the decay times of every existing arena and of arenas created later; returns how many
/// existing arenas were updated. (`arenas.*_decay_ms` alone only affects arenas created later.)
///
/// An arena whose creation on another thread overlaps the call is updated too when it is
/// published before the call's last look at the arenas (each look that finds an arena to update
/// is followed by another); one published after that keeps the times it was created with.
///
/// # Errors
/// [`CtlError`] (EINVAL) for a time below -1 or past jemalloc's longest, before anything is
/// changed; [`CtlError`] when jemalloc refuses otherwise. Arenas that are not initialised are
/// skipped.
///
/// ```
/// let before = alloc_jemalloc::decay().unwrap();
/// alloc_jemalloc::set_decay(alloc_jemalloc::Decay { dirty_ms: 1000, muzzy_ms: 0 }).unwrap();
/// assert_eq!(alloc_jemalloc::decay().unwrap().dirty_ms, 1000);
/// alloc_jemalloc::set_decay(before).unwrap();
/// ```
pub fn set_decay(d: Decay) -> Result<usize, CtlError> {
    // Checked before anything is written, so that a refused value changes nothing (jemalloc
    // would take the dirty time and then refuse the muzzy one).
    check_decay_ms("arenas.dirty_decay_ms", d.dirty_ms)?;
    check_decay_ms("arenas.muzzy_decay_ms", d.muzzy_ms)?;
    set_default_dirty_decay_ms(d.dirty_ms)?;
    set_default_muzzy_decay_ms(d.muzzy_ms)?;
    // `arena.<i>.initialized` is as of the last epoch: refresh it, after the defaults are set, so
    // that every arena is either seen here or created with the new defaults. An arena another
    // thread was creating meanwhile took the old defaults when its creation began and is seen
    // only once it is published: look again until a look finds no arena not yet updated.
    let mut done: Vec<bool> = Vec::new();
    let mut updated = 0;
    loop {
        crate::refresh()?;
        let count = arena_count()?;
        done.resize(done.len().max(count as usize), false);
        let mut found = 0;
        for i in 0..count {
            if done[i as usize] || !arena_initialized_at_last_refresh(i).unwrap_or(false) {
                continue;
            }
            // SAFETY: both controls are ssize_t.
            unsafe {
                raw::write::<isize>(&format!("arena.{i}.dirty_decay_ms"), d.dirty_ms)?;
                raw::write::<isize>(&format!("arena.{i}.muzzy_decay_ms"), d.muzzy_ms)?;
            }
            done[i as usize] = true;
            found += 1;
        }
        if found == 0 {
            return Ok(updated);
        }
        updated += found;
    }
}

/// Returns every arena's unused dirty and muzzy pages to the system now (`arena.<all>.purge`).
/// Arenas not yet wrapped by [`hook_arenas`](crate::hook_arenas) are wrapped first, so that a
/// listener hears of the purge (a failure to wrap is counted, and the purge goes on).
///
/// # Errors
/// [`CtlError`] when jemalloc refuses.
pub fn purge_all() -> Result<(), CtlError> {
    let _ = crate::hook_arenas();
    raw::call(&format!("arena.{ARENAS_ALL}.purge"))
}

/// Purges what every arena's decay times say is due now (`arena.<all>.decay`), wrapping
/// arenas first as [`purge_all`] does.
///
/// # Errors
/// [`CtlError`] when jemalloc refuses.
pub fn decay_all() -> Result<(), CtlError> {
    let _ = crate::hook_arenas();
    raw::call(&format!("arena.{ARENAS_ALL}.decay"))
}

/// Returns the calling thread's cached blocks to their arenas (`thread.tcache.flush`).
///
/// # Errors
/// [`CtlError`] when jemalloc refuses (no thread cache).
pub fn flush_thread_cache() -> Result<(), CtlError> {
    raw::call("thread.tcache.flush")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serial_test::serial;

    #[test]
    #[serial]
    fn background_threads_round_trip() {
        let before = background_threads().unwrap();
        set_background_threads(true).unwrap();
        assert!(background_threads().unwrap());
        crate::refresh().unwrap();
        assert!(running_background_threads().unwrap() >= 1);
        set_background_threads(false).unwrap();
        assert!(!background_threads().unwrap());
        set_background_threads(before).unwrap();
        let max = max_background_threads().unwrap();
        set_max_background_threads(max).unwrap();
        assert_eq!(max_background_threads().unwrap(), max);
    }

    #[test]
    #[serial]
    fn default_decay_round_trips() {
        let (dirty, muzzy) = (
            default_dirty_decay_ms().unwrap(),
            default_muzzy_decay_ms().unwrap(),
        );
        set_default_dirty_decay_ms(1234).unwrap();
        set_default_muzzy_decay_ms(-1).unwrap();
        assert_eq!(
            (
                default_dirty_decay_ms().unwrap(),
                default_muzzy_decay_ms().unwrap()
            ),
            (1234, -1)
        );
        set_default_dirty_decay_ms(dirty).unwrap();
        set_default_muzzy_decay_ms(muzzy).unwrap();
        assert!(set_default_dirty_decay_ms(-2).is_err());
    }

    #[test]
    #[serial]
    fn decay_of_every_arena_round_trips() {
        let before = decay().unwrap();
        let wanted = Decay {
            dirty_ms: 250,
            muzzy_ms: 50,
        };
        // The arenas that exist before the call. Not every arena initialised after it: one that
        // another test's new thread began creating before the call took the old defaults, and
        // may be published only after the call's last look (it failed so, 1 run in 125, on 16
        // cores, where jemalloc makes 64 arenas).
        let existing: Vec<u32> = (0..arena_count().unwrap())
            .filter(|&i| arena_initialized(i).unwrap())
            .collect();
        let updated = set_decay(wanted).unwrap();
        assert!(updated >= existing.len(), "{updated} < {}", existing.len());
        for &i in &existing {
            assert_eq!(arena_decay(i).unwrap(), wanted, "arena {i}");
        }
        // Arenas created from now on get the new times.
        assert_eq!(
            (
                default_dirty_decay_ms().unwrap(),
                default_muzzy_decay_ms().unwrap()
            ),
            (250, 50)
        );
        set_decay(before).unwrap();
        assert_eq!(decay().unwrap(), before);
    }

    #[test]
    #[serial]
    fn void_controls_succeed() {
        purge_all().unwrap();
        decay_all().unwrap();
        // The test thread allocates through jemalloc only if the test binary uses it; either way
        // a flush is accepted.
        flush_thread_cache().unwrap();
    }

    /// An arena created since jemalloc last refreshed its statistics (`arena.<i>.initialized` is
    /// jemalloc's cached view, updated by `epoch`) still gets the decay times.
    #[test]
    #[serial]
    fn set_decay_reaches_an_arena_created_since_the_last_refresh() {
        let before = decay().unwrap();
        crate::refresh().unwrap();
        // SAFETY: `arenas.create` reads an unsigned (the new arena's index).
        let arena = unsafe { raw::read::<u32>("arenas.create") }.unwrap();
        let wanted = Decay {
            dirty_ms: 4321,
            muzzy_ms: 123,
        };
        assert_ne!(arena_decay(arena).unwrap(), wanted);
        set_decay(wanted).unwrap();
        let got = arena_decay(arena).unwrap();
        set_decay(before).unwrap();
        assert_eq!(got, wanted, "arena {arena}");
    }

    /// A value jemalloc refuses changes nothing, and the error says what was wrong.
    #[test]
    #[serial]
    fn a_refused_decay_changes_nothing() {
        let before = (
            default_dirty_decay_ms().unwrap(),
            default_muzzy_decay_ms().unwrap(),
            decay().unwrap(),
        );
        let e = set_decay(Decay {
            dirty_ms: 4444,
            muzzy_ms: -2,
        })
        .unwrap_err();
        let after = (
            default_dirty_decay_ms().unwrap(),
            default_muzzy_decay_ms().unwrap(),
            decay().unwrap(),
        );
        assert_eq!(after, before);
        assert_eq!(e.errno, libc::EINVAL, "{e}");
        // The bound is jemalloc's own.
        let longest = DECAY_MS_MAX as isize;
        assert!(check_decay_ms("x", longest).is_ok());
        assert!(check_decay_ms("x", longest + 1).is_err());
        set_default_dirty_decay_ms(longest).unwrap();
        assert!(set_default_dirty_decay_ms(longest + 1).is_err());
        set_default_dirty_decay_ms(before.0).unwrap();
    }

    #[test]
    fn read_only_controls_read() {
        assert!(startup_dirty_decay_ms().unwrap() >= -1);
        assert!(startup_muzzy_decay_ms().unwrap() >= -1);
        assert!(page_size().unwrap() >= 4096);
        assert!(arena_count().unwrap() >= 1);
        assert!(arena_initialized(0).unwrap());
    }
}
