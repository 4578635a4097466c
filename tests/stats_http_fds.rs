//! The HTTP endpoint when the process is out of file descriptors: a connection waits in the
//! backlog, every accept fails with EMFILE, and the server's thread must not spin on it.
#![cfg(feature = "http")]

#[global_allocator]
static GLOBAL: memgov::Governor = memgov::Governor::new();

use std::time::Duration;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given and has no other preconditions.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
        u
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// Makes every descriptor number below `limit` busy (0 included), with copies of `fd`.
fn fill_below(fd: i32, limit: i32) -> Vec<i32> {
    let mut held = Vec::new();
    loop {
        // SAFETY: dup of a valid descriptor; the copies are closed by the caller.
        let copy = unsafe { libc::dup(fd) };
        assert!(copy >= 0);
        if copy >= limit {
            // SAFETY: closes the copy just made.
            unsafe { libc::close(copy) };
            return held;
        }
        held.push(copy);
    }
}

#[test]
fn out_of_descriptors_the_server_does_not_spin() {
    let server = memgov::stats::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let std::net::SocketAddr::V4(v4) = addr else {
        unreachable!()
    };
    // SAFETY: a plain socket call; the descriptor is closed below.
    let client = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(client >= 0);
    std::thread::sleep(Duration::from_millis(100));
    // The server's thread waits in accept, which has already taken the lowest free descriptor
    // number for the connection to come: the one number below 1024 that is neither free nor open.
    let held = fill_below(client, 1024);
    // SAFETY: fcntl on any number is harmless; EBADF for one not open.
    let reserved = (0..1024)
        .find(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0)
        .expect("accept's descriptor");
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the structs given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let low = libc::rlimit {
            rlim_cur: reserved as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    // The connection takes the reserved number; once the server has closed it, every accept fails
    // with EMFILE (no free number below the limit) while the connection below waits.
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in of the size given.
    let rc = unsafe {
        libc::connect(
            client,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let before = cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds() - before;
    // SAFETY: restores the limit read above; each descriptor is closed once.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0);
        for fd in held {
            libc::close(fd);
        }
        libc::close(client);
    }
    server.stop();
    assert!(used < 0.3, "the server burned {used:.2} s of CPU in 1 s");
}
