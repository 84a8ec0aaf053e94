//! A dyno's network name, and every name and MAC address derived from it.

use std::fmt;
use std::net::Ipv4Addr;

use crate::netlink::route::Mac;

/// Host-side link names are `dy<name>`; the kernel allows 15 bytes (IFNAMSIZ - 1).
pub const LINK_PREFIX: &str = "dy";
/// Namespaces are bound as `dyno-<name>` in the run dir.
pub const NETNS_PREFIX: &str = "dyno-";
pub const MAX_NAME_LEN: usize = 15 - LINK_PREFIX.len();
/// The dyno side of every veth pair.
pub const DYNO_IFNAME: &str = "eth0";
/// `eth0`'s index inside every dyno: the first device after `lo`. We ask for it explicitly, so a
/// host with a huge interface count never leaks into the dyno (Java's `NetworkInterface` fails on
/// indexes above 255).
pub const DYNO_IFINDEX: u32 = 2;
/// Every host end has this MAC: the dyno's gateway is always at the same, well-known address.
pub const HOST_END_MAC: Mac = [0xee; 6];
/// The dyno's gateway: link-local, never routed, the same in every dyno.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A validated dyno network name: 1 to 13 characters of `a-z`, `0-9` and `-`, not starting with
/// `-`. The manager uses monotonic base-36 ids; `dyno net up` takes what the operator types.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DynoName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a dyno name cannot be empty")]
    Empty,
    #[error("dyno name {0:?} is too long: at most {MAX_NAME_LEN} characters (the host link `dy<name>` must fit the kernel's 15)")]
    TooLong(String),
    #[error("dyno name {0:?} may only contain a-z, 0-9 and '-', and must not start with '-'")]
    BadCharacter(String),
}

impl DynoName {
    pub fn new(name: &str) -> Result<DynoName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.to_string()));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !name.chars().all(allowed) || name.starts_with('-') {
            return Err(NameError::BadCharacter(name.to_string()));
        }
        Ok(DynoName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host end of the veth pair: `dy<name>`.
    pub fn host_link(&self) -> String {
        format!("{LINK_PREFIX}{}", self.0)
    }

    /// The namespace's file name in the run dir: `dyno-<name>`.
    pub fn netns_file(&self) -> String {
        format!("{NETNS_PREFIX}{}", self.0)
    }

    /// The name back from a netns file name, if it is one of ours.
    pub fn from_netns_file(file: &str) -> Option<DynoName> {
        DynoName::new(file.strip_prefix(NETNS_PREFIX)?).ok()
    }

    /// The name back from a host link name, if it is one of ours.
    pub fn from_host_link(link: &str) -> Option<DynoName> {
        DynoName::new(link.strip_prefix(LINK_PREFIX)?).ok()
    }
}

impl fmt::Display for DynoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `eth0`'s MAC: locally administered `02:d5:` followed by the dyno's four address bytes, so it
/// is unique on the host and the host's permanent neighbour entry needs no lookup.
pub fn dyno_mac(ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = ip.octets();
    [0x02, 0xd5, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        let n = DynoName::new("web-1").unwrap();
        assert_eq!(n.host_link(), "dyweb-1");
        assert_eq!(n.netns_file(), "dyno-web-1");
        assert_eq!(DynoName::from_netns_file("dyno-web-1"), Some(n.clone()));
        assert_eq!(DynoName::from_host_link("dyweb-1"), Some(n));
        assert_eq!(DynoName::from_netns_file("other"), None);
    }

    #[test]
    fn longest_name_fits_ifnamsiz() {
        let n = DynoName::new(&"a".repeat(MAX_NAME_LEN)).unwrap();
        assert_eq!(n.host_link().len(), 15);
        assert!(matches!(
            DynoName::new(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(DynoName::new(""), Err(NameError::Empty));
        for bad in ["Web", "-a", "a/b", "a b", "a.b", "é"] {
            assert!(
                matches!(DynoName::new(bad), Err(NameError::BadCharacter(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn mac_from_address() {
        assert_eq!(
            dyno_mac(Ipv4Addr::new(10, 213, 0, 7)),
            [0x02, 0xd5, 10, 213, 0, 7]
        );
    }
}
