//! The network configuration on stdin. Read leniently: unknown keys, `capabilities`, `args`
//! and `runtimeConfig` entries we do not use are ignored, as the spec asks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dyno_net::ipam::Ipv4Net;
use dyno_net::nft::{MAX_ROUTER_SOURCES, ROUTER_MARK};
use serde_json::Value;

use crate::error::CniError;

/// The `runtimeConfig` key under which containerd's CRI passes the pod's annotations.
pub const POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";
/// ADD and DEL wait this long for the lease lock by default: far more than any call takes
/// while holding it, well below runtimes' own timeouts.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// The pod annotation that names `$PORT`.
pub const PORT_ANNOTATION: &str = "dyno/port";

/// Versions this plugin speaks; results take the shape of the input's.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub pool: Ipv4Net,
    pub data_dir: PathBuf,
    /// The config's own `port` (the last resort for `$PORT`).
    pub port: Option<u16>,
    /// `runtimeConfig.portMappings[].containerPort`, distinct.
    pub mapped_ports: Vec<u16>,
    /// The pod's `dyno/port` annotation (`runtimeConfig["io.kubernetes.cri.pod-annotations"]`,
    /// which containerd's CRI passes when the config asks for that capability).
    pub annotated_port: Option<String>,
    /// `routerMark`: the mark of the router's sockets on this host.
    pub router_mark: u32,
    /// `routerSources`: networks whose connections reach `$PORT` as the router's do.
    pub router_sources: Vec<Ipv4Net>,
    /// `lockTimeoutSeconds`: how long ADD and DEL wait for another call's lease lock before
    /// telling the runtime to try again.
    pub lock_timeout: Duration,
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments` (or the older `cni.dev/attachments`): the
    /// `CONTAINERID/IFNAME` owners to keep; `None` when the config has neither.
    pub valid_attachments: Option<Vec<String>>,
}

/// The input's `cniVersion`, if it can be read at all (errors echo it).
pub fn version_of(raw: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(raw).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_owned)
}

pub fn parse(raw: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| CniError::Decode(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| CniError::Decode("not a JSON object".into()))?;
    let text = |key: &str| -> Result<Option<String>, CniError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CniError::Config(format!("{key} is not a string"))),
        }
    };
    let cni_version = text("cniVersion")?.unwrap_or_else(|| "0.3.0".into());
    check_version(&cni_version)?;
    let name = text("name")?.ok_or_else(|| CniError::Config("name is missing".into()))?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CniError::Config(format!("name {name:?} is not usable")));
    }
    let pool = match text("subnet")?.or(text("pool")?) {
        Some(s) => s
            .parse::<Ipv4Net>()
            .map_err(|e| CniError::Config(format!("subnet {s:?}: {e}")))?,
        None => Ipv4Net::default(),
    };
    let data_dir = match text("dataDir")? {
        Some(dir) => PathBuf::from(dir),
        // On /run (a tmpfs): leases describe attachments, which no container outlives a
        // reboot with, so none can leak across one (host-local's /var/lib leases do).
        None => PathBuf::from("/run/dyno-cni").join(&name),
    };
    let port = match object.get("port") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(port_of(v).ok_or_else(|| CniError::Config(format!("port {v} is not a port")))?)
        }
    };
    let mut mapped_ports: Vec<u16> = object
        .get("runtimeConfig")
        .and_then(|r| r.get("portMappings"))
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|e| e.get("containerPort").and_then(port_of))
                .collect()
        })
        .unwrap_or_default();
    mapped_ports.sort_unstable();
    mapped_ports.dedup();
    let annotated_port = object
        .get("runtimeConfig")
        .and_then(|r| r.get(POD_ANNOTATIONS))
        .and_then(|a| a.get(PORT_ANNOTATION))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    let router_mark = match object.get("routerMark") {
        None | Some(Value::Null) => ROUTER_MARK,
        Some(v) => mark_of(v).ok_or_else(|| {
            CniError::Config(format!(
                "routerMark {v} is not a non-zero 32-bit mark (a number, or a string like \"0x6479\")"
            ))
        })?,
    };
    let router_sources = router_sources(object)?;
    let lock_timeout = match object.get("lockTimeoutSeconds") {
        None | Some(Value::Null) => DEFAULT_LOCK_TIMEOUT,
        Some(v) => v
            .as_u64()
            .filter(|s| (1..=3600).contains(s))
            .map(Duration::from_secs)
            .ok_or_else(|| {
                CniError::Config(format!(
                    "lockTimeoutSeconds {v} is not a number in 1..=3600"
                ))
            })?,
    };
    Ok(NetConf {
        cni_version,
        name,
        pool,
        data_dir,
        port,
        mapped_ports,
        annotated_port,
        router_mark,
        router_sources,
        lock_timeout,
        prev_result: object.get("prevResult").filter(|v| !v.is_null()).cloned(),
        valid_attachments: valid_attachments(object)?,
    })
}

/// `routerSources`: CIDRs (a bare address is its `/32`).
fn router_sources(object: &serde_json::Map<String, Value>) -> Result<Vec<Ipv4Net>, CniError> {
    let Some(list) = object.get("routerSources").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or_else(|| {
        CniError::Config("routerSources is not a list of networks like \"10.0.0.0/8\"".into())
    })?;
    if list.len() > MAX_ROUTER_SOURCES {
        return Err(CniError::Config(format!(
            "routerSources has {} entries, at most {MAX_ROUTER_SOURCES}: list networks, not hosts",
            list.len()
        )));
    }
    list.iter()
        .map(|entry| {
            let text = entry.as_str().ok_or_else(|| {
                CniError::Config(format!("routerSources entry {entry} is not a string"))
            })?;
            let cidr = if text.contains('/') {
                text.to_owned()
            } else {
                format!("{text}/32")
            };
            let net: Ipv4Net = cidr
                .parse()
                .map_err(|e| CniError::Config(format!("routerSources entry {text:?}: {e}")))?;
            if net.prefix_len() == 0 {
                return Err(CniError::Config(format!(
                    "routerSources entry {text:?} would let every address reach $PORT; \
                     name the router's networks"
                )));
            }
            Ok(net)
        })
        .collect()
}

/// A mark: a JSON number, or a decimal or `0x` hexadecimal string; never 0 (every unmarked
/// socket has mark 0).
fn mark_of(v: &Value) -> Option<u32> {
    let mark = match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }?;
    (mark != 0).then_some(mark)
}

/// The attachments GC keeps, as lease owners (`CONTAINERID/IFNAME`).
fn valid_attachments(
    object: &serde_json::Map<String, Value>,
) -> Result<Option<Vec<String>>, CniError> {
    let Some(list) = object
        .get("cni.dev/valid-attachments")
        .or_else(|| object.get("cni.dev/attachments"))
    else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| CniError::Config("cni.dev/valid-attachments is not a list".into()))?;
    let mut owners = Vec::with_capacity(list.len());
    for entry in list {
        let field = |key: &str| entry.get(key).and_then(Value::as_str);
        match (field("containerID"), field("ifname")) {
            (Some(id), Some(ifname)) => owners.push(format!("{id}/{ifname}")),
            _ => {
                return Err(CniError::Config(format!(
                    "an attachment needs containerID and ifname: {entry}"
                )))
            }
        }
    }
    Ok(Some(owners))
}

pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::Version(format!(
            "{version:?} (this plugin supports {})",
            SUPPORTED_VERSIONS.join(", ")
        )))
    }
}

fn port_of(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

impl NetConf {
    /// `$PORT`: `CNI_ARGS` `DYNO_PORT`, else the pod's `dyno/port` annotation, else a single
    /// mapped container port, else the config's. `None`: nothing is opened to the router.
    pub fn port(&self, args: &BTreeMap<String, String>) -> Result<Option<u16>, CniError> {
        let parse = |raw: &str| raw.parse::<u16>().ok().filter(|p| *p > 0);
        if let Some(raw) = args.get("DYNO_PORT") {
            return parse(raw)
                .map(Some)
                .ok_or_else(|| CniError::Env(format!("CNI_ARGS DYNO_PORT={raw} is not a port")));
        }
        if let Some(raw) = &self.annotated_port {
            return parse(raw).map(Some).ok_or_else(|| {
                CniError::Config(format!(
                    "pod annotation {PORT_ANNOTATION}={raw} is not a port (1-65535)"
                ))
            });
        }
        match self.mapped_ports.as_slice() {
            [one] => return Ok(Some(*one)),
            [] => {}
            many => {
                return Err(CniError::Config(format!(
                    "portMappings name {} container ports; a dyno has one $PORT",
                    many.len()
                )))
            }
        }
        Ok(self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_and_defaults() {
        let c = parse(
            br#"{"cniVersion":"1.0.0","name":"dyno","type":"dyno-cni","whatever":{"x":1},
            "capabilities":{"portMappings":true},"args":{"cni":{}}}"#,
        )
        .unwrap();
        assert_eq!(c.pool, Ipv4Net::default());
        assert_eq!(c.data_dir, PathBuf::from("/run/dyno-cni/dyno"));
        assert_eq!(c.port(&BTreeMap::new()).unwrap(), None);
    }

    #[test]
    fn errors_have_their_codes() {
        assert_eq!(parse(b"{nope").unwrap_err().code(), 6);
        assert_eq!(
            parse(br#"{"cniVersion":"9.9.9","name":"x"}"#)
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(parse(br#"{"cniVersion":"1.0.0"}"#).unwrap_err().code(), 7);
        assert_eq!(
            parse(br#"{"cniVersion":"1.0.0","name":"x","subnet":"nope"}"#)
                .unwrap_err()
                .code(),
            7
        );
    }

    #[test]
    fn port_sources_in_order() {
        let c = parse(br#"{"cniVersion":"0.4.0","name":"x","port":80,"subnet":"10.9.0.0/24",
            "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":5000,"protocol":"tcp"}]}}"#)
        .unwrap();
        let mut args = BTreeMap::new();
        assert_eq!(c.port(&args).unwrap(), Some(5000));
        args.insert("DYNO_PORT".to_string(), "6000".to_string());
        assert_eq!(c.port(&args).unwrap(), Some(6000));
        let c = parse(br#"{"cniVersion":"0.4.0","name":"x","port":80}"#).unwrap();
        assert_eq!(c.port(&BTreeMap::new()).unwrap(), Some(80));
        // The pod's annotation comes before portMappings; CNI_ARGS before both.
        let c = parse(
            br#"{"cniVersion":"1.0.0","name":"x","port":80,"runtimeConfig":{
            "portMappings":[{"hostPort":8080,"containerPort":5000,"protocol":"tcp"}],
            "io.kubernetes.cri.pod-annotations":{"dyno/port":"7000","other":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(c.port(&BTreeMap::new()).unwrap(), Some(7000));
        assert_eq!(c.port(&args).unwrap(), Some(6000));
        let c = parse(
            br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{
            "io.kubernetes.cri.pod-annotations":{"dyno/port":"http"}}}"#,
        )
        .unwrap();
        let e = c.port(&BTreeMap::new()).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(
            e.to_string().contains("dyno/port=http is not a port"),
            "{e}"
        );
    }

    #[test]
    fn router_identity() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"x"}"#).unwrap();
        assert_eq!(c.router_mark, ROUTER_MARK);
        assert!(c.router_sources.is_empty());
        let c = parse(
            br#"{"cniVersion":"1.0.0","name":"x","routerMark":"0x10",
            "routerSources":["192.0.2.0/24","198.51.100.7"]}"#,
        )
        .unwrap();
        assert_eq!(c.router_mark, 16);
        let sources: Vec<String> = c.router_sources.iter().map(|n| n.to_string()).collect();
        assert_eq!(sources, ["192.0.2.0/24", "198.51.100.7/32"]);
        assert_eq!(
            parse(br#"{"cniVersion":"1.0.0","name":"x","routerMark":99}"#)
                .unwrap()
                .router_mark,
            99
        );
        let refused = |extra: &str| {
            let raw = format!(r#"{{"cniVersion":"1.0.0","name":"x",{extra}}}"#);
            let e = parse(raw.as_bytes()).unwrap_err();
            assert_eq!(e.code(), 7, "{e}");
            e.to_string()
        };
        assert!(refused(r#""routerMark":0"#).contains("routerMark 0"));
        assert!(refused(r#""routerMark":"nope""#).contains("routerMark"));
        assert!(refused(r#""routerSources":"10.0.0.0/8""#).contains("not a list"));
        assert!(refused(r#""routerSources":["0.0.0.0/0"]"#).contains("every address"));
        assert!(refused(r#""routerSources":["10.0.0.1/8"]"#).contains("10.0.0.1/8"));
        let many: Vec<String> = (0..33).map(|i| format!("\"192.0.2.{i}\"")).collect();
        let many = format!(r#""routerSources":[{}]"#, many.join(","));
        assert!(refused(&many).contains("at most 32"));
    }
}
