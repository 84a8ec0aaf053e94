//! The daemon's open-file limit and the router's connection bounds (privileged: run as root).
//! Started from a shell's usual soft limit of 1,024, `dyno serve` raises its own soft limit to
//! the hard one (its router holds a file per client connection), while its dynos keep the 1,024
//! they would have had; one client address holds at most `--max-connections-per-client`
//! connections, and at the bound its oldest idle one makes room for a new one.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use support::*;

/// (soft, hard) "Max open files" of a process.
fn open_files_of(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line:\n{limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

#[test]
fn the_daemon_raises_its_open_file_limit_and_dynos_keep_theirs() {
    require_root();
    // This test's process only (nextest runs each test in a process of its own): what the
    // daemon inherits, as from a shell.
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    assert!(
        hard.is_some_and(|h| h > 1024),
        "this test needs a hard open-file limit above 1024, not {hard:?}"
    );
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(1024),
            maximum: hard,
        },
    )
    .unwrap();
    let up = Up::serve(
        "open-files",
        &["--boot-timeout", "20s", "--stop-grace", "2s"],
    );
    up.wait_api();
    let daemon = up.child.as_ref().unwrap().id();
    let hard = hard.unwrap().to_string();
    assert_eq!(open_files_of(daemon), (hard.clone(), hard.clone()));

    up.cli_succeeds(&["apps:create", "limited"]);
    let hello = repo().join("examples/hello");
    up.cli_succeeds(&["deploy", &hello.to_string_lossy(), "-a", "limited"]);
    let web = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        processes_of(up.app_uid("limited"))
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("web.py"))
            })
            .ok_or("web.py is not running yet".to_string())
    });
    assert_eq!(open_files_of(web), ("1024".to_string(), hard));
}

/// The router is the only way in: one client holding 5,000 half-sent requests (a daemon
/// started from a shell's soft limit of 1,024 files) must not shut it for everyone else.
#[test]
fn five_thousand_half_sent_requests_leave_the_router_open_to_others() {
    require_root();
    let nofile = rustix::process::Resource::Nofile;
    let hard = rustix::process::getrlimit(nofile).maximum;
    assert!(
        hard.is_some_and(|h| h > 6000),
        "this test needs a hard open-file limit above 6000, not {hard:?}"
    );
    let soft = |current| rustix::process::Rlimit {
        current,
        maximum: hard,
    };
    rustix::process::setrlimit(nofile, soft(Some(1024))).unwrap();
    let up = Up::serve(
        "half-sent",
        &["--boot-timeout", "20s", "--stop-grace", "2s"],
    );
    // The daemon started with 1,024; this test needs more for its own clients.
    rustix::process::setrlimit(nofile, soft(hard)).unwrap();
    up.wait_api();
    up.cli_succeeds(&["apps:create", "flooded"]);
    let hello = repo().join("examples/hello");
    up.cli_succeeds(&["deploy", &hello.to_string_lossy(), "-a", "flooded"]);

    let mut held = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let mut stream = up.connect_router();
        // Refused ones may already be closed: the write may fail.
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: flooded.localhost\r\nX-Half: ");
        held.push(stream);
    }
    // The flooding address holds the default per-client bound of connections, no more: its
    // half-sent requests are in progress (never closed for others), the rest were refused.
    std::thread::sleep(Duration::from_millis(500));
    let open = held
        .iter()
        .filter(|s| !closed_by_router(s, Duration::ZERO))
        .count();
    assert_eq!(open, 2048, "{}", up.notes());
    // Another client (another address) is served.
    let answer = up.get_via_router_from(Some(OTHER_CLIENT), "flooded.localhost", "/");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("Hello from web.1"),
        "with 5,000 half-sent requests open: {answer}\n{}",
        up.notes()
    );
    assert!(
        !up.notes().contains("Too many open files"),
        "{}",
        up.notes()
    );
    drop(held);
}

/// How long a test waits for the router to close a connection (or not).
const WAIT: Duration = Duration::from_secs(1);

/// A second client address of the lab host's `lo`.
const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Whether the router closed `stream` (end of stream or reset), waiting up to `wait` for it.
fn closed_by_router(stream: &TcpStream, wait: Duration) -> bool {
    stream.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + wait;
    let mut byte = [0u8; 1];
    let closed = loop {
        match stream.peek(&mut byte) {
            Ok(0) => break true,
            Ok(_) => break false,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// At its bound a client's new connection takes the place of its oldest idle one (sent
/// nothing yet, or between requests); a connection with a request under way is never closed
/// for another; other addresses are not counted against it.
#[test]
fn a_client_at_its_bound_gives_up_its_oldest_idle_connection() {
    require_root();
    let up = Up::serve(
        "bounded",
        &[
            "--boot-timeout",
            "20s",
            "--stop-grace",
            "2s",
            "--max-connections-per-client",
            "3",
        ],
    );
    up.wait_api();
    up.cli_succeeds(&["apps:create", "bounded"]);
    let hello = repo().join("examples/hello");
    up.cli_succeeds(&["deploy", &hello.to_string_lossy(), "-a", "bounded"]);
    // Up first: the deploy returns once the web dyno runs.
    let first = up.get_via_router_from(Some(OTHER_CLIENT), "bounded.localhost", "/");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // Three idle connections, oldest first (a pause each: the router sees them in order).
    let connect = || {
        let stream = up.connect_router();
        std::thread::sleep(Duration::from_millis(100));
        stream
    };
    let (oldest, mut half_sent, idle) = (connect(), connect(), connect());
    half_sent
        .write_all(b"GET / HTTP/1.1\r\nHost: bounded.localhost\r\nX-Half: ")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // At the bound: the oldest idle one goes.
    let mut fourth = connect();
    assert!(closed_by_router(&oldest, WAIT), "{}", up.notes());
    assert!(!closed_by_router(&half_sent, WAIT) && !closed_by_router(&idle, WAIT));
    // Again: the half-sent one is busy, so the next oldest idle one goes.
    let fifth = connect();
    assert!(closed_by_router(&idle, WAIT), "{}", up.notes());
    assert!(!closed_by_router(&half_sent, WAIT) && !closed_by_router(&fifth, WAIT));
    // Another address is a client of its own.
    let other = up.get_via_router_from(Some(OTHER_CLIENT), "bounded.localhost", "/");
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // The new connection serves requests.
    fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: bounded.localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = String::new();
    let _ = fourth.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        up.notes()
    );
    drop((half_sent, fifth));
}
