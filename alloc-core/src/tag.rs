//! Where a block's component tag lives: a trailer in the size-class slack, or a shadow table for
//! requests that are exactly a size class.
//!
//! Every block handed out by the governor carries its component id (a `u16`). On free and realloc
//! the caller passes the block's layout back, and the tag's place is a pure function of that layout
//! ([`place`]), so finding it takes no lookup. That is what credits every byte back to the component
//! that allocated it, whichever thread or scope frees it.
//!
//! * **Trailer** (the common case): two bytes right after the requested ones; the inner allocator is
//!   asked for `size + 2`. jemalloc rounds each request up to a size class (8, 16, 32, 48, ..., then
//!   four classes per doubling), so whenever `size` is at least 2 bytes below its class, `size + 2`
//!   lands in the same class and the tag costs no memory and no time (classes under 16 bytes take
//!   a trailer even where it moves them up a class). Over an allocator whose classes memgov does
//!   not know (the system allocator), the trailer is always used.
//! * **Shadow** (jemalloc, request exactly a class of 16 bytes or more, or one byte short of one):
//!   the inner allocator is asked for exactly `size`, and the tag goes into a shadow table indexed by address: every block of a
//!   class starts on a multiple of the class's granule (16 B below 1 KiB, 256 B up to 16 KiB,
//!   16 KiB for the larger classes, whose blocks are at least that far apart), so
//!   `address >> log2(granule)` names one entry per block. The tables are one `MAP_NORESERVE`
//!   reservation of address space; only pages holding entries for live or past blocks become
//!   resident, at most 1/8 of the memory of exact-class blocks under 1 KiB, 1/128 up to 16 KiB,
//!   and one page per 32 MiB above. Without it, a 4096-byte request would move
//!   to jemalloc's 5120-byte class: 25% bigger and, measured here, twice as slow.
//!
//! The table pages follow the inner allocator's: when jemalloc purges a range, [`shadow::release`]
//! gives back the table pages that describe only that range (jemalloc's arenas report their purges
//! through extent hooks that alloc-jemalloc wraps; see `alloc_jemalloc::hook_arenas`). The
//! reservation is advised `MADV_NOHUGEPAGE`, so a sparse write never makes a whole huge page
//! resident, and `MADV_DONTDUMP`, so core dumps leave it out; either keeps its mapping apart from
//! its neighbours (`shadow_resident_bytes` reads its `Rss`).
//!
//! If the reservation fails (a strict overcommit policy, an address-space limit, a platform other
//! than 64-bit Linux), exact-class requests use a trailer too and move up one class.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Bytes a trailer tag adds to a request.
pub const TAG_BYTES: usize = 2;

/// [`SizeClasses::small_slack`] answers only for sizes and alignments below this.
pub const SMALL_LIMIT: usize = 1 << 20;

/// What the governor knows about the inner allocator's size classes.
///
/// # Safety
/// When `KNOWN` is true, `size_class(size, align)` must return exactly the number of usable bytes
/// the inner allocator gives for a request of `size` bytes at `align` (jemalloc's `nallocx`), the
/// same answer every time; `slack` and `small_slack` must agree with it (`slack` may cap its
/// answer at 255), `small_slack` must answer only below [`SMALL_LIMIT`], and `small_tag_shift`
/// must agree with [`tag_shift`]. Live blocks whose tag lives in a shadow table (a non-zero
/// [`tag_shift`] `s`) must start at least `1 << s` bytes apart, so that `address >> s` tells them
/// apart (true of jemalloc 5 with a 16-byte quantum and 4 KiB pages: blocks of a class are at
/// least the class apart). The governor relies on this to keep blocks' tags apart.
/// `alloc_small` and `dealloc_small` must do what the allocator's `GlobalAlloc` methods do for the
/// layouts they are documented for, and a block from either entry point must be freeable by the
/// other.
pub unsafe trait SizeClasses {
    /// Whether `size_class` knows the allocator's classes.
    const KNOWN: bool = false;

    /// The usable size of a block for a request of `size` bytes at `align`.
    #[inline(always)]
    fn size_class(&self, size: usize, _align: usize) -> usize {
        size
    }

    /// `size_class(size, align) - size`, capped at 255 where that is quicker to answer.
    #[inline(always)]
    fn slack(&self, size: usize, align: usize) -> usize {
        self.size_class(size, align).wrapping_sub(size)
    }

    /// [`slack`](Self::slack) for the requests it can answer in a few instructions without a
    /// call (typically small sizes at ordinary alignments), `None` for the others. Answers only
    /// for sizes and alignments below [`SMALL_LIMIT`] (the governor skips its range check then).
    #[inline(always)]
    fn small_slack(&self, _size: usize, _align: usize) -> Option<usize> {
        None
    }

    /// Where the governor keeps the tag of a request that [`small_slack`](Self::small_slack)
    /// answers for, as [`tag_shift`] of its size and class; `None` where `small_slack` is `None`.
    /// The default derives it from `small_slack`; an implementation may answer from a table, and
    /// must answer the same.
    #[inline(always)]
    fn small_tag_shift(&self, size: usize, align: usize) -> Option<u8> {
        let slack = self.small_slack(size, align)?;
        Some(tag_shift(size, size + slack))
    }

    /// The inner allocator's `alloc` (`alloc_zeroed` when `zeroed`) for the governor's fast path:
    /// `inner` is the inner layout of a request the fast path took, one that
    /// [`small_tag_shift`](Self::small_tag_shift) answered for where `KNOWN` is true (any
    /// request below 2^62 bytes and alignment where it is false). An implementation may skip
    /// tests such layouts make needless.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`, and `inner` is such a layout.
    #[inline(always)]
    unsafe fn alloc_small(&self, inner: std::alloc::Layout, zeroed: bool) -> *mut u8
    where
        Self: std::alloc::GlobalAlloc,
    {
        // SAFETY: forwarded from the caller.
        unsafe { alloc_or_zeroed(self, inner, zeroed) }
    }

    /// The inner allocator's `dealloc` for the governor's fast path: `inner` is the inner layout
    /// of a request as in `alloc_small`, and the block may have come from
    /// [`alloc_small`](Self::alloc_small), the inner allocator's `alloc`, `alloc_zeroed` or
    /// `realloc`.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`, and `inner` is such a layout.
    #[inline(always)]
    unsafe fn dealloc_small(&self, ptr: *mut u8, inner: std::alloc::Layout)
    where
        Self: std::alloc::GlobalAlloc,
    {
        // SAFETY: forwarded from the caller.
        unsafe { self.dealloc(ptr, inner) }
    }
}

/// `a`'s `alloc`, or its `alloc_zeroed` when `zeroed`.
///
/// # Safety
/// As `GlobalAlloc::alloc` for `layout`.
#[inline(always)]
pub(crate) unsafe fn alloc_or_zeroed<A: std::alloc::GlobalAlloc + ?Sized>(
    a: &A,
    layout: std::alloc::Layout,
    zeroed: bool,
) -> *mut u8 {
    // SAFETY: forwarded from the caller.
    unsafe {
        if zeroed {
            a.alloc_zeroed(layout)
        } else {
            a.alloc(layout)
        }
    }
}

/// Where the governor keeps the tag of a request of `size` bytes whose class is `class` bytes:
/// 0 for a trailer (at least [`TAG_BYTES`] of slack, or a class under 16 bytes), else log2 of the
/// granule of the shadow table that holds it (16 B for classes under 1 KiB, 256 B up to 16 KiB,
/// 16 KiB beyond).
///
/// ```
/// use alloc_core::tag_shift;
/// assert_eq!(tag_shift(100, 112), 0);
/// assert_eq!(tag_shift(64, 64), 4);
/// assert_eq!(tag_shift(4096, 4096), 8);
/// assert_eq!(tag_shift(1 << 20, 1 << 20), 14);
/// ```
pub const fn tag_shift(size: usize, class: usize) -> u8 {
    if class.wrapping_sub(size) >= TAG_BYTES || class < 16 {
        0
    } else if class < 1024 {
        4
    } else if class <= 16 * 1024 {
        8
    } else {
        14
    }
}

/// [`tag_shift`] of jemalloc's candidate class `16 * m`, for every `m` up to 16 KiB / 16: non-zero
/// where `16 * m` is a class (of 16 bytes or more).
///
/// Above 8 bytes every jemalloc class is a multiple of 16 (the quantum), so only a size `16m` or
/// `16m - 1` can leave less than [`TAG_BYTES`] of slack, and then only if `16m` is a class. One
/// entry per 16 bytes keeps the table at 1 KiB: a random-size workload touches 16 cache lines of
/// it, where a byte per size (16 KiB) measured 1.8 more L1 misses per operation under churn.
///
/// A `const`, not a `static`: the governor's methods are generic, so they are compiled in the
/// program's crate, where a `static` of this crate is reached through the GOT (one more load on
/// every allocation and free) and a `const` is copied in and reached directly.
#[cfg(feature = "jemalloc")]
const JEMALLOC_TAG_SHIFT_BY_16: [u8; alloc_jemalloc::SMALL_SLACK_LIMIT / 16 + 1] = {
    let mut table = [0u8; alloc_jemalloc::SMALL_SLACK_LIMIT / 16 + 1];
    let mut m = 1;
    while m < table.len() {
        let class = 16 * m;
        if alloc_jemalloc::usable_size_const(class) == class {
            table[m] = tag_shift(class, class);
        }
        m += 1;
    }
    table
};

// SAFETY: KNOWN is false, so nothing is promised.
unsafe impl SizeClasses for std::alloc::System {}

#[cfg(feature = "jemalloc")]
// SAFETY: alloc_jemalloc::usable_size is nallocx (tested against it for every size to 70 000 and
// a geometric sweep beyond); jemalloc places small blocks at slab + i * class (slabs page-aligned)
// and large ones at a page plus a random multiple of 64 bytes, at least 16 KiB apart.
unsafe impl SizeClasses for alloc_jemalloc::Jemalloc {
    const KNOWN: bool = cfg!(all(
        target_os = "linux",
        target_pointer_width = "64",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ));

    #[inline(always)]
    fn size_class(&self, size: usize, align: usize) -> usize {
        alloc_jemalloc::usable_size(size, align)
    }

    #[inline(always)]
    fn slack(&self, size: usize, align: usize) -> usize {
        alloc_jemalloc::slack(size, align)
    }

    #[inline(always)]
    fn small_slack(&self, size: usize, align: usize) -> Option<usize> {
        alloc_jemalloc::small_slack(size, align)
    }

    #[inline(always)]
    fn small_tag_shift(&self, size: usize, align: usize) -> Option<u8> {
        if size >= alloc_jemalloc::SMALL_SLACK_LIMIT
            || !alloc_jemalloc::small_alignment(size, align)
        {
            return None;
        }
        // `size % 16` is 15 or 0 exactly when `(size + 1) & 14` is 0; the others take a trailer
        // (entry 0), without a branch.
        let m = if (size + 1) & 14 == 0 {
            (size + 1) >> 4
        } else {
            0
        };
        Some(JEMALLOC_TAG_SHIFT_BY_16[m])
    }

    #[inline(always)]
    unsafe fn alloc_small(&self, inner: std::alloc::Layout, zeroed: bool) -> *mut u8 {
        if !Self::KNOWN {
            // `place_fast` answers for any layout within its limit here.
            // SAFETY: forwarded from the caller.
            return unsafe { alloc_or_zeroed(self, inner, zeroed) };
        }
        // SAFETY: with KNOWN, `place_fast` answers only where `small_tag_shift` does, so only
        // for alignments `small_alignment` accepts at the request's size, and so at the inner
        // size, which is no smaller; the inner size is non-zero (a zero-size request takes a
        // trailer).
        unsafe { alloc_jemalloc::Jemalloc::alloc_small(inner.size(), zeroed) }
    }

    #[inline(always)]
    unsafe fn dealloc_small(&self, ptr: *mut u8, inner: std::alloc::Layout) {
        if !Self::KNOWN {
            // SAFETY: forwarded from the caller.
            return unsafe { std::alloc::GlobalAlloc::dealloc(self, ptr, inner) };
        }
        // SAFETY: as in `alloc_small`, the alignment is one `small_alignment` accepts at the
        // inner size, so whichever jemalloc call made the block, its class is the one the size
        // names.
        unsafe { alloc_jemalloc::Jemalloc::dealloc_small(ptr, inner.size()) }
    }
}

/// Where one block's tag lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Place {
    /// Two bytes after the requested ones.
    Trailer,
    /// An entry of a shadow table: `table` is the table's first entry, `shift` log2 of its
    /// granule, so a block at `addr` has its tag at `table + (addr >> shift)`.
    Shadow { table: *mut u16, shift: u32 },
}

impl Place {
    /// Bytes the tag adds to the inner request.
    #[inline(always)]
    pub fn extra(self) -> usize {
        match self {
            Place::Trailer => TAG_BYTES,
            Place::Shadow { .. } => 0,
        }
    }

    /// Writes `component` as the tag of the block at `ptr` made for `size` requested bytes.
    ///
    /// # Safety
    /// `ptr` is a block from the inner allocator of at least `size + self.extra()` bytes, made for
    /// the layout this place was computed from.
    #[inline(always)]
    pub unsafe fn write(self, ptr: *mut u8, size: usize, component: u16) {
        match self {
            // SAFETY: the caller guarantees `size + 2` writable bytes.
            Place::Trailer => unsafe { ptr.add(size).cast::<u16>().write_unaligned(component) },
            Place::Shadow { table, shift } => {
                if let Some(entry) = shadow::entry(table, shift, ptr) {
                    // SAFETY: `entry` is inside the reserved shadow mapping (checked by `entry`).
                    unsafe { entry.write(component) }
                }
            }
        }
    }

    /// Reads the tag of the block at `ptr` made for `size` requested bytes; `None` if the block has
    /// none (a shadow address outside the tables, never seen on supported platforms).
    ///
    /// # Safety
    /// `ptr` is a live block the governor handed out for the layout this place was computed from.
    #[inline(always)]
    pub unsafe fn read(self, ptr: *const u8, size: usize) -> Option<u16> {
        match self {
            // SAFETY: the governor wrote the trailer at this offset when it handed the block out.
            Place::Trailer => Some(unsafe { ptr.add(size).cast::<u16>().read_unaligned() }),
            Place::Shadow { table, shift } => {
                // SAFETY: as in `write`.
                shadow::entry(table, shift, ptr).map(|e| unsafe { e.read() })
            }
        }
    }
}

impl Place {
    /// The place's [`tag_shift`]: 0 for a trailer.
    #[inline(always)]
    pub fn shift(self) -> u8 {
        match self {
            Place::Trailer => 0,
            Place::Shadow { shift, .. } => shift as u8,
        }
    }

    /// The place with this [`shift`](Self::shift) ([`tag_shift`]): a trailer for 0, else the
    /// shadow table with that granule; `None` while the shadow tables are not published (or could
    /// not be made): one load either way. The fast path carries only the shift across the inner allocator's call and
    /// finds the place again here, which leaves fewer registers to save.
    #[inline(always)]
    pub fn from_shift(shift: u8) -> Option<Place> {
        if shift == 0 {
            return Some(Place::Trailer);
        }
        shadow::published_table(shift)
    }
}

/// Where the tag of a block for `size` bytes at `align` lives over allocator `a`.
#[inline(always)]
pub(crate) fn place<A: SizeClasses>(a: &A, size: usize, align: usize) -> Place {
    if !A::KNOWN {
        return Place::Trailer;
    }
    // A slack of 0 or 1 byte: the request is (almost) exactly a class. Classes under 16 bytes are
    // only 8-aligned, too close together for the shadow's 16-byte granule; they take a trailer.
    // (`slack` may be capped at 255, which changes nothing here.)
    let shift = tag_shift(size, size.wrapping_add(a.slack(size, align)));
    if shift == 0 {
        return Place::Trailer;
    }
    match shadow::base() {
        Some(base) => shadow::table(base, shift),
        None => shadow::decide_then_place(shift),
    }
}

/// [`place`] for the common requests, in a few instructions and without a call; `None` for the
/// rest (large or over-aligned requests, or before the shadow tables are set up), which take
/// [`place`]. Where it answers, it answers as [`place`] does, and only for requests whose size and
/// alignment are both below `limit` (which the caller then need not check).
#[inline(always)]
pub(crate) fn place_fast<A: SizeClasses>(
    a: &A,
    size: usize,
    align: usize,
    limit: usize,
) -> Option<Place> {
    if !A::KNOWN {
        return ((size | align) < limit).then_some(Place::Trailer);
    }
    // `small_slack` answers only below SMALL_LIMIT (the trait's contract), so within `limit`.
    debug_assert!(limit >= SMALL_LIMIT);
    let shift = a.small_tag_shift(size, align)?;
    debug_assert!((size | align) < SMALL_LIMIT);
    Place::from_shift(shift)
}

/// The shadow tables.
pub(crate) mod shadow {
    use super::*;

    #[cfg(target_arch = "aarch64")]
    const VA_BITS: u32 = 48;
    #[cfg(not(target_arch = "aarch64"))]
    const VA_BITS: u32 = 47;

    /// log2 of each table's granule.
    const SHIFTS: [u32; 3] = [4, 8, 14];
    const fn table_bytes(shift: u32) -> usize {
        (1usize << (VA_BITS - shift)) * 2
    }
    const OFFSETS: [usize; 3] = [
        0,
        table_bytes(SHIFTS[0]),
        table_bytes(SHIFTS[0]) + table_bytes(SHIFTS[1]),
    ];
    const TOTAL: usize = OFFSETS[2] + table_bytes(SHIFTS[2]);

    /// What `BASE` holds once the reservation failed: the tables are never used.
    const FAILED: *mut u8 = std::ptr::dangling_mut::<u8>();

    /// The reservation; null until the first exact-class request decides, [`FAILED`] if it could
    /// not be made. Once non-null it never changes, so every block's place is decided once.
    static BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

    /// The reservation, once it is made and usable.
    #[inline(always)]
    pub(crate) fn base() -> Option<*mut u8> {
        let base = BASE.load(Ordering::Acquire);
        (base as usize > FAILED as usize).then_some(base)
    }

    /// Each table's offset in the reservation, indexed by its shift (the other entries are
    /// never used): one load on the allocation path instead of compares.
    const OFFSET_BY_SHIFT: [usize; 16] = {
        let mut offsets = [0; 16];
        let mut t = 0;
        while t < SHIFTS.len() {
            offsets[SHIFTS[t] as usize] = OFFSETS[t];
            t += 1;
        }
        offsets
    };

    /// Each table's first entry, indexed by its shift: null until the reservation is made (and
    /// for ever where it failed, and for shifts no table has). Once non-null, an entry never
    /// changes. One load answers both "are the tables usable" and "where is this one".
    static TABLE_BY_SHIFT: [AtomicPtr<u16>; 16] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; 16];

    /// The place in the table with granule `1 << shift` once the tables are published; `None`
    /// before (the caller then takes [`place`], which decides) or if they could
    /// not be made.
    #[inline(always)]
    pub(crate) fn published_table(shift: u8) -> Option<Place> {
        let table = TABLE_BY_SHIFT[shift as usize & 15].load(Ordering::Acquire);
        (!table.is_null()).then_some(Place::Shadow {
            table,
            shift: shift as u32,
        })
    }

    /// The place in the table with granule `1 << shift` (a non-zero [`tag_shift`]).
    #[inline(always)]
    pub(crate) fn table(base: *mut u8, shift: u8) -> Place {
        debug_assert!(SHIFTS.contains(&(shift as u32)));
        Place::Shadow {
            // Stays inside the TOTAL-byte mapping at `base`.
            table: base
                .wrapping_add(OFFSET_BY_SHIFT[shift as usize & 15])
                .cast(),
            shift: shift as u32,
        }
    }

    /// The entry for the block at `ptr` in the table at `table` with granule `1 << shift`; `None`
    /// for addresses beyond the tables.
    #[inline(always)]
    pub(crate) fn entry(table: *mut u16, shift: u32, ptr: *const u8) -> Option<*mut u16> {
        let addr = ptr as usize;
        if addr >> VA_BITS != 0 {
            return None;
        }
        // `addr < 2^VA_BITS`, so `addr >> shift` indexes inside the table, which lies inside the
        // reservation (a table made by `table` from a usable base).
        Some(table.wrapping_add(addr >> shift))
    }

    /// Reserves the tables (first exact-class request), or learns that they cannot be had, then
    /// places the block.
    #[cold]
    #[inline(never)]
    pub(crate) fn decide_then_place(shift: u8) -> Place {
        if BASE.load(Ordering::Acquire).is_null() {
            // Each racing thread maps its own reservation; the first to publish wins and the
            // others unmap theirs. Nobody waits.
            // SAFETY: a fresh anonymous mapping; MAP_NORESERVE so no memory is committed up front.
            let mem = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    TOTAL,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            let ours = if mem == libc::MAP_FAILED {
                FAILED
            } else {
                // No transparent huge pages for the tables: with THP set to `always`, one tag
                // written in an untouched 2 MiB stretch would make all 2 MiB resident, and the
                // tables are written sparsely. And no place in core dumps: tags do not help a
                // debugger, and a dump would walk all 17 TiB. Either flag also keeps the kernel
                // from merging the mapping with a neighbour. (A refusal leaves the default.)
                // SAFETY: advice on our own fresh mapping; it changes no contents.
                unsafe {
                    libc::madvise(mem, TOTAL, libc::MADV_NOHUGEPAGE);
                    libc::madvise(mem, TOTAL, libc::MADV_DONTDUMP);
                }
                mem.cast()
            };
            // SAFETY: sysconf reads a constant of the system; it neither allocates nor locks.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            PAGE.store(usize::try_from(page).unwrap_or(0), Ordering::Relaxed);
            let published = BASE.compare_exchange(
                std::ptr::null_mut(),
                ours,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if published.is_err() && ours != FAILED {
                // Another thread decided first; our reservation is not needed.
                // SAFETY: `mem` is our own mapping of TOTAL bytes, never shared.
                unsafe { libc::munmap(mem, TOTAL) };
            }
        }
        // Whatever was decided first is final for the life of the process.
        match base() {
            Some(base) => {
                // Only an atomic store: jemalloc's arenas are wrapped later, off this path.
                #[cfg(feature = "jemalloc")]
                alloc_jemalloc::set_pages_released_listener(release);
                // Every racing thread stores the same values; the fast placement finds them.
                for s in SHIFTS {
                    if let Place::Shadow { table, .. } = table(base, s as u8) {
                        TABLE_BY_SHIFT[s as usize].store(table, Ordering::Release);
                    }
                }
                table(base, shift)
            }
            None => Place::Trailer,
        }
    }

    /// Shadow-table bytes given back to the system so far (see [`release`]).
    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    /// The system's page size, learnt when the tables are reserved (0 before).
    static PAGE: AtomicUsize = AtomicUsize::new(0);

    /// Gives back the table pages whose entries all belong to addresses in `[addr, addr + len)`,
    /// a range whose pages the inner allocator has just given back, so no live block starts in
    /// it and those entries are dead. jemalloc's extent hooks call this (see
    /// `alloc_jemalloc::set_pages_released_listener`), inside jemalloc and possibly on the
    /// allocation path: it only computes, calls `madvise` and adds to a counter.
    ///
    /// Only whole table pages go: one covers 32 KiB of addresses in the 16-byte-granule table,
    /// 512 KiB in the 256-byte one and 32 MiB in the 16 KiB one, so smaller ranges free nothing.
    /// The entries read as 0 when touched again, and are written anew before any block there is
    /// freed (a block's tag is written when it is handed out).
    #[cfg_attr(not(feature = "jemalloc"), allow(dead_code))]
    pub(crate) fn release(addr: usize, len: usize) {
        let (Some(base), page) = (base(), PAGE.load(Ordering::Relaxed)) else {
            return;
        };
        if page == 0 || addr >> VA_BITS != 0 {
            return;
        }
        let end = addr.saturating_add(len).min(1 << VA_BITS);
        for (shift, offset) in SHIFTS.into_iter().zip(OFFSETS) {
            // Entries wholly inside the range: the first granule starting at or after `addr`,
            // up to the last one ending at or before `end`.
            let first = (addr >> shift) + (addr & ((1 << shift) - 1) != 0) as usize;
            let last = end >> shift;
            if first >= last {
                continue;
            }
            let table = base as usize + offset;
            // Whole pages of entries only: round the start up and the end down (`page` is a
            // power of two).
            let start = (table + 2 * first + page - 1) & !(page - 1);
            let stop = (table + 2 * last) & !(page - 1);
            if start >= stop {
                continue;
            }
            // SAFETY: `[start, stop)` lies inside this table (entries `first..last` of it, both
            // below 2^(VA_BITS - shift)), inside our private anonymous reservation; no live block
            // has its entry there (see above), and MADV_DONTNEED on such a mapping only makes
            // those pages read as zero again.
            if unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    stop - start,
                    libc::MADV_DONTNEED,
                )
            } == 0
            {
                RELEASED.fetch_add(stop - start, Ordering::Relaxed);
            }
        }
    }

    /// Off the allocation path (it takes jemalloc's control lock): wraps the extent hooks of
    /// jemalloc's arenas not wrapped yet, so that their purges reach [`release`]. Nothing to do
    /// until the tables exist (only a governor over jemalloc makes them). A failure is counted
    /// by alloc-jemalloc (`extent_hook_stats().failures`); the tables then keep those pages.
    ///
    /// At most one look per `every` (a look costs a few `mallctl`s per arena, and allocates
    /// nothing); a caller that finds another look running or recent returns at once.
    #[cfg(feature = "jemalloc")]
    pub(crate) fn hook_inner_arenas(every: std::time::Duration) {
        use std::sync::atomic::AtomicU64;
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        /// Milliseconds after START of the last look, plus one (0: never).
        static LAST_LOOK: AtomicU64 = AtomicU64::new(0);
        if base().is_none() {
            return;
        }
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        let last = LAST_LOOK.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < every.as_millis() as u64 {
            return;
        }
        if LAST_LOOK
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let _ = alloc_jemalloc::hook_arenas();
        }
    }

    /// Resident bytes of the tables: their mapping's `Rss` in `/proc/self/smaps` (the mapping is
    /// advised MADV_DONTDUMP and MADV_NOHUGEPAGE, which also keep the kernel from merging it with
    /// a neighbour, so the figure is the tables' alone). `None` without tables or where `/proc` cannot be read.
    /// Reads and parses a `/proc` file: for reports, not for loops.
    pub(crate) fn resident_bytes() -> Option<u64> {
        use std::io::BufRead;
        let base = base()?;
        let header = format!("{:x}-", base as usize);
        let smaps = std::fs::File::open("/proc/self/smaps").ok()?;
        let mut ours = false;
        for line in std::io::BufReader::new(smaps).lines() {
            let line = line.ok()?;
            if line.starts_with(&header) {
                ours = true;
            } else if ours {
                if let Some(kib) = line.strip_prefix("Rss:") {
                    let kib: u64 = kib.trim().strip_suffix("kB")?.trim().parse().ok()?;
                    return Some(kib * 1024);
                }
            }
        }
        None
    }

    /// Shadow-table bytes given back to the system so far.
    pub(crate) fn released_bytes() -> usize {
        RELEASED.load(Ordering::Relaxed)
    }

    /// Shadow-table bytes reserved (address space, not memory).
    pub(crate) fn reserved_bytes() -> usize {
        if base().is_some() {
            TOTAL
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast placement answers as the full one wherever it answers, over jemalloc's table
    /// and over the trait's default derivation alike.
    #[cfg(feature = "jemalloc")]
    #[test]
    fn fast_placement_agrees_with_full_placement() {
        use alloc_jemalloc::Jemalloc;
        /// jemalloc's classes through the trait's default `small_tag_shift`.
        struct Derived;
        // SAFETY: forwards to jemalloc's answers; used only to compare placements here.
        unsafe impl SizeClasses for Derived {
            const KNOWN: bool = <Jemalloc as SizeClasses>::KNOWN;
            fn size_class(&self, size: usize, align: usize) -> usize {
                Jemalloc.size_class(size, align)
            }
            fn small_slack(&self, size: usize, align: usize) -> Option<usize> {
                Jemalloc.small_slack(size, align)
            }
        }
        // Decide the shadow tables first, as the first exact-class request would.
        let _ = place(&Jemalloc, 4096, 8);
        let mut answered = 0;
        for align in [1usize, 2, 4, 8, 16, 32] {
            for size in 0..alloc_jemalloc::SMALL_SLACK_LIMIT + 64 {
                let table = Jemalloc.small_tag_shift(size, align);
                assert_eq!(
                    table,
                    Derived.small_tag_shift(size, align),
                    "{size} at {align}"
                );
                let full = place(&Jemalloc, size, align);
                if let Some(fast) = place_fast(&Jemalloc, size, align, usize::MAX) {
                    assert_eq!(fast, full, "{size} at {align}");
                    answered += 1;
                }
            }
        }
        // Every size under 16 KiB at alignments up to 8, and those over 8 bytes at 16.
        let limit = alloc_jemalloc::SMALL_SLACK_LIMIT;
        assert_eq!(answered, 4 * limit + (limit - 9));
    }

    /// An allocator whose small sizes can have classes over 16 KiB (so a shift of 14 reaches the
    /// fast placement through the default `small_tag_shift`): fast and full placement agree.
    #[test]
    fn fast_placement_agrees_for_coarse_classes() {
        struct Coarse;
        /// Classes are multiples of 24 KiB.
        fn class(size: usize) -> usize {
            size.max(1).div_ceil(24 << 10) * (24 << 10)
        }
        // SAFETY: used only to compare placements here; nothing is allocated.
        unsafe impl SizeClasses for Coarse {
            const KNOWN: bool = true;
            fn size_class(&self, size: usize, _align: usize) -> usize {
                class(size)
            }
            fn small_slack(&self, size: usize, align: usize) -> Option<usize> {
                ((size | align) < SMALL_LIMIT).then(|| class(size) - size)
            }
        }
        let _ = place(&Coarse, 24 << 10, 8);
        if shadow::base().is_none() {
            return; // no reservation on this machine: every place is a trailer
        }
        for size in [
            1usize,
            100,
            16 << 10,
            (24 << 10) - 1,
            24 << 10,
            48 << 10,
            (1 << 20) - 1,
        ] {
            let fast = place_fast(&Coarse, size, 8, usize::MAX).expect("answers below 1 MiB");
            assert_eq!(fast, place(&Coarse, size, 8), "{size}");
            assert_eq!(Place::from_shift(fast.shift()), Some(fast), "{size}");
        }
        assert_eq!(place(&Coarse, 24 << 10, 8).shift(), 14);
    }

    #[test]
    fn tag_shift_follows_the_granules() {
        assert_eq!(tag_shift(0, 8), 0);
        assert_eq!(tag_shift(8, 8), 0, "classes under 16 bytes take a trailer");
        assert_eq!(tag_shift(15, 16), 4, "one byte of slack is not enough");
        assert_eq!(tag_shift(14, 16), 0);
        assert_eq!(tag_shift(1023, 1024), 8);
        assert_eq!(tag_shift(16384, 16384), 8);
        assert_eq!(tag_shift(20480, 20480), 14);
    }
}
