//! Helpers shared by the privileged integration tests: a lab host with dyno networking on it,
//! and small TCP/UDP clients and servers placed in a chosen namespace.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use dyno_net::dyno::Host;
use dyno_net::ipam::{Ipv4Net, MemoryStore};
use dyno_net::lab::{Lab, INTERNET_SERVER};
use dyno_net::network::{Network, NetworkConfig};
use dyno_net::ns::{self, Netns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[allow(unused_imports)] // each test file uses its own part
pub use dyno_net::probe::{exchange, exchange_open, send, serve, Proto, Server, DROP_WAIT};

pub fn require_root() {
    assert!(
        rustix::process::geteuid().as_raw() == 0,
        "this test needs root (it creates network namespaces): run the suite as root, e.g. sudo -E cargo nextest run"
    );
}

/// A lab host with dyno networking (firewall installed), using `pool`.
pub fn lab_network(tag: &str, pool: &str) -> (Lab, Network<MemoryStore>) {
    lab_network_with(tag, pool, NetworkConfig::default().flows_per_dyno)
}

/// [`lab_network`] with a limit of `flows_per_dyno` tracked flows per dyno.
pub fn lab_network_with(tag: &str, pool: &str, flows_per_dyno: u32) -> (Lab, Network<MemoryStore>) {
    require_root();
    let lab = Lab::new(tag).expect("create the lab host");
    let host = Host::in_netns(lab.host.netns()).expect("open the lab host");
    let config = NetworkConfig {
        run_dir: lab.run_dir.clone(),
        pool: pool.parse::<Ipv4Net>().expect("pool"),
        spares: 0,
        flows_per_dyno,
        ..NetworkConfig::default()
    };
    let network =
        Network::open(host, &config, MemoryStore).expect("open dyno networking in the lab");
    (lab, network)
}

pub fn run_in(netns: &Netns, program: &str, args: &[&str]) -> String {
    let mut command = Command::new(program);
    command.args(args);
    ns::command_in(&mut command, netns, None).unwrap();
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("not IPv4: {addr}"),
    }
}

/// A listener in the fake internet that never accepts: the kernel completes each handshake and
/// queues the connection (up to `backlog`), which is all a flow needs to be established.
pub fn listener(internet: &Netns, port: u16, backlog: i32) -> Socket {
    internet
        .run(move || -> io::Result<Socket> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.bind(&SockAddr::from(SocketAddrV4::new(INTERNET_SERVER, port)))?;
            socket.listen(backlog)?;
            Ok(socket)
        })
        .expect("run in the internet namespace")
        .unwrap_or_else(|e| panic!("listen on {INTERNET_SERVER}:{port}: {e}"))
}

/// Opens up to `count` TCP connections from `netns` to the fake internet, over `ports` in turn,
/// and keeps them open; stops at the first one that fails and returns its error.
pub fn open_flows(
    netns: &Netns,
    ports: &[u16],
    count: usize,
    timeout: Duration,
) -> (Vec<Socket>, Option<io::Error>) {
    let ports = ports.to_vec();
    netns
        .run(move || {
            let mut held = Vec::with_capacity(count);
            for i in 0..count {
                let to = SocketAddrV4::new(INTERNET_SERVER, ports[i % ports.len()]);
                let connected = Socket::new(Domain::IPV4, Type::STREAM.cloexec(), None)
                    .and_then(|s| s.connect_timeout(&SockAddr::from(to), timeout).map(|()| s));
                match connected {
                    Ok(socket) => held.push(socket),
                    Err(e) => return (held, Some(e)),
                }
            }
            (held, None)
        })
        .expect("run in the dyno's namespace")
}
