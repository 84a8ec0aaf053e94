//! The dynos' private `/proc` view through LXCFS, end to end (privileged: run as root): `dyno
//! up` and `dyno serve` start (or find) LXCFS in the test's scratch dir, dynos read their own
//! figures, LXCFS outlives a killed daemon, and without it dynos start all the same. The
//! harness stops the LXCFS each test caused to be started, also when the test fails.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// Prints the dyno's figures every second: `probe n=N mem=KB uptime=S loadavg=…`; with `busy`,
/// a thread spins meanwhile.
const PROBE: &str = r#"import sys, threading, time
def spin():
    while True:
        pass
if sys.argv[1] == "busy":
    threading.Thread(target=spin, daemon=True).start()
n = 0
while True:
    n += 1
    mem = open("/proc/meminfo").readline().split()[1]
    uptime = open("/proc/uptime").read().split()[0]
    load = open("/proc/loadavg").read().strip()
    print(f"probe n={n} mem={mem} uptime={uptime} loadavg={load}", flush=True)
    time.sleep(1)
"#;

const STANDARD_1X_LIMIT_KB: u64 = 1024 * 1024;

fn probe_app(tag: &str, procfile: &str) -> TempApp {
    let app = app_dir(tag, procfile);
    std::fs::write(app.join("probe.py"), PROBE).unwrap();
    app
}

/// One probe line's figures.
struct Probe {
    n: u64,
    mem_kb: u64,
    uptime: f64,
    load_1m: f64,
    running: u32,
    threads: u32,
}

/// The probe lines of `dyno` (`busy.1`) in `logs`, oldest first.
fn probes(logs: &str, dyno: &str) -> Vec<Probe> {
    let marker = format!("app[{dyno}]: probe ");
    logs.lines()
        .filter_map(|l| l.split_once(&marker).map(|(_, rest)| rest))
        .map(|rest| {
            let value = |key: &str| {
                rest.split_once(&format!("{key}="))
                    .map(|(_, v)| v)
                    .unwrap_or_else(|| panic!("no {key} in {rest}"))
            };
            let load: Vec<&str> = value("loadavg").split_whitespace().collect();
            let (running, threads) = load[3].split_once('/').unwrap();
            Probe {
                n: value("n").split(' ').next().unwrap().parse().unwrap(),
                mem_kb: value("mem").split(' ').next().unwrap().parse().unwrap(),
                uptime: value("uptime").split(' ').next().unwrap().parse().unwrap(),
                load_1m: load[0].parse().unwrap(),
                running: running.parse().unwrap(),
                threads: threads.parse().unwrap(),
            }
        })
        .collect()
}

/// The first probe line of `dyno` in `dyno up`'s output, once there is one.
fn first_probe(up: &Up, dyno: &str) -> Probe {
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        probes(&up.logs(), dyno).into_iter().next().ok_or_else(|| {
            format!(
                "no probe line of {dyno}:\n{}\n--- stderr:\n{}",
                up.logs(),
                up.notes()
            )
        })
    })
}

fn host_mem_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The pid in LXCFS's pid file, which must be a live lxcfs.
fn lxcfs_pid(dir: &Path) -> u32 {
    let pidfile = dyno_sandbox::lxcfs::pidfile(dir);
    let pid =
        std::fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
    let pid: u32 = pid.trim().parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "lxcfs", "pid {pid}");
    pid
}

/// Processes whose command line names `dir` and that are lxcfs.
fn lxcfs_processes_for(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            comm.trim() == "lxcfs" && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .count()
}

const NO_VIEW: &str = "no private /proc view";
const VIEW_OFF: &str = "private /proc view is off";

#[test]
fn dyno_up_gives_each_dyno_its_own_memory_uptime_and_load() {
    let tag = "procview-up";
    let app = probe_app(
        tag,
        "busy: python3 probe.py busy\nidle: python3 probe.py idle\n",
    );
    let lxcfs = Up::lxcfs_dir_of(tag);
    let mut up = Up::start(
        tag,
        &app,
        &[
            "--app",
            "probe",
            "--stop-grace",
            "5s",
            "--lxcfs-dir",
            &lxcfs.to_string_lossy(),
        ],
    );
    up.wait_up("busy.1", Duration::from_secs(30));
    up.wait_up("idle.1", Duration::from_secs(30));
    assert!(dyno_sandbox::lxcfs::is_mounted(&lxcfs).unwrap());
    let pid = lxcfs_pid(&lxcfs);
    // The busy dyno's load climbs (lxcfs samples every 5 s); the idle one's stays at zero.
    poll_until(Duration::from_secs(60), Duration::from_millis(500), || {
        let busy = probes(&up.logs(), "busy.1");
        match busy.last() {
            Some(p) if p.load_1m >= 0.05 && p.running >= 1 => Ok(()),
            _ => Err(format!("busy.1's load does not rise:\n{}", up.logs())),
        }
    });
    let logs = up.logs();
    let (busy, idle) = (probes(&logs, "busy.1"), probes(&logs, "idle.1"));
    let (last_busy, last_idle) = (busy.last().unwrap(), idle.last().unwrap());
    assert_eq!(last_idle.load_1m, 0.0, "{logs}");
    for p in busy.iter().chain(&idle) {
        assert_eq!(p.mem_kb, STANDARD_1X_LIMIT_KB, "{logs}");
        assert!(p.threads < 20, "the host's threads show:\n{logs}");
    }
    assert_ne!(STANDARD_1X_LIMIT_KB, host_mem_kb());
    // Each dyno's own uptime: since its own start, not the host's.
    assert!(
        last_busy.uptime < 120.0 && last_idle.uptime < 120.0,
        "{logs}"
    );
    let notes = up.notes();
    assert!(
        !notes.contains(NO_VIEW) && !notes.contains(VIEW_OFF),
        "{notes}"
    );
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    // LXCFS is the host's, shared: it outlives `dyno up` (the harness stops it).
    assert!(dyno_sandbox::lxcfs::is_mounted(&lxcfs).unwrap());
    assert_eq!(lxcfs_pid(&lxcfs), pid);
}

#[test]
fn lxcfs_outlives_a_killed_daemon_and_the_next_daemon_uses_it() {
    let tag = "procview-kill";
    let app = probe_app(tag, "worker: python3 probe.py idle\n");
    let lxcfs = Up::lxcfs_dir_of(tag);
    let lxcfs_arg = lxcfs.to_string_lossy().into_owned();
    let args = ["--stop-grace", "5s", "--lxcfs-dir", &lxcfs_arg];
    let mut up = Up::serve(tag, &args);
    up.wait_api();
    up.cli_succeeds(&["apps:create", "probe"]);
    up.cli_succeeds(&["deploy", &app.to_string_lossy(), "-a", "probe"]);
    up.cli_succeeds(&["ps:scale", "worker=1", "-a", "probe"]);
    let logs = |up: &Up| up.cli_succeeds(&["logs", "-a", "probe", "-n", "1500"]).0;
    let seen = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let probes = probes(&logs(&up), "worker.1");
        probes
            .last()
            .filter(|p| p.n >= 2)
            .map(|p| p.n)
            .ok_or_else(|| format!("no probe lines:\n{}", logs(&up)))
    });
    let pid = lxcfs_pid(&lxcfs);

    up.kill_and_restart_serve(&args);
    up.wait_api();
    // The adopted dyno still reads its figures through the same LXCFS: its bind mounts work.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = logs(&up);
        let after: Vec<Probe> = probes(&text, "worker.1")
            .into_iter()
            .filter(|p| p.n > seen + 3)
            .collect();
        if after.len() >= 2 {
            assert!(
                after.iter().all(|p| p.mem_kb == STANDARD_1X_LIMIT_KB),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no probe lines after the restart:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        lxcfs_pid(&lxcfs),
        pid,
        "the next daemon started another lxcfs"
    );
    assert_eq!(lxcfs_processes_for(&lxcfs), 1);
    assert!(!up.notes().contains(NO_VIEW), "{}", up.notes());
}

#[test]
fn with_no_lxcfs_the_dyno_starts_and_the_daemon_says_so_once() {
    let tag = "procview-off";
    let app = probe_app(tag, "worker: python3 probe.py idle\n");
    let mut up = Up::start(
        tag,
        &app,
        &["--app", "probe", "--stop-grace", "5s", "--no-lxcfs"],
    );
    let probe = first_probe(&up, "worker.1");
    assert_eq!(probe.mem_kb, host_mem_kb(), "{}", up.logs());
    let status = up.interrupt();
    assert!(status.success(), "{status:?}");
    let notes = up.notes();
    assert_eq!(notes.matches(VIEW_OFF).count(), 1, "{notes}");
    assert!(notes.contains("host's /proc figures"), "{notes}");
}

#[test]
fn where_lxcfs_cannot_mount_the_dyno_starts_and_the_daemon_says_so_once() {
    let tag = "procview-fail";
    let app = probe_app(tag, "worker: python3 probe.py idle\n");
    // A regular file where the mount's parent directory should be: lxcfs cannot mount.
    let blocker = app.join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let dir = blocker.join("lxcfs");
    let mut up = Up::start(
        tag,
        &app,
        &[
            "--app",
            "probe",
            "--stop-grace",
            "5s",
            "--lxcfs-dir",
            &dir.to_string_lossy(),
        ],
    );
    let probe = first_probe(&up, "worker.1");
    assert_eq!(probe.mem_kb, host_mem_kb(), "{}", up.logs());
    let status = up.interrupt();
    assert!(status.success(), "{status:?}");
    let notes = up.notes();
    assert_eq!(notes.matches(NO_VIEW).count(), 1, "{notes}");
    assert!(notes.contains("install lxcfs"), "{notes}");
    assert_eq!(lxcfs_processes_for(&dir), 0);
}
