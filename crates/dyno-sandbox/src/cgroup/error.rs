//! What can go wrong, each variant naming the file or directory involved, so that a log line is
//! enough to find the cause.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot understand {content:?}: {reason}")]
    Parse {
        path: PathBuf,
        content: String,
        reason: String,
    },
    #[error("invalid dyno id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("invalid dyno size {name:?}: {reason}")]
    InvalidSize { name: String, reason: &'static str },
    #[error("no usable cgroup filesystem: {reason} (looked at {mountinfo} and {self_cgroup})")]
    NoCgroupFs {
        mountinfo: PathBuf,
        self_cgroup: PathBuf,
        reason: String,
    },
    #[error("cgroup v1 controller {controller:?} is not usable: {reason}")]
    MissingController {
        controller: &'static str,
        reason: String,
    },
    #[error(
        "our own cgroup {own_path:?} is not visible through the cgroup mount at {mount_point} \
         (which shows {mount_root:?} of the hierarchy)"
    )]
    NotVisible {
        own_path: String,
        mount_point: PathBuf,
        mount_root: String,
    },
    #[error(
        "cgroup v2: controllers {missing:?} are not available to our cgroup (not listed in \
         {path}); the parent cgroup must delegate them (systemd: Delegate=yes)"
    )]
    ControllersUnavailable { path: PathBuf, missing: Vec<String> },
    #[error("cgroup v2: cannot enable controllers {controllers:?} in {path}: {source}{hint}")]
    EnableControllers {
        path: PathBuf,
        controllers: String,
        #[source]
        source: io::Error,
        /// Why it most likely failed and what to do, or empty.
        hint: &'static str,
    },
    #[error("{path} exists but is not a cgroup directory (it has no cgroup.procs)")]
    NotACgroup { path: PathBuf },
    #[error("signal process {pid} of {dir}: {source}")]
    Signal {
        pid: u32,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{dir} still has processes {pids:?} after killing for {waited_ms} ms")]
    StillPopulated {
        dir: PathBuf,
        pids: Vec<u32>,
        waited_ms: u128,
    },
    #[error("dyno {id}: no cgroup of it in a hierarchy with the {controller} controller")]
    NotInHierarchy { id: String, controller: String },
    #[error("{what} is only meaningful on cgroup {needs:?}")]
    WrongVersion {
        what: &'static str,
        needs: super::Version,
    },
}

/// The hint attached to a failed `cgroup.subtree_control` write.
pub(crate) fn enable_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EBUSY) => {
            " (cgroup v2 forbids enabling controllers for the children of a cgroup that has \
             processes of its own: move them into a leaf, e.g. with Cgroups::vacate_own_cgroup, \
             which moves this process into the `dyno-supervisor` leaf, or run under systemd with \
             Delegate=yes and DelegateSubgroup=dyno-supervisor)"
        }
        Some(libc::ENOENT) => {
            " (the controller is not available here: the parent cgroup does not delegate it)"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (not permitted: the daemon must run as root or own a delegated cgroup)"
        }
        _ => "",
    }
}
