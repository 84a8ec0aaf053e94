//! The anchor of `dyno bench net`: Debian's CNI `ptp` plugin with `host-local` IPAM, doing ADD
//! for N containers and then DEL for all of them, timed the way a container runtime pays for it
//! (spawn of the plugin → its exit, configuration on stdin, result read from stdout).
//!
//! Network safety: the plugin's "host" is a [`Lab`] namespace, never the real host. Every plugin
//! process is started inside `lab.host` (so its veth host ends, routes and `ip_forward` land
//! there); each container is a fresh namespace bound under our own scratch directory
//! `/run/dynobench-cni-<pid>-<n>/` (named so that nothing looking for `dyno-*` confuses it with a
//! dyno), which also holds host-local's IPAM state. A guard undoes everything on every exit path,
//! errors and panics included: DEL for anything ADD was tried on, unbind the namespaces, remove
//! the directory; the lab's namespaces then vanish with the lab.
//!
//! Only a `kill -9` in the middle can leave something: bound (empty) container namespaces under
//! `/run/dynobench-cni-*/netns/` — the veths go with the lab namespace when the process dies.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dyno_net::dyno::NetError;
use dyno_net::lab::Lab;
use dyno_net::ns::{self, Netns, NsError};
use serde_json::{json, Value};

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

/// The network name in the plugin configuration (host-local keeps its leases under it).
const NETWORK_NAME: &str = "dynobench";
/// The container address pool; distinct from dyno's default pool (10.213.0.0/16).
const SUBNET: &str = "10.214.0.0/16";
const CNI_VERSION: &str = "1.0.0";
/// Scratch directories are `/run/<SCRATCH_PREFIX><pid>-<n>`.
const SCRATCH_PREFIX: &str = "dynobench-cni-";
/// Cap on plugin output quoted in errors.
const OUTPUT_LIMIT: usize = 4000;

static RUNS: AtomicU32 = AtomicU32::new(0);

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

/// The network configuration given on stdin; for DEL with the ADD's result as `prevResult`, as
/// CNI 1.0.0 runtimes do (libcni replays its cached result).
fn net_config(ipam_dir: &Path, prev_result: Option<&Value>) -> Value {
    let mut config = json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "type": "ptp",
        // Masquerade would need iptables: neither our subject nor installed.
        "ipMasq": false,
        "mtu": 1500,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": SUBNET }]],
            "dataDir": ipam_dir.to_string_lossy(),
        },
    });
    if let Some(prev) = prev_result {
        config["prevResult"] = prev.clone();
    }
    config
}

/// What we use of an ADD result.
#[derive(Debug)]
struct AddResult {
    /// The whole result, replayed as `prevResult` on DEL.
    raw: Value,
    /// Names of the interfaces without a `sandbox`: the host ends.
    host_links: Vec<String>,
}

/// Checks an ADD's stdout minimally: a JSON object with a non-empty `ips` array whose entries
/// carry an `address` string. Returns the reason when it is not.
fn parse_add_result(stdout: &[u8]) -> Result<AddResult, String> {
    let raw: Value = serde_json::from_slice(stdout).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(code) = raw.get("code") {
        // A CNI error object, even though the plugin exited 0.
        return Err(format!("CNI error code {code}"));
    }
    let ips = raw
        .get("ips")
        .and_then(Value::as_array)
        .ok_or("no \"ips\" array")?;
    if ips.is_empty() {
        return Err("empty \"ips\" array".into());
    }
    if !ips
        .iter()
        .all(|ip| ip.get("address").is_some_and(Value::is_string))
    {
        return Err("an \"ips\" entry has no \"address\" string".into());
    }
    let host_links = raw
        .get("interfaces")
        .and_then(Value::as_array)
        .map(|ifaces| {
            ifaces
                .iter()
                .filter(|i| i.get("sandbox").is_none())
                .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(AddResult { raw, host_links })
}

/// Plugin stdout (where CNI errors go) and stderr, trimmed and capped, for error messages.
fn plugin_output(output: &Output) -> String {
    fn text(bytes: &[u8]) -> String {
        let s = String::from_utf8_lossy(bytes);
        let s = s.trim();
        if s.is_empty() {
            return "(empty)".into();
        }
        match s.char_indices().nth(OUTPUT_LIMIT) {
            Some((cut, _)) => format!("{}…", &s[..cut]),
            None => s.to_owned(),
        }
    }
    format!(
        "stdout: {}; stderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    )
}

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
struct Anchor {
    ptp: PathBuf,
    plugin_dir: PathBuf,
    dir: PathBuf,
    ipam_dir: PathBuf,
    netns_dir: PathBuf,
    containers: Vec<Container>,
    dir_made: bool,
    /// Dropped after `Drop::drop` has run DEL inside it.
    lab: Lab,
}

impl Anchor {
    fn new(ptp: PathBuf, plugin_dir: &Path) -> Result<Anchor, CniError> {
        let lab = Lab::new("cni").map_err(CniError::Lab)?;
        let dir = PathBuf::from("/run").join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut anchor = Anchor {
            ptp,
            plugin_dir: plugin_dir.to_path_buf(),
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
    fn prepare_container(&mut self, i: usize) -> Result<(), CniError> {
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

    fn add(&mut self, i: usize) -> Result<Duration, CniError> {
        let config = net_config(&self.ipam_dir, None).to_string();
        let mut cmd = self.command("ADD", &self.containers[i])?;
        self.containers[i].state = State::AddTried;
        let (elapsed, output) = timed_run(&mut cmd, config.as_bytes());
        let container = &mut self.containers[i];
        let output = check("ADD", &container.id, output)?;
        let result = parse_add_result(&output.stdout).map_err(|reason| CniError::BadResult {
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
                    container: container.id.clone(),
                    link: link.clone(),
                });
            }
        }
        Ok(elapsed)
    }

    fn del(&mut self, i: usize) -> Result<Duration, CniError> {
        let container = &self.containers[i];
        let prev = match &container.state {
            State::Added(result) => Some(result),
            _ => None,
        };
        let config = net_config(&self.ipam_dir, prev).to_string();
        let mut cmd = self.command("DEL", container)?;
        let (elapsed, output) = timed_run(&mut cmd, config.as_bytes());
        check("DEL", &container.id, output)?;
        self.containers[i].state = State::Deleted;
        Ok(elapsed)
    }

    /// The plugin process for one call, set to start inside the lab host namespace. A clean
    /// environment: only the CNI variables (the plugin finds host-local through `CNI_PATH`).
    fn command(&self, verb: &str, container: &Container) -> Result<Command, CniError> {
        let mut cmd = Command::new(&self.ptp);
        cmd.env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", &container.id)
            .env("CNI_NETNS", &container.netns_path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.plugin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ns::command_in(&mut cmd, self.lab.host.netns(), None)
            .map_err(ns_err("prepare a plugin process for the lab namespace"))?;
        Ok(cmd)
    }

    /// Undoes what is left: DEL where ADD was tried (untimed), unbind the container namespaces,
    /// remove the scratch directory. Idempotent; keeps going past failures and returns them.
    fn cleanup(&mut self) -> Vec<String> {
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
            eprintln!("dyno bench: CNI anchor cleanup: {problem}");
        }
        // `self.lab` drops next, taking the lab namespaces (and any veth left in them) along.
    }
}

/// Spawn → stdin written and closed → exit, stdout and stderr collected: the time a runtime
/// waits for the plugin. A failed write (the plugin exited early) is reported only if the
/// plugin nevertheless claims success.
fn timed_run(cmd: &mut Command, stdin: &[u8]) -> (Duration, io::Result<(Output, io::Result<()>)>) {
    let start = Instant::now();
    let run = cmd.spawn().and_then(|mut child| {
        let written = match child.stdin.take() {
            Some(mut pipe) => pipe.write_all(stdin),
            None => Err(io::Error::other("no stdin pipe")),
        };
        child.wait_with_output().map(|output| (output, written))
    });
    (start.elapsed(), run)
}

fn check(
    command: &'static str,
    container: &str,
    run: io::Result<(Output, io::Result<()>)>,
) -> Result<Output, CniError> {
    let (output, written) =
        run.map_err(io_err(format!("run CNI ptp {command} for {container}")))?;
    if !output.status.success() {
        return Err(CniError::PluginFailed {
            command,
            container: container.to_owned(),
            status: output.status.to_string(),
            output: plugin_output(&output),
        });
    }
    written.map_err(io_err(format!(
        "write the configuration to CNI ptp {command} for {container}"
    )))?;
    Ok(output)
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

fn io_err(context: String) -> impl FnOnce(io::Error) -> CniError {
    move |source| CniError::Io { context, source }
}

fn ns_err(context: impl Into<String>) -> impl FnOnce(NsError) -> CniError {
    let context = context.into();
    move |source| CniError::Netns { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTP_RESULT: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "veth3b2f4e1a", "mac": "4a:1b:2c:3d:4e:5f"},
            {"name": "eth0", "mac": "62:aa:bb:cc:dd:ee", "sandbox": "/run/x/netns/c0"}
        ],
        "ips": [{"interface": 1, "address": "10.214.0.2/16", "gateway": "10.214.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    }"#;

    #[test]
    fn config_is_the_documented_ptp_host_local_config() {
        let config = net_config(Path::new("/run/dynobench-cni-1-0/ipam"), None);
        assert_eq!(
            config,
            json!({
                "cniVersion": "1.0.0",
                "name": "dynobench",
                "type": "ptp",
                "ipMasq": false,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.214.0.0/16"}]],
                    "dataDir": "/run/dynobench-cni-1-0/ipam"
                }
            })
        );
        assert!(config.get("prevResult").is_none());
    }

    #[test]
    fn del_config_carries_the_add_result() {
        let prev: Value = serde_json::from_str(PTP_RESULT).unwrap();
        let config = net_config(Path::new("/tmp/ipam"), Some(&prev));
        assert_eq!(config["prevResult"], prev);
        assert_eq!(config["type"], "ptp");
        // It is what goes on stdin: valid JSON text that reads back the same.
        let text = config.to_string();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), config);
    }

    #[test]
    fn add_result_is_parsed() {
        let result = parse_add_result(PTP_RESULT.as_bytes()).unwrap();
        assert_eq!(result.host_links, ["veth3b2f4e1a"]);
        assert_eq!(
            result.raw,
            serde_json::from_str::<Value>(PTP_RESULT).unwrap()
        );
        // `interfaces` is optional in a result.
        let result = parse_add_result(br#"{"ips":[{"address":"10.214.0.9/16"}]}"#).unwrap();
        assert!(result.host_links.is_empty());
    }

    #[test]
    fn unusable_add_results_are_rejected_with_a_reason() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "not JSON"),
            (b"veth created", "not JSON"),
            (br#"{"cniVersion":"1.0.0"}"#, "no \"ips\" array"),
            (br#"{"ips":{}}"#, "no \"ips\" array"),
            (br#"{"ips":[]}"#, "empty \"ips\" array"),
            (
                br#"{"ips":[{"gateway":"10.214.0.1"}]}"#,
                "no \"address\" string",
            ),
        ];
        for (stdout, reason) in cases {
            let err = parse_add_result(stdout).unwrap_err();
            assert!(err.contains(reason), "{stdout:?}: {err}");
        }
        let err =
            parse_add_result(br#"{"code":11,"msg":"no IP addresses available"}"#).unwrap_err();
        assert!(err.contains("CNI error code 11"), "{err}");
    }

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
    fn plugin_output_is_quoted_and_capped() {
        use std::os::unix::process::ExitStatusExt;
        let output = Output {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: b"  {\"code\":7,\"msg\":\"bad\"}\n".to_vec(),
            stderr: vec![b'x'; OUTPUT_LIMIT + 10],
        };
        let text = plugin_output(&output);
        assert!(
            text.starts_with("stdout: {\"code\":7,\"msg\":\"bad\"}; stderr: xxx"),
            "{text}"
        );
        assert!(text.ends_with("x…"));
        let empty = Output {
            status: output.status,
            stdout: vec![],
            stderr: vec![],
        };
        assert_eq!(plugin_output(&empty), "stdout: (empty); stderr: (empty)");
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
