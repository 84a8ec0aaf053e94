//! Address management: one `/32` per dyno from a pool, handed out round-robin.
//!
//! Round-robin (the next free address after the last one given) lets a freed address rest as
//! long as possible before it is reused, so conntrack entries and TIME_WAIT sockets that still
//! name it die first. The state lives behind [`LeaseStore`]: in memory, in a JSON file (the CLI
//! and the CNI plugin), later in SQLite (the manager).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network in CIDR notation, e.g. `10.213.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Net, IpamError> {
        if prefix_len > 32 {
            return Err(IpamError::BadPool(format!(
                "{addr}/{prefix_len}: prefix over 32"
            )));
        }
        let network = Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix_len));
        if network != addr {
            return Err(IpamError::BadPool(format!(
                "{addr}/{prefix_len} has host bits set; did you mean {network}/{prefix_len}?"
            )));
        }
        Ok(Ipv4Net {
            network,
            prefix_len,
        })
    }

    fn mask_of(prefix_len: u8) -> u32 {
        if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - prefix_len)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(Self::mask_of(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix_len) == u32::from(self.network)
    }

    /// The addresses dynos may get: all but the network and broadcast addresses (some software
    /// still treats those specially, even on point-to-point links).
    fn usable(&self) -> (u32, u32) {
        let first = u32::from(self.network);
        let last = first | !Self::mask_of(self.prefix_len);
        if self.prefix_len >= 31 {
            (first, last)
        } else {
            (first + 1, last - 1)
        }
    }

    pub fn capacity(&self) -> u64 {
        let (first, last) = self.usable();
        u64::from(last - first) + 1
    }
}

impl Default for Ipv4Net {
    fn default() -> Self {
        Ipv4Net {
            network: Ipv4Addr::new(10, 213, 0, 0),
            prefix_len: 16,
        }
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::BadPool(format!("{s:?} is not an IPv4 network like 10.213.0.0/16"));
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, len)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = IpamError;
    fn try_from(s: String) -> Result<Self, IpamError> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid address pool: {0}")]
    BadPool(String),
    #[error("address pool {pool} is exhausted: all {capacity} addresses are leased; tear down unused dynos or configure a larger pool")]
    Exhausted { pool: Ipv4Net, capacity: u64 },
    #[error("{ip} is outside the address pool {pool}")]
    OutsidePool { ip: Ipv4Addr, pool: Ipv4Net },
    #[error("{ip} is not leased (released twice?)")]
    NotLeased { ip: Ipv4Addr },
    #[error("{owner} already holds {ip}")]
    OwnerHasLease { owner: String, ip: Ipv4Addr },
    #[error("IPAM state {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Everything IPAM remembers: who holds which address, and where round-robin goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    /// The last address handed out; the next search starts after it.
    pub last: Option<Ipv4Addr>,
    /// Address → owner (the dyno's name).
    pub leases: BTreeMap<Ipv4Addr, String>,
}

/// Where leases are kept. Each change is reported as it happens, so a store can write just that
/// change (a row) or the whole state (a file).
pub trait LeaseStore {
    fn load(&mut self) -> Result<Leases, IpamError>;
    fn save(&mut self, leases: &Leases) -> Result<(), IpamError>;
}

/// A boxed store is a store (the manager picks one at run time).
impl<T: LeaseStore + ?Sized> LeaseStore for Box<T> {
    fn load(&mut self) -> Result<Leases, IpamError> {
        (**self).load()
    }
    fn save(&mut self, leases: &Leases) -> Result<(), IpamError> {
        (**self).save(leases)
    }
}

/// Leases that live as long as the process (tests, benchmarks, `dyno up`).
#[derive(Debug, Default)]
pub struct MemoryStore;

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> Result<Leases, IpamError> {
        Ok(Leases::default())
    }
    fn save(&mut self, _: &Leases) -> Result<(), IpamError> {
        Ok(())
    }
}

/// Leases in a JSON file, replaced atomically (write to a temporary file, then rename) so a crash
/// never leaves a torn file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore { path: path.into() }
    }

    fn error(&self, source: io::Error) -> IpamError {
        IpamError::Store {
            path: self.path.clone(),
            source,
        }
    }
}

impl LeaseStore for FileStore {
    fn load(&mut self) -> Result<Leases, IpamError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| self.error(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Leases::default()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn save(&mut self, leases: &Leases) -> Result<(), IpamError> {
        let bytes = serde_json::to_vec_pretty(leases).expect("leases serialise");
        write_atomically(&self.path, &bytes).map_err(|e| self.error(e))
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The allocator.
pub struct Ipam<S: LeaseStore> {
    pool: Ipv4Net,
    store: S,
    leases: Leases,
}

impl<S: LeaseStore> Ipam<S> {
    pub fn new(pool: Ipv4Net, mut store: S) -> Result<Ipam<S>, IpamError> {
        let leases = store.load()?;
        Ok(Ipam {
            pool,
            store,
            leases,
        })
    }

    pub fn pool(&self) -> Ipv4Net {
        self.pool
    }

    pub fn leases(&self) -> &BTreeMap<Ipv4Addr, String> {
        &self.leases.leases
    }

    pub fn lease_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.leases
            .leases
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    /// The next free address after the last one handed out, wrapping around the pool.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        let (first, last) = self.pool.usable();
        let capacity = self.pool.capacity();
        if self.leases.leases.len() as u64 >= capacity {
            return Err(IpamError::Exhausted {
                pool: self.pool,
                capacity,
            });
        }
        let start = match self.leases.last.map(u32::from) {
            Some(prev) if prev >= first && prev < last => prev + 1,
            _ => first,
        };
        let mut candidate = start;
        let ip = loop {
            let ip = Ipv4Addr::from(candidate);
            if !self.leases.leases.contains_key(&ip) {
                break ip;
            }
            candidate = if candidate == last {
                first
            } else {
                candidate + 1
            };
            if candidate == start {
                // Unreachable while the count check above holds; kept as a guard.
                return Err(IpamError::Exhausted {
                    pool: self.pool,
                    capacity,
                });
            }
        };
        let previous_last = self.leases.last.replace(ip);
        self.leases.leases.insert(ip, owner.to_string());
        if let Err(e) = self.store.save(&self.leases) {
            // Nothing changes on a failed save.
            self.leases.leases.remove(&ip);
            self.leases.last = previous_last;
            return Err(e);
        }
        Ok(ip)
    }

    /// Takes a specific address (adopting an existing dyno after a restart).
    pub fn claim(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), IpamError> {
        if !self.pool.contains(ip) {
            return Err(IpamError::OutsidePool {
                ip,
                pool: self.pool,
            });
        }
        match self.leases.leases.get(&ip) {
            Some(o) if o == owner => return Ok(()),
            Some(o) => {
                return Err(IpamError::OwnerHasLease {
                    owner: o.clone(),
                    ip,
                })
            }
            None => {}
        }
        self.leases.leases.insert(ip, owner.to_string());
        if let Err(e) = self.store.save(&self.leases) {
            self.leases.leases.remove(&ip);
            return Err(e);
        }
        Ok(())
    }

    pub fn release(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        if !self.pool.contains(ip) {
            return Err(IpamError::OutsidePool {
                ip,
                pool: self.pool,
            });
        }
        if !self.leases.leases.contains_key(&ip) {
            return Err(IpamError::NotLeased { ip });
        }
        let owner = self.leases.leases.remove(&ip).expect("checked above");
        if let Err(e) = self.store.save(&self.leases) {
            self.leases.leases.insert(ip, owner);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(pool: &str) -> Ipam<MemoryStore> {
        Ipam::new(pool.parse().unwrap(), MemoryStore).unwrap()
    }

    #[test]
    fn parses_and_validates_pools() {
        let net: Ipv4Net = "10.213.0.0/16".parse().unwrap();
        assert_eq!(net, Ipv4Net::default());
        assert_eq!(net.capacity(), 65_534);
        assert!(net.contains("10.213.255.1".parse().unwrap()));
        assert!(!net.contains("10.214.0.1".parse().unwrap()));
        let err = "10.213.0.1/16".parse::<Ipv4Net>().unwrap_err().to_string();
        assert!(err.contains("did you mean 10.213.0.0/16"), "{err}");
        assert!("10.213.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.213.0.0/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn round_robin_rests_freed_addresses() {
        let mut ipam = ipam("10.213.0.0/29"); // .1 ... .6
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(b, Ipv4Addr::new(10, 213, 0, 2));
        ipam.release(a).unwrap();
        // The freed .1 is not reused while later addresses are free.
        let c = ipam.allocate("c").unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 213, 0, 3));
        for owner in ["d", "e", "f"] {
            ipam.allocate(owner).unwrap();
        }
        // Wrapped around: .1 is the only free one.
        assert_eq!(ipam.leases().len(), 5);
        assert_eq!(ipam.allocate("g").unwrap(), a);
        assert_eq!(ipam.lease_of("g"), Some(a));
    }

    #[test]
    fn exhaustion_is_a_clear_error_and_changes_nothing() {
        let mut ipam = ipam("10.213.0.0/30"); // .1 and .2
        ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        let before = ipam.leases().clone();
        let err = ipam.allocate("c").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { capacity: 2, .. }));
        assert!(err.to_string().contains("exhausted"), "{err}");
        assert_eq!(ipam.leases(), &before);
    }

    #[test]
    fn double_release_and_foreign_addresses_are_refused() {
        let mut ipam = ipam("10.213.0.0/24");
        let a = ipam.allocate("a").unwrap();
        ipam.release(a).unwrap();
        assert!(matches!(ipam.release(a), Err(IpamError::NotLeased { .. })));
        let outside = Ipv4Addr::new(192, 0, 2, 1);
        assert!(matches!(
            ipam.release(outside),
            Err(IpamError::OutsidePool { .. })
        ));
        assert!(matches!(
            ipam.claim(outside, "x"),
            Err(IpamError::OutsidePool { .. })
        ));
    }

    #[test]
    fn claim_adopts_and_refuses_conflicts() {
        let mut ipam = ipam("10.213.0.0/24");
        let ip = Ipv4Addr::new(10, 213, 0, 9);
        ipam.claim(ip, "a").unwrap();
        ipam.claim(ip, "a").unwrap();
        assert!(matches!(
            ipam.claim(ip, "b"),
            Err(IpamError::OwnerHasLease { .. })
        ));
    }

    #[test]
    fn file_store_persists_across_instances() {
        let dir = std::env::temp_dir().join(format!("dyno-ipam-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leases.json");
        let pool: Ipv4Net = "10.213.0.0/24".parse().unwrap();
        let a = {
            let mut ipam = Ipam::new(pool, FileStore::new(&path)).unwrap();
            ipam.allocate("a").unwrap()
        };
        let mut ipam = Ipam::new(pool, FileStore::new(&path)).unwrap();
        assert_eq!(ipam.lease_of("a"), Some(a));
        // Round-robin goes on after the last address given by the earlier instance.
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 213, 0, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
