//! An HTTP endpoint for the figures (feature `http`, off by default; std only).
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text ([`to_prometheus`](crate::to_prometheus)) |
//! | `GET /memory` | JSON snapshot ([`to_json`](crate::to_json)) |
//! | `GET /memory/health` | the health report ([`health`](crate::health())), as text |
//! | `POST /memory/compact` | jemalloc purge ([`compact`](alloc_jemalloc::compact)), as JSON; 501 without jemalloc |
//!
//! Requests are served one at a time on the server's own thread (component `"memgov-http"`), never
//! on the allocation path. A request line or headers that do not parse get 400, an unknown path
//! 404, a wrong method 405 (with `Allow`), headers over 8 KiB 431; a client that stalls, trickles
//! or hangs up mid-request is dropped at most 2 s after it connected and the server goes on. At
//! the process's hard limit the server's thread allocates from the emergency reserve
//! ([`use_emergency_reserve`](alloc_core::use_emergency_reserve)), so it still answers when it is
//! needed most.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";
/// The environment variable that sets the address for [`serve_from_env`].
pub const ADDR_VAR: &str = alloc_core::HTTP_ADDR_VARIABLE;
const MAX_HEAD: usize = 8 * 1024;
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long, and how many bytes, [`linger`] reads what a client still sends after its answer.
const LINGER: Duration = Duration::from_millis(500);
const MAX_LINGER_BYTES: usize = 1 << 20;
/// The pause after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A running endpoint; stops when [`stop`](HttpServer::stop) is called or it is dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// The address it listens on (with the port the system chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far (any status).
    pub fn requests_served(&self) -> u64 {
        self.served.load(Relaxed)
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Relaxed);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves the endpoints on `addr`.
///
/// # Errors
/// When the address cannot be bound, or the thread cannot start.
///
/// ```
/// let server = alloc_stats::http::serve("127.0.0.1:0").unwrap();
/// println!("metrics on http://{}/metrics", server.local_addr());
/// server.stop();
/// ```
pub fn serve(addr: impl ToSocketAddrs) -> io::Result<HttpServer> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let (stop2, served2) = (Arc::clone(&stop), Arc::clone(&served));
    let thread = std::thread::Builder::new()
        .name("memgov-http".into())
        .spawn(move || {
            let _scope = alloc_core::component_scope("memgov-http");
            // An operator asks for the health report or a compaction when memory is short: at the
            // process's hard limit, this thread's allocations come from the emergency reserve.
            alloc_core::use_emergency_reserve();
            for conn in listener.incoming() {
                if stop2.load(Relaxed) {
                    break;
                }
                match conn {
                    Ok(stream) => {
                        if handle(stream).is_ok() {
                            served2.fetch_add(1, Relaxed);
                        }
                    }
                    // Out of descriptors (EMFILE, ENFILE) or memory, accept fails at once for as
                    // long as that lasts: wait a little instead of spinning on a core.
                    Err(_) => std::thread::sleep(ACCEPT_RETRY),
                }
            }
        })?;
    Ok(HttpServer {
        addr,
        stop,
        served,
        thread: Some(thread),
    })
}

/// Serves on the address in `MEMGOV_HTTP_ADDR`, or [`DEFAULT_ADDR`].
///
/// # Errors
/// An `InvalidInput` error naming the variable, its value and what was expected when it does not
/// parse as `host:port`; otherwise as [`serve`].
pub fn serve_from_env() -> io::Result<HttpServer> {
    match std::env::var(ADDR_VAR) {
        Ok(value) => {
            let addrs: Vec<SocketAddr> = value
                .to_socket_addrs()
                .map(|a| a.collect())
                .unwrap_or_default();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{ADDR_VAR}={value:?}: expected host:port, such as 127.0.0.1:9464 or [::1]:9464"),
                ));
            }
            serve(&addrs[..])
        }
        Err(std::env::VarError::NotUnicode(v)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ADDR_VAR}={v:?}: expected host:port in valid UTF-8"),
        )),
        Err(std::env::VarError::NotPresent) => serve(DEFAULT_ADDR),
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    extra: &'static str,
    body: String,
}

fn text(status: &'static str, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        extra: "",
        body: body.into(),
    }
}

fn route(method: &str, path: &str) -> Response {
    let path = path.split('?').next().unwrap_or(path);
    let allowed = match path {
        "/metrics" | "/memory" | "/memory/health" => "GET",
        "/memory/compact" => "POST",
        _ => {
            return text(
                "404 Not Found",
                "unknown path; try /metrics, /memory, /memory/health or POST /memory/compact\n",
            )
        }
    };
    if method != allowed && !(method == "HEAD" && allowed == "GET") {
        let extra = if allowed == "GET" {
            "Allow: GET, HEAD\r\n"
        } else {
            "Allow: POST\r\n"
        };
        return Response {
            extra,
            ..text("405 Method Not Allowed", format!("use {allowed}\n"))
        };
    }
    match path {
        "/metrics" => Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            ..text("200 OK", crate::to_prometheus(&alloc_core::snapshot()))
        },
        "/memory" => Response {
            content_type: "application/json",
            ..text("200 OK", crate::to_json(&alloc_core::snapshot()))
        },
        "/memory/health" => text("200 OK", format!("{}\n", crate::health())),
        _ => compact(),
    }
}

#[cfg(feature = "jemalloc")]
fn compact() -> Response {
    match alloc_jemalloc::compact() {
        Ok(r) => Response {
            content_type: "application/json",
            ..text(
                "200 OK",
                format!(
                    "{{\"resident_before\":{},\"resident_after\":{},\"reclaimed\":{},\"took_us\":{}}}",
                    r.resident_before,
                    r.resident_after,
                    r.reclaimed(),
                    r.took.as_micros()
                ),
            )
        },
        Err(e) => text("500 Internal Server Error", format!("{e}\n")),
    }
}

#[cfg(not(feature = "jemalloc"))]
fn compact() -> Response {
    text(
        "501 Not Implemented",
        "compaction needs the jemalloc inner allocator\n",
    )
}

/// The client's side of a connection, readable until a deadline: the socket's read timeout bounds
/// each read only, so a client sending a byte now and then would otherwise hold the server's one
/// thread for as long as it liked.
struct UntilDeadline {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for UntilDeadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Reads the request head (request line and headers), within [`TIMEOUT`] in all, and answers.
fn handle(stream: TcpStream) -> io::Result<()> {
    stream.set_write_timeout(Some(TIMEOUT))?;
    let client = UntilDeadline {
        stream: stream.try_clone()?,
        deadline: Instant::now() + TIMEOUT,
    };
    let mut reader = BufReader::new(client).take(MAX_HEAD as u64 + 1);
    let mut head = Vec::new();
    let response = loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            // The client hung up before finishing its request.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            break text(
                "431 Request Header Fields Too Large",
                "request head over 8 KiB\n",
            );
        }
        if line == b"\r\n" || line == b"\n" {
            break answer(&head);
        }
    };
    let method_head = head.starts_with(b"HEAD ");
    write_response(&stream, &response, method_head)?;
    linger(&stream);
    Ok(())
}

/// Closes the connection gently: sends FIN, then reads and drops what the client still sends (a
/// request body, the rest of an oversized head) until it closes its side, for at most [`LINGER`]
/// and [`MAX_LINGER_BYTES`]. Closing a socket with unread input makes the kernel reset the
/// connection instead, and a reset can discard the answer before the client has read it.
fn linger(mut stream: &TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn answer(head: &[u8]) -> Response {
    let Ok(head) = std::str::from_utf8(head) else {
        return text("400 Bad Request", "request is not UTF-8\n");
    };
    let request_line = head.lines().next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return text(
            "400 Bad Request",
            "expected a request line: METHOD /path HTTP/1.1\n",
        );
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !path.starts_with('/') || !version.starts_with("HTTP/1.") {
        return text(
            "400 Bad Request",
            "expected a request line: METHOD /path HTTP/1.1\n",
        );
    }
    for header in head.lines().skip(1).filter(|l| !l.is_empty()) {
        if !header.contains(':') {
            return text("400 Bad Request", "malformed header line\n");
        }
    }
    route(method, path)
}

fn write_response(mut stream: &TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        r.status,
        r.content_type,
        r.body.len(),
        r.extra
    );
    if !head_only {
        out.push_str(&r.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
