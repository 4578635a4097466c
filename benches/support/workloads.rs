//! Workloads shared by the plain runners: ordinary Rust code whose allocations come from std's
//! collections, strings and boxes, each returning a figure so that the optimiser keeps its work.

#![allow(dead_code)] // each runner uses some of them

use std::collections::{BTreeMap, HashMap};

/// 64 MiB of 64-byte blocks (exactly a class, so their tags live in the shadow table) and
/// 64 MiB of 4 KiB blocks (the same, in the coarser table), each block written once, all
/// freed before returning.
pub fn exact_classes() -> usize {
    let mut small: Vec<Box<[u8; 64]>> = (0..1 << 20).map(|_| Box::new([1u8; 64])).collect();
    let mut pages: Vec<Box<[u8; 4096]>> = (0..1 << 14).map(|_| Box::new([1u8; 4096])).collect();
    small.truncate(0);
    pages.truncate(0);
    small.capacity() + pages.capacity()
}

pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A HashMap of strings and a BTreeMap of byte vectors, 600 000 entries each, built and partly
/// churned.
pub fn maps() -> usize {
    maps_of(600_000)
}

/// [`maps`] with 200 000 entries.
pub fn small_maps() -> usize {
    maps_of(200_000)
}

fn maps_of(entries: u64) -> usize {
    let mut seed = 0x1234_5678_9abc_def0;
    let mut h: HashMap<u64, String> = HashMap::new();
    let mut b: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for i in 0..entries {
        let r = xorshift(&mut seed);
        h.insert(r, format!("value-{i}-{}", r % 1000));
        b.insert(r ^ i, vec![0u8; 16 + (r % 240) as usize]);
        if i % 3 == 0 {
            let k = xorshift(&mut seed);
            h.remove(&k);
        }
    }
    h.len() + b.len()
}

/// Vectors grown by push: every capacity is a power of two, exactly a size class.
pub fn vec_growth() -> usize {
    let mut seed = 42;
    let vs: Vec<Vec<u64>> = (0..20_000)
        .map(|_| {
            let n = 1 + xorshift(&mut seed) % 2000;
            let mut v = Vec::new();
            for i in 0..n {
                v.push(i);
            }
            v
        })
        .collect();
    vs.iter().map(Vec::len).sum()
}

/// Text processing: a generated document split into words, counted in a map, the most frequent
/// joined back into lines, and a formatted report; run 50 times over.
pub fn text() -> usize {
    let mut seed = 7;
    let vocabulary: Vec<String> = (0..5_000)
        .map(|i| format!("word{}x{}", i, xorshift(&mut seed) % 97))
        .collect();
    let mut total = 0;
    for _ in 0..50 {
        let document: String = (0..50_000)
            .map(|_| vocabulary[(xorshift(&mut seed) % 5_000) as usize].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for word in document.split(' ') {
            *counts.entry(word).or_default() += 1;
        }
        let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let lines: Vec<String> = ranked
            .chunks(8)
            .map(|c| {
                c.iter()
                    .map(|(w, n)| format!("{w}:{n}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        total += lines.iter().map(String::len).sum::<usize>();
    }
    total
}

/// A document tree like a parsed JSON value: objects of strings, numbers and nested arrays,
/// built, walked and dropped 10 times.
pub fn tree() -> usize {
    enum Node {
        Number(f64),
        Text(String),
        List(Vec<Node>),
        Object(Vec<(String, Node)>),
    }
    fn build(seed: &mut u64, depth: u32) -> Node {
        match (xorshift(seed) % 8, depth) {
            (0..=2, d) if d < 5 => Node::Object(
                (0..1 + xorshift(seed) % 6)
                    .map(|i| (format!("key{i}"), build(seed, d + 1)))
                    .collect(),
            ),
            (3..=4, d) if d < 5 => Node::List(
                (0..xorshift(seed) % 8)
                    .map(|_| build(seed, d + 1))
                    .collect(),
            ),
            (5..=6, _) => Node::Text("x".repeat((xorshift(seed) % 40) as usize)),
            _ => Node::Number(xorshift(seed) as f64),
        }
    }
    fn weight(n: &Node) -> usize {
        match n {
            Node::Number(_) => 1,
            Node::Text(s) => s.len(),
            Node::List(items) => items.iter().map(weight).sum::<usize>() + 1,
            Node::Object(fields) => fields.iter().map(|(k, v)| k.len() + weight(v)).sum(),
        }
    }
    let mut seed = 99;
    let mut total = 0;
    for _ in 0..10 {
        let roots: Vec<Node> = (0..2_000).map(|_| build(&mut seed, 0)).collect();
        total += roots.iter().map(weight).sum::<usize>();
    }
    total
}
