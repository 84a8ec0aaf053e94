//! The host's dyno networking as one object: IPAM, the firewall, spare namespaces and every
//! dyno's network. The manager (and `dyno net`) use this; tests use it on a [`crate::lab::Lab`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::dyno::{self, DynoNet, DynoSpec, FailPoint, Host, NetError, PreparedNetns, RunDir};
use crate::ipam::{Ipam, IpamError, Ipv4Net, LeaseStore};
use crate::names::{DynoName, NameError, GATEWAY, LINK_PREFIX};
use crate::netlink::route::{self, Rtnl};
use crate::netlink::Object;
use crate::nft::{Firewall, FirewallConfig, FirewallError, DEFAULT_FLOWS_PER_DYNO};
use crate::ns::{self, Netns, Spares};
use crate::reaper::Reaper;

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub run_dir: RunDir,
    pub pool: Ipv4Net,
    /// Namespaces kept ready in the background (0: each setup creates its own). A long-running
    /// daemon wants a few; a one-shot command none.
    pub spares: usize,
    /// Torn-down namespaces are handed to the kernel once teardowns paused this long...
    pub reap_idle: Duration,
    /// ... or when this many wait (see [`crate::reaper`]).
    pub reap_batch: usize,
    /// The most flows each dyno may have in the host's conntrack table at once, see
    /// [`FirewallConfig::flows_per_dyno`].
    pub flows_per_dyno: u32,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            run_dir: RunDir::default(),
            pool: Ipv4Net::default(),
            spares: 8,
            reap_idle: Duration::from_millis(100),
            reap_batch: 256,
            flows_per_dyno: DEFAULT_FLOWS_PER_DYNO,
        }
    }
}

impl NetworkConfig {
    pub fn firewall(&self) -> FirewallConfig {
        FirewallConfig {
            pool: (self.pool.network(), self.pool.prefix_len()),
            link_prefix: LINK_PREFIX.into(),
            flows_per_dyno: self.flows_per_dyno,
            ..FirewallConfig::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(
        "dyno {0} already has a network; choose another name or run `dyno net down {0}` first"
    )]
    InUse(DynoName),
    #[error("{}", join(.0))]
    Teardown(Vec<NetError>),
}

fn join(errors: &[NetError]) -> String {
    let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    texts.join("; ")
}

impl From<crate::ns::NsError> for NetworkError {
    fn from(e: crate::ns::NsError) -> Self {
        NetworkError::Net(e.into())
    }
}

/// A dyno network as `dyno net ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynoEntry {
    pub name: DynoName,
    pub ip: Option<Ipv4Addr>,
    pub port: Option<u16>,
    /// The namespace is bound in the run dir (false: only a lease, or a stale file, is left).
    pub bound: bool,
}

/// A dyno's network between [`Network::begin`] and [`Network::complete`]: its address leased
/// and claimed, its namespace bound at [`PendingDyno::netns_path`].
pub struct PendingDyno {
    net: dyno::PendingNet,
    wanted: Wanted,
}

impl PendingDyno {
    pub fn name(&self) -> &DynoName {
        &self.net.spec.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.net.spec.ip
    }

    /// Where its namespace is bound (what a sandbox joins).
    pub fn netns_path(&self) -> &std::path::Path {
        &self.net.netns_path
    }
}

/// What the caller of [`Network::begin`] asked of the rest.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    port: Option<u16>,
    /// Chosen by the caller (tests); `None`: ours ([`HostIfindexes`]).
    host_ifindex: Option<u32>,
    fail_at: Option<FailPoint>,
}

pub struct Network<S: LeaseStore> {
    host: Host,
    run_dir: RunDir,
    ipam: Ipam<S>,
    firewall: Firewall,
    spares: Option<Spares<Result<Rtnl, NetError>>>,
    firewall_config: FirewallConfig,
    /// Whether this instance installed (or refreshed) the firewall already.
    installed: bool,
    /// ip → exposed port, mirrored from the firewall's set.
    exposed: BTreeMap<Ipv4Addr, u16>,
    host_ifindexes: HostIfindexes,
    reaper: Reaper,
}

/// Interface indexes for the host ends, chosen by us rather than the kernel: no lookup after the
/// creation, and every dyno's host end sits above 65,535 — where software that assumes small
/// indexes breaks, while the dyno itself always sees `eth0` as index 2. Consecutive from a random
/// start, so separate `dyno net` processes rarely meet; a taken index (`EBUSY`) is skipped.
struct HostIfindexes {
    next: u32,
}

/// How many addresses in a row that other instances on the host route already an allocation
/// skips before it gives up.
pub const TAKEN_ATTEMPTS: usize = 256;

/// Above 65,535, below the 2^31 limit of the kernel's index type.
const HOST_IFINDEX_FIRST: u32 = 1 << 16;
const HOST_IFINDEX_SPAN: u32 = (1 << 30) - HOST_IFINDEX_FIRST;
/// How many taken indexes in a row we skip before giving up.
const HOST_IFINDEX_ATTEMPTS: usize = 16;

impl HostIfindexes {
    fn new() -> HostIfindexes {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        HostIfindexes {
            next: HOST_IFINDEX_FIRST + (random % u64::from(HOST_IFINDEX_SPAN)) as u32,
        }
    }

    fn take(&mut self) -> u32 {
        let index = self.next;
        self.next = if self.next + 1 >= HOST_IFINDEX_FIRST + HOST_IFINDEX_SPAN {
            HOST_IFINDEX_FIRST
        } else {
            self.next + 1
        };
        index
    }
}

impl<S: LeaseStore> Network<S> {
    /// Opens the host's dyno networking without changing anything: reads the leases and, if the
    /// firewall is installed, its exposed ports. The first [`Network::up`] (or
    /// [`Network::install`]) enables forwarding and installs the firewall; listing and removing
    /// never do.
    pub fn open(host: Host, config: &NetworkConfig, store: S) -> Result<Network<S>, NetworkError> {
        let firewall_config = config.firewall();
        let mut firewall = host.netns().run({
            let firewall_config = firewall_config.clone();
            move || Firewall::open_with(&firewall_config)
        })??;
        let installed = firewall.is_installed(&firewall_config)?;
        let exposed = if installed {
            firewall.exposed()?
        } else {
            Vec::new()
        };
        let ipam = Ipam::new(config.pool, store)?;
        let spares = (config.spares > 0).then(|| dyno::spares(config.spares));
        Ok(Network {
            host,
            run_dir: config.run_dir.clone(),
            ipam,
            firewall,
            firewall_config,
            installed: false,
            spares,
            exposed: exposed.into_iter().collect(),
            host_ifindexes: HostIfindexes::new(),
            reaper: Reaper::new(config.reap_idle, config.reap_batch),
        })
    }

    /// Makes the host ready for dynos: run dir, IPv4 forwarding, and the firewall, installed
    /// atomically — or refreshed, keeping the ports it exposes. Idempotent; a daemon calls it
    /// when it starts.
    pub fn install(&mut self) -> Result<(), NetworkError> {
        self.run_dir.ensure()?;
        self.host.enable_forwarding()?;
        self.host.add_platform_address()?;
        let exposed: Vec<(Ipv4Addr, u16)> =
            self.exposed.iter().map(|(ip, port)| (*ip, *port)).collect();
        // The set now holds other instances' elements too (see `Firewall::install`).
        let installed = self.firewall.install(&self.firewall_config, &exposed)?;
        self.exposed = installed.into_iter().collect();
        self.installed = true;
        Ok(())
    }

    /// Removes the firewall table; the caller made sure no dyno needs it any more.
    pub fn uninstall(&mut self) -> Result<(), NetworkError> {
        self.firewall.remove(&self.firewall_config)?;
        self.host.remove_platform_address()?;
        self.installed = false;
        Ok(())
    }

    pub fn host(&mut self) -> &mut Host {
        &mut self.host
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.run_dir
    }

    pub fn ipam(&self) -> &Ipam<S> {
        &self.ipam
    }

    /// A network for dyno `name`, with `port` reachable from the router if given.
    pub fn up(&mut self, name: &str, port: Option<u16>) -> Result<DynoNet, NetworkError> {
        self.up_with(name, port, None, None)
    }

    /// [`Network::up`] with the knobs tests need: the host end's interface index, and a step
    /// to fail at.
    pub fn up_with(
        &mut self,
        name: &str,
        port: Option<u16>,
        host_ifindex: Option<u32>,
        fail_at: Option<FailPoint>,
    ) -> Result<DynoNet, NetworkError> {
        let pending = self.begin_leased(name, None, port, host_ifindex, fail_at)?;
        self.complete(pending)
    }

    /// [`Network::up`] at an address the caller leased already (in its own store, in the same
    /// transaction that recorded the dyno).
    pub fn up_at(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        port: Option<u16>,
    ) -> Result<DynoNet, NetworkError> {
        let pending = self.begin_leased(name, Some(ip), port, None, None)?;
        self.complete(pending)
    }

    /// The first half of [`Network::up`] (at `ip` if given, which the caller leased already):
    /// the dyno's address leased and claimed, its namespace bound, so that its sandbox can
    /// start while [`Network::complete`] makes its links (a start's network costs no time of
    /// its own that way). Until then it has only `lo`. A pending network that is not
    /// completed goes with [`Network::down`].
    pub fn begin(
        &mut self,
        name: &str,
        ip: Option<Ipv4Addr>,
        port: Option<u16>,
    ) -> Result<PendingDyno, NetworkError> {
        self.begin_leased(name, ip, port, None, None)
    }

    fn begin_leased(
        &mut self,
        name: &str,
        ip: Option<Ipv4Addr>,
        port: Option<u16>,
        host_ifindex: Option<u32>,
        fail_at: Option<FailPoint>,
    ) -> Result<PendingDyno, NetworkError> {
        let name = DynoName::new(name)?;
        if !self.installed {
            self.install()?;
        }
        if self.ipam.lease_of(name.as_str()).is_some() || self.run_dir.netns_path(&name).exists() {
            return Err(NetworkError::InUse(name));
        }
        let wanted = Wanted {
            port,
            host_ifindex,
            fail_at,
        };
        let Some(ip) = ip else {
            return self.begin_allocated(&name, wanted);
        };
        self.ipam.claim(ip, name.as_str())?;
        let begun = self.begin_at(&name, ip, wanted);
        if begun.is_err() {
            // setup rolled its own part back; the lease is ours to return.
            let _ = self.ipam.release(ip);
        }
        begun
    }

    /// Begun at the next address of our own leases that no other instance on the host has:
    /// one that another instance routes already is skipped (its lease returned; round-robin
    /// goes on after it), up to [`TAKEN_ATTEMPTS`] in a row.
    fn begin_allocated(
        &mut self,
        name: &DynoName,
        wanted: Wanted,
    ) -> Result<PendingDyno, NetworkError> {
        let mut attempts = 0;
        loop {
            let ip = self.ipam.allocate(name.as_str())?;
            let begun = self.begin_at(name, ip, wanted);
            if begun.is_ok() {
                return begun;
            }
            let _ = self.ipam.release(ip);
            attempts += 1;
            match begun {
                Err(NetworkError::Net(NetError::AddressTaken { .. }))
                    if attempts < TAKEN_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    fn begin_at(
        &mut self,
        name: &DynoName,
        ip: Ipv4Addr,
        wanted: Wanted,
    ) -> Result<PendingDyno, NetworkError> {
        let prepared = match &self.spares {
            Some(spares) => PreparedNetns::take(spares)?,
            None => PreparedNetns::create()?,
        };
        let spec = DynoSpec {
            name: name.clone(),
            ip,
            host_ifindex: Some(
                wanted
                    .host_ifindex
                    .unwrap_or_else(|| self.host_ifindexes.take()),
            ),
            source: Some(GATEWAY),
            fail_at: wanted.fail_at,
        };
        let net = dyno::begin(&mut self.host, &self.run_dir, prepared, spec)?;
        Ok(PendingDyno { net, wanted })
    }

    /// The second half of [`Network::up`]: the dyno's links, addresses and routes, and its port
    /// exposed. On failure nothing of the dyno is left, its lease included.
    pub fn complete(&mut self, pending: PendingDyno) -> Result<DynoNet, NetworkError> {
        let PendingDyno { mut net, wanted } = pending;
        let (name, ip) = (net.spec.name.clone(), net.spec.ip);
        let made = self.links(&mut net, wanted).and_then(|made| {
            if let Some(port) = wanted.port {
                self.firewall.expose(ip, port)?;
                self.exposed.insert(ip, port);
            }
            Ok(made)
        });
        if made.is_err() {
            // Errors of the rollback itself are secondary to the one we report.
            let _ = dyno::teardown(&mut self.host, &self.run_dir, &name, Some(ip));
            let _ = self.ipam.release(ip);
        }
        // Its spare is made again while its sandbox is built, not while it was taken.
        self.refill_spares();
        made
    }

    fn refill_spares(&self) {
        if let Some(spares) = &self.spares {
            spares.refill();
        }
    }

    /// The links of a pending dyno; a host end's interface index that is taken (`EBUSY`: a
    /// link of another instance has it) is skipped for the next, unless the caller chose it.
    fn links(
        &mut self,
        net: &mut dyno::PendingNet,
        wanted: Wanted,
    ) -> Result<DynoNet, NetworkError> {
        let mut attempts = 0;
        loop {
            match net.links(&mut self.host) {
                Err(NetError::Netlink(e))
                    if e.errno() == Some(libc::EBUSY)
                        && wanted.host_ifindex.is_none()
                        && attempts < HOST_IFINDEX_ATTEMPTS =>
                {
                    attempts += 1;
                    net.spec.host_ifindex = Some(self.host_ifindexes.take());
                }
                other => return Ok(other?),
            }
        }
    }

    /// Removes dyno `name`'s network, its exposed port and its lease. `Ok(false)`: there was
    /// nothing to remove.
    pub fn down(&mut self, name: &str) -> Result<bool, NetworkError> {
        let name = DynoName::new(name)?;
        let ip = self.ipam.lease_of(name.as_str());
        let bound = self.run_dir.netns_path(&name).exists();
        if ip.is_none() && !bound {
            return Ok(false);
        }
        let mut errors = Vec::new();
        if let Some(ip) = ip {
            if let Some(port) = self.exposed.remove(&ip) {
                if let Err(e) = self.firewall.unexpose(ip, port) {
                    self.exposed.insert(ip, port);
                    return Err(e.into());
                }
            }
        }
        // Our own reference keeps the namespace for the reaper, whatever the caller's handle does.
        let held = Netns::open(self.run_dir.netns_path(&name)).ok();
        if let Err(mut e) = dyno::teardown(&mut self.host, &self.run_dir, &name, ip) {
            errors.append(&mut e);
        }
        if let Some(held) = held {
            self.reaper.hold(held);
        }
        // A network given up between `begin` and `complete` took a spare too.
        self.refill_spares();
        if !errors.is_empty() {
            return Err(NetworkError::Teardown(errors));
        }
        if let Some(ip) = ip {
            self.ipam.release(ip)?;
        }
        Ok(true)
    }

    /// Takes over dyno `name`'s network after a restart of its owner: the address becomes its
    /// lease again (the ports it exposes were read from the firewall at open). From here on
    /// [`Network::down`] removes it like any other.
    pub fn adopt(&mut self, name: &str, ip: Ipv4Addr) -> Result<(), NetworkError> {
        let name = DynoName::new(name)?;
        self.ipam.claim(ip, name.as_str())?;
        Ok(())
    }

    /// Closes the ports exposed for addresses whose dynos are gone (a crash came between the
    /// two): addresses we hold no lease on and that no dyno on the host is routed at. Ports of
    /// other instances' dynos (routed, not ours) stay. Call it after every [`Network::adopt`]
    /// and [`Network::install`] (which reads the set as it is, other instances' ports included).
    pub fn close_unleased_ports(&mut self) -> Vec<NetworkError> {
        let mut errors = Vec::new();
        let routed: std::collections::BTreeSet<Ipv4Addr> = match self.host.host_routes() {
            Ok(routes) => routes.into_iter().map(|r| r.ip).collect(),
            Err(e) => return vec![e.into()],
        };
        let stale: Vec<(Ipv4Addr, u16)> = self
            .exposed
            .iter()
            .filter(|(ip, _)| !self.ipam.leases().contains_key(ip) && !routed.contains(ip))
            .map(|(ip, port)| (*ip, *port))
            .collect();
        for (ip, port) in stale {
            match self.firewall.unexpose(ip, port) {
                Ok(()) => {
                    self.exposed.remove(&ip);
                }
                Err(e) => errors.push(e.into()),
            }
        }
        errors
    }

    /// Every dyno network known by its lease or its namespace.
    pub fn list(&self) -> Result<Vec<DynoEntry>, NetworkError> {
        let mut entries: BTreeMap<DynoName, DynoEntry> = BTreeMap::new();
        for name in self.run_dir.names()? {
            let bound = ns::is_bound(&self.run_dir.netns_path(&name));
            entries.insert(
                name.clone(),
                DynoEntry {
                    name,
                    ip: None,
                    port: None,
                    bound,
                },
            );
        }
        for (ip, owner) in self.ipam.leases() {
            let Ok(name) = DynoName::new(owner) else {
                continue;
            };
            let entry = entries.entry(name.clone()).or_insert(DynoEntry {
                name,
                ip: None,
                port: None,
                bound: false,
            });
            entry.ip = Some(*ip);
            entry.port = self.exposed.get(ip).copied();
        }
        Ok(entries.into_values().collect())
    }
}

/// Removes everything dyno made on this host, whatever state it is in (after a crash, say): every
/// `dyno-*` namespace in `run_dir`, every `dy*` link, and the firewall table. Returns what it
/// removed, and every error it met along the way.
pub fn reset(
    host: &mut Host,
    run_dir: &RunDir,
    firewall: &FirewallConfig,
) -> (ResetReport, Vec<NetworkError>) {
    let mut report = ResetReport::default();
    let mut errors: Vec<NetworkError> = Vec::new();
    match run_dir.names() {
        Ok(names) => {
            for name in names {
                match ns::unbind(&run_dir.netns_path(&name)) {
                    Ok(()) => report.namespaces.push(name),
                    Err(e) => errors.push(e.into()),
                }
            }
        }
        Err(e) => errors.push(e.into()),
    }
    match host.links_with_prefix(LINK_PREFIX) {
        Ok(links) => {
            // Only links named like ours: `dy` + a valid dyno name.
            let ours = links
                .into_iter()
                .filter(|(_, link)| DynoName::from_host_link(link).is_some());
            for (_, link) in ours {
                match host.rtnl().request(
                    route::del_link_by_name(&link),
                    0,
                    Object::new("link", &link),
                ) {
                    Ok(_) => report.links.push(link),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => errors.push(NetError::from(e).into()),
                }
            }
        }
        Err(e) => errors.push(e.into()),
    }
    let firewall_config = firewall.clone();
    match host.netns().run(move || -> Result<bool, FirewallError> {
        let mut fw = Firewall::open_with(&firewall_config)?;
        let installed = fw.is_installed(&firewall_config)?;
        fw.remove(&firewall_config)?;
        Ok(installed)
    }) {
        Ok(Ok(removed)) => report.table = removed,
        Ok(Err(e)) => errors.push(e.into()),
        Err(e) => errors.push(e.into()),
    }
    (report, errors)
}

#[derive(Debug, Default)]
pub struct ResetReport {
    pub namespaces: Vec<DynoName>,
    pub links: Vec<String>,
    pub table: bool,
}
