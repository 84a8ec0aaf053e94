//! Forging: the attacker cannot pass for another dyno (its source address), for the router (its
//! socket mark), or rewrite its own link's neighbours, addresses and routes; raw and packet
//! sockets, which would allow any of it, are refused.

use std::time::Duration;

use crate::record::*;
use crate::rig::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn another_dynos_source_address_cannot_be_used() {
    const EXPECT: &str = "binding the victim's address fails (EADDRNOTAVAIL); with IP_FREEBIND the bind works but nothing leaves (the host drops spoofed sources); IP_TRANSPARENT and raw sockets are refused";
    attack(
        Attack {
            test: "another_dynos_source_address_cannot_be_used",
            category: FORGE,
            attack: "send from the victim's address: bind, IP_FREEBIND, IP_TRANSPARENT, raw socket",
            expect: EXPECT,
            others: "Docker: CAP_NET_RAW by default (raw sockets can send any source on the bridge); podman: as its containers.conf default_capabilities say; Heroku: not documented",
        },
        |rig| {
            let victim = rig.dyno("victim", "web.1").ip;
            let snippet = format!(
                r#"
victim = "{victim}"
def plain(_):
    s = socket.socket(); s.bind((victim, 0))
def transparent(_):
    s = socket.socket(); s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
def raw(_):
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def freebind():
    s = socket.socket()
    s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: bind to an address that is not ours
    s.settimeout(2)
    try:
        s.bind((victim, 0))
    except OSError as e:
        return "bind " + name_of(e.errno)
    try:
        s.connect(("198.51.100.10", {SINK_PORT}))
        return "connected"
    except socket.timeout:
        return "bound, connect timeout"
    except OSError as e:
        return "bound, connect " + name_of(e.errno)
done({{"bind": outcome(plain, 0), "freebind": freebind(), "transparent": outcome(transparent, 0), "raw": outcome(raw, 0)}})
"#
            );
            let (web, worker) = rig.run_both(&snippet, T);
            let sink = &rig.listeners[1];
            sink.set_nonblocking(true).unwrap();
            let arrived = std::iter::from_fn(|| sink.accept().ok()).count();
            let mut pass = arrived == 0;
            let mut seen = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let v = run.value();
                let get = |k: &str| v[k].as_str().unwrap_or("?").to_string();
                pass &= get("bind") != "ok"
                    && get("freebind") != "connected"
                    && get("transparent") != "ok"
                    && get("raw") != "ok";
                seen.push(format!(
                    "{dyno}: bind {}, IP_FREEBIND {}, IP_TRANSPARENT {}, raw {}",
                    get("bind"),
                    get("freebind"),
                    get("transparent"),
                    get("raw")
                ));
            }
            seen.push(format!("the internet saw {arrived} connections"));
            Outcome::new(pass, seen.join("; "))
        },
    );
}

#[test]
fn the_routers_socket_mark_cannot_be_set() {
    const EXPECT: &str = "SO_MARK 0x6479 is refused (EPERM: needs CAP_NET_ADMIN); a connection to the victim's $PORT does not get through";
    attack(
        Attack {
            test: "the_routers_socket_mark_cannot_be_set",
            category: FORGE,
            attack: "set the router's socket mark (SO_MARK 0x6479) and connect to the victim's $PORT",
            expect: EXPECT,
            others: "Docker, podman, Heroku: SO_MARK needs CAP_NET_ADMIN, which containers do not get by default (marks do not cross namespaces anyway)",
        },
        |rig| {
            let victim = rig.dyno("victim", "web.1").ip;
            let snippet = format!(
                r#"
s = socket.socket()
mark = outcome(lambda: s.setsockopt(socket.SOL_SOCKET, 36, 0x6479))  # SO_MARK
s.settimeout(1)
conn = outcome(s.connect, ("{victim}", {WEB_PORT}))
done({{"mark": mark, "connect": conn}})
"#
            );
            let (web, worker) = rig.run_both(&snippet, T);
            let mut pass = true;
            let mut seen = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let v = run.value();
                let (mark, conn) = (v["mark"].as_str().unwrap_or("?"), v["connect"].as_str().unwrap_or("?"));
                pass &= mark == "EPERM" && conn != "ok";
                seen.push(format!("{dyno}: SO_MARK {mark}, connect {conn}"));
            }
            Outcome::new(pass, seen.join("; "))
        },
    );
}

#[test]
fn neighbours_addresses_and_routes_cannot_be_changed() {
    const EXPECT: &str = "RTM_NEWNEIGH (poison the gateway's entry), RTM_NEWADDR (add the victim's address) and RTM_NEWROUTE are refused with EPERM";
    attack(
        Attack {
            test: "neighbours_addresses_and_routes_cannot_be_changed",
            category: FORGE,
            attack: "rewrite the dyno's neighbour table, addresses and routes over rtnetlink",
            expect: EXPECT,
            others: "Docker, podman, Heroku: needs CAP_NET_ADMIN, not granted by default",
        },
        |rig| {
            let victim = rig.dyno("victim", "web.1").ip;
            let snippet = format!(
                r#"
import struct
def attr(kind, data):
    return struct.pack("=HH", 4 + len(data), kind) + data + bytes((4 - len(data) % 4) % 4)
def ask(kind, body):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    s.settimeout(2)
    s.sendto(struct.pack("=IHHII", 16 + len(body), kind, 0x1 | 0x4 | 0x400 | 0x100, 1, 0) + body, (0, 0))
    data = s.recv(65536)
    code = struct.unpack_from("=i", data, 16)[0]
    return "ok" if code == 0 else name_of(-code)
gateway = socket.inet_aton("169.254.1.1")
victim = socket.inet_aton("{victim}")
neigh = struct.pack("=BBHiHBB", 2, 0, 0, 2, 0x80, 0, 0) + attr(1, gateway) + attr(2, bytes.fromhex("02deadbeef01"))
addr = struct.pack("=BBBBI", 2, 32, 0, 0, 2) + attr(2, victim) + attr(1, victim)
route = struct.pack("=BBBBBBBBI", 2, 32, 0, 0, 254, 4, 0, 1, 0) + attr(1, victim) + attr(4, struct.pack("=I", 2))
done({{"neigh": ask(28, neigh), "addr": ask(20, addr), "route": ask(24, route)}})
"#
            );
            let (web, worker) = rig.run_both(&snippet, T);
            let mut pass = true;
            let mut seen = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let v = run.value();
                let get = |k: &str| v[k].as_str().unwrap_or("?").to_string();
                pass &= ["neigh", "addr", "route"].iter().all(|k| get(k) == "EPERM");
                seen.push(format!(
                    "{dyno}: neighbour {}, address {}, route {}",
                    get("neigh"),
                    get("addr"),
                    get("route")
                ));
            }
            Outcome::new(pass, seen.join("; "))
        },
    );
}

#[test]
fn raw_and_packet_sockets_are_refused() {
    const EXPECT: &str =
        "raw IPv4/IPv6 sockets, AF_PACKET (raw and dgram) and ICMP ping sockets cannot be opened";
    attack(
        Attack {
            test: "raw_and_packet_sockets_are_refused",
            category: FORGE,
            attack: "open raw IP sockets, packet sockets (ARP spoofing, sniffing) and ping sockets",
            expect: EXPECT,
            others: "Docker: CAP_NET_RAW granted by default (raw and packet sockets work); podman: as its containers.conf default_capabilities say; Heroku: not documented",
        },
        |rig| {
            let snippet = r#"
kinds = {
    "raw ipv4": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
    "raw icmp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "raw ipv6": (socket.AF_INET6, socket.SOCK_RAW, 58),
    "packet raw": (17, socket.SOCK_RAW, 0x0300),
    "packet dgram": (17, socket.SOCK_DGRAM, 0x0300),
    "ping": (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
}
done({k: outcome(lambda a: socket.socket(*a).close(), v) for k, v in kinds.items()})
"#;
            let (web, worker) = rig.run_both(snippet, T);
            let mut opened = Vec::new();
            let mut seen = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let v = run.value();
                let mut parts = Vec::new();
                for (k, r) in v.as_object().unwrap() {
                    let r = r.as_str().unwrap_or("?");
                    if r == "ok" {
                        opened.push(format!("{dyno} {k}"));
                    }
                    parts.push(format!("{k} {r}"));
                }
                seen.push(format!("{dyno}: {}", parts.join(", ")));
            }
            Outcome::new(opened.is_empty(), seen.join("; "))
        },
    );
}
