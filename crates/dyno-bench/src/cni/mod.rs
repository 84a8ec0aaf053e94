//! The anchor of `dyno bench net`: Debian's CNI `ptp` plugin with `host-local` IPAM, doing ADD
//! for N containers and then DEL for all of them, timed the way a container runtime pays for it
//! (spawn of the plugin → its exit, configuration on stdin, result read from stdout).
//!
//! Network safety: the plugin's "host" is a [`Lab`](dyno_net::lab::Lab) namespace, never the
//! real host. Every plugin process is started inside `lab.host` (so its veth host ends, routes
//! and `ip_forward` land there); each container is a fresh namespace bound under our own scratch
//! directory `/run/dynobench-cni-<pid>-<n>/` (named so that nothing looking for `dyno-*`
//! confuses it with a dyno), which also holds host-local's IPAM state. A guard undoes everything
//! on every exit path, errors and panics included: DEL for anything ADD was tried on, unbind the
//! namespaces, remove the directory; the lab's namespaces then vanish with the lab.
//!
//! Only a `kill -9` in the middle can leave something: bound (empty) container namespaces under
//! `/run/dynobench-cni-*/netns/` — the veths go with the lab namespace when the process dies.
//!
//! `plugin.rs` makes one plugin call (configuration in, result checked); `anchor.rs` owns what a
//! run makes and undoes it.

mod anchor;
mod plugin;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dyno_net::dyno::NetError;
use dyno_net::ns::NsError;

use anchor::Anchor;

/// Wall-clock time of each plugin invocation, in container order.
#[derive(Debug, Clone, Default)]
pub struct CniTimings {
    pub add: Vec<Duration>,
    pub del: Vec<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI {plugin} plugin not found in {}: apt-get install containernetworking-plugins", .dir.display())]
    PluginMissing { plugin: &'static str, dir: PathBuf },
    #[error("create the lab namespace standing in for the host: {0}")]
    Lab(#[source] NetError),
    #[error("{context}: {source}")]
    Netns {
        context: String,
        #[source]
        source: NsError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("CNI ptp {command} for {container} failed ({status}): {output}")]
    PluginFailed {
        command: &'static str,
        container: String,
        status: String,
        output: String,
    },
    #[error("CNI ptp {command} for {container} returned an unusable result ({reason}): {output}")]
    BadResult {
        command: &'static str,
        container: String,
        reason: String,
        output: String,
    },
    #[error("CNI ptp ADD for {container} made its host end {link} in this process's own namespace, not the lab's")]
    EscapedLab { container: String, link: String },
    #[error("cleaning up after the CNI anchor: {}", .0.join("; "))]
    Cleanup(Vec<String>),
}

/// ADD for `count` containers (all kept alive), then DEL for all of them, with the `ptp` and
/// `host-local` plugins found in `plugin_dir` (Debian: `/usr/lib/cni`). Needs root.
pub fn run_ptp_anchor(count: usize, plugin_dir: &Path) -> Result<CniTimings, CniError> {
    let ptp = find_plugin(plugin_dir, "ptp")?;
    find_plugin(plugin_dir, "host-local")?;
    let mut anchor = Anchor::new(ptp, plugin_dir)?;
    let mut timings = CniTimings {
        add: Vec::with_capacity(count),
        del: Vec::with_capacity(count),
    };
    for i in 0..count {
        anchor.prepare_container(i)?;
        timings.add.push(anchor.add(i)?);
    }
    for i in 0..count {
        timings.del.push(anchor.del(i)?);
    }
    let problems = anchor.cleanup();
    if !problems.is_empty() {
        return Err(CniError::Cleanup(problems));
    }
    Ok(timings)
}

fn find_plugin(dir: &Path, plugin: &'static str) -> Result<PathBuf, CniError> {
    let path = dir.join(plugin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(CniError::PluginMissing {
            plugin,
            dir: dir.to_path_buf(),
        })
    }
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> CniError {
    move |source| CniError::Io { context, source }
}

fn ns_err(context: impl Into<String>) -> impl FnOnce(NsError) -> CniError {
    let context = context.into();
    move |source| CniError::Netns { context, source }
}

#[cfg(test)]
mod tests {
    use super::anchor::SCRATCH_PREFIX;
    use super::*;

    #[test]
    fn missing_plugin_says_how_to_install_it() {
        let err = CniError::PluginMissing {
            plugin: "ptp",
            dir: PathBuf::from("/usr/lib/cni"),
        };
        assert_eq!(
            err.to_string(),
            "CNI ptp plugin not found in /usr/lib/cni: apt-get install containernetworking-plugins"
        );
        // run_ptp_anchor stops there, before making anything (so no root needed here).
        let empty = std::env::temp_dir().join(format!("dynobench-no-cni-{}", std::process::id()));
        let err = run_ptp_anchor(1, &empty).err().map(|e| e.to_string());
        let expected = format!(
            "CNI ptp plugin not found in {}: apt-get install containernetworking-plugins",
            empty.display()
        );
        assert_eq!(err, Some(expected));
    }

    /// Entries of ours in `/run` and mounts of ours in this process's mount table. (Assumes no
    /// other `run_ptp_anchor` runs concurrently in this test process.)
    fn leftovers() -> Vec<String> {
        let ours = format!("{SCRATCH_PREFIX}{}-", std::process::id());
        let mut found: Vec<String> = std::fs::read_dir("/run")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(&ours))
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        found.extend(
            mounts
                .lines()
                .filter(|line| line.contains(&format!("/run/{ours}")))
                .map(str::to_owned),
        );
        found
    }

    /// The real thing, with Debian's plugins. That the plugins' host ends landed in the lab, not
    /// in this (the real host's) namespace, is checked by every ADD ([`CniError::EscapedLab`]).
    #[test]
    fn anchor_runs_three_containers() {
        if rustix::process::geteuid().as_raw() != 0 {
            panic!("this test needs root (network namespaces, bind mounts, CNI plugins)");
        }
        let timings = run_ptp_anchor(3, Path::new("/usr/lib/cni")).unwrap();
        assert_eq!(timings.add.len(), 3);
        assert_eq!(timings.del.len(), 3);
        assert!(
            timings
                .add
                .iter()
                .chain(&timings.del)
                .all(|d| *d > Duration::ZERO),
            "{timings:?}"
        );
        assert_eq!(leftovers(), Vec::<String>::new());
        let labs = std::fs::read_dir("/run/dyno-lab")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{}-cni-", std::process::id())))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        assert_eq!(labs, Vec::<String>::new(), "lab run dirs left");
    }
}
