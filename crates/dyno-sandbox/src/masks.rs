//! What a dyno's fresh `/proc` and `/sys` still show of the host, hidden: host-wide counters
//! that tell one tenant about the others' activity (pressure stall figures, every file lock on
//! the host, interrupt and paging counters, the uids that hold kernel keys) and interfaces no
//! app needs (kernel memory, timers, firmware, power meters — a known side channel). Docker
//! masks most of these for the same reasons; the counters are ours. A file becomes an empty
//! read-only file (a bind of `/dev/null`), a directory an empty read-only tmpfs; what the
//! kernel does not have is skipped.
//!
//! The host figures an app does need (`meminfo`, `loadavg`, `stat`, `cpuinfo`, `uptime`,
//! `swaps`, `diskstats`) are not hidden but replaced by the dyno's own (see [`crate::lxcfs`]).

use std::path::Path;

use crate::sys::{mount, SysResult};

/// Host-wide activity and kernel internals, relative to the new root.
pub const MASKED_FILES: &[&str] = &[
    "proc/kcore",
    "proc/keys",
    "proc/key-users",
    "proc/timer_list",
    "proc/sched_debug",
    "proc/latency_stats",
    "proc/sysrq-trigger",
    "proc/locks",
    "proc/vmstat",
    "proc/zoneinfo",
    "proc/buddyinfo",
    "proc/pagetypeinfo",
    "proc/interrupts",
    "proc/softirqs",
    "proc/schedstat",
];

pub const MASKED_DIRS: &[&str] = &[
    "proc/pressure",
    "proc/acpi",
    "proc/asound",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Hides [`MASKED_FILES`] and [`MASKED_DIRS`] under `root` (after `/proc` and `/sys` are
/// mounted there).
pub fn mask(root: &Path) -> SysResult<()> {
    // The first file present gets `/dev/null` read-only; the others are bound from it and
    // inherit its flags (a bind copies its source mount's): one mount call each, not two.
    let mut read_only_null: Option<String> = None;
    for file in MASKED_FILES {
        let target = root.join(file);
        if !target.exists() {
            continue;
        }
        match &read_only_null {
            Some(source) => mount(Some(source), &target, None, libc::MS_BIND, None)?,
            None => {
                mount(Some("/dev/null"), &target, None, libc::MS_BIND, None)?;
                read_only(&target, libc::MS_BIND)?;
                read_only_null = Some(target.to_string_lossy().into_owned());
            }
        }
    }
    for dir in MASKED_DIRS {
        let target = root.join(dir);
        if !target.is_dir() {
            continue;
        }
        mount(
            Some("dyno-masked"),
            &target,
            Some("tmpfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("size=0,mode=0555"),
        )?;
    }
    Ok(())
}

fn read_only(target: &Path, kind: libc::c_ulong) -> SysResult<()> {
    mount(
        None,
        target,
        None,
        kind | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )
}
