//! The network configuration on stdin. Read leniently: unknown keys, `capabilities`, `args`
//! and `runtimeConfig` entries we do not use are ignored, as the spec asks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dyno_net::ipam::Ipv4Net;
use serde_json::Value;

use crate::error::CniError;

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
        None => PathBuf::from("/var/lib/dyno-cni").join(&name),
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
    Ok(NetConf {
        cni_version,
        name,
        pool,
        data_dir,
        port,
        mapped_ports,
        prev_result: object.get("prevResult").filter(|v| !v.is_null()).cloned(),
        valid_attachments: valid_attachments(object)?,
    })
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
    /// `$PORT`: `CNI_ARGS` `DYNO_PORT`, else a single mapped container port, else the config's.
    /// `None`: nothing is opened to the router.
    pub fn port(&self, args: &BTreeMap<String, String>) -> Result<Option<u16>, CniError> {
        if let Some(raw) = args.get("DYNO_PORT") {
            return raw
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(Some)
                .ok_or_else(|| CniError::Env(format!("CNI_ARGS DYNO_PORT={raw} is not a port")));
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
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/dyno-cni/dyno"));
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
    }
}
