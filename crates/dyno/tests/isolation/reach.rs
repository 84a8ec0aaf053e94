//! Reaching others: from its dynos the attacker reaches no other dyno (any port, any
//! protocol, any kind of address), no host service and no link-local service; only the
//! internet (here: the lab's fake internet) is reachable.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dyno_net::lab::UPLINK_ADDR;
use dyno_net::ns;

use crate::record::*;
use crate::rig::*;

const T: Duration = Duration::from_secs(20);
/// A port the test listens on in the lab host (TCP and UDP, IPv4 and IPv6).
const HOST_PORT: u16 = 9999;

/// Listeners the test opens in a namespace of the lab; `contacts` tells whether anything
/// reached them (connections wait in the accept queue, datagrams in the receive queue).
struct Listeners {
    tcp: Vec<std::net::TcpListener>,
    udp: Vec<std::net::UdpSocket>,
}

impl Listeners {
    fn open(netns: &ns::Netns, addresses: &[SocketAddr]) -> Listeners {
        let addresses = addresses.to_vec();
        netns
            .run(move || -> std::io::Result<Listeners> {
                let mut tcp = Vec::new();
                let mut udp = Vec::new();
                for address in addresses {
                    let domain = socket2::Domain::for_address(address);
                    let t = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
                    let u = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
                    for s in [&t, &u] {
                        if address.is_ipv6() {
                            s.set_only_v6(true)?;
                        }
                        s.set_reuse_address(true)?;
                        s.bind(&address.into())?;
                        s.set_nonblocking(true)?;
                    }
                    t.listen(64)?;
                    tcp.push(t.into());
                    udp.push(u.into());
                }
                Ok(Listeners { tcp, udp })
            })
            .unwrap()
            .unwrap()
    }

    fn contacts(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for l in &self.tcp {
            while let Ok((_, peer)) = l.accept() {
                seen.push(format!("tcp from {peer}"));
            }
        }
        for u in &self.udp {
            let mut buf = [0u8; 2048];
            while let Ok((_, peer)) = u.recv_from(&mut buf) {
                seen.push(format!("udp from {peer}"));
            }
        }
        seen
    }
}

/// `{target: result}` of `probe(...)` over `targets` in the snippet; which of them connected.
fn probe(rig: &Rig, targets: &[String], what: &str) -> (Vec<String>, usize) {
    let list = serde_json::to_string(targets).unwrap();
    let snippet = format!(
        r#"
def go(t):
    kind, host, port = t.split("|")
    if kind == "tcp":
        return tcp(host, int(port), timeout=1.0)
    return udp(host, int(port), wait=0.5, broadcast=host.endswith(".255"))
done(parallel(go, {list}, width=128))
"#
    );
    let mut reached = Vec::new();
    for (dyno, run) in [
        ("web.1", rig.run_web(&snippet, T)),
        ("worker.1", rig.run_worker(&snippet, T)),
    ] {
        let results = run.value();
        for (target, result) in results.as_object().unwrap() {
            let result = result.as_str().unwrap_or_default();
            if result == "connected" || result == "reply" {
                reached.push(format!("{dyno} {what} {target}: {result}"));
            }
        }
    }
    (reached, targets.len())
}

fn verdict(reached: Vec<String>, extra: Vec<String>, tried: usize, what: &str) -> Outcome {
    if reached.is_empty() && extra.is_empty() {
        Outcome::new(
            true,
            format!("{what}: none of {tried} probes (web and worker) got through"),
        )
    } else {
        let mut all = reached;
        all.extend(extra);
        Outcome::new(false, format!("{what}: {}", all.join("; ")))
    }
}

#[test]
fn web_ports_of_other_dynos_are_unreachable() {
    const EXPECT: &str =
        "no TCP/UDP connection to any other dyno's address in use, on $PORT or the agent's port";
    attack(
        Attack {
            test: "web_ports_of_other_dynos_are_unreachable",
            category: REACH,
            attack: "connect to $PORT (and 7777) of every dyno address in use, directly",
            expect: EXPECT,
            others: "Heroku Common Runtime: dynos cannot reach each other (only Private Spaces can); Docker, podman: containers on one bridge reach each other unless --icc=false / separate networks",
        },
        |rig| {
            let mut targets = Vec::new();
            for d in &rig.dynos {
                for port in [WEB_PORT, 7777] {
                    targets.push(format!("tcp|{}|{port}", d.ip));
                    targets.push(format!("udp|{}|{port}", d.ip));
                }
            }
            // A dyno reaches its own address: leave both attacker dynos' own out per dyno by
            // counting only what reached an address of someone else.
            let (reached, tried) = probe(rig, &targets, "dyno");
            let reached: Vec<String> = reached
                .into_iter()
                .filter(|r| {
                    let own = if r.starts_with("web.1") { "web.1" } else { "worker.1" };
                    !r.contains(&format!("|{}|", rig.dyno("attacker", own).ip))
                })
                .collect();
            verdict(reached, rig.victim_hits(), tried, "every dyno in use")
        },
    );
}

#[test]
fn other_ports_of_the_victim_are_unreachable() {
    const EXPECT: &str = "the victim's other listeners (TCP 6001, UDP 6002) cannot be reached directly; the victim logs no contact";
    attack(
        Attack {
            test: "other_ports_of_the_victim_are_unreachable",
            category: REACH,
            attack: "connect to the victim's non-$PORT listeners directly (TCP 6001, UDP 6002)",
            expect: EXPECT,
            others: "Heroku: only $PORT is routed, dynos cannot reach each other; Docker, podman: every port of a container on the same network is reachable",
        },
        |rig| {
            let mut targets = Vec::new();
            for name in ["web.1", "worker.1"] {
                let ip = rig.dyno("victim", name).ip;
                targets.push(format!("tcp|{ip}|{VICTIM_TCP}"));
                targets.push(format!("udp|{ip}|{VICTIM_UDP}"));
            }
            let (reached, tried) = probe(rig, &targets, "victim");
            std::thread::sleep(Duration::from_millis(500));
            verdict(reached, rig.victim_hits(), tried, "victim's other ports")
        },
    );
}

#[test]
fn a_scan_of_the_pool_finds_nothing() {
    const EXPECT: &str =
        "a scan of the pool's first 48 addresses finds no open port of any other dyno";
    attack(
        Attack {
            test: "a_scan_of_the_pool_finds_nothing",
            category: REACH,
            attack: "scan 10.213.0.0–10.213.0.47 on ports 22, 80, 5000, 6001 (TCP) and 6002 (UDP)",
            expect: EXPECT,
            others: "Heroku: other dynos unreachable; Docker, podman: a scan of the bridge network finds every container's open ports",
        },
        |rig| {
            let mut targets = Vec::new();
            for last in 0..48u8 {
                let ip = Ipv4Addr::new(10, 213, 0, last);
                if rig.dynos.iter().any(|d| d.app == "attacker" && d.ip == ip) {
                    continue;
                }
                for port in [22, 80, WEB_PORT, VICTIM_TCP] {
                    targets.push(format!("tcp|{ip}|{port}"));
                }
                targets.push(format!("udp|{ip}|{VICTIM_UDP}"));
            }
            let (reached, tried) = probe(rig, &targets, "scan");
            verdict(reached, rig.victim_hits(), tried, "scan")
        },
    );
}

#[test]
fn ipv6_link_local_reaches_nothing() {
    const EXPECT: &str = "over IPv6 link-local (the host end's fe80:: address, all-nodes ff02::1) nothing answers: neither the host nor another dyno";
    attack(
        Attack {
            test: "ipv6_link_local_reaches_nothing",
            category: REACH,
            attack: "TCP/UDP to the host end's IPv6 link-local address and to ff02::1 on eth0",
            expect: EXPECT,
            others: "Docker, podman: IPv6 off by default on bridges; Heroku: no IPv6 inside dynos",
        },
        |rig| {
            let host = Listeners::open(
                rig.up.lab.host.netns(),
                &[format!("[::]:{HOST_PORT}").parse().unwrap()],
            );
            let mut targets = Vec::new();
            for addr in [
                "fe80::ecee:eeff:feee:eeee%eth0",
                "ff02::1%eth0",
                "ff02::2%eth0",
            ] {
                for port in [HOST_PORT, 8080, WEB_PORT] {
                    targets.push(format!("tcp|{addr}|{port}"));
                }
                targets.push(format!("udp|{addr}|{HOST_PORT}"));
                targets.push(format!("udp|{addr}|{VICTIM_UDP6}"));
            }
            let (reached, tried) = probe(rig, &targets, "ipv6");
            let mut extra = rig.victim_hits();
            extra.extend(
                host.contacts()
                    .into_iter()
                    .map(|c| format!("lab host got {c}")),
            );
            verdict(reached, extra, tried, "IPv6 link-local and all-nodes")
        },
    );
}

#[test]
fn broadcast_and_multicast_reach_nobody() {
    const EXPECT: &str = "datagrams to 255.255.255.255, the pool's broadcast, 224.0.0.1, the victim's group 239.1.1.1 and ff02::1 reach no other dyno";
    attack(
        Attack {
            test: "broadcast_and_multicast_reach_nobody",
            category: REACH,
            attack: "UDP to broadcast and multicast addresses (the victim joined 239.1.1.1)",
            expect: EXPECT,
            others: "Heroku: no shared L2; Docker, podman: containers on a bridge share its broadcast domain (and multicast floods it)",
        },
        |rig| {
            let mut targets = Vec::new();
            for addr in ["255.255.255.255", "10.213.255.255", "224.0.0.1", MULTICAST_GROUP] {
                targets.push(format!("udp|{addr}|{VICTIM_UDP}"));
            }
            targets.push(format!("udp|ff02::1%eth0|{VICTIM_UDP6}"));
            let (reached, tried) = probe(rig, &targets, "udp");
            std::thread::sleep(Duration::from_millis(500));
            verdict(reached, rig.victim_hits(), tried, "broadcast and multicast")
        },
    );
}

#[test]
fn host_addresses_and_listeners_are_unreachable() {
    const EXPECT: &str = "no connection to the host's addresses (uplink, gateway) on a host listener or the router's port; the API socket is not in the dyno's view";
    attack(
        Attack {
            test: "host_addresses_and_listeners_are_unreachable",
            category: REACH,
            attack: "connect to a host listener (TCP/UDP 9999 on all addresses) and the router port via the host's addresses; open the API socket path",
            expect: EXPECT,
            others: "Docker, podman: containers reach host services on the bridge gateway address unless firewalled; Heroku: dyno hosts are not reachable from dynos",
        },
        |rig| {
            let host = Listeners::open(
                rig.up.lab.host.netns(),
                &[
                    format!("0.0.0.0:{HOST_PORT}").parse().unwrap(),
                    format!("[::]:{HOST_PORT}").parse().unwrap(),
                ],
            );
            let mut targets = Vec::new();
            for addr in [UPLINK_ADDR.to_string(), "169.254.1.1".to_string()] {
                for port in [HOST_PORT, 8080] {
                    targets.push(format!("tcp|{addr}|{port}"));
                }
                targets.push(format!("udp|{addr}|{HOST_PORT}"));
            }
            let (reached, tried) = probe(rig, &targets, "host");
            let socket = rig.up.api_socket();
            let snippet = format!(
                r#"
def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
done(outcome(connect, {:?}))
"#,
                socket.display().to_string()
            );
            let api = rig.run_web(&snippet, T).value();
            let mut extra: Vec<String> = host
                .contacts()
                .into_iter()
                .map(|c| format!("lab host got {c}"))
                .collect();
            if api == "ok" {
                extra.push("the API socket accepted a connection".into());
            }
            let mut outcome = verdict(reached, extra, tried, "host");
            outcome.result.push_str(&format!("; API socket path: {}", api.as_str().unwrap_or("?")));
            outcome
        },
    );
}

#[test]
fn the_gateway_has_no_open_port() {
    const EXPECT: &str = "169.254.1.1 (the dynos' gateway) accepts nothing on 22, 53, 80, 443, 5000, 8080 (TCP) or 53 (UDP)";
    attack(
        Attack {
            test: "the_gateway_has_no_open_port",
            category: REACH,
            attack: "connect to the gateway 169.254.1.1 on common ports",
            expect: EXPECT,
            others: "Docker, podman: the bridge gateway is the host itself (its services answer unless firewalled); Heroku: nothing answers",
        },
        |rig| {
            let mut targets: Vec<String> = [22, 53, 80, 443, WEB_PORT, 8080]
                .iter()
                .map(|p| format!("tcp|169.254.1.1|{p}"))
                .collect();
            targets.push("udp|169.254.1.1|53".into());
            let (reached, tried) = probe(rig, &targets, "gateway");
            verdict(reached, Vec::new(), tried, "gateway")
        },
    );
}

/// The fake internet, with the link-local services a cloud host has behind its default route
/// (169.254.169.254 metadata, 169.254.170.2 ECS task metadata, 169.254.169.253 DNS): a packet
/// that gets through the host reaches them.
fn link_local_services(rig: &Rig, addresses: &[&str]) -> Listeners {
    for addr in addresses {
        let mut ip = std::process::Command::new("ip");
        ip.args(["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        ns::command_in(&mut ip, &rig.up.lab.internet, None).unwrap();
        assert!(
            ip.status().unwrap().success(),
            "ip addr add {addr} in the fake internet"
        );
    }
    let sockets: Vec<SocketAddr> = addresses
        .iter()
        .map(|a| format!("{a}:80").parse().unwrap())
        .collect();
    Listeners::open(&rig.up.lab.internet, &sockets)
}

#[test]
fn the_metadata_endpoint_is_unreachable() {
    const EXPECT: &str =
        "169.254.169.254 is unreachable (dropped by the host), even where something answers there";
    attack(
        Attack {
            test: "the_metadata_endpoint_is_unreachable",
            category: REACH,
            attack: "connect to the cloud metadata endpoint 169.254.169.254:80",
            expect: EXPECT,
            others: "Heroku: not documented; Docker, podman: reachable from containers by default (EC2 needs IMDSv2 hop limit 1 to stop it)",
        },
        |rig| {
            let service = link_local_services(rig, &["169.254.169.254"]);
            let targets = vec!["tcp|169.254.169.254|80".to_string(), "udp|169.254.169.254|80".to_string()];
            let (reached, tried) = probe(rig, &targets, "metadata");
            let extra = service.contacts().into_iter().map(|c| format!("metadata got {c}")).collect();
            verdict(reached, extra, tried, "metadata endpoint")
        },
    );
}

#[test]
fn other_link_local_services_are_unreachable() {
    const EXPECT: &str = "no address of 169.254.0.0/16 beyond the dyno's own link is reachable (ECS task metadata 169.254.170.2, cloud DNS 169.254.169.253)";
    attack(
        Attack {
            test: "other_link_local_services_are_unreachable",
            category: REACH,
            attack: "connect to other link-local services behind the host (169.254.170.2, 169.254.169.253)",
            expect: EXPECT,
            others: "Docker, podman: reachable by default; AWS ECS blocks 169.254.170.2 only for tasks in awsvpc mode",
        },
        |rig| {
            let addresses = ["169.254.170.2", "169.254.169.253"];
            let service = link_local_services(rig, &addresses);
            let targets: Vec<String> = addresses
                .iter()
                .flat_map(|a| [format!("tcp|{a}|80"), format!("udp|{a}|80")])
                .collect();
            let (reached, tried) = probe(rig, &targets, "link-local");
            let extra = service.contacts().into_iter().map(|c| format!("service got {c}")).collect();
            verdict(reached, extra, tried, "link-local services")
        },
    );
}
