//! The daemon's open-file limit (privileged: run as root). Started from a shell's usual soft
//! limit of 1,024, `dyno serve` raises its own soft limit to the hard one (its router holds a
//! file per client connection), while its dynos keep the 1,024 they would have had.

mod support;

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
    use std::io::Write;

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
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: flooded.localhost\r\nX-Half: ")
            .unwrap();
        held.push(stream);
    }
    let answer = up.get_via_router("flooded.localhost", "/");
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
