#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

#[test]
fn smoke() {
    let v = {
        let _s = memgov::component_scope("smoke");
        let mut v: Vec<u64> = Vec::new();
        for i in 0..1000 {
            v.push(i);
        }
        v
    };
    let s = memgov::component_stats("smoke").unwrap();
    assert_eq!(s.live_bytes, 8 * v.capacity() as u64);
    let h = std::thread::spawn(move || drop(v));
    h.join().unwrap();
    let s = memgov::component_stats("smoke").unwrap();
    assert_eq!(s.live_bytes, 0, "{s:?}");
    println!("{}", memgov::snapshot());
}
