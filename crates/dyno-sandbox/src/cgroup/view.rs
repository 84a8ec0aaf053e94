//! v1 only: the dyno's cgroup also in the `cpuacct`, `cpuset` and `blkio` hierarchies, for
//! LXCFS's private `/proc` view (see [`crate::lxcfs`]). No limit is set there.
//!
//! LXCFS reads a dyno's CPU figures at the path its PID 1 has in the **cpuset** hierarchy: the
//! CFS quota (`cpu.cfs_quota_us`, in the cpu hierarchy) for the CPU count of `/proc/cpuinfo`,
//! `/proc/stat` and `/sys/devices/system/cpu/online`, and `cpuacct.usage_all` for `/proc/stat`'s
//! times; `/proc/diskstats` comes from the blkio hierarchy. A dyno left in the root cgroup of
//! those hierarchies would see the host's CPUs and the host's CPU and disk times. On v2 the one
//! hierarchy already has it all.

use std::path::Path;

use super::detect::{find_own_dir, CgroupLine, Mount};
use super::{fs, CgroupError, Hierarchy};

pub(crate) const VIEW_CONTROLLERS: [&str; 3] = ["cpuacct", "cpuset", "blkio"];
/// The files a new cpuset cgroup has empty, so that no process could join it, until written.
const CPUSET_FILES: [&str; 2] = ["cpuset.cpus", "cpuset.mems"];

/// Our own cgroup in each view hierarchy the host mounts that is not already one of `used`
/// (`cpu,cpuacct` co-mounted). A hierarchy we cannot use is left out: the view is a nicety.
pub(crate) fn detect(
    mounts: &[Mount],
    lines: &[CgroupLine],
    fs_root: &Path,
    used: &[Hierarchy],
) -> Vec<Hierarchy> {
    let mut view: Vec<Hierarchy> = Vec::new();
    for controller in VIEW_CONTROLLERS {
        let Some(line) = lines.iter().find(|l| l.has_controller(controller)) else {
            continue;
        };
        if used
            .iter()
            .chain(&view)
            .any(|h| h.controllers == line.controllers)
        {
            continue;
        }
        let found = find_own_dir(
            mounts,
            "cgroup",
            |m| m.has_option(controller),
            &line.path,
            fs_root,
        );
        if let Ok((_, dir)) = found {
            view.push(Hierarchy {
                controllers: line.controllers.clone(),
                dir,
                proc_path: line.path.clone(),
            });
        }
    }
    view
}

/// The `dyno` directories of the view hierarchies, created when missing and, for cpuset,
/// given our own cgroup's CPUs and memory nodes.
pub(crate) fn prepare_dyno_roots(own: &[Hierarchy]) -> Result<Vec<Hierarchy>, CgroupError> {
    let mut roots = Vec::new();
    for hierarchy in own {
        let root = hierarchy.child(super::DYNO_DIR);
        fs::make_cgroup_dir(&root.dir)?;
        inherit_cpuset(hierarchy, &root)?;
        roots.push(root);
    }
    Ok(roots)
}

/// A new cpuset cgroup starts with no CPUs and no memory nodes (unless its parent has
/// `cgroup.clone_children`): it takes its parent's, so the dyno is not pinned anywhere.
pub(crate) fn inherit_cpuset(parent: &Hierarchy, child: &Hierarchy) -> Result<(), CgroupError> {
    if !child.has_controller("cpuset") {
        return Ok(());
    }
    for file in CPUSET_FILES {
        let target = child.dir.join(file);
        if !fs::read(&target)?.trim().is_empty() {
            continue;
        }
        fs::write(&target, fs::read(&parent.dir.join(file))?.trim())?;
    }
    Ok(())
}
