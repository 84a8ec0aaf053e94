//! The raw system calls of the sandbox, each turned into a `Result` that says what failed. The
//! callers run in a freshly forked, single-threaded child (or in PID 1 after exec), where
//! allocating is safe.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// What failed, with the OS error: `mount proc on /…/root/proc: Operation not permitted`.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SysError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

pub type SysResult<T> = Result<T, SysError>;

pub fn check(what: impl FnOnce() -> String, rc: libc::c_int) -> SysResult<libc::c_int> {
    if rc < 0 {
        Err(SysError {
            what: what(),
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(rc)
    }
}

pub fn cstr(path: &Path) -> SysResult<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| SysError {
        what: format!("path {} has a NUL byte", path.display()),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// mount(2) with the arguments spelled out in the error.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> SysResult<()> {
    let what = || {
        format!(
            "mount {} ({}) on {}{}",
            source.unwrap_or("-"),
            fstype.unwrap_or("bind/remount"),
            target.display(),
            data.map(|d| format!(" with {d}")).unwrap_or_default()
        )
    };
    let source_c = source.map(|s| CString::new(s).expect("no NUL"));
    let fstype_c = fstype.map(|s| CString::new(s).expect("no NUL"));
    let data_c = data.map(|s| CString::new(s).expect("no NUL"));
    let target_c = cstr(target)?;
    // SAFETY: every pointer is either null or a valid NUL-terminated string that outlives the
    // call.
    let rc = unsafe {
        libc::mount(
            source_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data_c
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check(what, rc).map(|_| ())
}

pub fn io_context<T>(what: impl FnOnce() -> String, r: io::Result<T>) -> SysResult<T> {
    r.map_err(|source| SysError {
        what: what(),
        source,
    })
}

/// A pipe, both ends close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: a valid array of two ints for the new fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are new fds that nothing else owns.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// A pidfd for `pid`: it refers to that process, never to a later one with the same number, and
/// becomes readable when the process exits (also for a process that is not our child).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Sends `signal` to the process of `pidfd`: never to a later process that got its number.
pub fn signal_pidfd(
    pidfd: impl std::os::fd::AsFd,
    signal: rustix::process::Signal,
) -> io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(pidfd, signal)?)
}

/// Sends `signal` to `pid` (where no pidfd is held; `kill(2)`).
pub fn signal_pid(pid: libc::pid_t, signal: rustix::process::Signal) -> io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::kill_process(pid, signal)?)
}

/// The mount points at or below `root` in `/proc/*/mountinfo` text (escapes undone), deepest
/// first and each once: unmounting them in that order never meets a busy parent.
pub fn mount_points_below(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = crate::cgroup::detect::parse_mountinfo(mountinfo)
        .into_iter()
        .map(|mount| mount.mount_point)
        .filter(|point| point.starts_with(root))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    points.dedup();
    points
}
