//! inet_diag inside network namespaces (privileged: run as root).
//!
//! Every test makes its own fresh namespaces with `Netns::create`: nothing is bound on disk and
//! everything vanishes with the `Netns` handles and sockets at the end of the test, even on a
//! panic. Ports can be fixed: each namespace has its own port space.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use dyno_net::diag::{Listener, SockDiag};
use dyno_net::ns::Netns;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// How long the kernel may take to finish handshakes on loopback before a test gives up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root: run the suite as root"
    );
}

/// A fresh network namespace with `lo` up, and a sock_diag socket opened inside it.
fn namespace_with_diag() -> (Netns, SockDiag) {
    let (netns, diag) = Netns::create(|| {
        let status = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("ip link set lo up (in the test namespace): {other:?}"),
        }
        SockDiag::open()
    })
    .expect("create a network namespace");
    (netns, diag.expect("open sock_diag inside the namespace"))
}

/// A TCP socket bound to `addr` inside `netns`, not yet listening.
fn bound_socket(netns: &Netns, addr: SocketAddr, reuse_port: bool) -> OwnedFd {
    netns
        .run(move || -> rustix::io::Result<OwnedFd> {
            let family = match addr {
                SocketAddr::V4(_) => AddressFamily::INET,
                SocketAddr::V6(_) => AddressFamily::INET6,
            };
            // CLOEXEC: tests running in parallel spawn `ip`; a child must not keep our socket.
            let socket =
                rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
            if reuse_port {
                rustix::net::sockopt::set_socket_reuseport(&socket, true)?;
            }
            rustix::net::bind(&socket, &addr)?;
            Ok(socket)
        })
        .expect("run in the namespace")
        .unwrap_or_else(|e| panic!("bind {addr} in the test namespace: {e}"))
}

/// A listener on `addr` inside `netns` with exactly `backlog`.
fn listener_with_backlog(netns: &Netns, addr: SocketAddr, backlog: i32) -> TcpListener {
    let socket = bound_socket(netns, addr, false);
    rustix::net::listen(&socket, backlog).expect("listen");
    TcpListener::from(socket)
}

/// `count` clients connected to `to` from inside `netns` (and so never accepted by anyone yet).
fn connect_clients(netns: &Netns, to: SocketAddr, count: usize) -> Vec<TcpStream> {
    netns
        .run(move || {
            (0..count)
                .map(|_| TcpStream::connect(to))
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("run in the namespace")
        .unwrap_or_else(|e| panic!("connect to {to} inside the namespace: {e}"))
}

/// Polls `diag` until `settled` holds for its listeners or [`SETTLE_TIMEOUT`] passes, and
/// returns the last answer: the caller asserts exact values on it, so a timeout shows up as a
/// readable mismatch.
fn poll_listeners(diag: &mut SockDiag, settled: impl Fn(&[Listener]) -> bool) -> Vec<Listener> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let listeners = diag.tcp_listeners().expect("tcp_listeners");
        if settled(&listeners) || Instant::now() >= deadline {
            return listeners;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn on(listeners: &[Listener], port: u16) -> Vec<Listener> {
    listeners
        .iter()
        .filter(|l| l.port == port)
        .cloned()
        .collect()
}

#[test]
fn listen_queue_reports_queued_clients_and_backlog() {
    require_root();
    let (netns, mut diag) = namespace_with_diag();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 5000));
    let listener = listener_with_backlog(&netns, addr, 16);
    let _clients = connect_clients(&netns, addr, 3);

    let listeners = poll_listeners(&mut diag, |l| {
        on(l, 5000).first().is_some_and(|l| l.queued >= 3)
    });
    assert_eq!(
        listeners,
        vec![Listener {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 5000,
            queued: 3,
            backlog: 16,
            active: 0,
        }],
        "3 connected, unaccepted clients on a backlog-16 listener"
    );

    // Accepting moves a connection from the queue to Raindrops' "active".
    let (_accepted, _) = listener.accept().expect("accept");
    let listeners = poll_listeners(&mut diag, |l| {
        on(l, 5000)
            .first()
            .is_some_and(|l| l.queued == 2 && l.active == 1)
    });
    assert_eq!(
        listeners,
        vec![Listener {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 5000,
            queued: 2,
            backlog: 16,
            active: 1,
        }]
    );
}

#[test]
fn is_listening_false_before_listen_true_after() {
    require_root();
    let (netns, mut diag) = namespace_with_diag();
    assert!(
        !diag.is_listening(5001).expect("is_listening"),
        "nothing there yet"
    );

    let socket = bound_socket(
        &netns,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5001)),
        false,
    );
    assert!(
        !diag.is_listening(5001).expect("is_listening"),
        "bound but not listening is not ready"
    );

    rustix::net::listen(&socket, 128).expect("listen");
    assert!(diag.is_listening(5001).expect("is_listening"));
    assert!(
        !diag.is_listening(5002).expect("is_listening"),
        "other ports stay false"
    );
    assert!(
        !diag.is_listening(0).expect("is_listening"),
        "port 0 is never listening"
    );

    drop(socket);
    // A parallel test's fork (spawning `ip`) may hold a copy of the fd table until its exec, and
    // with it our socket: the listener goes away when the last copy does.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while diag.is_listening(5001).expect("is_listening") {
        assert!(
            Instant::now() < deadline,
            "a closed listener must stop being reported"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ipv6_listeners_are_found() {
    require_root();
    let (netns, mut diag) = namespace_with_diag();
    let loopback = SocketAddr::from((Ipv6Addr::LOCALHOST, 5003));
    let _loopback_listener = listener_with_backlog(&netns, loopback, 8);
    // Dual stack (bindv6only=0): `::` also takes IPv4 clients, as v4-mapped IPv6 sockets.
    let wildcard = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 5004));
    let wildcard_listener = listener_with_backlog(&netns, wildcard, 32);

    assert!(diag.is_listening(5003).expect("is_listening"), "[::1]:5003");
    assert!(diag.is_listening(5004).expect("is_listening"), "[::]:5004");

    let _v6_client = connect_clients(&netns, loopback, 1);
    let _v4_client = connect_clients(&netns, SocketAddr::from((Ipv4Addr::LOCALHOST, 5004)), 1);
    let (_accepted_v4, peer) = wildcard_listener.accept().expect("accept");
    assert!(
        peer.is_ipv6(),
        "an IPv4 client of a dual-stack listener is v4-mapped"
    );

    let listeners = poll_listeners(&mut diag, |l| {
        on(l, 5003).first().is_some_and(|l| l.queued == 1)
            && on(l, 5004).first().is_some_and(|l| l.active == 1)
    });
    assert_eq!(
        listeners,
        vec![
            Listener {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: 5003,
                queued: 1,
                backlog: 8,
                active: 0,
            },
            Listener {
                addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                port: 5004,
                queued: 0,
                backlog: 32,
                active: 1,
            },
        ]
    );
}

#[test]
fn reuseport_listeners_on_one_address_are_reported_once() {
    require_root();
    let (netns, mut diag) = namespace_with_diag();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 5005));
    let first = bound_socket(&netns, addr, true);
    let second = bound_socket(&netns, addr, true);
    rustix::net::listen(&first, 16).expect("listen");
    rustix::net::listen(&second, 8).expect("listen");
    // Another address on the same port is another listener.
    let _v6 = listener_with_backlog(&netns, SocketAddr::from((Ipv6Addr::LOCALHOST, 5005)), 4);

    let listeners = diag.tcp_listeners().expect("tcp_listeners");
    assert_eq!(
        listeners,
        vec![
            Listener {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 5005,
                queued: 0,
                backlog: 24,
                active: 0,
            },
            Listener {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: 5005,
                queued: 0,
                backlog: 4,
                active: 0,
            },
        ]
    );
}

/// Local ports of the sockets in a `/proc/net/tcp`-style table (`tcp` or `tcp6`).
fn proc_net_tcp_local_ports(table: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let local = line.split_whitespace().nth(1)?;
            let (_, port) = local.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

fn proc_net_tcp_ports_in(netns: &Netns) -> Vec<u16> {
    netns
        .run(|| -> std::io::Result<Vec<u16>> {
            let mut ports = Vec::new();
            for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
                match std::fs::read_to_string(table) {
                    Ok(text) => ports.extend(proc_net_tcp_local_ports(&text)),
                    // No IPv6 in this kernel: nothing to see there.
                    Err(e) if e.kind() == ErrorKind::NotFound && table.ends_with('6') => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(ports)
        })
        .expect("run in the namespace")
        .expect("read /proc/thread-self/net/tcp inside the namespace")
}

#[test]
fn another_namespace_listeners_are_invisible() {
    require_root();
    let (a, mut diag_a) = namespace_with_diag();
    let (b, mut diag_b) = namespace_with_diag();
    let port = 5006;
    let _in_b = listener_with_backlog(&b, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), 16);

    // B sees its own listener: the negative checks below are not vacuous.
    assert!(diag_b.is_listening(port).expect("is_listening in B"));
    assert_eq!(
        on(&diag_b.tcp_listeners().expect("tcp_listeners in B"), port).len(),
        1
    );
    assert!(
        proc_net_tcp_ports_in(&b).contains(&port),
        "B's /proc/net/tcp shows its listener"
    );

    assert!(!diag_a.is_listening(port).expect("is_listening in A"));
    assert_eq!(diag_a.tcp_listeners().expect("tcp_listeners in A"), vec![]);
    assert!(
        !proc_net_tcp_ports_in(&a).contains(&port),
        "A's /proc/net/tcp must not show B's port"
    );

    // The same holds for a socket opened later with open_in, from this (host) thread.
    let mut diag_a_again = SockDiag::open_in(&a).expect("open_in A");
    assert!(!diag_a_again.is_listening(port).expect("is_listening in A"));
    let mut diag_b_again = SockDiag::open_in(&b).expect("open_in B");
    assert!(diag_b_again.is_listening(port).expect("is_listening in B"));
}

#[test]
fn proc_net_tcp_ports_are_parsed() {
    // No root needed: a sample of the kernel's format.
    let table = concat!(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  ",
        "timeout inode\n",
        "   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        ",
        "0 1 1 0 100 0 0 10 0\n",
    );
    assert_eq!(proc_net_tcp_local_ports(table), vec![5000]);
}

#[test]
fn listeners_on_one_port_have_its_queue_only() {
    require_root();
    let (netns, mut diag) = namespace_with_diag();
    let web = SocketAddr::from((Ipv4Addr::LOCALHOST, 5010));
    let other = SocketAddr::from((Ipv4Addr::LOCALHOST, 5011));
    let _web = listener_with_backlog(&netns, web, 8);
    let _other = listener_with_backlog(&netns, other, 4);
    let _clients = connect_clients(&netns, web, 2);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let listeners = loop {
        let l = diag.listeners_on(5010).expect("listeners_on");
        if l.first().is_some_and(|l| l.queued >= 2) || Instant::now() >= deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        listeners,
        vec![Listener {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 5010,
            queued: 2,
            backlog: 8,
            active: 0,
        }]
    );
    assert!(diag.listeners_on(5012).expect("listeners_on").is_empty());
}

/// What a dyno leaves when its processes are gone: connections in every state.
/// `destroy_tcp_sockets` ends them all (they would hold the namespace otherwise). A listener
/// goes with its process: it is left alone (here its owner, the test, lives on).
#[test]
fn destroy_ends_every_tcp_socket_of_the_namespace() {
    require_root();
    let (netns, mut diag) = namespace_with_diag();
    let addr: SocketAddr = "127.0.0.1:7100".parse().unwrap();
    let listener = listener_with_backlog(&netns, addr, 8);
    let clients = connect_clients(&netns, addr, 3);
    let (accepted, _) = listener.accept().expect("accept one client");
    // The listener, three clients, one accepted connection and two still queued.
    let before = proc_net_tcp_ports_in(&netns);
    assert_eq!(before.len(), 7, "{before:?}");
    let destroyed = diag.destroy_tcp_sockets().expect("SOCK_DESTROY");
    // Destroying one end of a loopback pair resets the other: not every one needs a call.
    assert!(destroyed >= 2, "destroyed {destroyed}");
    let after = proc_net_tcp_ports_in(&netns);
    assert_eq!(after, vec![7100], "only the listener is left");
    // Their owners see them reset.
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut &accepted, &mut buf);
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionAborted)
            || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "{read:?}"
    );
    drop(clients);
}
