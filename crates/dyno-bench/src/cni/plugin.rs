//! One call of a CNI plugin as a runtime makes it: which plugin and its network configuration
//! on stdin ([`Subject`]), the timed run, and the checks on its exit and its ADD result. The
//! same for Debian's `ptp` (with `host-local`) and for `dyno-cni`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{io_err, CniError};

/// The network name in the plugin configuration (host-local keeps its leases under it).
const NETWORK_NAME: &str = "dynobench";
/// ptp's container address pool; distinct from dyno's default pool (10.213.0.0/16).
const PTP_SUBNET: &str = "10.214.0.0/16";
/// dyno-cni's container address pool; distinct from ptp's and from dyno's default pool.
pub(super) const DYNO_CNI_SUBNET: &str = "10.218.0.0/16";
const CNI_VERSION: &str = "1.0.0";
/// Cap on plugin output quoted in errors.
const OUTPUT_LIMIT: usize = 4000;

/// The plugin one run calls, and how a runtime configures it.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    /// What messages call it (`ptp`, `dyno-cni`).
    pub(super) name: &'static str,
    /// The executable, spawned once per call.
    pub(super) binary: PathBuf,
    /// `CNI_PATH`: where the plugin finds the plugins it delegates to (ptp: `host-local`).
    pub(super) cni_path: PathBuf,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `ptp` with `host-local` IPAM.
    Ptp,
    /// `dyno-cni`, its own IPAM.
    DynoCni,
}

impl Subject {
    /// Debian's `ptp`, which finds `host-local` in `plugin_dir`.
    pub(super) fn ptp(binary: PathBuf, plugin_dir: &Path) -> Subject {
        Subject {
            name: "ptp",
            binary,
            cni_path: plugin_dir.to_path_buf(),
            kind: Kind::Ptp,
        }
    }

    /// `dyno-cni` (it delegates to nothing; `CNI_PATH` is its own directory, as a runtime
    /// would set it).
    pub(super) fn dyno_cni(binary: PathBuf) -> Subject {
        let cni_path = binary
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Subject {
            name: "dyno-cni",
            binary,
            cni_path,
            kind: Kind::DynoCni,
        }
    }

    /// The network configuration given on stdin; `data_dir` is where the plugin keeps its
    /// leases (inside the run's scratch directory, so they vanish with it). For DEL with the
    /// ADD's result as `prevResult`, as CNI 1.0.0 runtimes do (libcni replays its cached
    /// result).
    pub(super) fn config(&self, data_dir: &Path, prev_result: Option<&Value>) -> Value {
        let mut config = match self.kind {
            Kind::Ptp => json!({
                "cniVersion": CNI_VERSION,
                "name": NETWORK_NAME,
                "type": "ptp",
                // Masquerade would need iptables: neither our subject nor installed.
                "ipMasq": false,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": PTP_SUBNET }]],
                    "dataDir": data_dir.to_string_lossy(),
                },
            }),
            // No `port`: nothing exposed to a router, as ptp without portmap.
            Kind::DynoCni => json!({
                "cniVersion": CNI_VERSION,
                "name": NETWORK_NAME,
                "type": "dyno-cni",
                "subnet": DYNO_CNI_SUBNET,
                "dataDir": data_dir.to_string_lossy(),
            }),
        };
        if let Some(prev) = prev_result {
            config["prevResult"] = prev.clone();
        }
        config
    }
}

/// What we use of an ADD result.
#[derive(Debug)]
pub(super) struct AddResult {
    /// The whole result, replayed as `prevResult` on DEL.
    pub(super) raw: Value,
    /// Names of the interfaces without a `sandbox`: the host ends.
    pub(super) host_links: Vec<String>,
}

/// Checks an ADD's stdout minimally: a JSON object with a non-empty `ips` array whose entries
/// carry an `address` string. Returns the reason when it is not.
pub(super) fn parse_add_result(stdout: &[u8]) -> Result<AddResult, String> {
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
    let interfaces = raw
        .get("interfaces")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // An address names its interface by index (optional); it must be one the result lists.
    if ips
        .iter()
        .filter_map(|ip| ip.get("interface"))
        .any(|index| index.as_u64().is_none_or(|i| i >= interfaces.len() as u64))
    {
        return Err("an \"ips\" entry names an interface the result does not list".into());
    }
    let host_links = interfaces
        .iter()
        .filter(|i| i.get("sandbox").is_none())
        .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    Ok(AddResult { raw, host_links })
}

/// Plugin stdout (where CNI errors go) and stderr, trimmed and capped, for error messages.
pub(super) fn plugin_output(output: &Output) -> String {
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

/// Spawn → stdin written and closed → exit, stdout and stderr collected: the time a runtime
/// waits for the plugin. A failed write (the plugin exited early) is reported only if the
/// plugin nevertheless claims success.
pub(super) fn timed_run(
    cmd: &mut Command,
    stdin: &[u8],
) -> (Duration, io::Result<(Output, io::Result<()>)>) {
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

pub(super) fn check(
    plugin: &'static str,
    command: &'static str,
    container: &str,
    run: io::Result<(Output, io::Result<()>)>,
) -> Result<Output, CniError> {
    let (output, written) = run.map_err(io_err(format!(
        "run CNI {plugin} {command} for {container}"
    )))?;
    if !output.status.success() {
        return Err(CniError::PluginFailed {
            plugin,
            command,
            container: container.to_owned(),
            status: output.status.to_string(),
            output: plugin_output(&output),
        });
    }
    written.map_err(io_err(format!(
        "write the configuration to CNI {plugin} {command} for {container}"
    )))?;
    Ok(output)
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

    fn ptp() -> Subject {
        Subject::ptp(PathBuf::from("/usr/lib/cni/ptp"), Path::new("/usr/lib/cni"))
    }

    fn dyno_cni() -> Subject {
        Subject::dyno_cni(PathBuf::from("/opt/dyno/bin/dyno-cni"))
    }

    #[test]
    fn config_is_the_documented_ptp_host_local_config() {
        let config = ptp().config(Path::new("/run/dynobench-cni-1-0/ipam"), None);
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
        assert_eq!(ptp().cni_path, PathBuf::from("/usr/lib/cni"));
        assert_eq!(ptp().name, "ptp");
    }

    #[test]
    fn config_is_dyno_cnis_own() {
        let subject = dyno_cni();
        let config = subject.config(Path::new("/run/dynobench-cni-1-1/ipam"), None);
        assert_eq!(
            config,
            json!({
                "cniVersion": "1.0.0",
                "name": "dynobench",
                "type": "dyno-cni",
                "subnet": "10.218.0.0/16",
                "dataDir": "/run/dynobench-cni-1-1/ipam"
            })
        );
        assert_eq!(subject.name, "dyno-cni");
        assert_eq!(subject.cni_path, PathBuf::from("/opt/dyno/bin"));
        assert_eq!(subject.binary, PathBuf::from("/opt/dyno/bin/dyno-cni"));
    }

    #[test]
    fn del_config_carries_the_add_result() {
        let prev: Value = serde_json::from_str(PTP_RESULT).unwrap();
        for subject in [ptp(), dyno_cni()] {
            let config = subject.config(Path::new("/tmp/ipam"), Some(&prev));
            assert_eq!(config["prevResult"], prev);
            // It is what goes on stdin: valid JSON text that reads back the same.
            let text = config.to_string();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), config);
        }
        let config = ptp().config(Path::new("/tmp/ipam"), Some(&prev));
        assert_eq!(config["type"], "ptp");
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
        // dyno-cni's shape: interface 0 the host end, 1 the container's.
        let dyno = br#"{"cniVersion":"1.0.0",
            "interfaces":[{"name":"dy0123456789abc","mac":"ee:ee:ee:ee:ee:ee"},
                {"name":"eth0","mac":"02:d5:0a:da:00:02","sandbox":"/run/x/netns/c0"}],
            "ips":[{"address":"10.218.0.2/32","gateway":"169.254.1.1","interface":1}],
            "routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}}"#;
        assert_eq!(
            parse_add_result(dyno).unwrap().host_links,
            ["dy0123456789abc"]
        );
    }

    #[test]
    fn unusable_add_results_are_rejected_with_a_reason() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "not JSON"),
            (b"veth created", "not JSON"),
            (br#"{"cniVersion":"1.0.0"}"#, "no \"ips\" array"),
            (br#"{"ips":{}}"#, "no \"ips\" array"),
            (br#"{"ips":[]}"#, "empty \"ips\" array"),
            (
                br#"{"ips":[{"gateway":"10.214.0.1"}]}"#,
                "no \"address\" string",
            ),
            (
                br#"{"ips":[{"address":"10.214.0.2/16","interface":1}]}"#,
                "names an interface the result does not list",
            ),
            (
                br#"{"interfaces":[{"name":"eth0"}],"ips":[{"address":"10.214.0.2/16","interface":"0"}]}"#,
                "names an interface the result does not list",
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
}
