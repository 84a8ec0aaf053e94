//! What one interface inside a namespace has: its index, MAC, IPv4 addresses and the default
//! route out of it. A CNI CHECK compares this with the result of the ADD.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::dyno::NetError;
use crate::netlink::route::{self, Rtnl, NETLINK_ROUTE};
use crate::netlink::Object;
use crate::ns::Netns;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub mac: Vec<u8>,
    /// IPv4 addresses with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// Gateways of default routes out of the interface.
    pub default_gateways: Vec<Ipv4Addr>,
}

/// `ifname` in `netns` as it is now; `None` if there is no such interface.
pub fn interface(netns: &Netns, ifname: &str) -> Result<Option<Interface>, NetError> {
    let mut rtnl: Rtnl = netns.run(|| Rtnl::open(NETLINK_ROUTE))??;
    let Ok(link) = rtnl.request(
        route::get_link_by_name(ifname),
        0,
        Object::new("link", ifname),
    ) else {
        return Ok(None);
    };
    let Some(RouteNetlinkMessage::NewLink(link)) = link.first() else {
        return Ok(None);
    };
    let index = link.header.index;
    let mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(mac.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let addresses = rtnl
        .dump(dump_ipv4_addresses, Object::new("addresses", ifname))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
            _ => None,
        })
        .flat_map(|a| {
            a.attributes.iter().filter_map(move |attr| match attr {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, a.header.prefix_len)),
                _ => None,
            })
        })
        .collect();
    let default_gateways = rtnl
        .dump(route::dump_ipv4_routes, Object::new("routes", ifname))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if r.header.destination_prefix_length == 0 => Some(r),
            _ => None,
        })
        .filter(|r| {
            r.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
        })
        .filter_map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
                _ => None,
            })
        })
        .collect();
    Ok(Some(Interface {
        index,
        mac,
        addresses,
        default_gateways,
    }))
}

fn dump_ipv4_addresses() -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    RouteNetlinkMessage::GetAddress(msg)
}
