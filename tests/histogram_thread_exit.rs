//! Every allocation is counted in the size histograms (the module's promise), also those a
//! thread makes after memgov has handed its counter block back: in a pthread-key destructor that
//! runs after memgov's own. Its allocation count has them; the histogram must too.

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use memgov::stats;
use std::hint::black_box;

extern "C" fn allocate_late(_: *mut libc::c_void) {
    let _scope = memgov::component_scope("hist-late");
    drop(black_box(vec![0u8; 100]));
    drop(black_box(Vec::<u8>::with_capacity(200)));
}

#[test]
fn allocations_after_the_thread_exit_hook_are_counted() {
    memgov::component("hist-late");
    // memgov's exit key exists by now (this thread has allocated): a key made now is destroyed
    // after it (glibc runs key destructors in key order).
    drop(black_box(vec![0u8; 10]));
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: a valid out-pointer and an `extern "C"` destructor of the right signature.
    let made = unsafe { libc::pthread_key_create(&mut key, Some(allocate_late)) };
    assert_eq!(made, 0);
    memgov::set_histograms(true);
    std::thread::spawn(move || {
        drop(black_box(vec![0u8; 10]));
        // SAFETY: `key` is live; a non-null value makes its destructor run at thread exit.
        unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
    })
    .join()
    .unwrap();
    memgov::set_histograms(false);
    let s = memgov::component_stats("hist-late").unwrap();
    assert_eq!(s.alloc_count, 2, "the allocations happened");
    let h = stats::size_histogram("hist-late").unwrap();
    assert_eq!(h.count(), s.alloc_count, "histogram count vs alloc_count");
    assert_eq!(h.buckets()[memgov::histogram_bucket(100)], 1);
}
