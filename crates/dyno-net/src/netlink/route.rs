//! Builders for the few rtnetlink messages dyno sends. Each returns the message ready to be pushed
//! into a [`super::Batch`]; none touches a socket.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

pub use netlink_sys::protocols::NETLINK_ROUTE;

pub type Rtnl = super::NetlinkSocket<RouteNetlinkMessage>;
pub type Mac = [u8; 6];

/// One end of a veth pair.
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub mac: Mac,
    /// 0 lets the kernel choose.
    pub index: u32,
}

/// A veth pair created in one request, both ends down: `host` in the socket's namespace, `peer`
/// born directly inside the namespace `peer_netns` (never moved there afterwards: creating it in
/// place is an order of magnitude cheaper than a move). Each end is brought up by a request in its
/// own namespace: the kernel refuses (`ENOTCONN`) to bring up a peer created in another one, and
/// the host end first gets [`set_link_ipv6_addrgen_none`].
pub fn new_veth_pair(host: &VethEnd, peer: &VethEnd, peer_netns: RawFd) -> RouteNetlinkMessage {
    let mut peer_msg = LinkMessage::default();
    peer_msg.header.index = peer.index;
    peer_msg.attributes = vec![
        LinkAttribute::IfName(peer.name.to_string()),
        LinkAttribute::Address(peer.mac.to_vec()),
        LinkAttribute::NetNsFd(peer_netns),
        LinkAttribute::NumTxQueues(1),
        LinkAttribute::NumRxQueues(1),
    ];
    let mut msg = LinkMessage::default();
    msg.header.index = host.index;
    msg.attributes = vec![
        LinkAttribute::IfName(host.name.to_string()),
        LinkAttribute::Address(host.mac.to_vec()),
        // One queue each way: veth defaults to one per CPU, and every queue is a sysfs object
        // created and destroyed with the link; a dyno's traffic does not need more.
        LinkAttribute::NumTxQueues(1),
        LinkAttribute::NumRxQueues(1),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]),
    ];
    RouteNetlinkMessage::NewLink(msg)
}

pub fn get_link_by_name(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![LinkAttribute::IfName(name.to_string())];
    RouteNetlinkMessage::GetLink(msg)
}

pub fn dump_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// Every IPv4 route (answered as `NewRoute` messages; see [`host_route_of`]).
pub fn dump_ipv4_routes() -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    RouteNetlinkMessage::GetRoute(msg)
}

/// A `/32` route of the main table, as [`host_route_of`] reads it from a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRoute {
    pub ip: Ipv4Addr,
    /// The link it goes out of (`None`: a claim, see [`add_claim_route`]).
    pub oif: Option<u32>,
}

/// The `/32` main-table route a dump entry describes, if it is one.
pub fn host_route_of(msg: &RouteNetlinkMessage) -> Option<HostRoute> {
    let RouteNetlinkMessage::NewRoute(route) = msg else {
        return None;
    };
    let header = &route.header;
    let main = header.table == RouteHeader::RT_TABLE_MAIN
        || route
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Table(t) if *t == u32::from(RouteHeader::RT_TABLE_MAIN)));
    if header.address_family != AddressFamily::Inet
        || header.destination_prefix_length != 32
        || !main
    {
        return None;
    }
    let mut ip = None;
    let mut oif = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(dst)) => ip = Some(*dst),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    Some(HostRoute { ip: ip?, oif })
}

pub fn del_link_by_name(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![LinkAttribute::IfName(name.to_string())];
    RouteNetlinkMessage::DelLink(msg)
}

pub fn set_link_up(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// Brings a link up by name.
pub fn set_link_up_by_name(name: &str) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::SetLink(mut msg) = set_link_up(0) else {
        unreachable!("set_link_up builds a SetLink")
    };
    msg.attributes = vec![LinkAttribute::IfName(name.to_string())];
    RouteNetlinkMessage::SetLink(msg)
}

/// No IPv6 link-local address on a link (set while it is down). Without it the kernel runs no
/// duplicate address detection and no router solicitation on the link: on a host with thousands
/// of dyno links that background work, which takes the global RTNL lock, would slow every setup.
pub fn set_link_ipv6_addrgen_none(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
            In6AddrGenMode::None,
        )])]),
    ];
    RouteNetlinkMessage::SetLink(msg)
}

/// `ip/32` on link `index` with link scope: the platform's own address on the host's `lo`
/// ([`crate::names::GATEWAY`]), the source of the router's connections to dynos. Link scope, so
/// the kernel never picks it as the source of the host's other traffic.
pub fn add_link_scope_address(index: u32, ip: Ipv4Addr) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewAddress(mut msg) = add_address(index, ip, 32) else {
        unreachable!("add_address builds a NewAddress")
    };
    msg.header.scope = AddressScope::Link;
    RouteNetlinkMessage::NewAddress(msg)
}

/// Removes `ip/32` from link `index`.
pub fn del_address(index: u32, ip: Ipv4Addr) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewAddress(msg) = add_address(index, ip, 32) else {
        unreachable!("add_address builds a NewAddress")
    };
    RouteNetlinkMessage::DelAddress(msg)
}

/// [`add_route`] whose connections from this host take `source` as their address (the
/// route's preferred source, `ip route … src SOURCE`).
pub fn add_route_from(
    dst: Ipv4Addr,
    prefix_len: u8,
    oif: u32,
    source: Ipv4Addr,
) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewRoute(mut msg) = add_route(dst, prefix_len, oif, None) else {
        unreachable!("add_route builds a NewRoute")
    };
    msg.attributes
        .push(RouteAttribute::PrefSource(RouteAddress::Inet(source)));
    RouteNetlinkMessage::NewRoute(msg)
}

pub fn add_address(index: u32, ip: Ipv4Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(ip.into()),
        AddressAttribute::Address(ip.into()),
    ];
    RouteNetlinkMessage::NewAddress(msg)
}

/// A route in the main table: `dst/prefix_len` out of `oif`, through `gateway` if given.
pub fn add_route(
    dst: Ipv4Addr,
    prefix_len: u8,
    oif: u32,
    gateway: Option<Ipv4Addr>,
) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = prefix_len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if prefix_len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    }
    if let Some(gw) = gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    msg.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(msg)
}

/// A blackhole route to `dst/32` in the main table: the claim on an address that a setup
/// makes first (`NLM_F_EXCL`, so a second claimant gets `EEXIST`) and replaces with the route
/// out of the dyno's link once that exists.
pub fn add_claim_route(dst: Ipv4Addr) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 32;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.kind = RouteType::BlackHole;
    msg.header.scope = RouteScope::Universe;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    RouteNetlinkMessage::NewRoute(msg)
}

/// Deletes the main-table route to `dst/prefix_len` out of link `oif` (none other).
pub fn del_route_via(dst: Ipv4Addr, prefix_len: u8, oif: u32) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::DelRoute(mut msg) = del_route(dst, prefix_len) else {
        unreachable!("del_route builds a DelRoute")
    };
    msg.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::DelRoute(msg)
}

/// Deletes the blackhole claim on `dst/32` ([`add_claim_route`]), and no other route.
pub fn del_claim_route(dst: Ipv4Addr) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::DelRoute(mut msg) = del_route(dst, 32) else {
        unreachable!("del_route builds a DelRoute")
    };
    msg.header.kind = RouteType::BlackHole;
    RouteNetlinkMessage::DelRoute(msg)
}

/// Deletes the main-table route to `dst/prefix_len`, whatever its device.
pub fn del_route(dst: Ipv4Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewRoute(mut msg) = add_route(dst, prefix_len, 0, None) else {
        unreachable!("add_route builds a NewRoute")
    };
    msg.header.scope = RouteScope::NoWhere;
    // Any type: a dyno's route, or the blackhole claim that precedes it.
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
    RouteNetlinkMessage::DelRoute(msg)
}

/// A permanent neighbour entry: `ip` is at `mac` on link `index`, so no ARP is ever sent.
pub fn add_permanent_neighbour(index: u32, ip: Ipv4Addr, mac: Mac) -> RouteNetlinkMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
    ];
    RouteNetlinkMessage::NewNeighbour(msg)
}

/// The index and name of a link message (a `GET`'s answer or a dump entry).
pub fn link_index_and_name(msg: &RouteNetlinkMessage) -> Option<(u32, String)> {
    let RouteNetlinkMessage::NewLink(link) = msg else {
        return None;
    };
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some((link.header.index, name.clone())),
        _ => None,
    })
}
