//! `dyno-cni` under the real containerd 1.6 and `ctr run --cni` (the runtime calls the plugin,
//! not this test). Needs root, containerd, ctr, runc and a static busybox.
//!
//! containerd and ctr run in a lab host and in mount namespaces of their own (see `harness`):
//! the real host's network, /etc/cni, /opt, /var/lib and /run are never touched.
//!
//! What ctr 1.6 does (seen with a logging plugin): ADD after the task is created and before it
//! starts, with `CNI_CONTAINERID=<namespace>-<id>`, `CNI_NETNS=/proc/<pid>/ns/net`, empty
//! `CNI_ARGS` (so `$PORT` comes from the config's `port`) and `CNI_IFNAME=eth0`; DEL only when
//! a foreground `ctr run` sees its task exit, with an empty `CNI_NETNS` (the task is gone) and
//! the cached `prevResult`; never CHECK. `ctr run --detach` never calls DEL.

mod common;

// In a subdir: a file directly in tests/ would be a test target of its own.
#[path = "containerd/harness.rs"]
mod harness;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::Duration;

use dyno_net::lab::{INTERNET_SERVER, UPLINK_ADDR};
use dyno_net::nft::ROUTER_MARK;
use dyno_net::ns::Netns;
use harness::{connects, eth0_of, Containerd, CTR_NAMESPACE, GATEWAY, NETWORK, PORT, SUBNET};

/// The address `ctr run` got from the pool, after checking eth0 the way podman's test does.
fn checked_address(pid: u32) -> Ipv4Addr {
    let eth0 = eth0_of(pid).expect("eth0 inside the container");
    assert_eq!(eth0.index, 2, "eth0 is the container's first link after lo");
    let [(ip, 32)] = eth0.addresses[..] else {
        panic!("eth0 should have one /32: {:?}", eth0.addresses);
    };
    let pool: dyno_net::ipam::Ipv4Net = SUBNET.parse().expect("subnet");
    assert!(pool.contains(ip), "{ip} in {SUBNET}");
    assert_eq!(eth0.default_gateways, vec![GATEWAY]);
    ip
}

#[test]
fn ctr_run_cni_gives_the_dyno_network_and_removes_it_when_the_task_ends() {
    let mut containerd = Containerd::start("ctr-cni");
    let host = containerd.lab.host.netns().try_clone().expect("host netns");

    let web_pid = containerd.run("web", &["httpd", "-f", "-p", &PORT.to_string()]);
    let web = checked_address(web_pid);
    assert_eq!(
        containerd.leases(),
        vec![(web.to_string(), format!("{CTR_NAMESPACE}-web/eth0"))],
        "ctr's CNI_CONTAINERID is <namespace>-<id>"
    );
    // ctr passes no CNI_ARGS and no portMappings: $PORT is the config's `port`.
    assert_eq!(containerd.exposed(), vec![(web, PORT)]);
    assert_eq!(containerd.dy_links().len(), 1);

    // The router (a marked socket on the host) reaches $PORT once httpd listens.
    let web_port = SocketAddrV4::new(web, PORT);
    containerd.wait_for(
        "httpd to answer the router",
        Duration::from_secs(20),
        |_| connects(&host, web_port, Some(ROUTER_MARK)),
    );
    assert!(
        !connects(&host, web_port, None),
        "an unmarked host socket must not reach $PORT"
    );
    let other_port = SocketAddrV4::new(web, PORT + 1);
    assert!(
        !connects(&host, other_port, Some(ROUTER_MARK)),
        "the router reaches $PORT only"
    );

    // A second container listens too; neither reaches the other.
    let other_pid = containerd.run("other", &["httpd", "-f", "-p", &PORT.to_string()]);
    let other = checked_address(other_pid);
    assert_ne!(other, web);
    let other_listening = SocketAddrV4::new(other, PORT);
    containerd.wait_for("the second httpd", Duration::from_secs(20), |_| {
        connects(&host, other_listening, Some(ROUTER_MARK))
    });
    let web_ns = Netns::open(format!("/proc/{web_pid}/ns/net")).expect("web netns");
    let other_ns = Netns::open(format!("/proc/{other_pid}/ns/net")).expect("other netns");
    assert!(
        !connects(&other_ns, web_port, None),
        "a container reached another"
    );
    assert!(
        !connects(&web_ns, other_listening, None),
        "a container reached another"
    );
    // Egress gets out, masqueraded as the host's uplink address.
    let server = containerd
        .lab
        .internet
        .run(|| TcpListener::bind((INTERNET_SERVER, 0)))
        .expect("internet netns")
        .expect("listen");
    let SocketAddr::V4(server_address) = server.local_addr().expect("address") else {
        unreachable!("bound to an IPv4 address");
    };
    assert!(
        connects(&web_ns, server_address, None),
        "the container reaches the internet"
    );
    let (_, seen_from) = server.accept().expect("accept");
    assert_eq!(seen_from.ip(), IpAddr::V4(UPLINK_ADDR), "masqueraded");

    let mut exposed = containerd.exposed();
    exposed.sort();
    let mut expected = vec![(web, PORT), (other, PORT)];
    expected.sort();
    assert_eq!(exposed, expected);

    // The task's end makes the foreground `ctr run` call DEL: the lease and the exposed port
    // go (a vanished namespace alone would take only the link).
    let status = containerd.stop("other");
    assert_eq!(status.code(), Some(137), "ctr run passes on the SIGKILL");
    assert_eq!(containerd.exposed(), vec![(web, PORT)]);
    assert_eq!(containerd.leases().len(), 1);
    assert_eq!(containerd.dy_links().len(), 1);
    assert!(
        connects(&host, web_port, Some(ROUTER_MARK)),
        "web unaffected"
    );

    containerd.stop("web");
    assert!(
        containerd.exposed().is_empty(),
        "exposed set emptied by DEL"
    );
    assert!(containerd.leases().is_empty(), "leases released by DEL");
    let links = containerd.dy_links();
    assert!(links.is_empty(), "host ends left: {links:?}");
    let listed = containerd.ctr(&["container", "list", "--quiet"]);
    assert!(
        listed.status.success() && listed.stdout.is_empty(),
        "{listed:?}"
    );

    let forced = containerd.shut_down();
    assert!(forced.is_empty(), "cleanup had to force: {forced:?}");
}

#[test]
fn ctr_run_detached_calls_add_but_never_del() {
    let mut containerd = Containerd::start("ctr-detach");
    let pid = containerd.run_detached("bg", &["sleep", "600"]);
    let ip = checked_address(pid);
    assert_eq!(containerd.exposed(), vec![(ip, PORT)]);

    // Everything ctr offers to end it: none of it calls DEL in ctr 1.6.
    let kill = containerd.ctr(&["task", "kill", "--signal", "SIGKILL", "bg"]);
    assert!(kill.status.success(), "{kill:?}");
    containerd.wait_for("the task to be deleted", Duration::from_secs(20), |c| {
        c.ctr(&["task", "delete", "bg"]).status.success()
    });
    let delete = containerd.ctr(&["container", "delete", "bg"]);
    assert!(delete.status.success(), "{delete:?}");
    // The namespace went with the task, and the host end with it ...
    containerd.wait_for("the host end to go", Duration::from_secs(20), |c| {
        c.dy_links().is_empty()
    });
    // ... but the lease, the open port and libcni's cached result stay.
    assert_eq!(containerd.exposed(), vec![(ip, PORT)], "no DEL came");
    assert_eq!(containerd.leases().len(), 1);
    let cached = format!("var-lib/cni/results/{NETWORK}-{CTR_NAMESPACE}-bg-eth0");
    assert!(
        containerd.dir.join(cached).exists(),
        "libcni still lists it"
    );

    // The DEL a runtime owes (without a namespace, as ctr's foreground DEL comes) cleans up.
    let del = containerd.plugin("DEL", "bg");
    assert!(del.status.success(), "{del:?}");
    assert!(containerd.exposed().is_empty());
    assert!(containerd.leases().is_empty());

    let forced = containerd.shut_down();
    assert!(forced.is_empty(), "cleanup had to force: {forced:?}");
}
