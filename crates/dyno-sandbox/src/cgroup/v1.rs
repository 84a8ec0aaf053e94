//! cgroup v1: one hierarchy per controller (or per group of co-mounted controllers, such as
//! `cpu,cpuacct`), each mounted on its own, and our own cgroup may sit at a different path in
//! each (here: `memory:/process_api/…` but `pids:/`).

use std::path::Path;

use super::detect::{find_own_dir, CgroupLine, Mount};
use super::{fs, CgroupError, DynoSize, Hierarchy, MemoryCounters, MemoryUsage, CONTROLLERS};

/// Our own cgroup in each hierarchy that holds one of [`CONTROLLERS`]; co-mounted controllers
/// share one entry.
pub(crate) fn detect(
    mounts: &[Mount],
    lines: &[CgroupLine],
    fs_root: &Path,
) -> Result<Vec<Hierarchy>, CgroupError> {
    let mut hierarchies: Vec<Hierarchy> = Vec::new();
    for controller in CONTROLLERS {
        let line = lines
            .iter()
            .find(|l| l.has_controller(controller))
            .ok_or_else(|| CgroupError::MissingController {
                controller,
                reason: "it is in no v1 hierarchy of /proc/self/cgroup (it may be on the v2 \
                         hierarchy only, a mixed setup this code does not support)"
                    .into(),
            })?;
        if hierarchies
            .iter()
            .any(|h| h.controllers == line.controllers)
        {
            continue;
        }
        let (_, dir) = find_own_dir(
            mounts,
            "cgroup",
            |m| m.has_option(controller),
            &line.path,
            fs_root,
        )
        .map_err(|candidates| match candidates.first() {
            Some(mount) => CgroupError::NotVisible {
                own_path: line.path.clone(),
                mount_point: mount.mount_point.clone(),
                mount_root: mount.root.clone(),
            },
            None => CgroupError::MissingController {
                controller,
                reason: format!(
                    "its hierarchy ({}) is not mounted in this mount namespace",
                    line.controllers
                ),
            },
        })?;
        hierarchies.push(Hierarchy {
            controllers: line.controllers.clone(),
            dir,
            proc_path: line.path.clone(),
        });
    }
    Ok(hierarchies)
}

fn dir_with<'h>(dirs: &'h [Hierarchy], controller: &'static str) -> Result<&'h Path, CgroupError> {
    dirs.iter()
        .find(|h| h.has_controller(controller))
        .map(|h| h.dir.as_path())
        .ok_or_else(|| CgroupError::MissingController {
            controller,
            reason: "this dyno cgroup has no directory in its hierarchy".into(),
        })
}

pub(crate) fn apply_limits(dirs: &[Hierarchy], size: &DynoSize) -> Result<(), CgroupError> {
    set_memory_limit(dir_with(dirs, "memory")?, size.memory_limit_bytes())?;
    fs::write(
        &dir_with(dirs, "pids")?.join("pids.max"),
        &size.pids.to_string(),
    )?;
    let cpu = dir_with(dirs, "cpu")?;
    fs::write(&cpu.join("cpu.shares"), &size.cpu_shares_v1().to_string())?;
    // Absent without CONFIG_CFS_BANDWIDTH: the dyno then has its share, and no cap.
    let quota = cpu.join("cpu.cfs_quota_us");
    if fs::exists(&quota) {
        fs::write(
            &cpu.join("cpu.cfs_period_us"),
            &super::size::CPU_PERIOD_US.to_string(),
        )?;
        match fs::write(&quota, &size.cpu_quota_us().to_string()) {
            // v1 refuses a child a bigger quota than its parent's (a daemon run with a CPU
            // quota of its own, e.g. systemd's CPUQuota=): the parent's cap then applies to
            // the dyno too, which is all a quota could do here.
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Sets the memory limit and, where the kernel accounts swap (`memory.memsw.*`), the
/// memory+swap limit to the same value: no swap at all, so the limit is a hard one.
///
/// The kernel insists that memory ≤ memory+swap at every step (`EINVAL` otherwise), so when
/// raising, memory+swap goes first, and when lowering, memory goes first.
fn set_memory_limit(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let memory = dir.join("memory.limit_in_bytes");
    let memory_and_swap = dir.join("memory.memsw.limit_in_bytes");
    let value = bytes.to_string();
    if !fs::exists(&memory_and_swap) {
        return fs::write(&memory, &value);
    }
    let current = fs::parse_limit(&memory, &fs::read(&memory)?)?;
    if bytes > current {
        fs::write(&memory_and_swap, &value)?;
        fs::write(&memory, &value)
    } else {
        fs::write(&memory, &value)?;
        fs::write(&memory_and_swap, &value)
    }
}

/// The readings, from `memory.stat`'s hierarchical (`total_`) counters, which include any
/// cgroups below the dyno's.
pub(crate) fn memory_usage(
    dirs: &[Hierarchy],
    quota_bytes: u64,
) -> Result<MemoryUsage, CgroupError> {
    let dir = dir_with(dirs, "memory")?;
    let stat_path = dir.join("memory.stat");
    let stat_text = fs::read(&stat_path)?;
    let stat = fs::parse_keyed(&stat_text);
    // `rss` counts all anonymous memory, transparent huge pages included (`rss_huge` is a
    // subset, not an addition).
    let rss_bytes = fs::required_key(&stat_path, &stat, "total_rss")?;
    let cache_bytes = fs::required_key(&stat_path, &stat, "total_cache")?;
    let shmem_bytes = stat.get("total_shmem").copied().unwrap_or(0);
    let swap_bytes = stat.get("total_swap").copied().unwrap_or(0);
    let limit_path = dir.join("memory.limit_in_bytes");
    let limit_bytes = fs::parse_limit(&limit_path, &fs::read(&limit_path)?)?;
    // `oom_kill` appeared in 4.13; older kernels cannot tell, and report none.
    let oom_kills = fs::read_optional(&dir.join("memory.oom_control"))?
        .map(|text| fs::parse_keyed(&text).get("oom_kill").copied().unwrap_or(0))
        .unwrap_or(0);
    Ok(MemoryUsage::from_counters(
        MemoryCounters {
            rss_bytes,
            cache_bytes,
            shmem_bytes,
            swap_bytes,
            limit_bytes,
            oom_kills,
            pgpgin_pages: stat.get("total_pgpgin").copied(),
            pgpgout_pages: stat.get("total_pgpgout").copied(),
        },
        quota_bytes,
    ))
}

/// The directories that hold the dyno cgroups, created when missing (v1 needs nothing else:
/// every controller works at every level).
pub(crate) fn prepare_dyno_roots(own: &[Hierarchy]) -> Result<Vec<Hierarchy>, CgroupError> {
    let roots: Vec<Hierarchy> = own.iter().map(|h| h.child(super::DYNO_DIR)).collect();
    for root in &roots {
        fs::make_cgroup_dir(&root.dir)?;
    }
    Ok(roots)
}
