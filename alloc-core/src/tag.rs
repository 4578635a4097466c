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
//!   four classes per doubling), so whenever `size` is not itself a class, `size + 2` lands in the
//!   same class and the tag costs no memory and no time. Over an allocator whose classes memgov does
//!   not know (the system allocator), the trailer is always used.
//! * **Shadow** (jemalloc, request exactly a class of 16 bytes or more): the inner allocator is asked
//!   for exactly `size`, and the tag goes into a shadow table indexed by address: every block of a
//!   class starts on a multiple of the class's granule (16 B below 1 KiB, 256 B up to 16 KiB,
//!   16 KiB for the larger classes, whose blocks are at least that far apart), so
//!   `address >> log2(granule)` names one entry per block. The tables are one `MAP_NORESERVE`
//!   reservation of address space; only pages holding entries for live or past blocks become
//!   resident, at most 1/8 of the memory of exact-class blocks under 1 KiB, 1/128 up to 16 KiB,
//!   and one page per 32 MiB above. Without it, a 4096-byte request would move
//!   to jemalloc's 5120-byte class: 25% bigger and, measured here, twice as slow.
//!
//! If the reservation fails (a strict overcommit policy, an address-space limit, a platform other
//! than 64-bit Linux), exact-class requests use a trailer too and move up one class.

use std::sync::atomic::{AtomicPtr, Ordering};

/// Bytes a trailer tag adds to a request.
pub const TAG_BYTES: usize = 2;

/// [`SizeClasses::small_slack`] answers only for sizes and alignments below this.
pub const SMALL_LIMIT: usize = 1 << 20;

/// What the governor knows about the inner allocator's size classes.
///
/// # Safety
/// When `KNOWN` is true, `size_class(size, align)` must return exactly the number of usable bytes
/// the inner allocator gives for a request of `size` bytes at `align` (jemalloc's `nallocx`), the
/// same answer every time, and the allocator must place every block of a class `c >= 16` at an
/// address that is a multiple of the granule [`place`] assigns to `c` (true of jemalloc 5 with a
/// 16-byte quantum and 4 KiB pages). The governor relies on this to keep blocks' tags apart.
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
}

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

/// Where the tag of a block for `size` bytes at `align` lives over allocator `a`.
#[inline(always)]
pub(crate) fn place<A: SizeClasses>(a: &A, size: usize, align: usize) -> Place {
    if !A::KNOWN {
        return Place::Trailer;
    }
    let slack = a.slack(size, align);
    // A slack of 0 or 1 byte: the request is (almost) exactly a class. Classes under 16 bytes are
    // only 8-aligned, too close together for the shadow's 16-byte granule; they take a trailer.
    let class = size.wrapping_add(slack);
    if slack < TAG_BYTES && class >= 16 {
        match shadow::base() {
            Some(base) => shadow::table(base, class),
            None => shadow::decide_then_place(class),
        }
    } else {
        Place::Trailer
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
    let slack = a.small_slack(size, align)?;
    debug_assert!((size | align) < SMALL_LIMIT);
    let class = size + slack;
    if slack < TAG_BYTES && class >= 16 {
        // `small_slack` answers below 16 KiB only, so the class is at most 16 KiB.
        shadow::base().map(|base| shadow::table_up_to_16k(base, class))
    } else {
        Some(Place::Trailer)
    }
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

    /// The place for a block of `class` bytes: the small table under 1 KiB, the medium one up to
    /// 16 KiB (jemalloc's largest small class is 14 KiB, and its first large one 16 KiB), the
    /// large one beyond.
    #[inline(always)]
    pub(crate) fn table(base: *mut u8, class: usize) -> Place {
        if class > 16 * 1024 {
            return Place::Shadow {
                // Stays inside the TOTAL-byte mapping at `base`.
                table: base.wrapping_add(OFFSETS[2]).cast(),
                shift: SHIFTS[2],
            };
        }
        table_up_to_16k(base, class)
    }

    /// [`table`] for a class of at most 16 KiB, without a branch.
    #[inline(always)]
    pub(crate) fn table_up_to_16k(base: *mut u8, class: usize) -> Place {
        let medium = (class >= 1024) as usize;
        Place::Shadow {
            // Stays inside the TOTAL-byte mapping at `base`.
            table: base.wrapping_add(medium * OFFSETS[1]).cast(),
            shift: SHIFTS[0] + medium as u32 * (SHIFTS[1] - SHIFTS[0]),
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
    pub(crate) fn decide_then_place(class: usize) -> Place {
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
                mem.cast()
            };
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
            Some(base) => table(base, class),
            None => Place::Trailer,
        }
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
