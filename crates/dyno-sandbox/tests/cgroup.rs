//! Per-dyno cgroups on the real machine (cgroup v1 here; the code also speaks v2). These need
//! root and refuse to pass without it.
//!
//! Every test holds an exclusive lock on a file in /tmp for its whole run: the tests share the
//! `dyno` directories (on this machine the pids and cpu ones sit at the hierarchy's root), a
//! concurrent test must not find another's empty cgroup in `cleanup_stale`, and the memory tests
//! read cleaner numbers alone.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dyno_sandbox::cgroup::{Cgroups, DynoCgroup, DynoSize, Version};

const MIB: u64 = 1024 * 1024;

fn require_root() {
    if rustix::process::geteuid().as_raw() != 0 {
        panic!("this test needs root: run the suite as root");
    }
}

/// Held for the test's whole run (see the module doc).
fn exclusive() -> File {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/dyno-sandbox-cgroup-tests.lock")
        .expect("open the test lock");
    // SAFETY: flock on an fd we own.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    lock
}

/// Debian's interpreter, not a version manager's shim script (which would fork helpers of its
/// own inside the dyno and spoil the pid counts).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn size(memory_mb: u64, pids: u64) -> DynoSize {
    DynoSize {
        name: "test",
        memory_mb,
        pids,
        cpu_weight: 50,
    }
}

/// A dyno cgroup that is killed and removed however the test ends.
struct TestDyno {
    cgroups: Cgroups,
    cgroup: DynoCgroup,
    children: Vec<Child>,
    _lock: File,
}

impl TestDyno {
    fn new(test: &str, size: &DynoSize) -> TestDyno {
        require_root();
        let lock = exclusive();
        let cgroups = Cgroups::detect().expect("detect cgroups");
        let id = format!("t{}-{test}", std::process::id());
        let cgroup = cgroups.create(&id, size).expect("create the dyno cgroup");
        TestDyno {
            cgroups,
            cgroup,
            children: Vec::new(),
            _lock: lock,
        }
    }

    /// Starts `program` already inside the dyno's cgroup (it joins between fork and exec).
    fn spawn(&mut self, program: &str, args: &[&str]) -> &mut Child {
        let join = self.cgroup.prepare_join().expect("open cgroup.procs");
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: join_current only calls write(2) on fds opened before the fork.
        unsafe {
            command.pre_exec(move || join.join_current());
        }
        self.children
            .push(command.spawn().expect("spawn into the dyno cgroup"));
        self.children.last_mut().expect("just pushed")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.cgroup
            .paths()
            .into_iter()
            .map(|dir| dir.join(name))
            .find(|path| path.exists())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.cgroup.paths()))
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name))
            .expect("read a control file")
            .trim()
            .to_string()
    }

    /// Kills and removes, and checks that nothing of it is left.
    fn finish(mut self) {
        self.cleanup().expect("clean up");
        for path in self.cgroup.paths() {
            assert!(!path.exists(), "{} is left behind", path.display());
        }
    }

    fn cleanup(&mut self) -> Result<(), String> {
        let killed = self.cgroup.kill_all().map_err(|e| e.to_string());
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        let removed = self.cgroup.remove().map_err(|e| e.to_string());
        // The last test out takes the `dyno` directories with it.
        let _ = self.cgroups.remove_dyno_root_if_unused();
        killed.and(removed)
    }
}

impl Drop for TestDyno {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("cleaning up {}: {e}", self.cgroup.id());
        }
    }
}

fn read_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the child's line");
    line.trim().to_string()
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

#[test]
fn this_machine_is_detected_as_v1_below_our_own_cgroups() {
    let dyno = TestDyno::new("detect", &size(128, 16));
    assert_eq!(dyno.cgroups.version(), Version::V1);
    let own = dyno.cgroups.own_dirs();
    assert_eq!(own.len(), 3, "memory, pids, cpu: {own:?}");
    for (own_dir, dyno_dir) in own.iter().zip(dyno.cgroup.paths()) {
        assert_eq!(dyno_dir, own_dir.join("dyno").join(dyno.cgroup.id()));
        assert!(dyno_dir.join("cgroup.procs").is_file());
    }
    dyno.finish();
}

#[test]
fn limits_are_twice_the_quota_pids_and_shares_and_create_is_idempotent() {
    let small = size(128, 16);
    let dyno = TestDyno::new("limits", &small);
    assert_eq!(dyno.read("memory.limit_in_bytes"), (256 * MIB).to_string());
    assert_eq!(
        dyno.read("memory.memsw.limit_in_bytes"),
        (256 * MIB).to_string()
    );
    assert_eq!(dyno.read("pids.max"), "16");
    assert_eq!(dyno.read("cpu.shares"), "512");

    let again = dyno
        .cgroups
        .create(dyno.cgroup.id(), &small)
        .expect("create twice");
    assert_eq!(again, dyno.cgroup);

    // Raising and lowering both need the right order of memory and memory+swap.
    let bigger = DynoSize::lookup("standard-2x").expect("in the table");
    dyno.cgroups
        .create(dyno.cgroup.id(), bigger)
        .expect("raise");
    assert_eq!(dyno.read("memory.limit_in_bytes"), (2048 * MIB).to_string());
    assert_eq!(
        dyno.read("memory.memsw.limit_in_bytes"),
        (2048 * MIB).to_string()
    );
    assert_eq!(dyno.read("pids.max"), "512");
    assert_eq!(dyno.read("cpu.shares"), "2048");
    dyno.cgroups
        .create(dyno.cgroup.id(), &small)
        .expect("lower");
    assert_eq!(dyno.read("memory.limit_in_bytes"), (256 * MIB).to_string());
    assert_eq!(
        dyno.read("memory.memsw.limit_in_bytes"),
        (256 * MIB).to_string()
    );

    let usage = dyno.cgroup.memory_usage().expect("readings");
    assert_eq!(usage.quota_bytes, 128 * MIB);
    assert_eq!(usage.limit_bytes, 256 * MIB);
    assert_eq!(usage.oom_kills, 0);
    dyno.finish();
}

#[test]
fn a_child_joins_and_appears_in_pids() {
    let mut dyno = TestDyno::new("join", &size(128, 16));
    let joined_early = dyno.spawn("sleep", &["30"]).id();
    let pids = dyno.cgroup.pids().expect("pids");
    assert_eq!(pids, vec![joined_early]);
    let id = dyno.cgroup.id().to_string();
    assert!(
        cgroup_of(joined_early).contains(&format!("/dyno/{id}\n")),
        "{}",
        cgroup_of(joined_early)
    );

    // join(pid) for a process started outside.
    let outside = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let outside_pid = outside.id();
    dyno.cgroup.join(outside_pid).expect("join");
    dyno.children.push(outside);
    let mut expected = vec![joined_early, outside_pid];
    expected.sort_unstable();
    assert_eq!(dyno.cgroup.pids().expect("pids"), expected);

    dyno.cgroup.kill_all().expect("kill_all");
    assert_eq!(dyno.cgroup.pids().expect("pids"), Vec::<u32>::new());
    for child in &mut dyno.children {
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    dyno.finish();
}

/// The shim's sequence: join, then a new cgroup namespace, whose root is the dyno's cgroup.
#[test]
fn after_join_and_unshare_the_dyno_sees_its_cgroup_as_root() {
    let dyno = TestDyno::new("cgroupns", &size(128, 16));
    let join = dyno.cgroup.prepare_join().expect("open cgroup.procs");
    let mut command = Command::new("cat");
    command.arg("/proc/self/cgroup");
    // SAFETY: only write(2) and unshare(2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            join.join_current()?;
            if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run cat");
    assert!(output.status.success(), "{output:?}");
    let seen = String::from_utf8_lossy(&output.stdout);
    for controller in ["memory", "pids", "cpu"] {
        assert!(
            seen.lines()
                .any(|l| l.ends_with(&format!(":{controller}:/"))),
            "{controller}: {seen}"
        );
    }
    dyno.finish();
}

#[test]
fn signal_all_reaches_every_process_once() {
    let mut dyno = TestDyno::new("sigterm", &size(128, 16));
    // Counts the SIGTERMs it gets: one is right, two would rush a graceful shutdown.
    let script = "\
import signal, sys, time
count = 0
def on_term(*_):
    global count
    count += 1
signal.signal(signal.SIGTERM, on_term)
print('ready', flush=True)
time.sleep(1)
print(count, flush=True)
";
    let counter = dyno.spawn(python(), &["-c", script]);
    let stdout = counter.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(lines.next().expect("a line").expect("read"), "ready");
    let sleeper = dyno.spawn("sleep", &["30"]).id();
    assert_eq!(
        dyno.cgroup.signal_all(libc::SIGTERM).expect("signal_all"),
        2
    );
    assert_eq!(lines.next().expect("a line").expect("read"), "1");
    let sleeper = dyno
        .children
        .iter_mut()
        .find(|c| c.id() == sleeper)
        .expect("spawned");
    assert_eq!(sleeper.wait().expect("wait").signal(), Some(libc::SIGTERM));
    dyno.finish();
}

#[test]
fn a_memory_hog_beyond_twice_the_quota_is_oom_killed() {
    let mut dyno = TestDyno::new("oom", &size(128, 16));
    let before = dyno.cgroup.memory_usage().expect("readings").oom_kills;
    let hog = dyno.spawn(
        python(),
        &[
            "-c",
            "x = bytearray(300*1024*1024); import time; time.sleep(5)",
        ],
    );
    let status = hog.wait().expect("wait for the hog");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let after = dyno.cgroup.memory_usage().expect("readings");
    assert!(
        after.oom_kills > before,
        "oom_kills {before} -> {}",
        after.oom_kills
    );
    dyno.finish();
}

#[test]
fn over_quota_but_under_the_limit_stays_alive() {
    let mut dyno = TestDyno::new("overquota", &size(128, 16));
    let script = "x = b'\\x01' * (150*1024*1024); print('ready', flush=True); \
                  import time; time.sleep(30)";
    let child = dyno.spawn(python(), &["-c", script]);
    assert_eq!(read_line(child), "ready");
    let usage = dyno.cgroup.memory_usage().expect("readings");
    assert!(usage.over_quota(), "{usage:?}");
    assert!(
        usage.used_bytes > 150 * MIB && usage.used_bytes < usage.limit_bytes,
        "{usage:?}"
    );
    assert!(!usage.at_limit(), "{usage:?}");
    assert_eq!(usage.oom_kills, 0);
    let child = dyno.children.last_mut().expect("spawned");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the dyno died"
    );
    dyno.finish();
}

#[test]
fn a_fork_bomb_is_held_by_pids_max_and_killed() {
    let mut dyno = TestDyno::new("forkbomb", &size(128, 16));
    // Forks until the kernel refuses, reports how many and why, then waits.
    let script = "\
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, e.errno, flush=True)
time.sleep(60)
";
    let child = dyno.spawn(python(), &["-c", script]);
    let report = read_line(child);
    // The parent is task 1 of 16: the 16th fork (17th task) fails with EAGAIN.
    assert_eq!(report, format!("15 {}", libc::EAGAIN));
    assert_eq!(dyno.cgroup.pids().expect("pids").len(), 16);

    let started = Instant::now();
    dyno.cgroup.kill_all().expect("kill_all");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(dyno.cgroup.pids().expect("pids"), Vec::<u32>::new());
    dyno.cgroup.remove().expect("remove");
    for path in dyno.cgroup.paths() {
        assert!(!path.exists(), "{}", path.display());
    }
    dyno.cgroup.remove().expect("removing again is fine");
    dyno.finish();
}

#[test]
fn cleanup_stale_removes_only_empty_cgroups_not_kept() {
    let mut busy = TestDyno::new("stale-busy", &size(128, 16));
    busy.spawn("sleep", &["30"]);
    let prefix = format!("t{}-stale-", std::process::id());
    let kept = busy
        .cgroups
        .create(&format!("{prefix}kept"), &size(128, 16))
        .expect("create");
    let stale = busy
        .cgroups
        .create(&format!("{prefix}gone"), &size(128, 16))
        .expect("create");

    // Everything else under `dyno` (nothing, as tests run one at a time) is kept too.
    let others: Vec<String> = busy
        .cgroups
        .dyno_ids()
        .expect("ids")
        .into_iter()
        .filter(|id| !id.starts_with(&prefix))
        .collect();
    let mut keep: Vec<&str> = others.iter().map(String::as_str).collect();
    keep.push(kept.id());
    let removed = busy.cgroups.cleanup_stale(&keep).expect("cleanup_stale");
    assert_eq!(removed, vec![stale.id().to_string()]);
    assert!(stale.paths().iter().all(|p| !p.exists()));
    assert!(kept.paths().iter().all(|p| p.exists()));
    assert!(busy.cgroup.paths().iter().all(|p| p.exists()));

    kept.remove().expect("remove");
    busy.finish();
}
