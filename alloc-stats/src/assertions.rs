//! Assertion macros for tests, in the style of dhat's testing mode. Each failure message shows the
//! component's figures. They read the figures of the whole process (or of a [`Diff`](crate::Diff)
//! when one is given first), so tests that assert exact counts should install their own global
//! allocator in their own test file and use `serial_test` where several tests share a component.

use alloc_core::ComponentStats;

#[doc(hidden)]
pub fn stats_of(name: &str) -> ComponentStats {
    alloc_core::flush_thread();
    match alloc_core::component_stats(name) {
        Some(s) => s,
        None => panic!("memgov: no component named {name:?} has been registered"),
    }
}

/// The change in the component called `name`, for the assertions on a [`Diff`](crate::Diff): an
/// unknown name fails, as it does without a diff, rather than passing on figures of zero.
#[doc(hidden)]
pub fn delta_of<'a>(diff: &'a crate::Diff, name: &str) -> &'a crate::ComponentDelta {
    match diff.component(name) {
        Some(c) => c,
        None => panic!(
            "memgov: no component named {name:?} had been registered at the diff's later snapshot"
        ),
    }
}

#[doc(hidden)]
pub fn figures(s: &ComponentStats) -> String {
    format!(
        "live {} bytes in {} blocks, peak {} bytes, {} allocations, {} frees, {} reallocs",
        s.live_bytes,
        s.live_blocks(),
        s.peak_live_bytes,
        s.alloc_count,
        s.free_count,
        s.realloc_count
    )
}

/// Asserts that the component has no live bytes and no live blocks; with a [`Diff`](crate::Diff)
/// first, that nothing allocated in between is still live. Fails on a name never registered.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
/// {
///     let _s = alloc_core::component_scope("parser");
///     let _tokens = vec![1u32, 2, 3];
/// }
/// alloc_stats::assert_no_leaks!("parser");
/// ```
#[macro_export]
macro_rules! assert_no_leaks {
    ($diff:expr, $name:expr) => {{
        let diff: &$crate::Diff = &$diff;
        let c = $crate::assertions::delta_of(diff, $name);
        if c.live_bytes > 0 || c.live_blocks() > 0 {
            panic!(
                "memgov: component {:?} leaked {} bytes in {} blocks ({} allocations, {} frees in between)",
                $name,
                c.live_bytes,
                c.live_blocks(),
                c.allocs,
                c.frees
            );
        }
    }};
    ($name:expr) => {{
        let s = $crate::assertions::stats_of($name);
        if s.live_bytes != 0 || s.live_blocks() != 0 {
            panic!("memgov: component {:?} leaked: {}", $name, $crate::assertions::figures(&s));
        }
    }};
}

/// Asserts that the component's peak live bytes never passed `max`.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
/// { let _s = alloc_core::component_scope("small"); let _v = vec![0u8; 1000]; }
/// alloc_stats::assert_max_live!("small", 64 * 1024);
/// ```
#[macro_export]
macro_rules! assert_max_live {
    ($name:expr, $max:expr) => {{
        let s = $crate::assertions::stats_of($name);
        let max: u64 = $max as u64;
        if s.peak_live_bytes > max {
            panic!(
                "memgov: component {:?} peaked at {} live bytes, more than {}: {}",
                $name,
                s.peak_live_bytes,
                max,
                $crate::assertions::figures(&s)
            );
        }
    }};
}

/// Asserts on the component's allocation count: `at_most = n`, `at_least = n` or `exactly = n`;
/// with a [`Diff`](crate::Diff) first, on the allocations made in between. Fails on a name never
/// registered.
///
/// ```
/// # #[global_allocator]
/// # static GLOBAL: alloc_core::Governor<std::alloc::System> = alloc_core::Governor::with_inner(std::alloc::System);
/// let before = alloc_stats::snapshot();
/// { let _s = alloc_core::component_scope("lexer"); let _v: Vec<u8> = Vec::with_capacity(10); }
/// alloc_stats::assert_allocations!(before.diff(), "lexer", exactly = 1);
/// alloc_stats::assert_allocations!("lexer", at_most = 10);
/// ```
#[macro_export]
macro_rules! assert_allocations {
    ($diff:expr, $name:expr, $how:ident = $n:expr) => {{
        // Borrowed, as in assert_no_leaks!: the caller's Diff stays usable for more assertions.
        let diff: &$crate::Diff = &$diff;
        let got = $crate::assertions::delta_of(diff, $name).allocs;
        $crate::assert_allocations!(@check $name, got, $how, $n, format!("{} in between", got));
    }};
    ($name:expr, $how:ident = $n:expr) => {{
        let s = $crate::assertions::stats_of($name);
        $crate::assert_allocations!(@check $name, s.alloc_count, $how, $n, $crate::assertions::figures(&s));
    }};
    (@check $name:expr, $got:expr, at_most, $n:expr, $figures:expr) => {
        if $got > $n as u64 {
            panic!("memgov: component {:?} made {} allocations, more than {}: {}", $name, $got, $n, $figures);
        }
    };
    (@check $name:expr, $got:expr, at_least, $n:expr, $figures:expr) => {
        if $got < $n as u64 {
            panic!("memgov: component {:?} made {} allocations, fewer than {}: {}", $name, $got, $n, $figures);
        }
    };
    (@check $name:expr, $got:expr, exactly, $n:expr, $figures:expr) => {
        if $got != $n as u64 {
            panic!("memgov: component {:?} made {} allocations, not {}: {}", $name, $got, $n, $figures);
        }
    };
}
