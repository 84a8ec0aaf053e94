//! Signalling the processes of a cgroup without ever hitting a stranger.
//!
//! A pid read from `cgroup.procs` may exit and its number be reused before we signal it. So the
//! process is pinned with a pidfd first, its membership checked in `/proc/<pid>/cgroup`, and
//! the signal sent through the pidfd: it reaches the process we checked or nobody.

use std::io;
use std::os::fd::AsRawFd;

use super::{CgroupError, Hierarchy};
use crate::sys::pidfd_open;

/// Sends `signal` to `pid` if it is (still) in the cgroup `cgroup` or below it. A process that
/// is gone already is not an error.
pub(crate) fn signal_member(
    pid: u32,
    cgroup: &Hierarchy,
    signal: libc::c_int,
) -> Result<(), CgroupError> {
    let signal_error = |source| CgroupError::Signal {
        pid,
        dir: cgroup.dir.clone(),
        source,
    };
    // Not a pid the kernel hands out (those are at most 2^22).
    let Ok(raw_pid) = libc::pid_t::try_from(pid) else {
        return Ok(());
    };
    let pidfd = match pidfd_open(raw_pid) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        // Kernels before 5.3: check, then kill by number (the residual race is the best
        // such a kernel allows).
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
        Err(e) => return Err(signal_error(e)),
    };
    match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(text) if is_member(&text, cgroup) => {}
        // Exited, or the number now belongs to a process elsewhere: not ours to kill.
        Ok(_) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => {
            return Ok(())
        }
        Err(e) => return Err(signal_error(e)),
    }
    let rc = match &pidfd {
        // SAFETY: pidfd_send_signal with a pidfd we own, a signal number and no siginfo.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        },
        // SAFETY: kill with a positive pid and a signal number.
        None => libc::c_long::from(unsafe { libc::kill(raw_pid, signal) }),
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(signal_error(e));
        }
    }
    Ok(())
}

/// Whether a `/proc/<pid>/cgroup` text puts the process in `cgroup` or a cgroup below it, in the
/// same hierarchy.
pub(crate) fn is_member(proc_cgroup: &str, cgroup: &Hierarchy) -> bool {
    proc_cgroup.lines().any(|line| {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        controllers == cgroup.controllers
            && (path == cgroup.proc_path
                || path
                    .strip_prefix(cgroup.proc_path.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hierarchy(controllers: &str, proc_path: &str) -> Hierarchy {
        Hierarchy {
            controllers: controllers.into(),
            dir: "/sys/fs/cgroup/x".into(),
            proc_path: proc_path.into(),
        }
    }

    #[test]
    fn membership_needs_the_same_hierarchy_and_path() {
        let text = "8:pids:/dyno/web-1\n4:memory:/api/dyno/web-1/sub\n0::/\n";
        assert!(is_member(text, &hierarchy("pids", "/dyno/web-1")));
        assert!(is_member(text, &hierarchy("memory", "/api/dyno/web-1")));
        assert!(!is_member(text, &hierarchy("memory", "/api/dyno/web")));
        assert!(!is_member(text, &hierarchy("cpu", "/dyno/web-1")));
        assert!(!is_member(text, &hierarchy("", "/dyno/web-1")));
        assert!(is_member("0::/svc/dyno/a\n", &hierarchy("", "/svc/dyno/a")));
        assert!(!is_member(
            "0::/svc/dyno/ab\n",
            &hierarchy("", "/svc/dyno/a")
        ));
    }

    #[test]
    fn killing_a_pid_that_does_not_exist_is_not_an_error() {
        // pid_max is at most 2^22, so this pid never exists.
        signal_member(
            u32::MAX / 2,
            &hierarchy("memory", "/nowhere"),
            libc::SIGKILL,
        )
        .unwrap();
    }
}
