//! `dyno up` end to end on the examples (privileged: run as root). The binary runs inside a lab
//! host namespace (so its "host" network is the lab's), with its run dir and state dir in the
//! test's scratch space; the tests read its stdout (Heroku-format log lines) and stderr.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn hello_runs_serves_through_its_dyno_address_and_leaves_nothing() {
    let app = repo().join("examples/hello");
    let mut up = Up::start(
        "hello",
        &app,
        &["--boot-timeout", "20s", "--stop-grace", "5s"],
    );
    up.wait_up("web.1", Duration::from_secs(30));
    up.wait_up("worker.1", Duration::from_secs(30));
    let ip = up.address_of("web.1");
    let answer = up.get(ip, 5000, "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Hello from web.1"), "{answer}");
    // Through the router, as a user would: http://hello.localhost:8080/
    let answer = up.get_via_router("hello.localhost", "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Hello from web.1"), "{answer}");

    up.wait_for_log("worker heartbeat n=1", 1, Duration::from_secs(15));
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    let logs = messages(&up.logs());
    for expected in [
        "heroku[web.1]: Starting process with command `python3 web.py`",
        "heroku[web.1]: State changed from starting to up",
        "heroku[web.1]: Stopping all processes with SIGTERM",
        "heroku[web.1]: State changed from up to down",
        "heroku[worker.1]: State changed from up to down",
    ] {
        assert!(
            logs.iter().any(|l| l == expected),
            "no {expected:?} in:\n{}",
            up.logs()
        );
    }
    // The router's access line, in Heroku's shape.
    let router_line = logs
        .iter()
        .find(|l| {
            l.starts_with("heroku[router]: at=info method=GET path=\"/\" host=hello.localhost ")
        })
        .unwrap_or_else(|| panic!("no router line in:\n{}", up.logs()));
    for part in [
        " request_id=",
        " fwd=\"127.0.0.1\"",
        " dyno=web.1 ",
        " connect=",
        " service=",
        " status=200 ",
        " bytes=",
    ] {
        assert!(
            router_line.contains(part),
            "{part:?} missing: {router_line}"
        );
    }
    assert!(router_line.ends_with(" protocol=http"), "{router_line}");
    // Log lines carry Heroku's timestamp format.
    let first = up.logs().lines().next().unwrap().to_string();
    assert!(
        first.len() > 33 && &first[4..5] == "-" && &first[26..32] == "+00:00",
        "{first}"
    );
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("hello"));
}

#[test]
fn bad_apps_are_refused_with_errors_naming_the_file() {
    require_root();
    let run = |dir: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
            .arg("up")
            .arg(dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = run(Path::new("/nonexistent/app"));
    assert!(
        missing.contains("app directory /nonexistent/app: no such directory"),
        "{missing}"
    );
    let bad = app_dir("badline", "web: python3 web.py\nnonsense\n");
    let e = run(&bad);
    assert!(e.contains("Procfile:2: expected `type: command`"), "{e}");
    let nocmd = app_dir("nocmd", "web: no-such-program-here --port $PORT\n");
    let e = run(&nocmd);
    assert!(
        e.contains("Procfile:1: command `no-such-program-here` not found"),
        "{e}"
    );
}

#[test]
fn java_lists_eth0_as_index_2_while_the_host_end_is_above_65535() {
    let app = repo().join("examples/java-interfaces");
    let mut up = Up::start(
        "java",
        &app,
        &["--boot-timeout", "90s", "--stop-grace", "5s"],
    );
    up.wait_up("web.1", Duration::from_secs(120));
    let host_ends = up.lab.host.links_with_prefix("dy").unwrap();
    assert_eq!(host_ends.len(), 1, "{host_ends:?}");
    assert!(host_ends[0].0 > 65_535, "host end index {}", host_ends[0].0);
    let ip = up.address_of("web.1");
    let answer = up.get(ip, 5000, "/");
    assert!(answer.contains("interfaces: lo eth0"), "{answer}");
    assert!(answer.contains("eth0 index=2 up"), "{answer}");
    assert!(answer.contains(&format!("{ip}/32")), "{answer}");
    up.interrupt();
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("java-interfaces"));
}

#[test]
fn ruby_raindrops_reports_queued_connections_inside_the_dyno() {
    let app = repo().join("examples/ruby-raindrops");
    let mut up = Up::start(
        "ruby",
        &app,
        &["--boot-timeout", "30s", "--stop-grace", "5s"],
    );
    up.wait_up("web.1", Duration::from_secs(40));
    let ip = up.address_of("web.1");
    // Six at once to a server that takes a second each: the later ones wait in the accept
    // queue, and each answer reports the queue as it was when it was served.
    let answers: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| up.get(ip, 5000, "/stats")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let queued: Vec<u32> = answers
        .iter()
        .filter_map(|a| a.split("queued=").nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(queued.len(), 6, "{answers:?}");
    assert!(
        queued.iter().any(|q| *q > 0),
        "no queued connection seen: {queued:?}"
    );
    up.interrupt();
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("ruby-raindrops"));
}

/// A worker that tries the kernel keyring twice, as an exploit would, then says it goes on.
const KEYCTL_WORKER: &str =
    "worker: python3 -c 'import ctypes, time; libc = ctypes.CDLL(None, use_errno=True); \
    [libc.syscall(250, 0, 0, 0, 0, 0) for _ in range(2)]; \
    print(\"keyctl errno\", ctypes.get_errno(), flush=True); time.sleep(600)'\n";

#[test]
fn a_denied_call_is_named_in_the_apps_log_and_the_daemons_and_the_dyno_goes_on() {
    let app = app_dir("seccomplog", KEYCTL_WORKER);
    let mut up = Up::start("seccomplog", &app, &["--stop-grace", "2s"]);
    up.wait_for_log("app[worker.1]: keyctl errno 1", 1, Duration::from_secs(30));
    let line = "heroku[worker.1]: Denied system call keyctl (EPERM): it is not in the dyno's \
                seccomp profile";
    up.wait_for_log(line, 1, Duration::from_secs(10));
    // Once per call, however often it is made (repeats are counted, at most once a minute).
    let logs = up.logs();
    assert_eq!(logs.matches("Denied system call").count(), 1, "{logs}");
    let notes = up.notes();
    assert!(
        notes.contains("Denied system call keyctl") && notes.contains("worker.1"),
        "the daemon's log names the dyno and the call:\n{notes}"
    );
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
}

#[test]
fn the_operator_allows_a_call_by_name_and_a_typo_stops_dyno_up_before_anything_runs() {
    let app = app_dir("seccompallow", KEYCTL_WORKER);
    let mut up = Up::start(
        "seccompallow",
        &app,
        &["--stop-grace", "2s", "--seccomp-allow", "keyctl,add_key"],
    );
    // Allowed: the kernel answers (EINVAL for these arguments), not the filter.
    up.wait_for_log("app[worker.1]: keyctl errno 22", 1, Duration::from_secs(30));
    assert!(!up.logs().contains("Denied system call"), "{}", up.logs());
    assert!(up.interrupt().success());

    let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["up", "--seccomp-allow", "keyctl,io_uring_stup"])
        .arg(&*app)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown system call \"io_uring_stup\""),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["serve", "--seccomp-allow", "hello:bpf,kexec_lod"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown system call \"kexec_lod\""),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_while_a_web_dyno_boots_stops_at_once_and_leaves_nothing() {
    // web.1 never binds $PORT: `dyno up` waits for it for up to the boot timeout (60 s).
    let app = app_dir("slow-boot", "web: exec sleep 3600\n");
    let mut up = Up::start(
        "slow-boot",
        &app,
        &[
            "--app",
            "slowboot",
            "--boot-timeout",
            "60s",
            "--stop-grace",
            "2s",
        ],
    );
    up.wait_for_log(
        "heroku[web.1]: Starting process with command `exec sleep 3600`",
        1,
        Duration::from_secs(30),
    );
    // Far below the boot timeout: an interrupt that waited for the boot would miss it.
    let status = up
        .interrupt_within(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("dyno up ignored Ctrl-C while web.1 booted:\n{}", up.notes()));
    assert!(
        up.notes().contains("interrupted while starting"),
        "{status:?}\n{}",
        up.notes()
    );
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("slowboot"));
}

/// A worker that writes 200,000 lines as fast as it can: `dyno up`'s stdout gets every one, in
/// order (the shim waits for a reader that keeps up instead of dropping, and `dyno up` prints
/// what is queued in one write).
#[test]
fn a_burst_of_output_reaches_stdout_whole() {
    const LINES: usize = 200_000;
    let procfile = format!(
        "worker: python3 -c \"import sys,time; w=sys.stdout.write; \
         [w('burst %d\\n' % i) for i in range({LINES})]; sys.stdout.flush(); time.sleep(3600)\"\n"
    );
    let app = app_dir("burst", &procfile);
    let mut up = Up::start("burst", &app, &["--stop-grace", "2s"]);
    up.wait_for_log(
        &format!("app[worker.1]: burst {}", LINES - 1),
        1,
        Duration::from_secs(60),
    );
    let logs = up.logs();
    let got: Vec<usize> = logs
        .lines()
        .filter_map(|l| {
            l.split_once("app[worker.1]: burst ")
                .map(|(_, n)| n.parse().unwrap())
        })
        .collect();
    assert_eq!(got.len(), LINES, "lines lost");
    assert!(
        got.iter().enumerate().all(|(i, n)| i == *n),
        "lines out of order"
    );
    assert!(
        !logs.contains("dropped"),
        "a drop notice in:\n{}",
        &logs[..2000.min(logs.len())]
    );
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
}
