//! The HTTP endpoint over loopback: every route with real requests, a malformed request, a wrong
//! method, an unknown path, an oversized head, and clients that hang up or stall mid-request.
#![cfg(feature = "http")]

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn request(addr: SocketAddr, raw: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
}

#[test]
fn every_route_answers_and_bad_requests_get_4xx() {
    let server = memgov::stats::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let kept = {
        let _s = memgov::component_scope("http-test");
        // black_box: a release build may otherwise elide a block nothing reads.
        std::hint::black_box(vec![7u8; 5000])
    };

    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("memgov_live_bytes{component=\"http-test\"} 5000"),
        "{body}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());

    let (status, _, body) = get(addr, "/memory");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "http-test" && c["live_bytes"] == 5000));

    let (status, _, body) = get(addr, "/memory/health");
    assert_eq!(status, 200);
    assert!(body.contains("pressure:"), "{body}");

    let (status, head, body) = request(
        addr,
        "POST /memory/compact HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    if cfg!(feature = "jemalloc") {
        assert_eq!(status, 200, "{head}{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            report["resident_before"].is_u64() && report["took_us"].is_u64(),
            "{body}"
        );
    } else {
        assert_eq!(status, 501);
    }

    let (status, head, _) = get(addr, "/memory/compact");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: POST"), "{head}");
    let (status, head, _) = request(addr, "DELETE /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(request(addr, "HELLO\r\n\r\n").0, 400);
    assert_eq!(request(addr, "GET metrics HTTP/1.1\r\n\r\n").0, 400);
    assert_eq!(
        request(addr, "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n").0,
        400
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(request(addr, &huge).0, 431);
    let (status, _, body) = request(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));

    // A client that hangs up mid-request, and one that stalls: the server goes on.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metr").unwrap();
    }
    let stalled = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    assert_eq!(get(addr, "/metrics").0, 200);
    assert!(start.elapsed() < Duration::from_secs(8));
    drop(stalled);
    assert!(server.requests_served() >= 12);
    server.stop();
    drop(kept);
}

#[test]
fn a_malformed_address_variable_names_itself() {
    std::env::set_var(memgov::stats::http::ADDR_VAR, "not an address");
    let err = memgov::stats::http::serve_from_env().unwrap_err();
    std::env::remove_var(memgov::stats::http::ADDR_VAR);
    let text = err.to_string();
    assert!(
        text.starts_with("MEMGOV_HTTP_ADDR=\"not an address\": expected host:port"),
        "{text}"
    );
}

#[test]
fn a_client_that_trickles_its_head_is_dropped_after_the_timeout() {
    let server = memgov::stats::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    // One byte every 500 ms, never finishing the head: each read succeeds within the 2 s timeout.
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: ".iter().take(20) {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    assert_eq!(get(addr, "/metrics").0, 200);
    let waited = start.elapsed();
    trickler.join().unwrap();
    server.stop();
    assert!(
        waited < Duration::from_secs(5),
        "one trickling client held the server for {waited:?}"
    );
}

/// Sends `raw` and reads the answer until the server closes; the end is `Err` on a reset.
fn request_to_end(addr: SocketAddr, raw: &str) -> (String, std::io::Result<()>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), end)
}

#[test]
fn input_left_unread_does_not_reset_the_answer() {
    let server = memgov::stats::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    // A body the server has no use for.
    let body = "x".repeat(100_000);
    let (text, end) = request_to_end(
        addr,
        &format!(
            "POST /memory/compact HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 501"),
        "answer {text:?}, then {end:?}"
    );
    assert!(end.is_ok(), "answer {text:?}, then {end:?}");
    // A head far over the limit: 431, and the rest of the head is not read.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let (text, end) = request_to_end(addr, &huge);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "answer {text:?}, then {end:?}"
    );
    assert!(end.is_ok(), "answer {text:?}, then {end:?}");
    server.stop();
}
