//! Per-dyno cgroups: memory (quota and a hard limit at the R15 point, twice the quota or 1.2 times), pids and CPU weight,
//! on cgroup v1 and v2.
//!
//! Everything happens below the daemon's **own** cgroup, as `/proc/self/cgroup` names it (per
//! hierarchy on v1, where it may differ between controllers): `<own>/dyno/<dyno-id>`. Nothing
//! else is created, and no other cgroup's settings are touched, except that on v2 our own
//! cgroup's `cgroup.subtree_control` must enable the controllers for `dyno` (see `v2.rs`).
//!
//! Memory follows Heroku: a dyno may exceed its quota (R14, Heroku swaps) up to twice the
//! quota, where it is killed (R15). Machines here may have no swap, so the kernel's hard limit
//! is 2 × quota with swap disabled for the dyno; [`DynoCgroup::memory_usage`] gives the
//! supervisor what it needs to log R14 (`used_bytes > quota_bytes`) and R15 (`oom_kills`
//! grew, or `used_bytes` reached `limit_bytes`).
//!
//! Usage: the daemon calls [`Cgroups::detect`] once and [`Cgroups::create`] per dyno, hands the
//! [`DynoCgroup`] (it serialises) to the shim, whose freshly forked child calls
//! [`DynoCgroup::join_self`] before unsharing its cgroup namespace; at the end
//! [`DynoCgroup::kill_all`] and [`DynoCgroup::remove`].
//!
//! The types are defined in this file, so that their private fields reach every file below it;
//! their methods are in `machine.rs` ([`Cgroups`]), `dyno.rs` ([`DynoCgroup`]) and
//! `placement.rs` (CPU placement for both).

pub(crate) mod detect;
mod dyno;
mod error;
mod fs;
mod machine;
mod placement;
mod process;
mod size;
mod usage;
mod v1;
mod v2;
mod view;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use dyno::PreparedJoin;
pub use error::CgroupError;
pub use placement::{CpuList, CpuPlacement, PlacementError};
pub use size::{DynoSize, CPU_PERIOD_US, DYNO_SIZES};
pub(crate) use usage::MemoryCounters;
pub use usage::MemoryUsage;

/// The controllers a dyno cgroup uses.
pub(crate) const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The directory below our own cgroup that holds the dyno cgroups.
pub const DYNO_DIR: &str = "dyno";
/// The v2 leaf the daemon moves itself into so that its own cgroup has no processes
/// ([`Cgroups::vacate_own_cgroup`]).
pub const SUPERVISOR_LEAF: &str = "dyno-supervisor";
const MAX_DYNO_ID_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// One cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hierarchy {
    /// The hierarchy's controllers as `/proc/<pid>/cgroup` lists them (`memory`, `cpu,cpuacct`);
    /// empty for v2.
    pub(crate) controllers: String,
    /// The cgroup's directory.
    pub(crate) dir: PathBuf,
    /// The cgroup's path as `/proc/<pid>/cgroup` shows it to us (in our cgroup namespace).
    pub(crate) proc_path: String,
}

impl Hierarchy {
    pub(crate) fn child(&self, name: &str) -> Hierarchy {
        Hierarchy {
            controllers: self.controllers.clone(),
            dir: self.dir.join(name),
            proc_path: format!("{}/{name}", self.proc_path.trim_end_matches('/')),
        }
    }

    pub(crate) fn has_controller(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The cgroup hierarchies of this machine and our own place in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    version: Version,
    /// v1: our cgroup in each hierarchy of [`CONTROLLERS`]; v2: exactly one.
    own: Vec<Hierarchy>,
    /// v1: our cgroup in the hierarchies LXCFS also reads (see `view.rs`); empty on v2.
    view: Vec<Hierarchy>,
    /// Whether dyno cgroups are made in [`Cgroups::view`] too ([`Cgroups::with_proc_view`]).
    make_view: bool,
    /// New dynos start on the busy CPUs ([`Cgroups::reserve_cpus`]).
    placement: Option<CpuPlacement>,
}

/// Dyno ids name directories: `[a-z0-9.-]`, 1 to 64 characters, and not `.` or `..`.
pub fn validate_dyno_id(id: &str) -> Result<(), CgroupError> {
    let invalid = |reason| {
        Err(CgroupError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("empty");
    }
    if id.len() > MAX_DYNO_ID_LEN {
        return invalid("longer than 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return invalid("only lowercase letters, digits, '.' and '-' are allowed");
    }
    if id.starts_with('.') {
        // `.`, `..` and hidden names; a leading dot is never a dyno's name.
        return invalid("must not start with '.'");
    }
    Ok(())
}

/// One dyno's cgroup: a directory per hierarchy on v1, one on v2. It serialises, so the daemon
/// can hand it to the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynoCgroup {
    version: Version,
    id: String,
    quota_bytes: u64,
    dirs: Vec<Hierarchy>,
    /// v1: its cgroups in the hierarchies only LXCFS reads (see `view.rs`); no limits there.
    #[serde(default)]
    view: Vec<Hierarchy>,
}
