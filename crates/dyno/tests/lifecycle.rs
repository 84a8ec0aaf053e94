//! Heroku's dyno lifecycle through `dyno up` (privileged: run as root): R10, crash restarts and
//! their cool-off, R12, R14, R15, the pids limit, cycling — each asserting the exact log lines.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

#[test]
fn r10_when_a_web_dyno_does_not_bind_its_port() {
    let app = app_dir("r10", "web: sleep 1000\n");
    let mut up = Up::start(
        "r10",
        &app,
        &[
            "--app",
            "r10app",
            "--boot-timeout",
            "1s",
            "--restart-cooloffs",
            "0s,60s",
        ],
    );
    up.wait_for_log(
        "heroku[web.1]: State changed from crashed to starting",
        1,
        Duration::from_secs(20),
    );
    up.wait_for_log(
        "heroku[web.1]: State changed from starting to crashed",
        2,
        Duration::from_secs(20),
    );
    up.interrupt();
    let logs = messages(&up.logs());
    let r10 = "heroku[web.1]: Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 1 second of launch";
    let position = logs
        .iter()
        .position(|l| l == r10)
        .unwrap_or_else(|| panic!("{}", up.logs()));
    assert_eq!(
        logs[position + 1],
        "heroku[web.1]: Stopping process with SIGKILL"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[web.1]: Process exited with status 137"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[web.1]: State changed from starting to crashed"
    );
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("r10app"));
}

#[test]
fn a_crash_restarts_at_once_then_after_the_cooloff_and_exit_0_is_a_crash() {
    let app = app_dir("crash", "worker: echo working; exit 0\n");
    let mut up = Up::start(
        "crash",
        &app,
        &["--app", "crashapp", "--restart-cooloffs", "0s,2s"],
    );
    up.wait_for_log(
        "heroku[worker.1]: Process exited with status 0",
        3,
        Duration::from_secs(20),
    );
    up.interrupt();
    let lines: Vec<String> = up.logs().lines().map(String::from).collect();
    let restarts: Vec<&String> = lines
        .iter()
        .filter(|l| l.ends_with("heroku[worker.1]: State changed from crashed to starting"))
        .collect();
    assert!(restarts.len() >= 2, "{}", up.logs());
    // First restart at once, the second after the 2 s cool-off.
    let times: Vec<f64> = lines
        .iter()
        .filter(|l| {
            l.ends_with("heroku[worker.1]: State changed from up to crashed")
                || l.ends_with("heroku[worker.1]: State changed from crashed to starting")
        })
        .map(|l| seconds_of(l))
        .collect();
    assert!(times.len() >= 4, "{}", up.logs());
    assert!(
        times[1] - times[0] < 1.0,
        "first restart not at once: {times:?}"
    );
    assert!(
        times[3] - times[2] >= 1.9,
        "second restart before the cool-off: {times:?}"
    );
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("crashapp"));
}

/// Seconds within the day of a log line's timestamp.
fn seconds_of(line: &str) -> f64 {
    let time = &line[11..26]; // HH:MM:SS.ffffff
    let h: f64 = time[0..2].parse().unwrap();
    let m: f64 = time[3..5].parse().unwrap();
    let s: f64 = time[6..].parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn r12_when_processes_ignore_sigterm_and_a_daemonized_grandchild_goes_too() {
    let app = app_dir(
        "r12",
        "worker: trap '' TERM; setsid bash -c \"trap '' TERM; exec -a dyno-grandchild sleep 1000\" & echo started; while true; do sleep 1; done\n",
    );
    let mut up = Up::start("r12", &app, &["--app", "r12app", "--stop-grace", "1s"]);
    up.wait_for_log("app[worker.1]: started", 1, Duration::from_secs(20));
    up.interrupt();
    let logs = messages(&up.logs());
    let r12 = "heroku[worker.1]: Error R12 (Exit timeout) -> At least one process failed to exit within 1 second of SIGTERM";
    let position = logs
        .iter()
        .position(|l| l == r12)
        .unwrap_or_else(|| panic!("{}", up.logs()));
    assert_eq!(
        logs[position - 1],
        "heroku[worker.1]: Stopping all processes with SIGTERM"
    );
    assert_eq!(
        logs[position + 1],
        "heroku[worker.1]: Stopping remaining processes with SIGKILL"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[worker.1]: Process exited with status 137"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[worker.1]: State changed from up to down"
    );
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("r12app"));
}

/// The memory cgroup directory (relative to the memory hierarchy) of a running process.
fn memory_cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
            .then(|| path.to_string())
    })
}

fn memory_app(tag: &str, megabytes: u32) -> TempApp {
    app_dir(
        tag,
        &format!(
            "worker: python3 -c \"import time; x = bytearray({megabytes} * 1024 * 1024); print('holding {megabytes} MB', flush=True); time.sleep(1000)\"\n"
        ),
    )
}

#[test]
fn r14_when_over_the_memory_quota() {
    let app = memory_app("r14", 90);
    let mut up = Up::start(
        "r14",
        &app,
        &["--app", "r14app", "--memory-mb", "64", "--stop-grace", "2s"],
    );
    up.wait_for_log(
        "heroku[worker.1]: Error R14 (Memory quota exceeded)",
        1,
        Duration::from_secs(30),
    );
    let logs = messages(&up.logs());
    let position = logs
        .iter()
        .position(|l| l == "heroku[worker.1]: Error R14 (Memory quota exceeded)")
        .unwrap();
    let running = &logs[position - 1];
    assert!(
        running.starts_with("heroku[worker.1]: Process running mem=") && running.ends_with("%)"),
        "{running}"
    );
    // Still running: R14 is a warning.
    assert!(!logs.iter().any(|l| l.contains("R15")), "{}", up.logs());
    // The dyno's processes are in a cgroup of their own, which goes with the dyno.
    let pid = processes_of(dyno_manager::daemon::uids::app_uid("r14app"))[0];
    let cgroup = memory_cgroup_of(pid).unwrap();
    assert!(cgroup.contains("/dyno/"), "{cgroup}");
    up.interrupt();
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("r14app"));
    let memory_root = Path::new("/sys/fs/cgroup/memory");
    if memory_root.exists() {
        assert!(
            !memory_root.join(cgroup.trim_start_matches('/')).exists(),
            "cgroup {cgroup} left"
        );
    }
}

#[test]
fn r15_and_a_kill_at_twice_the_memory_quota() {
    let app = memory_app("r15", 200);
    let mut up = Up::start(
        "r15",
        &app,
        &[
            "--app",
            "r15app",
            "--memory-mb",
            "64",
            "--restart-cooloffs",
            "0s,60s",
        ],
    );
    up.wait_for_log(
        "heroku[worker.1]: Error R15 (Memory quota vastly exceeded)",
        1,
        Duration::from_secs(30),
    );
    up.wait_for_log(
        "heroku[worker.1]: State changed from up to crashed",
        1,
        Duration::from_secs(30),
    );
    up.interrupt();
    let logs = messages(&up.logs());
    let position = logs
        .iter()
        .position(|l| l == "heroku[worker.1]: Error R15 (Memory quota vastly exceeded)")
        .unwrap();
    assert!(
        logs[position - 1].starts_with("heroku[worker.1]: Process running mem="),
        "{}",
        up.logs()
    );
    assert_eq!(
        logs[position + 1],
        "heroku[worker.1]: Stopping process with SIGKILL"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[worker.1]: Process exited with status 137"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[worker.1]: State changed from up to crashed"
    );
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("r15app"));
}

#[test]
fn a_fork_bomb_is_held_by_the_pids_limit_while_a_neighbour_keeps_serving() {
    let app = app_dir(
        "forkbomb",
        "web: python3 -m http.server $PORT\n\
         worker: python3 -c \"exec('import os, time\\nwhile True:\\n try: os.fork()\\n except OSError: time.sleep(0.05)')\"\n",
    );
    let mut up = Up::start(
        "forkbomb",
        &app,
        &["--app", "bombapp", "--stop-grace", "2s"],
    );
    up.wait_up("web.1", Duration::from_secs(30));
    up.wait_up("worker.1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let uid = dyno_manager::daemon::uids::app_uid("bombapp");
    let processes = processes_of(uid).len();
    // Standard-1X: 256 processes for the bomb's dyno, a few for the web dyno.
    assert!((200..=270).contains(&processes), "{processes} processes");
    let ip = up.address_of("web.1");
    let answer = up.get(ip, 5000, "/");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    up.interrupt();
    up.assert_nothing_left(uid);
}

#[test]
fn cycling_restarts_a_dyno_gracefully_on_schedule() {
    let app = app_dir("cycle", "worker: echo started; exec sleep 1000\n");
    let mut up = Up::start(
        "cycle",
        &app,
        &[
            "--app",
            "cycleapp",
            "--cycle",
            "1s",
            "--cycle-jitter",
            "0s",
            "--stop-grace",
            "2s",
        ],
    );
    up.wait_for_log("heroku[worker.1]: Cycling", 2, Duration::from_secs(20));
    up.interrupt();
    let logs = messages(&up.logs());
    let position = logs
        .iter()
        .position(|l| l == "heroku[worker.1]: Cycling")
        .unwrap();
    assert_eq!(
        logs[position + 1],
        "heroku[worker.1]: Stopping all processes with SIGTERM"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[worker.1]: Process exited with status 143"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[worker.1]: State changed from up to starting"
    );
    assert_eq!(
        logs[position + 4],
        "heroku[worker.1]: Starting process with command `echo started; exec sleep 1000`"
    );
    up.assert_nothing_left(dyno_manager::daemon::uids::app_uid("cycleapp"));
}
