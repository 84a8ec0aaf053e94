//! ADD, DEL and CHECK over `dyno-net`.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use dyno_net::attach::{self, AttachError, AttachSpec};
use dyno_net::dyno::{Host, NetError};
use dyno_net::ipam::{FileStore, Ipam};
use dyno_net::names::GATEWAY;
use dyno_net::network::{NetworkConfig, TAKEN_ATTEMPTS};
use dyno_net::nft::{Firewall, FirewallConfig};
use dyno_net::ns::Netns;
use rustix::io::Errno;
use serde_json::Value;

use crate::config::NetConf;
use crate::env::Env;
use crate::error::CniError;
use crate::result::{self, Made};

/// The host end's name: `dy_` and 12 hex digits of a hash of network, container and interface,
/// so that two attachments never share one and the firewall's `dy*` rules cover it. The `_`
/// is never in a dyno's name, so the daemon's `dyno reset` (which removes `dy<dyno name>`
/// links) leaves the attachments alone.
pub fn host_link(network: &str, container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across builds and releases (DEL may come from a newer binary).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in [network, "\0", container_id, "\0", ifname]
        .iter()
        .flat_map(|s| s.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("dy_{:012x}", hash >> 16)
}

/// The lease's owner in the store.
fn owner(env: &Env) -> String {
    format!("{}/{}", env.container_id, env.ifname)
}

/// Leases of one network, held under an exclusive `flock` on `dataDir/lock` (released when
/// the process ends, so a crashed plugin leaves no stale lock).
struct Leases {
    ipam: Ipam<FileStore>,
    _lock: File,
}

fn lock_leases(conf: &NetConf) -> Result<Leases, CniError> {
    let dir = &conf.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    wait_for_lock(&lock, &path, conf.lock_timeout)?;
    let ipam = Ipam::new(conf.pool, FileStore::new(dir.join("leases.json")))
        .map_err(|e| CniError::Ipam(e.to_string()))?;
    Ok(Leases { ipam, _lock: lock })
}

/// Takes the exclusive lock, waiting at most `timeout`: a plugin stuck while holding it (a
/// hung kernel call) must not hang every ADD and DEL of the host. The runtime is told to try
/// again (11). A wait that times out leaves its thread blocked; the process ends right after.
fn wait_for_lock(lock: &File, path: &Path, timeout: Duration) -> Result<(), CniError> {
    use rustix::fs::{flock, FlockOperation};
    match flock(lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => return Ok(()),
        Err(e) if e == Errno::WOULDBLOCK => {}
        Err(e) => return Err(io_err(path, e.into())),
    }
    let shared = lock.try_clone().map_err(|e| io_err(path, e))?;
    let (done, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(flock(&shared, FlockOperation::LockExclusive));
    });
    match waited.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(io_err(path, e.into())),
        Err(_) => Err(CniError::TryAgain(format!(
            "{} is held by another dyno-cni for over {} s (lockTimeoutSeconds)",
            path.display(),
            timeout.as_secs()
        ))),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> CniError {
    CniError::Io(format!("{}: {e}", path.display()))
}

fn firewall_config(conf: &NetConf) -> FirewallConfig {
    FirewallConfig {
        router_mark: conf.router_mark,
        router_sources: conf
            .router_sources
            .iter()
            .map(|net| (net.network(), net.prefix_len()))
            .collect(),
        ..NetworkConfig {
            pool: conf.pool,
            ..NetworkConfig::default()
        }
        .firewall()
    }
}

fn setup_err(e: impl std::fmt::Display) -> CniError {
    CniError::Setup(e.to_string())
}

/// Forwarding, the platform address and the `inet dyno` table, once per host: a table with
/// this config's ruleset is left as it is; any other (none, an older layout, another
/// `routerMark` or `routerSources`) is replaced. Concurrent installs are serialised by the
/// kernel (see `Firewall::install`), whose merge keeps every other attachment's exposed port.
fn ensure_host(host: &mut Host, config: &FirewallConfig) -> Result<Firewall, CniError> {
    // This thread is in the host's namespace: no need for the namespace thread.
    dyno_net::ns::write_sysctl("net/ipv4/ip_forward", "1").map_err(setup_err)?;
    host.add_platform_address().map_err(setup_err)?;
    let mut firewall = Firewall::open_with(config).map_err(setup_err)?;
    if !firewall.is_current(config).map_err(setup_err)? {
        firewall.install(config, &[]).map_err(setup_err)?;
    }
    Ok(firewall)
}

pub fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let port = conf.port(&env.args)?;
    let netns_path = env.netns.clone().unwrap_or_default();
    let netns = Netns::open(&netns_path)
        .map_err(|e| CniError::Io(format!("CNI_NETNS {netns_path}: {e}")))?;
    let link = host_link(&conf.name, &env.container_id, &env.ifname);
    let mut leases = lock_leases(conf)?;
    let mut host = Host::current().map_err(setup_err)?;
    let owner = owner(env);
    if let Some(ip) = leases.ipam.lease_of(&owner) {
        // An ADD retried without a DEL between (Nomad does): start again from nothing.
        log!("{owner} holds {ip} from an earlier ADD; removing it first");
        remove(
            &mut host,
            &mut ExposedPorts::read(conf)?,
            &mut leases,
            &link,
            ip,
        )?;
    }
    let mut firewall = ensure_host(&mut host, &firewall_config(conf))?;
    let mut attempts = 0;
    let (ip, attached) = loop {
        let ip = leases
            .ipam
            .allocate(&owner)
            .map_err(|e| CniError::Ipam(e.to_string()))?;
        let spec = AttachSpec {
            host_link: link.clone(),
            ifname: env.ifname.clone(),
            ip,
            source: Some(GATEWAY),
        };
        match attach::attach(&mut host, &netns, &spec) {
            Ok(attached) => break (ip, attached),
            Err(e) => {
                let _ = leases.ipam.release(ip);
                attempts += 1;
                match e {
                    // Another instance on the host routes it: the next address.
                    AttachError::Net(NetError::AddressTaken { .. })
                        if attempts < TAKEN_ATTEMPTS => {}
                    AttachError::IfnameExists { ifname } => {
                        return Err(CniError::IfnameExists(ifname))
                    }
                    other => return Err(setup_err(other)),
                }
            }
        }
    };
    if let Some(port) = port {
        if let Err(e) = firewall.expose(ip, port) {
            let _ = attach::detach(&mut host, &link, Some(ip));
            let _ = leases.ipam.release(ip);
            return Err(setup_err(e));
        }
    }
    log!(
        "ADD {owner}: {ip}/32 on {} (host end {link}), port {port:?}",
        env.ifname
    );
    let made = Made {
        host_link: link,
        ifname: env.ifname.clone(),
        mac: attached.mac,
        sandbox: netns_path,
        ip,
    };
    Ok(result::add_result(&conf.cni_version, &made))
}

/// The host's exposed ports, read once for every removal of one call (GC removes many).
struct ExposedPorts {
    /// `None`: no table, so nothing is exposed.
    firewall: Option<Firewall>,
    exposed: Vec<(Ipv4Addr, u16)>,
}

impl ExposedPorts {
    fn read(conf: &NetConf) -> Result<ExposedPorts, CniError> {
        let config = firewall_config(conf);
        let mut firewall = Firewall::open_with(&config).map_err(setup_err)?;
        if !firewall.is_installed(&config).map_err(setup_err)? {
            return Ok(ExposedPorts {
                firewall: None,
                exposed: Vec::new(),
            });
        }
        let exposed = firewall.exposed().map_err(setup_err)?;
        Ok(ExposedPorts {
            firewall: Some(firewall),
            exposed,
        })
    }

    /// Closes every port of `ip`.
    fn close(&mut self, ip: Ipv4Addr) -> Result<(), CniError> {
        let Some(firewall) = self.firewall.as_mut() else {
            return Ok(());
        };
        for (_, port) in self.exposed.iter().filter(|(exposed, _)| *exposed == ip) {
            firewall.unexpose(ip, *port).map_err(setup_err)?;
        }
        self.exposed.retain(|(exposed, _)| *exposed != ip);
        Ok(())
    }
}

/// The exposed port, the link (and with it the container's end), the route and the lease.
fn remove(
    host: &mut Host,
    ports: &mut ExposedPorts,
    leases: &mut Leases,
    link: &str,
    ip: Ipv4Addr,
) -> Result<(), CniError> {
    ports.close(ip)?;
    if let Err(errors) = attach::detach(host, link, Some(ip)) {
        let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return Err(CniError::Setup(texts.join("; ")));
    }
    leases
        .ipam
        .release(ip)
        .map_err(|e| CniError::Ipam(e.to_string()))
}

/// Idempotent: whatever is already gone (namespace, link, lease, port) is fine.
pub fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let link = host_link(&conf.name, &env.container_id, &env.ifname);
    let mut leases = lock_leases(conf)?;
    let mut host = Host::current().map_err(setup_err)?;
    match leases.ipam.lease_of(&owner(env)) {
        Some(ip) => remove(
            &mut host,
            &mut ExposedPorts::read(conf)?,
            &mut leases,
            &link,
            ip,
        )?,
        // No lease: at most a link left by a crash between attach and lease release.
        None => {
            if let Err(errors) = attach::detach(&mut host, &link, None) {
                return Err(setup_err(&errors[0]));
            }
        }
    }
    log!("DEL {}", owner(env));
    Ok(())
}

pub fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::Config("CHECK needs prevResult".into()))?;
    let expected = result::expected(prev, &env.ifname).map_err(CniError::Check)?;
    let netns_path = env.netns.clone().unwrap_or_default();
    let netns = Netns::open(&netns_path)
        .map_err(|e| CniError::Io(format!("CNI_NETNS {netns_path}: {e}")))?;
    let found = dyno_net::inspect::interface(&netns, &env.ifname)
        .map_err(|e| CniError::Check(e.to_string()))?
        .ok_or_else(|| CniError::Check(format!("no interface {} in the container", env.ifname)))?;
    if let Some(mac) = &expected.mac {
        if *mac != result::mac_text(&found.mac) {
            return Err(CniError::Check(format!(
                "{} has MAC {}, not {mac}",
                env.ifname,
                result::mac_text(&found.mac)
            )));
        }
    }
    for address in &expected.addresses {
        if !found.addresses.contains(address) {
            return Err(CniError::Check(format!(
                "{} lacks {}/{}",
                env.ifname, address.0, address.1
            )));
        }
    }
    for gateway in &expected.default_gateways {
        if !found.default_gateways.contains(gateway) {
            return Err(CniError::Check(format!(
                "no default route via {gateway} on {}",
                env.ifname
            )));
        }
    }
    let leases = lock_leases(conf)?;
    let leased = leases.ipam.lease_of(&owner(env));
    if expected.addresses.iter().all(|(ip, _)| Some(*ip) != leased) {
        return Err(CniError::Check(format!("no lease for {}", owner(env))));
    }
    Ok(())
}

/// GC: every attachment whose lease owner the runtime does not list goes (port, link, route,
/// lease), as DEL would remove it. Without a list nothing is removed (the runtime said
/// nothing about what it keeps).
pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Ok(());
    };
    let mut leases = lock_leases(conf)?;
    let mut host = Host::current().map_err(setup_err)?;
    let stale: Vec<(Ipv4Addr, String)> = leases
        .ipam
        .leases()
        .iter()
        .filter(|(_, owner)| !valid.contains(owner))
        .map(|(ip, owner)| (*ip, owner.clone()))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut ports = ExposedPorts::read(conf)?;
    let mut failures = Vec::new();
    for (ip, owner) in stale {
        let Some((container_id, ifname)) = owner.rsplit_once('/') else {
            continue;
        };
        let link = host_link(&conf.name, container_id, ifname);
        match remove(&mut host, &mut ports, &mut leases, &link, ip) {
            Ok(()) => log!("GC {owner}: {ip} released"),
            Err(e) => failures.push(format!("{owner}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::Setup(failures.join("; ")))
    }
}

/// STATUS: ADD can be served when the leases can be taken and the pool has a free address.
/// Leases that cannot be read stop DEL as well (51); a full pool stops only ADD (50).
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let leases = lock_leases(conf).map_err(|e| CniError::Unavailable(format!("leases: {e}")))?;
    let capacity = leases.ipam.pool().capacity();
    if leases.ipam.leases().len() as u64 >= capacity {
        return Err(CniError::NotAvailable(format!(
            "every address of {} is leased",
            conf.pool
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host_link;
    use dyno_net::names::DynoName;

    #[test]
    fn host_links_fit_differ_and_are_not_dyno_names() {
        let a = host_link("dyno", "container-a", "eth0");
        assert_eq!(a.len(), 15, "IFNAMSIZ - 1");
        assert!(a.starts_with("dy_"), "{a}");
        assert_eq!(a, host_link("dyno", "container-a", "eth0"), "stable");
        assert_ne!(a, host_link("dyno", "container-b", "eth0"));
        assert_ne!(a, host_link("dyno", "container-a", "eth1"));
        assert_ne!(a, host_link("other", "container-a", "eth0"));
        // `dyno reset` removes only links named after dynos.
        assert_eq!(DynoName::from_host_link(&a), None);
    }
}
