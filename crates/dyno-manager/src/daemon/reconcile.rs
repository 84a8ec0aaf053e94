//! What a daemon finds at start that an earlier one left (kill -9, a crash, an upgrade).
//!
//! Every incarnation of a dyno is a row in the store before any of its resources exist (see
//! [`super::ledger`]), and its name names all of them: the state dir `<state_root>/<net>`, the
//! namespace `dyno-<net>`, the link `dy<net>`, the cgroup `<net>`, the shim `__shim <dir>`.
//! So, comparing the rows with what exists:
//!
//! - a row whose shim lives, and whose teardown had not started, is **adopted**: its supervisor
//!   takes it over where it is (the shim kept the dyno running and kept its output);
//! - a row whose shim is gone has **ended**: its exit status (recorded by the shim in the state
//!   dir) and the output nobody read are logged, then its resources are removed and its row;
//! - a row marked `stopping` is stopped for good (its teardown was under way);
//! - a state dir under our state root that no row names is an **orphan** (left by a daemon
//!   that kept no rows): its processes are killed and everything named by it removed.
//!
//! Nothing is touched that our rows or state dirs do not name: other daemons and `dyno up`s on
//! the same host keep theirs.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use dyno_net::ipam::LeaseStore;
use dyno_net::network::{Network, NetworkError};
use dyno_sandbox::cgroup::Cgroups;
use dyno_sandbox::launch;
use dyno_sandbox::spec::{ExitRecord, StateDir};
use dyno_state::model::{Dyno, DynoState};

use super::DaemonOptions;
use dyno_supervisor::{relayed_line, unsent_lines};

/// A recorded dyno whose shim is alive.
#[derive(Debug)]
pub struct Live {
    pub dyno: Dyno,
    pub shim_pid: u32,
}

/// A recorded dyno that is over (or is to be ended now).
#[derive(Debug)]
pub struct Ended {
    pub dyno: Dyno,
    /// How it ended, if its shim recorded that.
    pub exit: Option<ExitRecord>,
    /// Output no reader took.
    pub unsent: Vec<String>,
}

impl Ended {
    /// The log lines that tell how the dyno ended: its last output, then Heroku's
    /// `Process exited with status N` (nothing for a dyno that never ran).
    pub fn log_lines(&self) -> Vec<(dyno_logs::logs::Source, String)> {
        use dyno_logs::logs::Source;
        let mut lines: Vec<(Source, String)> = self
            .unsent
            .iter()
            .map(|l| relayed_line(&self.dyno.app, &self.dyno.name, l.clone()))
            .collect();
        match &self.exit {
            Some(ExitRecord::Exited(code)) => {
                lines.push((Source::Heroku, format!("Process exited with status {code}")))
            }
            Some(ExitRecord::Signaled(signal)) => lines.push((
                Source::Heroku,
                format!("Process exited with status {}", 128 + signal),
            )),
            Some(ExitRecord::SetupFailed(reason)) => {
                lines.push((Source::Heroku, format!("Error starting dyno: {reason}")))
            }
            // Its start was given up before the app ran (its daemon died): nothing to tell.
            Some(ExitRecord::Abandoned) | None => {}
        }
        lines
    }
}

/// What [`take_stock`] found.
#[derive(Debug, Default)]
pub struct Stock {
    pub live: Vec<Live>,
    pub ended: Vec<Ended>,
    /// Names (net names) of state dirs no row names; their processes are dead now, their dirs
    /// removed; their networks and cgroups are left for [`Stock`]'s caller to remove.
    pub orphans: Vec<String>,
}

/// Sorts the recorded dynos into live and ended; stops the processes of those that must not
/// run on (`stopping` rows, orphans). Changes nothing else: [`settle`] removes what they left,
/// once the caller has opened the network.
pub fn take_stock(options: &DaemonOptions, rows: Vec<Dyno>, cgroups: Option<&Cgroups>) -> Stock {
    let shims = shims_under(&options.state_root);
    let dirs: Vec<String> = std::fs::read_dir(&options.state_root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let (mut stock, shims_to_kill) = sort(rows, &shims, dirs);
    // Each dyno that must not run on: its shim and the PID 1 its state dir names.
    let mut doomed = shims_to_kill;
    let ending = stock.ended.iter().map(|e| e.dyno.net_name.as_str());
    for name in ending.chain(stock.orphans.iter().map(String::as_str)) {
        doomed.extend(launch::live_init_pid(&StateDir(
            options.state_root.join(name),
        )));
    }
    kill_and_wait(&doomed);
    let mut ended_names: Vec<&str> = stock
        .ended
        .iter()
        .map(|e| e.dyno.net_name.as_str())
        .collect();
    ended_names.extend(stock.orphans.iter().map(String::as_str));
    if let Some(cgroups) = cgroups {
        // Every process of a dyno is in its cgroup, PID 1 or not.
        for name in &ended_names {
            if let Ok(cgroup) = cgroups.existing(name) {
                if let Err(e) = cgroup.kill_all() {
                    tracing::warn!(error = %e, dyno = %name, "reconcile: kill the dyno's processes");
                }
            }
        }
    }
    // Read how they ended only now that their shims are surely gone.
    for ended in &mut stock.ended {
        let state = StateDir(options.state_root.join(&ended.dyno.net_name));
        ended.exit = launch::exit_record(&state);
        ended.unsent = unsent_lines(&state);
    }
    stock
}

/// The decision of [`take_stock`], before it touches anything: which recorded dynos are live
/// (their shim runs and their teardown had not started), which ended, which state dirs no
/// row names; and the shims of those that must not run on.
fn sort(
    rows: Vec<Dyno>,
    shims: &BTreeMap<String, libc::pid_t>,
    dirs: Vec<String>,
) -> (Stock, Vec<libc::pid_t>) {
    let mut stock = Stock::default();
    let mut doomed = Vec::new();
    for dyno in rows {
        let shim = shims.get(&dyno.net_name).copied();
        match shim {
            Some(pid) if dyno.state != DynoState::Stopping => stock.live.push(Live {
                dyno,
                shim_pid: pid as u32,
            }),
            _ => {
                doomed.extend(shim);
                stock.ended.push(Ended {
                    dyno,
                    exit: None,
                    unsent: Vec::new(),
                });
            }
        }
    }
    let recorded: Vec<&str> = stock
        .live
        .iter()
        .map(|l| l.dyno.net_name.as_str())
        .chain(stock.ended.iter().map(|e| e.dyno.net_name.as_str()))
        .collect();
    stock.orphans = dirs
        .into_iter()
        .filter(|name| !recorded.contains(&name.as_str()))
        .collect();
    for name in &stock.orphans {
        doomed.extend(shims.get(name));
    }
    (stock, doomed)
}

/// Ends a live dyno that must not be adopted after all (its app or release is gone): its
/// processes are killed, how it ended is read.
pub fn end_now(options: &DaemonOptions, live: Live, cgroups: Option<&Cgroups>) -> Ended {
    let state = StateDir(options.state_root.join(&live.dyno.net_name));
    let mut doomed = vec![live.shim_pid as libc::pid_t];
    doomed.extend(launch::live_init_pid(&state));
    kill_and_wait(&doomed);
    if let Some(cgroup) = cgroups.and_then(|c| c.existing(&live.dyno.net_name).ok()) {
        let _ = cgroup.kill_all();
    }
    Ended {
        exit: launch::exit_record(&state),
        unsent: unsent_lines(&state),
        dyno: live.dyno,
    }
}

/// The takeover's second half, once [`take_stock`] has sorted and killed: every recorded
/// dyno's address becomes a lease of `network` again (the adopted keep theirs; the ended give
/// theirs back below), the firewall is installed (or refreshed), and the networks, ports,
/// cgroups and state dirs of ended and orphaned dynos are removed. Only the install is fatal;
/// every other failure is logged and left for the next start.
pub fn settle(
    options: &DaemonOptions,
    stock: &Stock,
    adopted: &[&Dyno],
    network: &mut Network<Box<dyn LeaseStore + Send>>,
    cgroups: Option<&Cgroups>,
) -> Result<(), NetworkError> {
    let recorded = adopted
        .iter()
        .copied()
        .chain(stock.ended.iter().map(|e| &e.dyno));
    for dyno in recorded {
        if let Some(ip) = dyno.address {
            if let Err(e) = network.adopt(&dyno.net_name, ip) {
                tracing::warn!(dyno = %dyno.net_name, error = %e, "reconcile: lease");
            }
        }
    }
    network.install()?;
    let gone: Vec<&str> = stock
        .ended
        .iter()
        .map(|e| e.dyno.net_name.as_str())
        .chain(stock.orphans.iter().map(String::as_str))
        .collect();
    for name in &gone {
        dyno_supervisor::destroy_leftover_sockets_of(network.run_dir(), name);
        if let Err(e) = network.down(name) {
            tracing::warn!(dyno = %name, error = %e, "reconcile: remove the network");
        }
    }
    for e in network.close_unleased_ports() {
        tracing::warn!(error = %e, "reconcile: close a port");
    }
    remove_leftovers(options, &gone, cgroups);
    Ok(())
}

/// Removes the cgroups and state dirs of ended and orphaned dynos (their processes are dead).
pub fn remove_leftovers(options: &DaemonOptions, names: &[&str], cgroups: Option<&Cgroups>) {
    for name in names {
        let _ = std::fs::remove_dir_all(options.state_root.join(name));
    }
    let Some(cgroups) = cgroups else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = cgroups
            .dyno_ids()
            .unwrap_or_default()
            .into_iter()
            .filter(|id| names.contains(&id.as_str()))
            .collect();
        for id in &left {
            if let Ok(cgroup) = cgroups.existing(id) {
                let _ = cgroup.kill_all();
                let _ = cgroup.remove();
            }
        }
        let remaining = cgroups
            .dyno_ids()
            .map(|ids| ids.iter().filter(|id| names.contains(&id.as_str())).count())
            .unwrap_or(0);
        if remaining == 0 {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(count = remaining, "reconcile: dyno cgroups still busy");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs `pids` and waits (up to 5 s) until they are gone.
fn kill_and_wait(pids: &[libc::pid_t]) {
    for pid in pids {
        // Each pid was checked to be a shim or a dyno's PID 1 of ours just before.
        let _ = dyno_sandbox::sys::signal_pid(*pid, rustix::process::Signal::KILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every live `… __shim <state_root>/<name>` process: name → pid.
pub fn shims_under(state_root: &Path) -> BTreeMap<String, libc::pid_t> {
    let mut found = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
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
        let Some(dir) = args
            .iter()
            .position(|a| *a == b"__shim")
            .and_then(|i| args.get(i + 1))
        else {
            continue;
        };
        let dir = Path::new(std::ffi::OsStr::from_bytes(dir));
        if dir.parent() == Some(state_root) {
            if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
                found.insert(name.to_string(), pid);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(net_name: &str, state: DynoState) -> Dyno {
        Dyno {
            id: 1,
            app: "hello".into(),
            name: "web.1".into(),
            process_type: "web".into(),
            release_version: 1,
            size: "Standard-1X".into(),
            state,
            uuid: "u".into(),
            net_name: net_name.into(),
            netns: format!("dyno-{net_name}"),
            link: format!("dy{net_name}"),
            address: None,
            shim_pid: None,
            created_at_ms: 0,
            state_changed_at_ms: 0,
            started_at_ms: None,
            exit_status: None,
            exited_at_ms: None,
        }
    }

    #[test]
    fn a_takeover_adopts_what_runs_ends_the_rest_and_finds_orphans() {
        let rows = vec![
            row("running", DynoState::Up),
            row("starting", DynoState::Starting),
            row("gone", DynoState::Up),
            row("stopping", DynoState::Stopping),
        ];
        let shims = BTreeMap::from([
            ("running".to_string(), 101),
            ("starting".to_string(), 102),
            ("stopping".to_string(), 103),
            ("orphan".to_string(), 104),
        ]);
        let dirs = ["running", "gone", "stopping", "orphan", "orphan-dead"]
            .map(String::from)
            .to_vec();
        let (stock, doomed) = sort(rows, &shims, dirs);
        let live: Vec<(&str, u32)> = stock
            .live
            .iter()
            .map(|l| (l.dyno.net_name.as_str(), l.shim_pid))
            .collect();
        // A shim that runs is adopted, whatever the row says of the dyno's state (the daemon
        // died before it recorded `up`), unless its teardown had started.
        assert_eq!(live, [("running", 101), ("starting", 102)]);
        let ended: Vec<&str> = stock
            .ended
            .iter()
            .map(|e| e.dyno.net_name.as_str())
            .collect();
        assert_eq!(ended, ["gone", "stopping"]);
        assert_eq!(stock.orphans, ["orphan", "orphan-dead"]);
        // Killed: the shim of the dyno being stopped, and the orphan's; nothing adopted.
        assert_eq!(doomed, [103, 104]);
    }

    #[test]
    fn nothing_recorded_and_nothing_found_is_an_empty_stock() {
        let (stock, doomed) = sort(Vec::new(), &BTreeMap::new(), Vec::new());
        assert!(stock.live.is_empty() && stock.ended.is_empty() && stock.orphans.is_empty());
        assert!(doomed.is_empty());
    }
}
