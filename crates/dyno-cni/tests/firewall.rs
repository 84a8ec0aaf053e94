//! The dyno rule through the plugin: only the router reaches a container's `$PORT` (by its
//! socket mark on the host, or from `routerSources`), containers never reach each other, and
//! their egress leaves with the host's address. Clients and servers are sockets placed in the
//! lab's namespaces. Needs root.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::{ok_json, World};
use dyno_net::lab::{INTERNET_GATEWAY, INTERNET_SERVER, UPLINK_ADDR};
use dyno_net::nft::ROUTER_MARK;
use dyno_net::ns::{self, Netns};
use dyno_net::probe::{exchange, exchange_open, serve, Proto, Server};
use serde_json::{json, Value};

/// ADD of container `id` (a new namespace) with `config`: its namespace and address.
fn add(world: &mut World, id: &str, config: &Value) -> (Netns, Ipv4Addr) {
    let path = world.container(id);
    let result = ok_json(&world.op("ADD", id, &path, "eth0", config));
    let address = result["ips"][0]["address"].as_str().expect("address");
    let ip = address.trim_end_matches("/32").parse().expect("an address");
    (Netns::open(&path).expect("open the container's netns"), ip)
}

/// A listener at `ip:port` for each port, inside `netns`, kept for the whole test (binding the
/// same address again right after a connection can meet its leftover sockets).
fn listeners<const N: usize>(
    netns: &Netns,
    ip: Ipv4Addr,
    ports: [u16; N],
) -> [(SocketAddrV4, Server); N] {
    ports.map(|port| {
        let at = SocketAddrV4::new(ip, port);
        (at, serve(netns, Proto::Tcp, at))
    })
}

/// Whether a TCP connection from `client` (from `source`, with `mark`) reaches `server`, and
/// the source address the server saw.
fn reaches(
    client: &Netns,
    source: Option<Ipv4Addr>,
    mark: Option<u32>,
    (to, server): &(SocketAddrV4, Server),
) -> (bool, Option<SocketAddrV4>) {
    let (sent, seen) = exchange(client, Proto::Tcp, source, server, *to, mark);
    (sent.is_ok(), seen)
}

/// [`reaches`] for a path that must be open (retried on a slow machine).
fn must_reach(
    client: &Netns,
    source: Option<Ipv4Addr>,
    mark: Option<u32>,
    (to, server): &(SocketAddrV4, Server),
) -> Option<SocketAddrV4> {
    let (sent, seen) = exchange_open(client, Proto::Tcp, source, server, *to, mark);
    sent.unwrap_or_else(|e| panic!("{to} must be reachable: {e}"));
    seen
}

#[test]
fn only_the_router_reaches_port_and_containers_never_each_other() {
    let mut world = World::new("cni-fw");
    let config = world.config("1.0.0", json!({"port": 5000, "subnet": "10.215.3.0/24"}));
    let (a, ip_a) = add(&mut world, "a", &config);
    let (b, ip_b) = add(&mut world, "b", &config);
    let host = world.lab.host.netns().try_clone().expect("lab host");
    let [a_port, a_other] = listeners(&a, ip_a, [5000, 6000]);
    let [b_port] = listeners(&b, ip_b, [5000]);

    assert!(must_reach(&host, None, Some(ROUTER_MARK), &a_port).is_some());
    let unmarked = reaches(&host, None, None, &a_port);
    assert_eq!(
        unmarked,
        (false, None),
        "an unmarked host socket reached $PORT"
    );
    let other_port = reaches(&host, None, Some(ROUTER_MARK), &a_other);
    assert_eq!(other_port, (false, None), "the router reached another port");
    for target in [&a_port, &a_other] {
        let from_b = reaches(&b, None, None, target);
        assert_eq!(
            from_b,
            (false, None),
            "container b reached a's {}",
            target.0
        );
    }
    // b's own $PORT is open to the router: the rule is per container, not per network.
    assert!(must_reach(&host, None, Some(ROUTER_MARK), &b_port).is_some());

    // Egress to the fake internet leaves with the host's uplink address.
    let internet = world.lab.internet.try_clone().expect("internet");
    let [server] = listeners(&internet, INTERNET_SERVER, [8080]);
    let seen = must_reach(&a, None, None, &server).expect("the server saw a peer");
    assert_eq!(*seen.ip(), UPLINK_ADDR, "masqueraded");

    for (id, ns) in [("a", "a"), ("b", "b")] {
        let path = world.dir.join("netns").join(ns);
        let out = world.op("DEL", id, &path.to_string_lossy(), "eth0", &config);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(world.exposed().is_empty());
}

/// A router elsewhere in the cluster (`routerSources`) reaches `$PORT` through the host, and
/// nothing else from there does; a custom `routerMark` replaces the default one; and a table
/// installed for another configuration is replaced without losing the ports it exposed.
#[test]
fn router_sources_and_a_custom_mark() {
    let mut world = World::new("cni-routers");
    let plain = world.config("1.0.0", json!({"port": 5000, "subnet": "10.215.4.0/24"}));
    let (first, ip_first) = add(&mut world, "first", &plain);
    let clustered = world.config(
        "1.0.0",
        json!({"port": 5000, "subnet": "10.215.4.0/24", "routerMark": "0x10",
               "routerSources": ["198.51.100.0/24"]}),
    );
    let (c, ip) = add(&mut world, "c", &clustered);
    let mut exposed = world.exposed();
    exposed.sort();
    assert_eq!(
        exposed,
        [(ip_first, 5000), (ip, 5000)],
        "the reinstall kept them"
    );

    // The "internet" plays the other nodes: it routes the pool through the lab host.
    let internet = world.lab.internet.try_clone().expect("internet");
    let mut route = std::process::Command::new("ip");
    route.args([
        "route",
        "add",
        "10.215.4.0/24",
        "via",
        &UPLINK_ADDR.to_string(),
    ]);
    ns::command_in(&mut route, &internet, None).expect("command_in");
    let out = route.output().expect("run ip (apt-get install iproute2)");
    assert!(out.status.success(), "ip route add: {out:?}");

    let [port, other] = listeners(&c, ip, [5000, 6000]);
    let [first_port] = listeners(&first, ip_first, [5000]);
    let seen = must_reach(&internet, Some(INTERNET_SERVER), None, &port);
    assert_eq!(
        seen.map(|s| *s.ip()),
        Some(INTERNET_SERVER),
        "not masqueraded"
    );
    assert!(must_reach(&internet, Some(INTERNET_SERVER), None, &first_port).is_some());
    let outsider = reaches(&internet, Some(INTERNET_GATEWAY), None, &port);
    assert_eq!(
        outsider,
        (false, None),
        "a source outside routerSources reached $PORT"
    );
    let other = reaches(&internet, Some(INTERNET_SERVER), None, &other);
    assert_eq!(other, (false, None), "a router source reached another port");

    let host = world.lab.host.netns().try_clone().expect("lab host");
    assert!(must_reach(&host, None, Some(0x10), &port).is_some());
    let old_mark = reaches(&host, None, Some(ROUTER_MARK), &port);
    assert_eq!(
        old_mark,
        (false, None),
        "the default mark still opens $PORT"
    );

    for id in ["first", "c"] {
        let path = world.dir.join("netns").join(id);
        let out = world.op("DEL", id, &path.to_string_lossy(), "eth0", &clustered);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(world.exposed().is_empty());
    assert!(world.dy_links().is_empty());
}

/// The node's own unmarked connections (the kubelet's probes) leave from the link-local
/// gateway: naming it in `routerSources` lets them reach `$PORT`, and nothing else.
#[test]
fn the_gateway_as_a_router_source_admits_the_nodes_probes() {
    let mut world = World::new("cni-probes");
    let config = world.config(
        "1.0.0",
        json!({"port": 5000, "subnet": "10.215.5.0/24", "routerSources": ["169.254.1.1"]}),
    );
    let (c, ip) = add(&mut world, "c", &config);
    let host = world.lab.host.netns().try_clone().expect("lab host");
    let [port, other] = listeners(&c, ip, [5000, 6000]);
    let seen = must_reach(&host, None, None, &port);
    assert_eq!(seen.map(|s| *s.ip()), Some(Ipv4Addr::new(169, 254, 1, 1)));
    let other = reaches(&host, None, None, &other);
    assert_eq!(other, (false, None), "a probe reached another port");
    let path = world.dir.join("netns").join("c");
    let out = world.op("DEL", "c", &path.to_string_lossy(), "eth0", &config);
    assert!(out.status.success(), "{out:?}");
}
