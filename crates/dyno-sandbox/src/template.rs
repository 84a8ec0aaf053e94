//! The mount namespace dynos are copied from.
//!
//! A dyno's shim makes the dyno's mount namespace by copying its own (`unshare(CLONE_NEWNS)`),
//! and the kernel copies every mount in it. The host's namespace holds one network namespace
//! bind per dyno (`dyno-net`'s run dir), so with 1,000 dynos alive each start copied 1,000
//! mounts it throws away at once (~1 ms per start with 200 alive, growing with every dyno).
//!
//! The template is a copy of the host's mount namespace made once, when the daemon opens, with
//! the run dir's binds taken out; a shim joins it (`setns`) and copies that instead. It stays a
//! slave of the host's mounts, so mounts the host makes later reach it, except below the mount
//! that holds the run dir: that one is private in the template (else every later netns bind
//! would land in it again). A dyno with binds of its own (a build, whose workspace is mounted
//! after the template was made) copies the host's namespace as before.
//!
//! The namespace is kept by binding its nsfs file at a path (as `ip netns` keeps network
//! namespaces); the kernel never copies such a bind into another mount namespace, so the
//! template holds no reference to itself.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What the template does to one mount of its copy of the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hide {
    /// Unmount it and everything below it (`MNT_DETACH`).
    Detach(PathBuf),
    /// Stop propagation from the host into it (`MS_PRIVATE`).
    Private(PathBuf),
}

/// What hides the mounts at and below `dir` in a copy of the namespace `mountinfo` describes:
/// `dir` detached when it is a mount point of its own; otherwise the mount holding it made
/// private and each mount below `dir` detached, deepest first.
pub fn hide_plan(mountinfo: &str, dir: &Path) -> Vec<Hide> {
    let points = crate::sys::mount_points_below(mountinfo, Path::new("/"));
    let holder = points
        .iter()
        .filter(|point| dir.starts_with(point))
        .max_by_key(|point| point.components().count())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/"));
    if holder == dir {
        return vec![Hide::Detach(holder)];
    }
    let mut plan = vec![Hide::Private(holder)];
    plan.extend(
        points
            .into_iter()
            .filter(|point| point.starts_with(dir) && point != dir)
            .map(Hide::Detach),
    );
    plan
}

/// Makes the template and binds it at `at` (replacing one an earlier daemon left there), with
/// the mounts at and below `hidden` taken out. Safe to call from a multi-threaded process: the
/// child it forks makes only system calls.
pub fn create(at: &Path, hidden: &Path) -> io::Result<()> {
    remove(at)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let plan: Vec<(bool, CString)> = hide_plan(&mountinfo, hidden)
        .into_iter()
        .map(|hide| {
            let (detach, path) = match hide {
                Hide::Detach(p) => (true, p),
                Hide::Private(p) => (false, p),
            };
            let path = CString::new(path.into_os_string().into_encoded_bytes())
                .map_err(io::Error::other)?;
            Ok((detach, path))
        })
        .collect::<io::Result<_>>()?;
    std::fs::File::create(at)?;
    let (ready_in, ready_out) = crate::sys::pipe()?;
    let (hold_in, hold_out) = crate::sys::pipe()?;
    // SAFETY: the child calls only async-signal-safe functions (system calls on memory made
    // before the fork) and ends with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above. The child's copies of our ends go first: the hold would never
        // end while the child itself held its write end.
        unsafe {
            libc::close(ready_in.as_raw_fd());
            libc::close(hold_out.as_raw_fd());
            make_in_child(&plan, ready_out.as_raw_fd(), hold_in.as_raw_fd())
        }
    }
    drop((ready_out, hold_in));
    let mut status = [0u8; 4];
    // SAFETY: a valid fd and a writable buffer of 4 bytes.
    let n = unsafe { libc::read(ready_in.as_raw_fd(), status.as_mut_ptr().cast(), 4) };
    let made = if n != 4 {
        Err(io::Error::other(
            "the template's process ended before it was ready",
        ))
    } else if i32::from_ne_bytes(status) != 0 {
        Err(io::Error::from_raw_os_error(i32::from_ne_bytes(status)))
    } else {
        let source = format!("/proc/{pid}/ns/mnt");
        rustix::mount::mount_bind(source.as_str(), at).map_err(io::Error::from)
    };
    // The child waits for this to close, so that its namespace lives until it is bound.
    drop(hold_out);
    let mut wait = 0;
    // SAFETY: a valid out pointer; `pid` is our child.
    unsafe { libc::waitpid(pid, &mut wait, 0) };
    if made.is_err() {
        let _ = std::fs::remove_file(at);
    }
    made
}

/// In the forked child: a new mount namespace, a slave of ours, with the plan applied; then
/// reports (0 or an errno on `ready`) and waits for `hold` to close.
///
/// # Safety
/// Only in the child of a fork, with fds and strings made before it.
unsafe fn make_in_child(plan: &[(bool, CString)], ready: i32, hold: i32) -> ! {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let mut result = 0;
    let slave = || {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    };
    if libc::unshare(libc::CLONE_NEWNS) != 0 || slave() != 0 {
        result = errno();
    } else {
        for (detach, path) in plan {
            let rc = if *detach {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH)
            } else {
                libc::mount(
                    std::ptr::null(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            // A mount gone since the plan was read is hidden already.
            if rc != 0 && !matches!(errno(), libc::EINVAL | libc::ENOENT) {
                result = errno();
                break;
            }
        }
    }
    let bytes = result.to_ne_bytes();
    libc::write(ready, bytes.as_ptr().cast(), 4);
    let mut byte = 0u8;
    while libc::read(hold, (&mut byte as *mut u8).cast(), 1) < 0 {}
    libc::_exit(0)
}

/// Where the daemon of process `pid` keeps its template: beside its dynos' state root
/// (`/run/dyno/dynos.mount-template.<pid>`), one per daemon. Not in the network run dir:
/// `ip netns` lists every file there as a namespace.
pub fn path_beside(state_root: &Path, pid: u32) -> PathBuf {
    let mut name = state_root.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{TEMPLATE_INFIX}{pid}"));
    state_root.with_file_name(name)
}

/// Removes the templates beside `state_root` whose daemon is gone (killed before it could).
pub fn remove_orphans(state_root: &Path) {
    let (Some(dir), Some(root_name)) = (state_root.parent(), state_root.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}{TEMPLATE_INFIX}", root_name.to_string_lossy());
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = remove(&entry.path());
        }
    }
}

/// Between a state root's name and the pid in its templates' names.
const TEMPLATE_INFIX: &str = ".mount-template.";

/// Unbinds and removes the template at `at`; nothing there is success.
pub fn remove(at: &Path) -> io::Result<()> {
    match rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(at) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Joins the template at `at` (a single-threaded caller: the shim's child before its own
/// `unshare`). A template that is gone (its daemon was killed and the next one removed it while
/// this dyno was starting) is no error: the caller copies its own namespace, as without one.
pub fn join_if_there(at: &Path) -> crate::sys::SysResult<()> {
    let what = || format!("join the mount namespace template {}", at.display());
    let file = match std::fs::File::open(at) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return crate::sys::io_context(what, Err(e)),
    };
    // SAFETY: setns on an fd we own, with a namespace-type constant.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: a plain file, no longer bound (being removed).
        if e.raw_os_error() != Some(libc::EINVAL) {
            return crate::sys::io_context(what, Err(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u32, point: &str) -> String {
        format!("{id} 1 0:{id} / {point} rw,relatime shared:{id} - tmpfs tmpfs rw\n")
    }

    #[test]
    fn a_run_dir_that_is_a_mount_point_is_detached_with_everything_below() {
        let info = [
            line(1, "/"),
            line(2, "/run"),
            line(3, "/run/lab"),
            line(4, "/run/lab/dyno-a"),
        ]
        .concat();
        assert_eq!(
            hide_plan(&info, Path::new("/run/lab")),
            vec![Hide::Detach("/run/lab".into())]
        );
    }

    #[test]
    fn a_plain_run_dir_makes_its_mount_private_and_each_bind_below_it_goes() {
        let info = [
            line(1, "/"),
            line(2, "/run"),
            line(3, "/run/dyno/net/dyno-a"),
            line(4, "/run/dyno/net/dyno-b"),
            line(5, "/run/user"),
            line(6, "/run/dyno/netx"),
        ]
        .concat();
        let plan = hide_plan(&info, Path::new("/run/dyno/net"));
        assert_eq!(plan[0], Hide::Private("/run".into()));
        let mut detached: Vec<_> = plan[1..].to_vec();
        detached.sort_by_key(|h| format!("{h:?}"));
        assert_eq!(
            detached,
            vec![
                Hide::Detach("/run/dyno/net/dyno-a".into()),
                Hide::Detach("/run/dyno/net/dyno-b".into()),
            ]
        );
    }

    #[test]
    fn a_daemons_template_sits_beside_its_state_root() {
        assert_eq!(
            path_beside(Path::new("/run/dyno/dynos"), 42),
            PathBuf::from("/run/dyno/dynos.mount-template.42")
        );
    }

    #[test]
    fn a_run_dir_on_the_root_filesystem_makes_the_root_private() {
        let info = [line(1, "/"), line(2, "/proc")].concat();
        assert_eq!(
            hide_plan(&info, Path::new("/run/dyno/net")),
            vec![Hide::Private("/".into())]
        );
    }
}
