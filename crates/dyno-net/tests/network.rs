//! A dyno's network end to end (privileged: run as root). Every test builds its own lab: a fresh
//! namespace stands in for the host, wired to a fake internet on documentation addresses, so the
//! real host's routes, sysctls and nf_tables are never touched.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::{exchange, exchange_open, lab_network, require_root, run_in, serve, Proto};
use dyno_net::diag::SockDiag;
use dyno_net::dyno::{self, FailPoint, Host, NetError, RunDir};
use dyno_net::ipam::MemoryStore;
use dyno_net::lab::{INTERNET_SERVER, UPLINK_ADDR};
use dyno_net::names::{DynoName, GATEWAY, LINK_PREFIX};
use dyno_net::network::{Network, NetworkConfig, NetworkError};
use dyno_net::nft::ROUTER_MARK;

const PORT: u16 = 5000;
const OTHER_PORT: u16 = 5001;

fn links_of_dynos(network: &mut Network<MemoryStore>) -> Vec<String> {
    let mut links: Vec<String> = network
        .host()
        .links_with_prefix(LINK_PREFIX)
        .unwrap()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    links.sort();
    links
}

/// The kernel destroys a namespace (and the veth pair in it) in the background; wait for it.
fn wait_for_no_dyno_links(network: &mut Network<MemoryStore>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let links = links_of_dynos(network);
        if links.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dyno links still there after 60 s: {:?}",
            &links[..links.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mounts_under(dir: &std::path::Path) -> usize {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Strictly below: the lab's run dir is itself a tmpfs mount.
    let prefix = format!("{}/", dir.to_str().unwrap());
    mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
        .count()
}

#[test]
fn dyno_sees_lo_and_eth0_with_its_address_and_default_route() {
    let (_lab, mut network) = lab_network("seen", "10.213.0.0/16");
    let net = network.up("web1", Some(PORT)).unwrap();
    let links = run_in(&net.netns, "ip", &["-o", "link", "show"]);
    let names: Vec<&str> = links
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap().split('@').next().unwrap())
        .collect();
    assert_eq!(names, ["lo", "eth0"], "{links}");
    assert!(
        links.lines().nth(1).unwrap().starts_with("2: eth0"),
        "{links}"
    );
    let addrs = run_in(
        &net.netns,
        "ip",
        &["-o", "-4", "addr", "show", "dev", "eth0"],
    );
    assert!(addrs.contains(&format!("inet {}/32", net.ip)), "{addrs}");
    let routes = run_in(&net.netns, "ip", &["-4", "route", "show"]);
    assert!(
        routes.contains(&format!("default via {GATEWAY} dev eth0")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{GATEWAY} dev eth0 proto static scope link")),
        "{routes}"
    );
    // No ARP: the gateway's MAC is a permanent entry inside, the dyno's on the host.
    let neigh = run_in(&net.netns, "ip", &["neigh", "show", "dev", "eth0"]);
    assert!(
        neigh.contains("169.254.1.1 lladdr ee:ee:ee:ee:ee:ee PERMANENT"),
        "{neigh}"
    );
    let host_neigh = run_in(
        network.host().netns(),
        "ip",
        &["neigh", "show", "dev", &net.host_link],
    );
    assert!(
        host_neigh.contains(&format!("{} lladdr 02:d5:0a:d5", net.ip)),
        "{host_neigh}"
    );
    assert!(host_neigh.contains("PERMANENT"), "{host_neigh}");
    let sysctl = run_in(
        &net.netns,
        "cat",
        &["/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(sysctl.trim(), "0");
}

#[test]
fn ip_netns_exec_works_on_a_dyno() {
    require_root();
    let lab = dyno_net::lab::Lab::new("ipnetns").unwrap();
    let host = Host::in_netns(lab.host.netns()).unwrap();
    let name = format!("ie{}", std::process::id());
    let config = NetworkConfig {
        run_dir: RunDir::default(),
        spares: 0,
        ..NetworkConfig::default()
    };
    let mut network = Network::open(host, &config, MemoryStore).unwrap();
    let net = network.up(&name, None).unwrap();
    struct Down<'a>(&'a mut Network<MemoryStore>, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = self.0.down(self.1);
        }
    }
    let guard = Down(&mut network, &name);
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("dyno-{name}"),
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}/32", net.ip)));
    drop(guard);
    assert!(!std::path::Path::new(&format!("/run/netns/dyno-{name}")).exists());
}

#[test]
fn eth0_is_ifindex_2_even_when_the_host_end_is_above_65535() {
    let (_lab, mut network) = lab_network("ifindex", "10.213.0.0/16");
    let net = network.up_with("big", None, Some(70_000), None).unwrap();
    assert_eq!(net.host_ifindex, 70_000);
    let host_links = run_in(
        network.host().netns(),
        "ip",
        &["-o", "link", "show", "dybig"],
    );
    assert!(host_links.starts_with("70000: dybig"), "{host_links}");
    let inside = run_in(&net.netns, "ip", &["-o", "link", "show", "eth0"]);
    assert!(inside.starts_with("2: eth0"), "{inside}");
}

#[test]
fn unprivileged_process_binds_port_80_and_any_other() {
    let (_lab, mut network) = lab_network("port80", "10.213.0.0/16");
    let net = network.up("web1", None).unwrap();
    let mut command = std::process::Command::new("python3");
    command.args([
        "-c",
        "import os, socket\n\
         assert os.getuid() == 65534, os.getuid()\n\
         for port in (80, 443, 1, 65535):\n\
         \x20   s = socket.socket(); s.bind(('0.0.0.0', port)); s.listen(1)\n\
         print('ok')",
    ]);
    dyno_net::ns::command_in(&mut command, &net.netns, Some(65534)).unwrap();
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

fn connectivity_matrix(proto: Proto) {
    let (lab, mut network) =
        lab_network(&format!("matrix{proto:?}").to_lowercase(), "10.213.0.0/16");
    let a = network.up("a", Some(PORT)).unwrap();
    let b = network.up("b", Some(PORT)).unwrap();
    let host = network.host().netns().try_clone().unwrap();
    let at = |ip: Ipv4Addr, port| SocketAddrV4::new(ip, port);

    // Router-marked host socket → $PORT: in.
    let a_port = serve(&a.netns, proto, at(Ipv4Addr::UNSPECIFIED, PORT));
    let a_other = serve(&a.netns, proto, at(Ipv4Addr::UNSPECIFIED, OTHER_PORT));
    let (sent, seen) = exchange_open(
        &host,
        proto,
        None,
        &a_port,
        at(a.ip, PORT),
        Some(ROUTER_MARK),
    );
    assert!(sent.is_ok(), "marked → $PORT: {sent:?}");
    // From the platform's own address (the dyno route's preferred source), not the host's.
    assert_eq!(seen.map(|p| *p.ip()), Some(GATEWAY), "marked → $PORT");
    // Router-marked → another port: dropped.
    let (_, seen) = exchange(
        &host,
        proto,
        None,
        &a_other,
        at(a.ip, OTHER_PORT),
        Some(ROUTER_MARK),
    );
    assert_eq!(seen, None, "marked → other port must be dropped");
    // Unmarked → $PORT: dropped.
    let (_, seen) = exchange(&host, proto, None, &a_port, at(a.ip, PORT), None);
    assert_eq!(seen, None, "unmarked → $PORT must be dropped");
    // Dyno A → dyno B, on $PORT and any other port: dropped.
    let b_port = serve(&b.netns, proto, at(Ipv4Addr::UNSPECIFIED, PORT));
    let b_other = serve(&b.netns, proto, at(Ipv4Addr::UNSPECIFIED, OTHER_PORT));
    let (_, seen) = exchange(&a.netns, proto, None, &b_port, at(b.ip, PORT), None);
    assert_eq!(seen, None, "dyno → dyno $PORT must be dropped");
    let (_, seen) = exchange(
        &a.netns,
        proto,
        None,
        &b_other,
        at(b.ip, OTHER_PORT),
        Some(ROUTER_MARK),
    );
    assert_eq!(seen, None, "dyno → dyno must be dropped, mark or not");
    // Dyno → a listener on the host: dropped (and the host itself does reach it).
    let on_host = serve(&host, proto, at(Ipv4Addr::UNSPECIFIED, 7000));
    let (sent, seen) = exchange_open(&host, proto, None, &on_host, at(UPLINK_ADDR, 7000), None);
    assert!(
        sent.is_ok() && seen.is_some(),
        "control: the host reaches its own listener"
    );
    let (_, seen) = exchange(&a.netns, proto, None, &on_host, at(UPLINK_ADDR, 7000), None);
    assert_eq!(seen, None, "dyno → host service must be dropped");
    // Dyno → the internet: allowed, seen from the host's uplink address (masquerade).
    let internet = serve(&lab.internet, proto, at(INTERNET_SERVER, 8000));
    let (sent, seen) = exchange_open(
        &a.netns,
        proto,
        None,
        &internet,
        at(INTERNET_SERVER, 8000),
        None,
    );
    assert!(sent.is_ok(), "dyno → internet: {sent:?}");
    assert_eq!(seen.map(|p| *p.ip()), Some(UPLINK_ADDR), "masqueraded");
    // A spoofed source (another dyno's address, and one from nowhere) is dropped.
    for spoofed in [b.ip, Ipv4Addr::new(10, 213, 250, 250)] {
        run_in(
            &a.netns,
            "ip",
            &["addr", "add", &format!("{spoofed}/32"), "dev", "eth0"],
        );
        let (_, seen) = exchange(
            &a.netns,
            proto,
            Some(spoofed),
            &internet,
            at(INTERNET_SERVER, 8000),
            None,
        );
        assert_eq!(seen, None, "spoofed source {spoofed} must be dropped");
    }
    // The metadata endpoint is unreachable (the path exists: the host reaches it).
    let metadata = Ipv4Addr::new(169, 254, 169, 254);
    run_in(
        &lab.internet,
        "ip",
        &["addr", "add", "169.254.169.254/32", "dev", "lo"],
    );
    let meta = serve(&lab.internet, proto, at(metadata, 80));
    let (sent, seen) = exchange_open(&host, proto, None, &meta, at(metadata, 80), None);
    assert!(
        sent.is_ok() && seen.is_some(),
        "control: the host reaches 169.254.169.254"
    );
    let (_, seen) = exchange(&a.netns, proto, Some(a.ip), &meta, at(metadata, 80), None);
    assert_eq!(seen, None, "dyno → 169.254.169.254 must be dropped");
}

#[test]
fn connectivity_matrix_tcp() {
    connectivity_matrix(Proto::Tcp);
}

#[test]
fn connectivity_matrix_udp() {
    connectivity_matrix(Proto::Udp);
}

#[test]
fn a_dyno_sees_none_of_another_dynos_sockets() {
    let (_lab, mut network) = lab_network("isolation", "10.213.0.0/16");
    let a = network.up("a", None).unwrap();
    let b = network.up("b", None).unwrap();
    let _b_tcp = serve(
        &b.netns,
        Proto::Tcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4321),
    );
    let _b_udp = serve(
        &b.netns,
        Proto::Udp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4322),
    );
    let _a_tcp = serve(
        &a.netns,
        Proto::Tcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 1234),
    );
    let read = |netns: &dyno_net::ns::Netns, file: &'static str| {
        netns
            .run(move || std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap())
            .unwrap()
    };
    // Ports appear in /proc/net/{tcp,udp} as upper-case hex: 4321 = 10E1, 4322 = 10E2.
    assert!(
        read(&b.netns, "tcp").contains(":10E1"),
        "control: B sees its own listener"
    );
    assert!(
        read(&b.netns, "udp").contains(":10E2"),
        "control: B sees its own UDP socket"
    );
    assert!(
        !read(&a.netns, "tcp").contains(":10E1"),
        "A must not see B's TCP listener"
    );
    assert!(
        !read(&a.netns, "udp").contains(":10E2"),
        "A must not see B's UDP socket"
    );
    let mut diag_a = a.netns.run(SockDiag::open).unwrap().unwrap();
    let ports: Vec<u16> = diag_a
        .tcp_listeners()
        .unwrap()
        .iter()
        .map(|l| l.port)
        .collect();
    assert_eq!(ports, [1234], "inet_diag in A shows A's listener only");
    assert!(!diag_a.is_listening(4321).unwrap());
}

#[test]
fn five_hundred_dynos_up_then_down_leave_nothing() {
    let (lab, mut network) = lab_network("five-hundred", "10.213.0.0/16");
    let mut nets = Vec::new();
    for i in 0..500 {
        nets.push(network.up(&format!("d{i}"), Some(PORT)).unwrap());
    }
    assert_eq!(network.ipam().leases().len(), 500);
    assert_eq!(links_of_dynos(&mut network).len(), 500);
    drop(nets);
    for i in 0..500 {
        assert!(network.down(&format!("d{i}")).unwrap());
    }
    assert!(network.ipam().leases().is_empty(), "every address is free");
    assert!(network.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(&lab.run_dir.0).unwrap().count(),
        0,
        "no namespace file"
    );
    assert_eq!(mounts_under(&lab.run_dir.0), 0, "no bind mount");
    wait_for_no_dyno_links(&mut network);
}

#[test]
fn a_failure_in_the_middle_of_setup_leaves_nothing() {
    let (lab, mut network) = lab_network("rollback", "10.213.0.0/16");
    for (i, point) in [
        FailPoint::AfterNetns,
        FailPoint::AfterVeth,
        FailPoint::AfterAddresses,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("f{i}");
        let err = network
            .up_with(&name, Some(PORT), None, Some(point))
            .unwrap_err();
        assert!(
            matches!(err, NetworkError::Net(NetError::Injected(_))),
            "{err}"
        );
        assert!(
            network.ipam().leases().is_empty(),
            "{point:?}: lease returned"
        );
        assert!(
            !lab.run_dir.0.join(format!("dyno-{name}")).exists(),
            "{point:?}: netns"
        );
        assert_eq!(mounts_under(&lab.run_dir.0), 0, "{point:?}: mount");
        // The host route to the address is gone at once; the links follow with the namespace.
        let routes = run_in(network.host().netns(), "ip", &["-4", "route", "show"]);
        assert!(!routes.contains("10.213."), "{point:?}: {routes}");
    }
    wait_for_no_dyno_links(&mut network);
    // The same name works afterwards.
    network.up("f0", Some(PORT)).unwrap();
}

/// Between `begin` and `complete` a sandbox may already run in the namespace: it is bound, its
/// address is claimed (a blackhole: nothing reaches it) and it has only `lo`. Completed, it is
/// a dyno like any other; one given up instead goes with `down`, lease included.
#[test]
fn a_begun_network_has_only_lo_until_completed_and_goes_with_down() {
    let (lab, mut network) = lab_network("begun", "10.213.0.0/16");
    let pending = network.begin("b", None, Some(PORT)).unwrap();
    let ip = pending.ip();
    assert!(pending.netns_path().exists(), "bound before the links");
    let netns = dyno_net::ns::Netns::open(pending.netns_path()).unwrap();
    let links = run_in(&netns, "ip", &["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");
    let routes = run_in(
        network.host().netns(),
        "ip",
        &["-4", "route", "show", "table", "all"],
    );
    assert!(routes.contains(&format!("blackhole {ip}")), "{routes}");
    assert_eq!(network.ipam().lease_of("b"), Some(ip));
    let net = network.complete(pending).unwrap();
    let links = run_in(&net.netns, "ip", &["-o", "link", "show"]);
    assert!(links.contains("eth0"), "{links}");
    let listed = network.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].ip, listed[0].port), (Some(ip), Some(PORT)));

    let given_up = network.begin("g", None, Some(PORT)).unwrap();
    let given_up_ip = given_up.ip();
    let path = given_up.netns_path().to_path_buf();
    drop(given_up);
    assert!(network.down("g").unwrap());
    assert!(!path.exists(), "namespace unbound");
    assert_eq!(network.ipam().lease_of("g"), None);
    let routes = run_in(
        network.host().netns(),
        "ip",
        &["-4", "route", "show", "table", "all"],
    );
    assert!(!routes.contains(&given_up_ip.to_string()), "{routes}");
    assert_eq!(
        mounts_under(&lab.run_dir.0),
        1,
        "only b's namespace is bound"
    );
}

#[test]
fn teardown_twice_is_success() {
    let (lab, mut network) = lab_network("twice", "10.213.0.0/16");
    let net = network.up("t", Some(PORT)).unwrap();
    let name = net.name.clone();
    let ip = net.ip;
    drop(net);
    assert!(network.down("t").unwrap());
    assert!(!network.down("t").unwrap(), "second down: nothing to do");
    dyno::teardown(network.host(), &lab.run_dir, &name, Some(ip)).unwrap();
    dyno::teardown(network.host(), &lab.run_dir, &name, None).unwrap();
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let (lab, mut network) = lab_network("badinput", "10.213.0.0/30");
    network.up("a", Some(PORT)).unwrap();
    let before_list = network.list().unwrap();
    let before_links = links_of_dynos(&mut network);
    let cases: Vec<(&str, &str)> = vec![
        ("Bad/Name", "may only contain a-z, 0-9 and '-'"),
        ("", "cannot be empty"),
        ("abcdefghijklmn", "too long"),
        ("a", "dyno a already has a network"),
    ];
    for (name, expected) in cases {
        let err = network.up(name, Some(PORT)).unwrap_err().to_string();
        assert!(err.contains(expected), "{name:?}: {err}");
    }
    network.up("b", None).unwrap();
    // A /30 has two usable addresses: the third dyno exhausts the pool.
    let err = network.up("c", None).unwrap_err().to_string();
    assert!(
        err.contains("address pool 10.213.0.0/30 is exhausted"),
        "{err}"
    );
    assert!(!lab.run_dir.0.join("dyno-c").exists());
    network.down("b").unwrap();
    wait_for_links(&mut network, &before_links);
    assert_eq!(network.list().unwrap(), before_list, "nothing changed");
}

fn wait_for_links(network: &mut Network<MemoryStore>, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while links_of_dynos(network) != expected {
        assert!(
            Instant::now() < deadline,
            "links: {:?}",
            links_of_dynos(network)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_name_can_be_reused_right_after_down() {
    let (_lab, mut network) = lab_network("reuse", "10.213.0.0/16");
    for _ in 0..3 {
        let net = network.up("again", Some(PORT)).unwrap();
        drop(net);
        network.down("again").unwrap();
    }
    let names: Vec<DynoName> = network
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn spare_namespaces_are_made_in_the_background_and_ready_for_a_dyno() {
    require_root();
    let spares = dyno::spares(3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while spares.ready() < 3 {
        assert!(
            Instant::now() < deadline,
            "spares not made: {}",
            spares.ready()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let prepared = dyno::PreparedNetns::take(&spares).unwrap();
    let lo = run_in(&prepared.netns, "ip", &["-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "lo is up: {lo}");
    let sysctl = run_in(
        &prepared.netns,
        "cat",
        &["/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(sysctl.trim(), "0");
    // The pool refills what was taken once its user is done with the CPUs.
    spares.refill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while spares.ready() < 3 {
        assert!(
            Instant::now() < deadline,
            "spares not refilled: {}",
            spares.ready()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Two instances on one host with the same pool and stores of their own (a daemon and a
/// `dyno up`): the host route is the host-wide lease. The second one's setup at an address the
/// first routes fails with `AddressTaken` before it makes anything (so its rollback cannot
/// touch the first's dyno); an allocation of its own skips that address; its firewall install
/// and its cleanup of unleased ports keep the first's exposed port; the first's dyno answers the
/// router throughout.
#[test]
fn instances_sharing_a_pool_never_take_each_others_addresses_or_ports() {
    let (lab, mut first) = lab_network("taken", "10.213.0.0/16");
    let a = first.up("a", Some(PORT)).unwrap();
    let config = NetworkConfig {
        run_dir: lab.run_dir.clone(),
        pool: "10.213.0.0/16".parse().unwrap(),
        spares: 0,
        ..NetworkConfig::default()
    };
    let host = Host::in_netns(lab.host.netns()).unwrap();
    let mut second = Network::open(host, &config, MemoryStore).unwrap();
    let err = second.up_at("b", a.ip, None).unwrap_err();
    assert!(
        matches!(err, NetworkError::Net(NetError::AddressTaken { ip }) if ip == a.ip),
        "{err}"
    );
    assert!(err.to_string().contains("already routed"), "{err}");
    assert!(!lab
        .run_dir
        .netns_path(&DynoName::new("b").unwrap())
        .exists());
    // Its own allocation starts where the first one's did, and moves past the taken address.
    let c = second.up("c", Some(PORT)).unwrap();
    assert_ne!(c.ip, a.ip);
    assert_eq!(second.ipam().lease_of("c"), Some(c.ip));
    assert_eq!(
        second.ipam().leases().len(),
        1,
        "the taken lease was returned"
    );
    // A firewall install and a cleanup of unleased ports by the second keep the first's port.
    second.install().unwrap();
    assert!(second.close_unleased_ports().is_empty());
    let host_ns = first.host().netns().try_clone().unwrap();
    let elements = run_in(&host_ns, "nft", &["list", "set", "inet", "dyno", "exposed"]);
    for ip in [a.ip, c.ip] {
        assert!(
            elements.contains(&format!("{ip} . {PORT}")),
            "{ip}: {elements}"
        );
    }
    let routes = run_in(
        &host_ns,
        "ip",
        &["-4", "route", "show", &format!("{}/32", a.ip)],
    );
    assert!(routes.contains(&a.host_link), "{routes}");
    let a_port = serve(
        &a.netns,
        Proto::Tcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT),
    );
    let (sent, _) = exchange_open(
        &host_ns,
        Proto::Tcp,
        None,
        &a_port,
        SocketAddrV4::new(a.ip, PORT),
        Some(ROUTER_MARK),
    );
    assert!(sent.is_ok(), "a after b's failed setup: {sent:?}");
    // Taking its own down leaves the first's; so does the teardown of a dyno of its own whose
    // link is gone (a reboot, say) and whose address the first has by now.
    assert!(second.down("c").unwrap());
    let gone = DynoName::new("gone").unwrap();
    dyno::teardown(second.host(), &lab.run_dir, &gone, Some(a.ip)).unwrap();
    let routes = run_in(&host_ns, "ip", &["-4", "route", "show"]);
    assert!(routes.contains(&a.host_link), "{routes}");
    assert!(!routes.contains(&c.ip.to_string()), "{routes}");
}
