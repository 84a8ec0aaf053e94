//! What a daemon finds at start that an earlier one left: dynos whose supervisor died with it
//! (kill -9, a crash, a power cut of the daemon alone).
//!
//! Until dynos are adopted (their rows, leases and shims recorded in the store before they
//! exist, see `dyno-state`), everything found is an orphan: the sandboxes' PID 1s are killed
//! (the kernel then ends every process of their pid namespaces, and the shims with them), their
//! state dirs, empty dyno cgroups, bound namespaces and `dy*` links are removed, and the
//! firewall is installed afresh. The formation is then started again from the store.

use std::path::Path;
use std::time::{Duration, Instant};

use dyno_net::dyno::Host;
use dyno_net::network;
use dyno_sandbox::cgroup::Cgroups;
use dyno_sandbox::spec::StateDir;

use super::DaemonOptions;

/// What was removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Orphans {
    /// Dynos whose processes were killed.
    pub processes: usize,
    pub state_dirs: usize,
    pub cgroups: usize,
    pub namespaces: usize,
    pub links: usize,
}

/// The pid in `state/init.pid` if that process is still a dyno's PID 1 (`… __init …`): a pid
/// reused by something else since is never signalled.
fn live_init_pid(dir: &StateDir) -> Option<libc::pid_t> {
    let pid: libc::pid_t = std::fs::read_to_string(dir.init_pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == b"__init")
        .then_some(pid)
}

/// Removes every orphan of an earlier daemon (see the module docs) and says what it did.
pub fn remove_orphans(
    options: &DaemonOptions,
    host: &mut Host,
    cgroups: Option<&Cgroups>,
) -> Orphans {
    let mut found = Orphans::default();
    let dirs: Vec<_> = std::fs::read_dir(&options.state_root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    // Shims first, so that none forks a PID 1 after the sweep: a daemon killed while a dyno
    // was starting leaves a shim that has not written `init.pid` yet.
    let mut killed = kill_shims_under(&options.state_root);
    for path in &dirs {
        if let Some(pid) = live_init_pid(&StateDir(path.clone())) {
            // SAFETY: kill has no memory-safety preconditions; the pid was checked above.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed.push(pid);
                found.processes += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for path in &dirs {
        if std::fs::remove_dir_all(path).is_ok() {
            found.state_dirs += 1;
        }
    }
    if let Some(cgroups) = cgroups {
        // Every process of a dyno is in its cgroup, PID 1 or not, recorded or not. Only our
        // own dynos' cgroups (named like their state dirs): other daemons or `dyno up`s of this
        // host may share our cgroup parent.
        let ours: Vec<String> = dirs
            .iter()
            .filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        let all = cgroups.dyno_ids().unwrap_or_default();
        let others: Vec<&str> = all
            .iter()
            .filter(|id| !ours.contains(id))
            .map(String::as_str)
            .collect();
        let mut populated = 0;
        for id in all.iter().filter(|id| ours.contains(id)) {
            let killed = cgroups.existing(id).and_then(|c| {
                let had = !c.pids()?.is_empty();
                c.kill_all().map(|()| had)
            });
            match killed {
                Ok(had) => populated += usize::from(had),
                Err(e) => {
                    tracing::warn!(error = %e, dyno = %id, "reconcile: kill the dyno's processes")
                }
            }
        }
        found.processes = found.processes.max(populated);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match cgroups.cleanup_stale(&others) {
                Ok(removed) => found.cgroups += removed.len(),
                Err(e) => tracing::warn!(error = %e, "reconcile: dyno cgroups"),
            }
            let left = cgroups
                .dyno_ids()
                .map(|ids| ids.iter().filter(|id| ours.contains(id)).count())
                .unwrap_or(0);
            if left == 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (report, errors) =
        network::reset(host, &options.network.run_dir, &options.network.firewall());
    for e in errors {
        tracing::warn!(error = %e, "reconcile: network");
    }
    found.namespaces = report.namespaces.len();
    found.links = report.links.len();
    if found != Orphans::default() {
        eprintln!(
            "dyno serve: removed what an earlier daemon left: {} dyno process tree(s), {} state \
             dir(s), {} cgroup(s), {} namespace(s), {} link(s)",
            found.processes, found.state_dirs, found.cgroups, found.namespaces, found.links
        );
    }
    found
}

/// SIGKILLs every `… __shim <dir>` process whose state dir is under `state_root`; their pids.
fn kill_shims_under(state_root: &Path) -> Vec<libc::pid_t> {
    let mut killed = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return killed;
    };
    let root = state_root.as_os_str().as_encoded_bytes();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_ours = args
            .iter()
            .position(|a| *a == b"__shim")
            .is_some_and(|i| args.get(i + 1).is_some_and(|dir| dir.starts_with(root)));
        // SAFETY: kill has no memory-safety preconditions; the pid is a shim of ours.
        if is_ours && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed.push(pid);
        }
    }
    killed
}
