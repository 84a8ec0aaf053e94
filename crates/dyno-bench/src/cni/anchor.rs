//! What one run of a plugin makes (the lab standing in for the host, a scratch directory, a
//! bound namespace per container) and its undoing on every exit path. The same for `ptp` and
//! `dyno-cni`: only the [`Subject`] differs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dyno_net::lab::Lab;
use dyno_net::ns::{self, Netns};
use serde_json::Value;

use super::plugin::{check, parse_add_result, plugin_output, timed_run, Subject};
use super::{io_err, ns_err, CniError};

/// Scratch directories are `/run/<SCRATCH_PREFIX><pid>-<n>`.
pub(super) const SCRATCH_PREFIX: &str = "dynobench-cni-";

static RUNS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
enum State {
    /// Namespace bound, no plugin call yet.
    Fresh,
    /// ADD was started; it may have left something behind even if it failed.
    AddTried,
    Added(Value),
    Deleted,
}

struct Container {
    id: String,
    netns_path: PathBuf,
    state: State,
}

/// Everything one run made; dropping it undoes all of it (see [`Anchor::cleanup`]).
pub(super) struct Anchor {
    subject: Subject,
    dir: PathBuf,
    ipam_dir: PathBuf,
    netns_dir: PathBuf,
    containers: Vec<Container>,
    dir_made: bool,
    /// Dropped after `Drop::drop` has run DEL inside it.
    lab: Lab,
}

impl Anchor {
    pub(super) fn new(subject: Subject) -> Result<Anchor, CniError> {
        let lab = Lab::new("cni").map_err(CniError::Lab)?;
        let dir = PathBuf::from("/run").join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut anchor = Anchor {
            subject,
            ipam_dir: dir.join("ipam"),
            netns_dir: dir.join("netns"),
            dir,
            containers: Vec::new(),
            dir_made: false,
            lab,
        };
        // create_dir (not _all): a leftover of an earlier process with our pid is an error, not
        // something to reuse or to delete.
        std::fs::create_dir(&anchor.dir).map_err(io_err(format!(
            "create scratch directory {}",
            anchor.dir.display()
        )))?;
        anchor.dir_made = true;
        for sub in [&anchor.ipam_dir, &anchor.netns_dir] {
            std::fs::create_dir(sub).map_err(io_err(format!("create {}", sub.display())))?;
        }
        Ok(anchor)
    }

    /// A fresh, empty network namespace for container `i`, bound at `netns/c<i>`. Not timed:
    /// the runtime makes the namespace before it calls the plugin.
    pub(super) fn prepare_container(&mut self, i: usize) -> Result<(), CniError> {
        debug_assert_eq!(i, self.containers.len());
        let netns_path = self.netns_dir.join(format!("c{i}"));
        let (netns, ()) = Netns::create(|| ()).map_err(ns_err("create a container namespace"))?;
        netns.bind(&netns_path).map_err(ns_err(format!(
            "bind container namespace {}",
            netns_path.display()
        )))?;
        // The bind mount keeps it alive; our fd is not needed (N may exceed the fd limit).
        drop(netns);
        self.containers.push(Container {
            id: format!("bench{i}"),
            netns_path,
            state: State::Fresh,
        });
        Ok(())
    }

    pub(super) fn add(&mut self, i: usize) -> Result<Duration, CniError> {
        let plugin = self.subject.name;
        let config = self.subject.config(&self.ipam_dir, None).to_string();
        let mut cmd = self.command("ADD", &self.containers[i])?;
        self.containers[i].state = State::AddTried;
        let (elapsed, output) = timed_run(&mut cmd, config.as_bytes());
        let container = &mut self.containers[i];
        let output = check(plugin, "ADD", &container.id, output)?;
        let result = parse_add_result(&output.stdout).map_err(|reason| CniError::BadResult {
            plugin,
            command: "ADD",
            container: container.id.clone(),
            reason,
            output: plugin_output(&output),
        })?;
        container.state = State::Added(result.raw);
        // Not timed. The host end must be in the lab: if this process's own namespace has it,
        // the plugin ran on the real host (that must never happen; stop at once).
        for link in &result.host_links {
            if link_in_own_netns(link) {
                return Err(CniError::EscapedLab {
                    plugin,
                    container: container.id.clone(),
                    link: link.clone(),
                });
            }
        }
        Ok(elapsed)
    }

    pub(super) fn del(&mut self, i: usize) -> Result<Duration, CniError> {
        let container = &self.containers[i];
        let prev = match &container.state {
            State::Added(result) => Some(result),
            _ => None,
        };
        let config = self.subject.config(&self.ipam_dir, prev).to_string();
        let mut cmd = self.command("DEL", container)?;
        let (elapsed, output) = timed_run(&mut cmd, config.as_bytes());
        check(self.subject.name, "DEL", &container.id, output)?;
        self.containers[i].state = State::Deleted;
        Ok(elapsed)
    }

    /// The plugin's state directory (`dataDir`: host-local's or dyno-cni's leases).
    pub(super) fn data_dir(&self) -> &Path {
        &self.ipam_dir
    }

    /// Links in the lab host namespace whose names start with `prefix`.
    pub(super) fn lab_links(&mut self, prefix: &str) -> Result<Vec<String>, CniError> {
        let links = self
            .lab
            .host
            .links_with_prefix(prefix)
            .map_err(|source| CniError::Net {
                context: "list the lab host's links".into(),
                source,
            })?;
        Ok(links.into_iter().map(|(_, name)| name).collect())
    }

    /// The plugin process for one call, set to start inside the lab host namespace. A clean
    /// environment: only the CNI variables (ptp finds host-local through `CNI_PATH`).
    fn command(&self, verb: &str, container: &Container) -> Result<Command, CniError> {
        let mut cmd = Command::new(&self.subject.binary);
        cmd.env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", &container.id)
            .env("CNI_NETNS", &container.netns_path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.subject.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ns::command_in(&mut cmd, self.lab.host.netns(), None)
            .map_err(ns_err("prepare a plugin process for the lab namespace"))?;
        Ok(cmd)
    }

    /// Undoes what is left: DEL where ADD was tried (untimed), unbind the container namespaces,
    /// remove the scratch directory. Idempotent; keeps going past failures and returns them.
    pub(super) fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for i in 0..self.containers.len() {
            if matches!(self.containers[i].state, State::AddTried | State::Added(_)) {
                match self.del(i) {
                    Ok(_) => {}
                    Err(e) => {
                        problems.push(e.to_string());
                        // Nothing more to try: the lab (and host-local's state) go anyway.
                        self.containers[i].state = State::Deleted;
                    }
                }
            }
        }
        for container in self.containers.drain(..) {
            if let Err(e) = ns::unbind(&container.netns_path) {
                problems.push(e.to_string());
            }
        }
        if self.dir_made {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => self.dir_made = false,
                Err(e) => problems.push(format!("remove {}: {e}", self.dir.display())),
            }
        }
        problems
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        for problem in self.cleanup() {
            eprintln!("dyno bench: CNI {} cleanup: {problem}", self.subject.name);
        }
        // `self.lab` drops next, taking the lab namespaces (and any veth left in them) along.
    }
}

/// Whether a link of that name exists in the calling thread's network namespace (ours, never a
/// lab's: only the `ns` worker thread switches).
fn link_in_own_netns(name: &str) -> bool {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c_name.as_ptr()) != 0 }
}
