//! A private `/proc` view for every dyno, from LXCFS (what LXD and Incus use): a FUSE
//! filesystem whose `proc/meminfo`, `proc/loadavg`, … answer each reader with the figures of
//! the reader's own container: its cgroup's memory limit and usage, the load of its processes,
//! the CPUs its CFS quota allows, the age of its PID 1. The daemon finds or starts one LXCFS
//! ([`find_or_start`]); each sandbox binds its files over the fresh `/proc`
//! ([`crate::rootfs`]).
//!
//! LXCFS must outlive a daemon killed with SIGKILL: the dynos it adopts keep their bind mounts,
//! which answer only while the same LXCFS runs. So it runs in a session of its own, and the
//! next daemon finds it by its mount (`fuse.lxcfs` at the configured directory). Nobody of
//! ours stops it: like Debian's `lxcfs.service`, it is the host's, shared by every daemon.
//!
//! Options: `-l` (per-container load averages: off by default), `--enable-cfs` (the CPU count
//! of `cpuinfo`, `stat` and `cpu/online` follows the CFS quota, not only the cpuset), `-u` (no
//! swap figures: dynos have swap disabled, and without `-u` a v1 host shows the memory limit as
//! swap), `--enable-pidfd` (a recycled pid is never taken for a dyno's PID 1).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `lxcfs.service` mounts it: a host that runs it already is used as it is.
pub const DEFAULT_DIR: &str = "/var/lib/lxcfs";
/// The options LXCFS runs with (see the module's documentation).
pub const OPTIONS: [&str; 4] = ["-l", "--enable-cfs", "-u", "--enable-pidfd"];
/// The files of the view, relative to the LXCFS mount and to the dyno's root alike.
pub const FILES: [&str; 8] = [
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/loadavg",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "sys/devices/system/cpu/online",
];
const FSTYPE: &str = "fuse.lxcfs";
/// LXCFS mounts within milliseconds; a slow, busy machine gets plenty more.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// LXCFS joins its load-average thread, which sleeps up to 5 s, before it exits.
const STOP_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum LxcfsError {
    #[error("lxcfs is not installed (no lxcfs in {path})")]
    NotInstalled { path: String },
    #[error(
        "/dev/fuse is missing (load the fuse module, or give the daemon's container /dev/fuse)"
    )]
    NoFuse,
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("lxcfs on {} ended before it mounted ({status}); its log: {}", dir.display(), log.display())]
    Exited {
        dir: PathBuf,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("lxcfs did not mount {} within {timeout:?}; its log: {}", dir.display(), log.display())]
    Timeout {
        dir: PathBuf,
        timeout: Duration,
        log: PathBuf,
    },
}

/// A usable LXCFS mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lxcfs {
    pub dir: PathBuf,
    /// The pid of the LXCFS this call started; `None` for one found running.
    pub started: Option<u32>,
}

/// LXCFS at `dir`: the one mounted there, or a new one started for it. A dead mount (its LXCFS
/// gone: every access fails with `ENOTCONN`) is detached and replaced.
pub fn find_or_start(dir: &Path) -> Result<Lxcfs, LxcfsError> {
    if is_mounted(dir)? {
        if is_alive(dir) {
            return Ok(Lxcfs {
                dir: dir.to_path_buf(),
                started: None,
            });
        }
        detach(dir)?;
    }
    let binary = binary()?;
    if !Path::new("/dev/fuse").exists() {
        return Err(LxcfsError::NoFuse);
    }
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| LxcfsError::Io { what, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let log = sibling(dir, "log");
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io_err("open", &log))?;
    let mut command = Command::new(&binary);
    command
        .arg(format!("--pidfile={}", pidfile(dir).display()))
        .args(OPTIONS)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(io_err("open", &log))?)
        .stderr(log_file);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours. A session of its own:
    // no signal meant for the daemon's group (Ctrl-C) reaches it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = command.spawn().map_err(io_err("start", &binary))?;
    let pid = child.id();
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if is_mounted(dir)? && is_alive(dir) {
            // Reaped by a thread of ours while we live; by init once we are gone.
            std::thread::spawn(move || child.wait());
            return Ok(Lxcfs {
                dir: dir.to_path_buf(),
                started: Some(pid),
            });
        }
        if let Some(status) = child.try_wait().map_err(io_err("wait for", &binary))? {
            return Err(LxcfsError::Exited {
                dir: dir.to_path_buf(),
                status,
                log,
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = detach(dir);
            return Err(LxcfsError::Timeout {
                dir: dir.to_path_buf(),
                timeout: MOUNT_TIMEOUT,
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the LXCFS whose pid file is the one [`find_or_start`] gives it for `dir` and removes
/// its mount: for tests and operators that started one for themselves. SIGTERM (LXCFS
/// unmounts), SIGKILL after 8 s; the mount is detached if still there. Nothing to stop is fine.
pub fn stop(dir: &Path) -> Result<(), LxcfsError> {
    let pidfile = pidfile(dir);
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
        .filter(|pid| *pid > 1);
    if let Some(pid) = pid {
        if is_lxcfs(pid) {
            // SAFETY: kill has no memory-safety preconditions; the pid is an lxcfs's.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while is_lxcfs(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_lxcfs(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    if is_mounted(dir)? {
        detach(dir)?;
    }
    let _ = std::fs::remove_file(&pidfile);
    Ok(())
}

/// Where LXCFS for `dir` keeps its pid (and its lock against a second LXCFS on the same
/// directory): `DIR.pid` beside the directory.
pub fn pidfile(dir: &Path) -> PathBuf {
    sibling(dir, "pid")
}

/// Where its output goes: `DIR.log` beside the directory.
pub fn log_file(dir: &Path) -> PathBuf {
    sibling(dir, "log")
}

fn sibling(dir: &Path, extension: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(extension);
    dir.with_file_name(name)
}

/// Whether an LXCFS mount sits at `dir` in our mount namespace.
pub fn is_mounted(dir: &Path) -> Result<bool, LxcfsError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| LxcfsError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(crate::cgroup::detect::parse_mountinfo(&text)
        .iter()
        .any(|m| m.fstype == FSTYPE && m.mount_point == dir))
}

/// A live LXCFS answers; a dead one's mount fails every access (`ENOTCONN`).
fn is_alive(dir: &Path) -> bool {
    dir.join("proc/meminfo").metadata().is_ok()
}

fn detach(dir: &Path) -> Result<(), LxcfsError> {
    match rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL => Ok(()),
        Err(e) => Err(LxcfsError::Io {
            what: "unmount",
            path: dir.to_path_buf(),
            source: e.into(),
        }),
    }
}

fn is_lxcfs(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let comm = stat.split_once('(')?.1.rsplit_once(')')?;
            // A zombie has ended: it only waits for its parent.
            Some(comm.0 == "lxcfs" && !comm.1.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// `lxcfs` on `PATH` (the usual `/usr/bin/lxcfs` when `PATH` is unset).
fn binary() -> Result<PathBuf, LxcfsError> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join("lxcfs"))
        .find(|candidate| candidate.is_file())
        .ok_or(LxcfsError::NotInstalled { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_and_log_files_sit_beside_the_directory() {
        let dir = Path::new("/var/lib/lxcfs");
        assert_eq!(pidfile(dir), Path::new("/var/lib/lxcfs.pid"));
        assert_eq!(log_file(dir), Path::new("/var/lib/lxcfs.log"));
    }

    #[test]
    fn a_directory_without_lxcfs_is_not_mounted() {
        assert!(!is_mounted(Path::new("/nonexistent/lxcfs")).unwrap());
        assert!(!is_lxcfs(i32::MAX));
    }
}
