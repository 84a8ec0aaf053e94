//! `dyno-sandbox`: the place a dyno's app runs. A small shim process ([`shim`]) is the parent of
//! the dyno's PID 1 ([`init`]), which lives in new pid, mount, uts and ipc namespaces, joined to
//! the network namespace `dyno-net` made; [`rootfs`] builds the filesystem view (an allowlist,
//! with [`lxcfs`]'s private `/proc` figures and [`masks`] over host-wide counters), [`identity`]
//! drops to the app's unprivileged user, [`seccomp`] filters its system calls, [`launch`] is the
//! caller's side, and [`template`] the mount namespace dynos are copied from.

pub mod cgroup;
pub mod identity;
pub mod init;
pub mod launch;
pub mod limits;
pub mod lxcfs;
pub mod masks;
pub mod output;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod signals;
pub mod spec;
pub mod sys;
pub mod template;
pub mod terminal;
