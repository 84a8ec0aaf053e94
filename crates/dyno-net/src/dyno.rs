//! One dyno's network: set up in one call, torn down in one call.
//!
//! Setup follows validate → set up → roll back: every step that can fail comes after the checks,
//! and a failure anywhere removes what was made before returning the error. Teardown removes
//! everything, treats "already gone" as success, and keeps going past errors, returning them all.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

use crate::names::{self, DynoName, DYNO_IFINDEX, DYNO_IFNAME, GATEWAY, HOST_END_MAC};

/// `lo` is the first link of every network namespace.
const LO_IFINDEX: u32 = 1;
use crate::netlink::route::{self, Rtnl, VethEnd, NETLINK_ROUTE};
use crate::netlink::{NetlinkError, Object};
use crate::ns::{self, Netns, NsError};

/// The host's side of every dyno: an rtnetlink socket bound to the host's network namespace
/// (the real host, or a test's stand-in namespace).
pub struct Host {
    netns: Netns,
    rtnl: Rtnl,
}

impl Host {
    /// The network namespace this process runs in.
    pub fn current() -> Result<Host, NetError> {
        let netns = Netns::current()?;
        let rtnl = Rtnl::open(NETLINK_ROUTE)?;
        Ok(Host { netns, rtnl })
    }

    /// Another namespace standing in for the host (tests, benchmarks).
    pub fn in_netns(netns: &Netns) -> Result<Host, NetError> {
        let rtnl = netns.run(|| Rtnl::open(NETLINK_ROUTE))??;
        Ok(Host {
            netns: netns.try_clone()?,
            rtnl,
        })
    }

    pub(crate) fn from_parts(netns: Netns, rtnl: Rtnl) -> Host {
        Host { netns, rtnl }
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn rtnl(&mut self) -> &mut Rtnl {
        &mut self.rtnl
    }

    /// Routing between dynos' links and the uplink: once per host.
    pub fn enable_forwarding(&self) -> Result<(), NetError> {
        self.netns
            .run(|| ns::write_sysctl("net/ipv4/ip_forward", "1"))??;
        Ok(())
    }

    /// Puts the platform's address ([`GATEWAY`], link scope) on the host's `lo`: the source of
    /// the router's connections to dynos (see [`DynoSpec::source`]). Already there (another
    /// daemon's, or `dyno up`'s) is fine.
    pub fn add_platform_address(&mut self) -> Result<(), NetError> {
        match self.rtnl.request(
            route::add_link_scope_address(LO_IFINDEX, GATEWAY),
            NLM_F_CREATE | NLM_F_EXCL,
            Object::new("address", format!("{GATEWAY}/32 on lo")),
        ) {
            Err(e) if !e.is_exists() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes [`Host::add_platform_address`]'s address; already gone is fine. Only when no
    /// dyno of anyone is left (the caller's check, as for the firewall).
    pub fn remove_platform_address(&mut self) -> Result<(), NetError> {
        match self.rtnl.request(
            route::del_address(LO_IFINDEX, GATEWAY),
            0,
            Object::new("address", format!("{GATEWAY}/32 on lo")),
        ) {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Every `/32` route of the host's main table: dynos' routes (and claims) among them.
    pub fn host_routes(&mut self) -> Result<Vec<route::HostRoute>, NetError> {
        let routes = self
            .rtnl
            .dump(route::dump_ipv4_routes, Object::new("routes", ""))?;
        Ok(routes.iter().filter_map(route::host_route_of).collect())
    }

    /// Names and indexes of the host's links whose name starts with `prefix`.
    pub fn links_with_prefix(&mut self, prefix: &str) -> Result<Vec<(u32, String)>, NetError> {
        let links = self
            .rtnl
            .dump(route::dump_links, Object::new("links", ""))?;
        Ok(links
            .iter()
            .filter_map(route::link_index_and_name)
            .filter(|(_, name)| name.starts_with(prefix))
            .collect())
    }
}

/// Where the namespaces are bound (default `/run/netns`, so `ip netns exec dyno-<name>` works).
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl Default for RunDir {
    fn default() -> Self {
        RunDir(PathBuf::from("/run/netns"))
    }
}

impl RunDir {
    pub fn netns_path(&self, name: &DynoName) -> PathBuf {
        self.0.join(name.netns_file())
    }

    pub fn ensure(&self) -> Result<(), NetError> {
        std::fs::create_dir_all(&self.0).map_err(|source| NsError {
            context: format!("create run dir {}", self.0.display()),
            source,
        })?;
        Ok(())
    }

    /// The dyno names that have a namespace file here.
    pub fn names(&self) -> Result<Vec<DynoName>, NetError> {
        let entries = match std::fs::read_dir(&self.0) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NsError {
                    context: format!("read run dir {}", self.0.display()),
                    source,
                }
                .into())
            }
        };
        let mut names: Vec<DynoName> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| DynoName::from_netns_file(e.file_name().to_str()?))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Ns(#[from] NsError),
    #[error("dyno {name} already has a network (namespace {})", .path.display())]
    InUse { name: DynoName, path: PathBuf },
    #[error("address {ip} is already routed on this host (another dyno instance's dyno has it)")]
    AddressTaken { ip: Ipv4Addr },
    #[error("{0}")]
    Injected(&'static str),
}

/// Which step of a setup to fail on purpose (tests of the rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    AfterNetns,
    AfterVeth,
    AfterAddresses,
}

/// A new namespace, ready for a dyno: its own rtnetlink socket opened inside, sysctls written,
/// `lo` up. Nothing in it depends on which dyno will get it, so it can be made ahead of time
/// (see [`crate::ns::Spares`]).
pub struct PreparedNetns {
    pub netns: Netns,
    rtnl: Rtnl,
}

/// Runs inside a brand-new namespace: everything that does not depend on the dyno.
pub fn prepare_inside() -> Result<Rtnl, NetError> {
    // Apps run unprivileged yet may bind any port, 80 included. (A sysctl path lookup costs
    // time proportional to the number of namespaces on the host: every namespace has its own
    // `net/ipv4` entry in the same dentry hash chain. One is unavoidable; we write no other.)
    ns::write_sysctl("net/ipv4/ip_unprivileged_port_start", "0")?;
    let mut rtnl = Rtnl::open(NETLINK_ROUTE)?;
    rtnl.request(route::set_link_up(1), 0, Object::new("link", "lo"))?;
    Ok(rtnl)
}

impl PreparedNetns {
    /// Made now, on the namespace thread.
    pub fn create() -> Result<PreparedNetns, NetError> {
        let (netns, rtnl) = Netns::create(prepare_inside)?;
        Ok(PreparedNetns { netns, rtnl: rtnl? })
    }

    /// Taken from a pool of spares made in the background.
    pub fn take(spares: &ns::Spares<Result<Rtnl, NetError>>) -> Result<PreparedNetns, NetError> {
        let (netns, rtnl) = spares.take()?;
        Ok(PreparedNetns { netns, rtnl: rtnl? })
    }
}

/// A pool of prepared namespaces, `target` kept ready.
pub fn spares(target: usize) -> ns::Spares<Result<Rtnl, NetError>> {
    ns::Spares::new(target, prepare_inside)
}

/// What to build.
#[derive(Debug, Clone)]
pub struct DynoSpec {
    pub name: DynoName,
    pub ip: Ipv4Addr,
    /// The host end's interface index; `None` lets the kernel choose, at the price of a lookup
    /// afterwards (whose answer the kernel builds by scanning every namespace the host knows:
    /// it grows with the number of dynos).
    pub host_ifindex: Option<u32>,
    /// The address the host's connections to the dyno come from (the router's): the platform's
    /// own [`GATEWAY`] on the host's `lo` ([`Host::add_platform_address`]), so that nothing
    /// depends on the host having an address of its own. `None`: the kernel picks one.
    pub source: Option<Ipv4Addr>,
    pub fail_at: Option<FailPoint>,
}

impl DynoSpec {
    /// The failure a test injected at `point`, if any.
    fn fail(&self, point: FailPoint) -> Result<(), NetError> {
        if self.fail_at == Some(point) {
            Err(NetError::Injected("failure injected by the test"))
        } else {
            Ok(())
        }
    }

    pub fn new(name: DynoName, ip: Ipv4Addr) -> DynoSpec {
        DynoSpec {
            name,
            ip,
            host_ifindex: None,
            source: None,
            fail_at: None,
        }
    }
}

/// A live dyno network.
#[derive(Debug)]
pub struct DynoNet {
    pub name: DynoName,
    pub ip: Ipv4Addr,
    pub host_link: String,
    pub host_ifindex: u32,
    pub netns_path: PathBuf,
    pub netns: Netns,
}

/// What makes a dyno's end usable inside its namespace, in order (the daemon's dynos and the
/// CNI plugin's attachments alike): IPv4 only (lo keeps ::1): no link-local address, so no
/// duplicate address detection or router solicitation (set while the link is still down);
/// up; its /32; the gateway as a permanent neighbour (no ARP); the route to the gateway and
/// the default route through it.
pub(crate) fn inside_requests(
    ifindex: u32,
    ifname: &str,
    ip: Ipv4Addr,
) -> [(netlink_packet_route::RouteNetlinkMessage, u16, Object); 6] {
    [
        (
            route::set_link_ipv6_addrgen_none(ifname),
            0,
            Object::new("link", ifname),
        ),
        (route::set_link_up(ifindex), 0, Object::new("link", ifname)),
        (
            route::add_address(ifindex, ip, 32),
            NLM_F_CREATE | NLM_F_EXCL,
            Object::new("address", format!("{ip}/32 on {ifname}")),
        ),
        (
            route::add_permanent_neighbour(ifindex, GATEWAY, HOST_END_MAC),
            NLM_F_CREATE | NLM_F_REPLACE,
            Object::new("neighbour", format!("{GATEWAY} on {ifname}")),
        ),
        (
            route::add_route(GATEWAY, 32, ifindex, None),
            NLM_F_CREATE | NLM_F_EXCL,
            Object::new("route", format!("{GATEWAY}/32 dev {ifname}")),
        ),
        (
            route::add_route(Ipv4Addr::UNSPECIFIED, 0, ifindex, Some(GATEWAY)),
            NLM_F_CREATE | NLM_F_EXCL,
            Object::new("route", format!("default via {GATEWAY}")),
        ),
    ]
}

/// Sets up the dyno's network: namespace (bound in `run_dir`), veth pair with `eth0` born inside,
/// addresses, routes, permanent neighbours both ways, sysctls. On failure nothing is left.
pub fn setup(
    host: &mut Host,
    run_dir: &RunDir,
    prepared: PreparedNetns,
    spec: &DynoSpec,
) -> Result<DynoNet, NetError> {
    begin(host, run_dir, prepared, spec.clone())?.complete(host, run_dir)
}

/// The first half of [`setup`]: the dyno's address claimed and its namespace bound at its
/// path in `run_dir`, enough for a sandbox to start in it; [`PendingNet::complete`] makes its
/// links. Until then the namespace has only `lo`: nothing reaches it and it reaches nothing.
/// On failure nothing is left.
pub fn begin(
    host: &mut Host,
    run_dir: &RunDir,
    prepared: PreparedNetns,
    spec: DynoSpec,
) -> Result<PendingNet, NetError> {
    let netns_path = run_dir.netns_path(&spec.name);
    if netns_path.exists() {
        return Err(NetError::InUse {
            name: spec.name.clone(),
            path: netns_path,
        });
    }
    claim_address(host, &spec)?;
    let PreparedNetns { netns, rtnl } = prepared;
    let bound = netns
        .bind(&netns_path)
        .map_err(NetError::from)
        .and_then(|()| spec.fail(FailPoint::AfterNetns));
    if let Err(e) = bound {
        // Errors of the rollback itself are secondary to the one we report.
        let _ = teardown(host, run_dir, &spec.name, Some(spec.ip));
        return Err(e);
    }
    Ok(PendingNet {
        spec,
        netns_path,
        netns,
        inside: rtnl,
    })
}

/// A dyno's network between [`begin`] and [`PendingNet::complete`]: its address claimed, its
/// namespace bound. Dropping it leaves both: [`teardown`] (or `Network::down`) removes them.
pub struct PendingNet {
    pub spec: DynoSpec,
    pub netns_path: PathBuf,
    pub netns: Netns,
    /// An rtnetlink socket inside the namespace, made when the namespace was.
    inside: Rtnl,
}

impl PendingNet {
    /// Makes the links, addresses and routes. On failure nothing of the dyno is left (see
    /// [`PendingNet::links`] to keep the namespace and try again).
    pub fn complete(mut self, host: &mut Host, run_dir: &RunDir) -> Result<DynoNet, NetError> {
        let made = self.links(host);
        if made.is_err() {
            // Roll back: the namespace (and with it eth0 and the host end) and the host route
            // (the claim, or the route that replaced it). Errors of the rollback itself are
            // secondary to the one we report.
            let _ = teardown(host, run_dir, &self.spec.name, Some(self.spec.ip));
        }
        made
    }

    /// [`PendingNet::complete`] without the rollback: on failure the namespace and the claim
    /// stay, so that the caller may try again (with another `host_ifindex` after `EBUSY`) or
    /// tear down. A failed attempt leaves no link: the veth pair is made whole or not at all,
    /// and nothing else of the dyno's exists before it.
    pub fn links(&mut self, host: &mut Host) -> Result<DynoNet, NetError> {
        let made = build(
            host,
            &self.netns_path,
            &self.netns,
            &mut self.inside,
            &self.spec,
        );
        if let Err(NetError::Netlink(e)) = &made {
            let host_link = self.spec.name.host_link();
            if e.is_exists() && e.object() == Some(&Object::new("veth", &host_link)) {
                // A host link of that name but no namespace: the kernel is still destroying
                // an earlier dyno of this name, or a crash left it. Remove it (slow, but
                // rare) and retry.
                delete_link(host, &host_link)?;
                return build(
                    host,
                    &self.netns_path,
                    &self.netns,
                    &mut self.inside,
                    &self.spec,
                );
            }
        }
        made
    }
}

/// The host-wide lease on the dyno's address: its host route, added before anything else of
/// the dyno exists. Every instance on the host (daemons, `dyno up`s, the CNI plugin) routes
/// its dynos in the same routing table, and the kernel adds a route only if none to that
/// address exists (`NLM_F_EXCL`): exactly one claimant gets each address, whatever pools and
/// stores the instances keep. The claim is a blackhole route (nothing reaches a half-made
/// dyno); [`PendingNet::complete`] replaces it with the route out of the dyno's link, and the route goes with
/// the dyno's teardown. `AddressTaken`: another instance's dyno has it; nothing was made.
pub(crate) fn claim_address(host: &mut Host, spec: &DynoSpec) -> Result<(), NetError> {
    let object = Object::new("route", format!("{}/32 (claim)", spec.ip));
    match host.rtnl.request(
        route::add_claim_route(spec.ip),
        NLM_F_CREATE | NLM_F_EXCL,
        object,
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.is_exists() => Err(NetError::AddressTaken { ip: spec.ip }),
        Err(e) => Err(e.into()),
    }
}

/// The index of the host link `name`, if it exists.
fn host_link_index(host: &mut Host, name: &str) -> Option<u32> {
    let answer = host
        .rtnl
        .request(route::get_link_by_name(name), 0, Object::new("link", name))
        .ok()?;
    answer
        .iter()
        .find_map(route::link_index_and_name)
        .map(|(index, _)| index)
}

/// Removes the host's routes to `ip` that are an attachment's own: the one out of `host_link`
/// (when that link still exists) and the claim (a setup that failed or crashed before the
/// route replaced it). Once the link is gone, so is its route, and the address may be another
/// instance's by now: that route is not ours to delete. "Already gone" is no error.
pub(crate) fn remove_host_routes(host: &mut Host, host_link: &str, ip: Ipv4Addr) -> Vec<NetError> {
    let index = host_link_index(host, host_link);
    let mut batch = host.rtnl.batch();
    if let Some(index) = index {
        let object = Object::new("route", format!("{ip}/32 dev {host_link}"));
        host.rtnl
            .push(&mut batch, route::del_route_via(ip, 32, index), 0, object);
    }
    let object = Object::new("route", format!("{ip}/32 (claim)"));
    host.rtnl
        .push(&mut batch, route::del_claim_route(ip), 0, object);
    match host.rtnl.execute(batch) {
        Ok(replies) => replies
            .errors()
            .into_iter()
            .filter(|e| !e.is_not_found())
            .map(NetError::from)
            .collect(),
        Err(e) => vec![e.into()],
    }
}

/// The host route to the dyno, as errors name it.
fn host_route(spec: &DynoSpec) -> Object {
    Object::new(
        "route",
        format!("{}/32 dev {}", spec.ip, spec.name.host_link()),
    )
}

pub(crate) fn delete_link(host: &mut Host, link: &str) -> Result<(), NetError> {
    match host
        .rtnl
        .request(route::del_link_by_name(link), 0, Object::new("link", link))
    {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// The links of a bound namespace (see [`PendingNet::links`]).
fn build(
    host: &mut Host,
    netns_path: &Path,
    netns: &Netns,
    inside: &mut Rtnl,
    spec: &DynoSpec,
) -> Result<DynoNet, NetError> {
    let host_link = spec.name.host_link();
    let mut batch = host.rtnl.batch();
    host.rtnl.push(
        &mut batch,
        route::new_veth_pair(
            &VethEnd {
                name: &host_link,
                mac: HOST_END_MAC,
                index: spec.host_ifindex.unwrap_or(0),
            },
            &VethEnd {
                name: DYNO_IFNAME,
                mac: names::dyno_mac(spec.ip),
                index: DYNO_IFINDEX,
            },
            std::os::fd::AsRawFd::as_raw_fd(netns),
        ),
        NLM_F_CREATE | NLM_F_EXCL,
        Object::new("veth", &host_link),
    );
    host.rtnl.push(
        &mut batch,
        route::set_link_ipv6_addrgen_none(&host_link),
        0,
        Object::new("link", &host_link),
    );
    host.rtnl.push(
        &mut batch,
        route::set_link_up_by_name(&host_link),
        0,
        Object::new("link", &host_link),
    );
    if spec.host_ifindex.is_none() {
        host.rtnl.push(
            &mut batch,
            route::get_link_by_name(&host_link),
            0,
            Object::new("link", &host_link),
        );
    }
    // The kernel handles a batch inside sendmsg: once `send` returns, eth0 exists (or failed),
    // so the dyno's own batch can go out before we read the host's answers.
    host.rtnl.send(&batch)?;

    let mut dyno_batch = inside.batch();
    let dyno_requests = inside_requests(DYNO_IFINDEX, DYNO_IFNAME, spec.ip);
    for (message, flags, object) in dyno_requests {
        inside.push(&mut dyno_batch, message, flags, object);
    }
    inside.send(&dyno_batch)?;

    let replies = host.rtnl.collect(batch)?.check()?;
    let host_ifindex = match spec.host_ifindex {
        Some(index) => index,
        None => replies
            .get(3)
            .and_then(|r| r.first())
            .and_then(route::link_index_and_name)
            .map(|(index, _)| index)
            .ok_or_else(|| NetlinkError::Malformed {
                object: Object::new("link", &host_link),
                reason: "no link in the answer".into(),
            })?,
    };
    inside.collect(dyno_batch)?.check()?;
    spec.fail(FailPoint::AfterVeth)?;

    let mut batch = host.rtnl.batch();
    let to_dyno = match spec.source {
        Some(source) => route::add_route_from(spec.ip, 32, host_ifindex, source),
        None => route::add_route(spec.ip, 32, host_ifindex, None),
    };
    // Replaces this setup's claim (see [`claim_address`]).
    host.rtnl.push(
        &mut batch,
        to_dyno,
        NLM_F_CREATE | NLM_F_REPLACE,
        host_route(spec),
    );
    host.rtnl.push(
        &mut batch,
        route::add_permanent_neighbour(host_ifindex, spec.ip, names::dyno_mac(spec.ip)),
        NLM_F_CREATE | NLM_F_REPLACE,
        Object::new("neighbour", format!("{} on {host_link}", spec.ip)),
    );
    host.rtnl.execute(batch)?.check()?;
    spec.fail(FailPoint::AfterAddresses)?;

    Ok(DynoNet {
        name: spec.name.clone(),
        ip: spec.ip,
        host_link,
        host_ifindex,
        netns_path: netns_path.to_path_buf(),
        netns: netns.try_clone()?,
    })
}

/// Removes the dyno's network. The host route to `ip` goes first: from then on the dyno can
/// neither be reached nor send (the anti-spoofing rule drops a source without a route back
/// through its link), even if a stray process still holds its namespace. Then the namespace's
/// binding goes; the kernel destroys the namespace, `eth0` and the host end once nothing uses it
/// (asynchronously: deleting the link ourselves would cost ~30 ms of RCU waits). "Already gone"
/// is success; every error is collected.
pub fn teardown(
    host: &mut Host,
    run_dir: &RunDir,
    name: &DynoName,
    ip: Option<Ipv4Addr>,
) -> Result<(), Vec<NetError>> {
    let mut errors = Vec::new();
    if let Some(ip) = ip {
        errors.extend(remove_host_routes(host, &name.host_link(), ip));
    }
    if let Err(e) = ns::unbind(&run_dir.netns_path(name)) {
        errors.push(e.into());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
