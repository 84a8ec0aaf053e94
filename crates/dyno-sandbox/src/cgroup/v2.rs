//! cgroup v2: one hierarchy. A controller works in a cgroup only when its parent lists it in
//! `cgroup.subtree_control`, and a (non-root) cgroup with processes of its own cannot enable
//! any ("no internal processes"). Hence the layout: our own cgroup (ideally without processes,
//! see [`super::Cgroups::vacate_own_cgroup`]) enables the controllers for the `dyno` directory,
//! which never holds processes and enables them for each dyno's cgroup below it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::detect::{find_own_dir, CgroupLine, Mount};
use super::error::enable_hint;
use super::{
    fs, CgroupError, DynoSize, Hierarchy, MemoryCounters, MemoryUsage, CONTROLLERS, SUPERVISOR_LEAF,
};

/// Our own cgroup in the v2 hierarchy. A process in `<X>/dyno-supervisor` takes `<X>` as its
/// own cgroup: that leaf is where it (or systemd's `DelegateSubgroup=`) moved it to keep `<X>`
/// free of processes.
pub(crate) fn detect(
    mounts: &[Mount],
    lines: &[CgroupLine],
    fs_root: &Path,
    no_fs: impl Fn(String) -> CgroupError,
) -> Result<Hierarchy, CgroupError> {
    let line = lines
        .iter()
        .find(|l| l.is_unified())
        .ok_or_else(|| no_fs("no cgroup v1 memory hierarchy and no v2 (0::) line".into()))?;
    let own_path = strip_supervisor_leaf(&line.path);
    let (_, dir) =
        find_own_dir(mounts, "cgroup2", |_| true, own_path, fs_root).map_err(|candidates| {
            match candidates.first() {
                Some(mount) => CgroupError::NotVisible {
                    own_path: own_path.to_string(),
                    mount_point: mount.mount_point.clone(),
                    mount_root: mount.root.clone(),
                },
                None => no_fs("no cgroup v1 memory hierarchy and no cgroup2 mount".into()),
            }
        })?;
    let available_path = dir.join("cgroup.controllers");
    let available = fs::read(&available_path)?;
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| !available.split_whitespace().any(|a| a == **c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(CgroupError::ControllersUnavailable {
            path: available_path,
            missing,
        });
    }
    Ok(Hierarchy {
        controllers: String::new(),
        dir,
        proc_path: own_path.to_string(),
    })
}

fn strip_supervisor_leaf(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", SUPERVISOR_LEAF)) => "/",
        Some((parent, SUPERVISOR_LEAF)) => parent,
        _ => path,
    }
}

/// Makes `<own>/dyno` with [`CONTROLLERS`] (and cpuset, for CPU placement) enabled for its
/// children.
pub(crate) fn prepare_dyno_root(own: &Hierarchy, cpuset: bool) -> Result<Hierarchy, CgroupError> {
    let controllers: &[&str] = match cpuset {
        true => &["memory", "pids", "cpu", "cpuset"],
        false => &CONTROLLERS,
    };
    enable_controllers(&own.dir, controllers)?;
    let root = own.child(super::DYNO_DIR);
    fs::make_cgroup_dir(&root.dir)?;
    enable_controllers(&root.dir, controllers)?;
    Ok(root)
}

/// Enables the controllers `dir`'s children need, writing only when one is missing: a write
/// that changes nothing is harmless, but one that changes something is refused while `dir`
/// has processes.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&path)?;
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| {
            !enabled
                .split_whitespace()
                .any(|e| e.trim_start_matches('+') == **c)
        })
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let value = missing.join(" ");
    fs::write(&path, &value).map_err(|e| match e {
        CgroupError::Write { path, source, .. } => CgroupError::EnableControllers {
            hint: enable_hint(&source),
            path,
            controllers: value.clone(),
            source,
        },
        other => other,
    })
}

pub(crate) fn apply_limits(dir: &Path, size: &DynoSize) -> Result<(), CgroupError> {
    fs::write(
        &dir.join("memory.max"),
        &size.memory_limit_bytes().to_string(),
    )?;
    // Absent when the kernel does not account swap (CONFIG_MEMCG_SWAP off, or swapaccount=0).
    let swap_max = dir.join("memory.swap.max");
    if fs::exists(&swap_max) {
        fs::write(&swap_max, "0")?;
    }
    fs::write(&dir.join("pids.max"), &size.pids.to_string())?;
    fs::write(&dir.join("cpu.weight"), &size.cpu_weight_v2().to_string())?;
    // Absent without CONFIG_CFS_BANDWIDTH: the dyno then has its weight, and no cap.
    let max = dir.join("cpu.max");
    if fs::exists(&max) {
        let value = format!("{} {}", size.cpu_quota_us(), super::size::CPU_PERIOD_US);
        fs::write(&max, &value)?;
    }
    Ok(())
}

/// The readings. `memory.stat` and `memory.events` are hierarchical (they include any cgroups
/// below the dyno's).
pub(crate) fn memory_usage(dir: &Path, quota_bytes: u64) -> Result<MemoryUsage, CgroupError> {
    let stat_path = dir.join("memory.stat");
    let stat_text = fs::read(&stat_path)?;
    let stat = fs::parse_keyed(&stat_text);
    let rss_bytes = fs::required_key(&stat_path, &stat, "anon")?;
    let cache_bytes = fs::required_key(&stat_path, &stat, "file")?;
    let shmem_bytes = stat.get("shmem").copied().unwrap_or(0);
    let swap_path = dir.join("memory.swap.current");
    let swap_bytes = match fs::read_optional(&swap_path)? {
        Some(text) => fs::parse_limit(&swap_path, &text)?,
        None => 0,
    };
    let limit_path = dir.join("memory.max");
    let limit_bytes = fs::parse_limit(&limit_path, &fs::read(&limit_path)?)?;
    let events_path = dir.join("memory.events");
    let oom_kills = fs::parse_keyed(&fs::read(&events_path)?)
        .get("oom_kill")
        .copied()
        .unwrap_or(0);
    Ok(MemoryUsage::from_counters(
        MemoryCounters {
            rss_bytes,
            cache_bytes,
            shmem_bytes,
            swap_bytes,
            limit_bytes,
            oom_kills,
            // v2 counts no page-ins/outs per cgroup (its `memory.stat` has faults, scans and
            // steals, none of which means the same).
            pgpgin_pages: None,
            pgpgout_pages: None,
        },
        quota_bytes,
    ))
}

/// Kills everything in `dir` and below at once with `cgroup.kill` (5.14+) and waits until it is
/// empty or `deadline` passes. `Ok(false)` when the kernel has no `cgroup.kill`.
pub(crate) fn kill_via_cgroup_kill(dir: &Path, deadline: Instant) -> Result<bool, CgroupError> {
    let kill = dir.join("cgroup.kill");
    if !fs::exists(&kill) {
        return Ok(false);
    }
    fs::write(&kill, "1")?;
    loop {
        let mut pids = Vec::new();
        fs::procs_recursive(dir, &mut pids)?;
        if pids.is_empty() || Instant::now() >= deadline {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_leaf_is_stripped() {
        assert_eq!(strip_supervisor_leaf("/svc/dyno-supervisor"), "/svc");
        assert_eq!(strip_supervisor_leaf("/dyno-supervisor"), "/");
        assert_eq!(
            strip_supervisor_leaf("/svc/dyno-supervisors"),
            "/svc/dyno-supervisors"
        );
        assert_eq!(strip_supervisor_leaf("/svc"), "/svc");
        assert_eq!(strip_supervisor_leaf("/"), "/");
    }
}
