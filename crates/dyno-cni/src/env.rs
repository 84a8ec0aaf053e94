//! The runtime's environment variables.

use std::collections::BTreeMap;

use crate::error::CniError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// CNI 1.1.0: remove what the runtime no longer lists (`cni.dev/valid-attachments`).
    Gc,
    /// CNI 1.1.0: whether ADD can be served.
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: BTreeMap<String, String>,
}

/// Reads the environment through `get` (the process's, or a test's map).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let command = match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some("GC") => Command::Gc,
        Some("STATUS") => Command::Status,
        Some(other) => return Err(CniError::Env(format!("CNI_COMMAND {other:?} is unknown"))),
        None => return Err(CniError::Env("CNI_COMMAND is not set".into())),
    };
    if matches!(command, Command::Version | Command::Gc | Command::Status) {
        // Runtimes call VERSION with dummy values (or none); GC and STATUS concern the whole
        // network: nothing else is read.
        return Ok(Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: BTreeMap::new(),
        });
    }
    let required = |name: &str| {
        get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CniError::Env(format!("{name} is not set")))
    };
    let container_id = required("CNI_CONTAINERID")?;
    let ifname = required("CNI_IFNAME")?;
    if ifname.len() > 15 || ifname.contains(['/', ' ', ':']) || ifname == "." || ifname == ".." {
        return Err(CniError::Env(format!(
            "CNI_IFNAME {ifname:?} is not an interface name"
        )));
    }
    // DEL may come after the namespace is gone, without one.
    let netns = match command {
        Command::Del => get("CNI_NETNS").filter(|v| !v.is_empty()),
        _ => Some(required("CNI_NETNS")?),
    };
    let args = parse_args(get("CNI_ARGS").as_deref().unwrap_or(""))?;
    Ok(Env {
        command,
        container_id,
        netns,
        ifname,
        args,
    })
}

fn parse_args(raw: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut args = BTreeMap::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CniError::Env(format!("CNI_ARGS entry {pair:?} is not K=V")))?;
        args.insert(key.to_string(), value.to_string());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|k| map.get(k).cloned())
    }

    #[test]
    fn version_needs_nothing_else() {
        let e = env(&[("CNI_COMMAND", "VERSION"), ("CNI_NETNS", "dummy")]).unwrap();
        assert_eq!(e.command, Command::Version);
    }

    #[test]
    fn add_needs_its_variables() {
        let err = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("CNI_CONTAINERID"));
        assert_eq!(env(&[]).unwrap_err().code(), 4);
        assert_eq!(env(&[("CNI_COMMAND", "NOPE")]).unwrap_err().code(), 4);
    }

    #[test]
    fn del_without_netns_and_args_parsed() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;DYNO_PORT=5000"),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
        assert_eq!(e.args.get("DYNO_PORT").map(String::as_str), Some("5000"));
        let bad = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "junk"),
        ]);
        assert_eq!(bad.unwrap_err().code(), 4);
    }
}
