//! CNI plugins timed the way a container runtime pays for them (spawn of the plugin → its exit,
//! configuration on stdin, result read from stdout), ADD for N containers and then DEL for all
//! of them: Debian's `ptp` plugin with `host-local` IPAM (the anchor of `dyno bench net` and
//! `dyno bench cni`), and dyno's own `dyno-cni` (the subject of `dyno bench cni`). Both go
//! through the same harness; only the plugin and its configuration differ.
//!
//! Network safety: the plugin's "host" is a [`Lab`](dyno_net::lab::Lab) namespace, never the
//! real host, a fresh one per run. Every plugin process is started inside `lab.host` (so its
//! veth host ends, routes, `ip_forward`, dyno-cni's platform address and `inet dyno` table land
//! there); each container is a fresh namespace bound under our own scratch directory
//! `/run/dynobench-cni-<pid>-<n>/` (named so that nothing looking for `dyno-*` confuses it with
//! a dyno), which also holds the plugin's IPAM state (`dataDir`). A guard undoes everything on
//! every exit path, errors and panics included: DEL for anything ADD was tried on, unbind the
//! namespaces, remove the directory; the lab's namespaces then vanish with the lab.
//!
//! Only a `kill -9` in the middle can leave something: bound (empty) container namespaces under
//! `/run/dynobench-cni-*/netns/` — the veths go with the lab namespace when the process dies.
//!
//! `plugin.rs` makes one plugin call (which plugin, configuration in, result checked);
//! `anchor.rs` owns what a run makes and undoes it.

mod anchor;
mod plugin;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dyno_net::dyno::NetError;
use dyno_net::ns::NsError;

use anchor::Anchor;
use dyno_net::ipam::Leases;
use dyno_net::names::LINK_PREFIX;
use plugin::Subject;

/// The pool dyno-cni leases from in a run (`subnet` in its configuration).
pub const DYNO_CNI_SUBNET: &str = plugin::DYNO_CNI_SUBNET;

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
    #[error("CNI {plugin} {command} for {container} failed ({status}): {output}")]
    PluginFailed {
        plugin: &'static str,
        command: &'static str,
        container: String,
        status: String,
        output: String,
    },
    #[error(
        "CNI {plugin} {command} for {container} returned an unusable result ({reason}): {output}"
    )]
    BadResult {
        plugin: &'static str,
        command: &'static str,
        container: String,
        reason: String,
        output: String,
    },
    #[error("CNI {plugin} ADD for {container} made its host end {link} in this process's own namespace, not the lab's")]
    EscapedLab {
        plugin: &'static str,
        container: String,
        link: String,
    },
    #[error("{context}: {source}")]
    Net {
        context: String,
        #[source]
        source: NetError,
    },
    #[error("dyno-cni not found ({}): build it with `cargo build --release -p dyno-cni` (a workspace `cargo build --release` builds it too), or name it with --plugin", tried_text(.tried))]
    DynoCniMissing { tried: Vec<PathBuf> },
    #[error("after DEL of every container, {plugin} left {what}")]
    LeftBehind { plugin: &'static str, what: String },
    #[error("cleaning up after the CNI {plugin} run: {}", .problems.join("; "))]
    Cleanup {
        plugin: &'static str,
        problems: Vec<String>,
    },
}

fn tried_text(tried: &[PathBuf]) -> String {
    if tried.is_empty() {
        return "nowhere to look".into();
    }
    let paths: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    format!("looked at {}", paths.join(", "))
}

/// ADD for `count` containers (all kept alive), then DEL for all of them, with the `ptp` and
/// `host-local` plugins found in `plugin_dir` (Debian: `/usr/lib/cni`). Needs root.
pub fn run_ptp_anchor(count: usize, plugin_dir: &Path) -> Result<CniTimings, CniError> {
    let ptp = find_plugin(plugin_dir, "ptp")?;
    find_plugin(plugin_dir, "host-local")?;
    let mut anchor = Anchor::new(Subject::ptp(ptp, plugin_dir))?;
    let timings = add_then_del(&mut anchor, count)?;
    finish(anchor, "ptp")?;
    Ok(timings)
}

/// The same as [`run_ptp_anchor`] with the `dyno-cni` binary `plugin` (pool
/// [`DYNO_CNI_SUBNET`], leases in the run's scratch directory). After the last DEL, the lab
/// host must have no `dy*` link left and the leases file no lease. Needs root.
pub fn run_dyno_cni(count: usize, plugin: &Path) -> Result<CniTimings, CniError> {
    let mut anchor = Anchor::new(Subject::dyno_cni(plugin.to_path_buf()))?;
    let timings = add_then_del(&mut anchor, count)?;
    let mut left = Vec::new();
    let links = anchor.lab_links(LINK_PREFIX)?;
    if !links.is_empty() {
        left.push(format!("links {}", links.join(", ")));
    }
    let leases = leases_left(&anchor.data_dir().join("leases.json"))?;
    if !leases.is_empty() {
        left.push(format!("leases {}", leases.join(", ")));
    }
    if !left.is_empty() {
        return Err(CniError::LeftBehind {
            plugin: "dyno-cni",
            what: left.join("; "),
        });
    }
    finish(anchor, "dyno-cni")?;
    Ok(timings)
}

/// `count` VERSION calls of the `dyno-cni` binary `plugin`, spawned and timed as ADD and DEL
/// are: a call that does no work, i.e. the cost of being a process a runtime starts. It touches
/// no network, so it runs where it is called.
pub fn time_version_calls(count: usize, plugin: &Path) -> Result<Vec<Duration>, CniError> {
    let mut timings = Vec::with_capacity(count);
    for _ in 0..count {
        let mut cmd = std::process::Command::new(plugin);
        cmd.env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let (elapsed, run) = plugin::timed_run(&mut cmd, br#"{"cniVersion":"1.0.0"}"#);
        plugin::check("dyno-cni", "VERSION", "-", run)?;
        timings.push(elapsed);
    }
    Ok(timings)
}

/// ADD for `count` fresh containers, one after the other, all kept; then DEL for each.
fn add_then_del(anchor: &mut Anchor, count: usize) -> Result<CniTimings, CniError> {
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
    Ok(timings)
}

/// The guard's cleanup, with its problems as an error (dropping the anchor would only log them).
fn finish(mut anchor: Anchor, plugin: &'static str) -> Result<(), CniError> {
    let problems = anchor.cleanup();
    if !problems.is_empty() {
        return Err(CniError::Cleanup { plugin, problems });
    }
    Ok(())
}

/// `address owner` of each lease in dyno-cni's leases file (none when it does not exist).
fn leases_left(path: &Path) -> Result<Vec<String>, CniError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
    };
    let leases: Leases = serde_json::from_slice(&bytes).map_err(|e| CniError::Io {
        context: format!("read {}", path.display()),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    Ok(leases
        .leases
        .iter()
        .map(|(ip, owner)| format!("{ip} {owner}"))
        .collect())
}

/// The `dyno-cni` binary: `explicit` (`--plugin`) if given, else `dyno-cni` next to the running
/// executable (`target/release/dyno` → `target/release/dyno-cni`, `/usr/bin/dyno` →
/// `/usr/bin/dyno-cni`).
pub fn find_dyno_cni(explicit: Option<&Path>) -> Result<PathBuf, CniError> {
    let candidates = match explicit {
        Some(path) => vec![path.to_path_buf()],
        None => std::env::current_exe()
            .map(|exe| vec![exe.with_file_name("dyno-cni")])
            .unwrap_or_default(),
    };
    first_file(candidates)
}

fn first_file(candidates: Vec<PathBuf>) -> Result<PathBuf, CniError> {
    match candidates.iter().find(|path| path.is_file()) {
        Some(path) => Ok(path.clone()),
        None => Err(CniError::DynoCniMissing { tried: candidates }),
    }
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

    #[test]
    fn missing_dyno_cni_says_how_to_build_it() {
        let absent = std::env::temp_dir().join(format!("dynobench-no-cni-{}", std::process::id()));
        let err = find_dyno_cni(Some(&absent.join("dyno-cni"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "dyno-cni not found (looked at {}/dyno-cni): build it with `cargo build --release -p dyno-cni` \
                 (a workspace `cargo build --release` builds it too), or name it with --plugin",
                absent.display()
            )
        );
        assert!(matches!(
            first_file(Vec::new()),
            Err(CniError::DynoCniMissing { tried }) if tried.is_empty()
        ));
        // The test binary lives in target/<profile>/deps: no dyno-cni next to it.
        let err = find_dyno_cni(None).unwrap_err().to_string();
        assert!(err.contains("deps/dyno-cni"), "{err}");
        // An explicit path that exists is taken as it is.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(find_dyno_cni(Some(&exe)).unwrap(), exe);
    }

    #[test]
    fn leases_left_reads_dyno_cnis_file() {
        let dir = std::env::temp_dir().join(format!("dynobench-leases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leases.json");
        assert_eq!(leases_left(&path).unwrap(), Vec::<String>::new());
        std::fs::write(&path, r#"{"last":"10.218.0.3","leases":{}}"#).unwrap();
        assert_eq!(leases_left(&path).unwrap(), Vec::<String>::new());
        std::fs::write(
            &path,
            r#"{"last":"10.218.0.3","leases":{"10.218.0.3":"bench1/eth0"}}"#,
        )
        .unwrap();
        assert_eq!(leases_left(&path).unwrap(), ["10.218.0.3 bench1/eth0"]);
        std::fs::write(&path, "torn").unwrap();
        assert!(leases_left(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The runs below share `/run` names with this process's id: one at a time (the test
    /// harness runs tests on threads of one process).
    static REAL_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn require_root() {
        if rustix::process::geteuid().as_raw() != 0 {
            panic!("this test needs root (network namespaces, bind mounts, CNI plugins)");
        }
    }

    /// Entries of ours in `/run` and mounts of ours in this process's mount table. (Assumes no
    /// other run goes on concurrently in this test process: [`REAL_RUNS`].)
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

    fn labs_left() -> Vec<String> {
        std::fs::read_dir("/run/dyno-lab")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{}-cni-", std::process::id())))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    }

    fn assert_timed(timings: &CniTimings) {
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
        assert_eq!(labs_left(), Vec::<String>::new(), "lab run dirs left");
    }

    /// The real thing, with Debian's plugins. That the plugins' host ends landed in the lab, not
    /// in this (the real host's) namespace, is checked by every ADD ([`CniError::EscapedLab`]).
    #[test]
    fn anchor_runs_three_containers() {
        require_root();
        let _one = REAL_RUNS.lock().unwrap_or_else(|e| e.into_inner());
        let timings = run_ptp_anchor(3, Path::new("/usr/lib/cni")).unwrap();
        assert_timed(&timings);
    }

    /// The workspace's built `dyno-cni` (a crate cannot name another crate's binary with
    /// `CARGO_BIN_EXE_*`): under `$CARGO_TARGET_DIR` or the workspace's `target/`, this test
    /// build's profile first. `cargo nextest run --workspace` and `cargo build` build it.
    fn built_dyno_cni() -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // crates/dyno-bench → the workspace root.
                let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
                manifest
                    .ancestors()
                    .nth(2)
                    .unwrap_or(manifest)
                    .join("target")
            });
        let profiles = if cfg!(debug_assertions) {
            ["debug", "release"]
        } else {
            ["release", "debug"]
        };
        let candidates: Vec<PathBuf> = profiles
            .iter()
            .map(|p| target.join(p).join("dyno-cni"))
            .collect();
        match candidates.iter().find(|p| p.is_file()) {
            Some(found) => found.clone(),
            None => panic!(
                "dyno-cni is not built ({}): run `cargo build -p dyno-cni` first \
                 (`cargo nextest run --workspace` and `cargo build` build it too)",
                tried_text(&candidates)
            ),
        }
    }

    /// The same with dyno-cni: its results checked as ptp's are (an address, the host end in
    /// the lab), and after DEL no `dy*` link in the lab and no lease (else
    /// [`CniError::LeftBehind`]).
    #[test]
    fn dyno_cni_runs_three_containers() {
        require_root();
        let plugin = built_dyno_cni();
        let _one = REAL_RUNS.lock().unwrap_or_else(|e| e.into_inner());
        let timings = run_dyno_cni(3, &plugin).unwrap();
        assert_timed(&timings);
    }
}
