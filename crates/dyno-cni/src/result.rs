//! ADD results in the shape of the input's version, and what CHECK reads back from them.

use std::net::Ipv4Addr;

use dyno_net::names::GATEWAY;
use serde_json::{json, Value};

/// What an ADD made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub host_link: String,
    pub ifname: String,
    pub mac: [u8; 6],
    pub sandbox: String,
    pub ip: Ipv4Addr,
}

pub fn mac_text(mac: &[u8]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// The result: interface 0 the host end, interface 1 the container's (with its `sandbox`).
/// Versions before 1.0.0 carry `version: "4"` on each address.
pub fn add_result(version: &str, made: &Made) -> Value {
    let mut ip = json!({
        "address": format!("{}/32", made.ip),
        "gateway": GATEWAY.to_string(),
        "interface": 1,
    });
    if version.starts_with("0.") {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            { "name": made.host_link, "mac": mac_text(&dyno_net::names::HOST_END_MAC) },
            { "name": made.ifname, "mac": mac_text(&made.mac), "sandbox": made.sandbox },
        ],
        "ips": [ip],
        "routes": [{ "dst": "0.0.0.0/0", "gw": GATEWAY.to_string() }],
        "dns": {},
    })
}

/// What CHECK expects from a `prevResult`: the container interface named `ifname`, its MAC if
/// given, and its IPv4 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub mac: Option<String>,
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub default_gateways: Vec<Ipv4Addr>,
}

pub fn expected(prev: &Value, ifname: &str) -> Result<Expected, String> {
    let interfaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .ok_or("prevResult has no interfaces")?;
    let index = interfaces
        .iter()
        .position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname) && i.get("sandbox").is_some()
        })
        .ok_or_else(|| format!("prevResult has no container interface {ifname}"))?;
    let mac = interfaces[index]
        .get("mac")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let mut addresses = Vec::new();
    for ip in prev
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if ip.get("interface").and_then(Value::as_u64) != Some(index as u64) {
            continue;
        }
        let text = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or("an ip without address")?;
        let (addr, len) = text.split_once('/').ok_or("an address without a prefix")?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("address {text:?}"))?;
        let len: u8 = len.parse().map_err(|_| format!("address {text:?}"))?;
        addresses.push((addr, len));
    }
    let default_gateways = prev
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("dst").and_then(Value::as_str) == Some("0.0.0.0/0"))
        .filter_map(|r| r.get("gw").and_then(Value::as_str)?.parse().ok())
        .collect();
    Ok(Expected {
        mac,
        addresses,
        default_gateways,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made() -> Made {
        Made {
            host_link: "dyc0123456789ab".into(),
            ifname: "eth0".into(),
            mac: [2, 0xd5, 10, 213, 0, 1],
            sandbox: "/run/netns/x".into(),
            ip: Ipv4Addr::new(10, 213, 0, 1),
        }
    }

    #[test]
    fn shapes_per_version() {
        let new = add_result("1.0.0", &made());
        assert_eq!(new["cniVersion"], "1.0.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["address"], "10.213.0.1/32");
        assert_eq!(new["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(new["interfaces"][1]["mac"], "02:d5:0a:d5:00:01");
        let old = add_result("0.4.0", &made());
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["routes"][0]["gw"], "169.254.1.1");
    }

    #[test]
    fn expected_reads_back_a_result() {
        let e = expected(&add_result("1.0.0", &made()), "eth0").unwrap();
        assert_eq!(e.addresses, vec![(Ipv4Addr::new(10, 213, 0, 1), 32)]);
        assert_eq!(e.default_gateways, vec![GATEWAY]);
        assert!(expected(&add_result("1.0.0", &made()), "eth1").is_err());
    }
}
