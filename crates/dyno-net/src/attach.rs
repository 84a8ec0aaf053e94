//! A dyno-style interface in a namespace somebody else owns (a CNI runtime's container): the
//! same addressing as [`crate::dyno::setup`] — a veth pair made in one request with the inside
//! end born in the namespace, a `/32`, the link-local gateway, permanent neighbours both ways —
//! but the namespace is only used, never created, bound or deleted, and the inside interface
//! and the host end are named by the caller.
//!
//! The host route is still the host-wide lease (see `dyno::claim_address`): an address another
//! instance routes fails with `AddressTaken` before anything is made.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

use crate::dyno::{self, prepare_inside, DynoSpec, Host, NetError};
use crate::names::{self, DynoName, HOST_END_MAC};
use crate::netlink::route::{self, Rtnl, VethEnd};
use crate::netlink::{NetlinkError, Object};
use crate::ns::Netns;

/// What to attach.
#[derive(Debug, Clone)]
pub struct AttachSpec {
    /// The host end's name (`dy…`, so the firewall's `dy*` rules apply to it).
    pub host_link: String,
    /// The interface inside the namespace (`CNI_IFNAME`).
    pub ifname: String,
    pub ip: Ipv4Addr,
    /// Source of the host's connections to the interface (the platform's [`GATEWAY`] on `lo`).
    pub source: Option<Ipv4Addr>,
}

/// What was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub host_ifindex: u32,
    /// The inside interface's index (2 when it is the namespace's first after `lo`).
    pub ifindex: u32,
    pub mac: [u8; 6],
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("interface {ifname} already exists in the namespace")]
    IfnameExists { ifname: String },
    #[error(transparent)]
    Net(#[from] NetError),
}

impl From<NetlinkError> for AttachError {
    fn from(e: NetlinkError) -> Self {
        AttachError::Net(e.into())
    }
}

impl From<crate::ns::NsError> for AttachError {
    fn from(e: crate::ns::NsError) -> Self {
        AttachError::Net(e.into())
    }
}

/// Attaches `spec` to `netns`. On failure nothing of it is left (the address claim included).
/// It enters `netns` on the calling thread for a moment: call it from a thread of your own, not
/// from an async runtime's (see [`Netns::run_on_this_thread`]).
pub fn attach(host: &mut Host, netns: &Netns, spec: &AttachSpec) -> Result<Attached, AttachError> {
    // An rtnetlink socket inside (it stays bound there), `lo` up and the sysctl a dyno has.
    // On this thread: attach is for one-shot callers (the CNI plugin), see `run_on_this_thread`.
    let mut inside: Rtnl = netns.run_on_this_thread(prepare_inside)??;
    let ifname = spec.ifname.clone();
    if inside
        .request(
            route::get_link_by_name(&ifname),
            0,
            Object::new("link", &ifname),
        )
        .is_ok()
    {
        return Err(AttachError::IfnameExists { ifname });
    }
    // The lease claim reuses the dyno setup's (it only reads the address).
    let claim = DynoSpec::new(placeholder_name(), spec.ip);
    dyno::claim_address(host, &claim)?;
    let made = build(host, netns, &mut inside, spec);
    if made.is_err() {
        let _ = detach(host, &spec.host_link, Some(spec.ip));
    }
    made
}

/// `DynoSpec` wants a name; the claim does not use it.
fn placeholder_name() -> DynoName {
    DynoName::new("cni").expect("a valid constant name")
}

fn build(
    host: &mut Host,
    netns: &Netns,
    inside: &mut Rtnl,
    spec: &AttachSpec,
) -> Result<Attached, AttachError> {
    let mac = names::dyno_mac(spec.ip);
    let link = spec.host_link.as_str();
    let mut batch = host.rtnl().batch();
    let requests = [
        (
            route::new_veth_pair(
                &VethEnd {
                    name: link,
                    mac: HOST_END_MAC,
                    index: 0,
                },
                &VethEnd {
                    name: &spec.ifname,
                    mac,
                    index: 0,
                },
                std::os::fd::AsRawFd::as_raw_fd(netns),
            ),
            NLM_F_CREATE | NLM_F_EXCL,
            Object::new("veth", link),
        ),
        (
            route::set_link_ipv6_addrgen_none(link),
            0,
            Object::new("link", link),
        ),
        (
            route::set_link_up_by_name(link),
            0,
            Object::new("link", link),
        ),
        (route::get_link_by_name(link), 0, Object::new("link", link)),
    ];
    for (message, flags, object) in requests {
        host.rtnl().push(&mut batch, message, flags, object);
    }
    let replies = host.rtnl().execute(batch)?.check()?;
    let host_ifindex = index_in(replies.get(3), link)?;

    // The inside index is the kernel's choice: ask for it (one round trip) rather than guess.
    let ifname = spec.ifname.as_str();
    let answer = inside.request(
        route::get_link_by_name(ifname),
        0,
        Object::new("link", ifname),
    )?;
    let ifindex = index_in(Some(&answer), ifname)?;
    let mut batch = inside.batch();
    let requests = dyno::inside_requests(ifindex, ifname, spec.ip);
    for (message, flags, object) in requests {
        inside.push(&mut batch, message, flags, object);
    }
    inside.execute(batch)?.check()?;

    let to_inside = match spec.source {
        Some(source) => route::add_route_from(spec.ip, 32, host_ifindex, source),
        None => route::add_route(spec.ip, 32, host_ifindex, None),
    };
    let mut batch = host.rtnl().batch();
    // Replaces the claim with the route out of the link.
    host.rtnl().push(
        &mut batch,
        to_inside,
        NLM_F_CREATE | NLM_F_REPLACE,
        Object::new("route", format!("{}/32 dev {link}", spec.ip)),
    );
    host.rtnl().push(
        &mut batch,
        route::add_permanent_neighbour(host_ifindex, spec.ip, mac),
        NLM_F_CREATE | NLM_F_REPLACE,
        Object::new("neighbour", format!("{} on {link}", spec.ip)),
    );
    host.rtnl().execute(batch)?.check()?;
    Ok(Attached {
        host_ifindex,
        ifindex,
        mac,
    })
}

fn index_in(
    answer: Option<&Vec<netlink_packet_route::RouteNetlinkMessage>>,
    name: &str,
) -> Result<u32, NetlinkError> {
    answer
        .and_then(|r| r.iter().find_map(route::link_index_and_name))
        .map(|(index, _)| index)
        .ok_or_else(|| NetlinkError::Malformed {
            object: Object::new("link", name),
            reason: "no link in the answer".into(),
        })
}

/// Removes what [`attach`] made: the host route (only one out of our link, or the claim) and
/// the host end (and with it the inside end). Already gone is success; every error is returned.
pub fn detach(host: &mut Host, host_link: &str, ip: Option<Ipv4Addr>) -> Result<(), Vec<NetError>> {
    let mut errors = Vec::new();
    if let Some(ip) = ip {
        errors.extend(dyno::remove_host_routes(host, host_link, ip));
    }
    // Unlike a dyno's, the namespace is not ours to drop: the link has to go by itself.
    if let Err(e) = dyno::delete_link(host, host_link) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
