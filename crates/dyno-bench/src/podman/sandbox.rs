//! The private mount namespace every podman process of a [`PodmanWorld`](super::PodmanWorld)
//! runs in, and the host-side leftovers (mounts, cgroups) a world's cleanup looks for.
//!
//! Rootful podman 4.3 writes to a few places no configuration key moves: `/run/netns` (each
//! container's namespace is bound there, and the directory is made a shared bind mount of
//! itself), libcni's result cache `/var/lib/cni/results`, containers/image's blob-info cache
//! `/var/lib/containers/cache` (`podman import`), and runc's default state root `/run/runc` (the
//! `podman container cleanup` conmon starts gets no `--runtime-flag`). In this namespace `/run`
//! and `/var/lib` are fresh tmpfs mounts, so all of that lands there and vanishes with it. It is
//! a copy of the host's mount table otherwise (cgroup v1 hierarchies, `/sys`, the world's root
//! under `/tmp` all stay visible), and propagation is private: nothing mounted inside shows on
//! the host.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A process parked in the private mount namespace (so its mount table stays readable at
/// `/proc/<pid>/mountinfo`), and the namespace itself.
pub(super) struct MountSandbox {
    holder: Option<Child>,
    namespace: File,
}

impl MountSandbox {
    pub(super) fn new() -> io::Result<MountSandbox> {
        let mut command = Command::new("/bin/sleep");
        command
            .arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only raw syscalls (prctl, unshare, mount) on C strings that
        // are literals: no allocation, no locks.
        unsafe {
            command.pre_exec(|| {
                // Gone with us even if we are killed: nothing else would ever stop it. (Strictly
                // with the thread that made it; should that one end first, the namespace lives
                // on through our descriptor, only its mount table is no longer readable.)
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Private first: the tmpfs mounts below must not propagate to the host.
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for target in [c"/run", c"/var/lib"] {
                    if libc::mount(
                        c"tmpfs".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        c"mode=0755,size=64m".as_ptr().cast(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // spawn returns once exec succeeded: the namespace is ready.
        let mut holder = command.spawn()?;
        match File::open(format!("/proc/{}/ns/mnt", holder.id())) {
            Ok(namespace) => Ok(MountSandbox {
                holder: Some(holder),
                namespace,
            }),
            Err(e) => {
                let _ = holder.kill();
                let _ = holder.wait();
                Err(e)
            }
        }
    }

    /// Makes `command` start inside the namespace. Absolute paths only: entering a mount
    /// namespace resets the working directory to its root.
    pub(super) fn enter(&self, command: &mut Command) -> io::Result<()> {
        let fd = self.namespace.try_clone()?;
        // SAFETY: between fork and exec only the setns syscall on a descriptor opened before
        // the fork; the child is single-threaded there, as entering a mount namespace requires.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Mount points inside the namespace at or below `root`, deepest first.
    pub(super) fn mounts_under(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        match &self.holder {
            Some(holder) => {
                let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", holder.id()))?;
                Ok(mounts_in(&table, root))
            }
            None => Ok(Vec::new()),
        }
    }

    /// Stops the holder (our own child, by its pid). The namespace goes once the last process
    /// in it (conmon of a container still running) and our descriptor are gone.
    pub(super) fn stop(&mut self) -> io::Result<()> {
        if let Some(mut holder) = self.holder.take() {
            holder.kill()?;
            holder.wait()?;
        }
        Ok(())
    }
}

impl Drop for MountSandbox {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Mount points of `/proc/*/mountinfo` text at or below `root`, deepest first.
pub fn mounts_in(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    dyno_sandbox::sys::mount_points_below(mountinfo, root)
}

/// The cgroup directories named `parent` in every cgroup hierarchy mounted under
/// `/sys/fs/cgroup` (v1 controllers and the hybrid `unified` v2 one), with everything below
/// them, deepest first.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for hierarchy in hierarchies.filter_map(Result::ok) {
        let top = hierarchy.path().join(parent.trim_start_matches('/'));
        if top.is_dir() {
            collect_dirs(&top, &mut found);
        }
    }
    found.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    found
}

fn collect_dirs(dir: &Path, found: &mut Vec<PathBuf>) {
    found.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_root_deepest_first_and_unescaped() {
        let table = "\
21 27 0:40 / /tmp/w/graph/a/userdata/shm rw - tmpfs shm rw
22 27 0:41 / /tmp/w rw - tmpfs t rw
23 27 0:42 / /tmp/wx rw - tmpfs t rw
24 27 0:43 / /tmp/w/with\\040space rw - tmpfs t rw
25 27 0:44 / /run rw - tmpfs t rw";
        assert_eq!(
            mounts_in(table, Path::new("/tmp/w")),
            vec![
                PathBuf::from("/tmp/w/graph/a/userdata/shm"),
                PathBuf::from("/tmp/w/with space"),
                PathBuf::from("/tmp/w"),
            ]
        );
    }
}
