//! Helpers shared by the privileged integration tests: a lab host with dyno networking on it,
//! and small TCP/UDP clients and servers placed in a chosen namespace.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use dyno_net::dyno::Host;
use dyno_net::ipam::{Ipv4Net, MemoryStore};
use dyno_net::lab::{Lab, INTERNET_SERVER};
use dyno_net::network::{Network, NetworkConfig};
use dyno_net::ns::{self, Netns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Long enough for anything on a veth to arrive; a packet dropped by the firewall never does.
pub const DROP_WAIT: Duration = Duration::from_millis(400);

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A server socket bound inside `netns`: a TCP listener or a UDP socket.
pub struct Server {
    pub socket: Socket,
    pub proto: Proto,
}

pub fn serve(netns: &Netns, proto: Proto, addr: SocketAddrV4) -> Server {
    let socket = netns
        .run(move || -> std::io::Result<Socket> {
            let socket = new_socket(proto)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SockAddr::from(addr))?;
            if proto == Proto::Tcp {
                socket.listen(16)?;
            }
            Ok(socket)
        })
        .expect("run in namespace")
        .unwrap_or_else(|e| panic!("bind {proto:?} {addr}: {e}"));
    Server { socket, proto }
}

fn new_socket(proto: Proto) -> std::io::Result<Socket> {
    match proto {
        Proto::Tcp => Socket::new(Domain::IPV4, Type::STREAM.cloexec(), Some(Protocol::TCP)),
        Proto::Udp => Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP)),
    }
}

impl Server {
    /// The peer address of the first connection or datagram within `DROP_WAIT`, if any; a TCP
    /// server also answers "pong" so the client sees a full round trip.
    pub fn receive(&self) -> Option<SocketAddrV4> {
        match self.proto {
            Proto::Tcp => {
                self.socket.set_nonblocking(true).unwrap();
                let deadline = std::time::Instant::now() + DROP_WAIT;
                loop {
                    match self.socket.accept() {
                        Ok((conn, peer)) => {
                            conn.set_nonblocking(false).unwrap();
                            let mut stream: std::net::TcpStream = conn.into();
                            let _ = stream.write_all(b"pong");
                            return peer.as_socket_ipv4();
                        }
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => return None,
                    }
                }
            }
            Proto::Udp => {
                self.socket.set_read_timeout(Some(DROP_WAIT)).unwrap();
                let mut buf = [std::mem::MaybeUninit::new(0u8); 64];
                match self.socket.recv_from(&mut buf) {
                    Ok((_, peer)) => peer.as_socket_ipv4(),
                    Err(_) => None,
                }
            }
        }
    }
}

/// Sends one connection (TCP) or datagram (UDP) from inside `netns` to `to`, optionally from
/// source address `from` and with socket mark `mark`. For TCP, `Ok` means the handshake
/// completed and the server's answer arrived.
pub fn send(
    netns: &Netns,
    proto: Proto,
    from: Option<Ipv4Addr>,
    to: SocketAddrV4,
    mark: Option<u32>,
) -> std::io::Result<()> {
    netns
        .run(move || -> std::io::Result<()> {
            let socket = new_socket(proto)?;
            if let Some(mark) = mark {
                socket.set_mark(mark)?;
            }
            if let Some(from) = from {
                socket.bind(&SockAddr::from(SocketAddrV4::new(from, 0)))?;
            }
            match proto {
                Proto::Tcp => {
                    socket.connect_timeout(&SockAddr::from(to), DROP_WAIT)?;
                    let mut stream: std::net::TcpStream = socket.into();
                    stream.set_read_timeout(Some(DROP_WAIT * 3))?;
                    let mut answer = [0u8; 4];
                    stream.read_exact(&mut answer)?;
                    Ok(())
                }
                Proto::Udp => {
                    socket.send_to(b"ping", &SockAddr::from(to))?;
                    Ok(())
                }
            }
        })
        .expect("run in namespace")
}

/// [`exchange`] for a path that must be open: a handshake that timed out (a loaded machine can
/// take longer than [`DROP_WAIT`]) is tried again, up to 3 times. A path that is really closed
/// still fails every time.
pub fn exchange_open(
    client_ns: &Netns,
    proto: Proto,
    from: Option<Ipv4Addr>,
    server: &Server,
    to: SocketAddrV4,
    mark: Option<u32>,
) -> (std::io::Result<()>, Option<SocketAddrV4>) {
    let mut tries = 0;
    loop {
        tries += 1;
        let result = exchange(client_ns, proto, from, server, to, mark);
        match &result.0 {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && tries < 3 => continue,
            _ => return result,
        }
    }
}

/// For TCP the client needs the server to accept concurrently; this runs both sides and returns
/// (client result, what the server saw).
pub fn exchange(
    client_ns: &Netns,
    proto: Proto,
    from: Option<Ipv4Addr>,
    server: &Server,
    to: SocketAddrV4,
    mark: Option<u32>,
) -> (std::io::Result<()>, Option<SocketAddrV4>) {
    std::thread::scope(|scope| {
        let seen = scope.spawn(|| server.receive());
        let sent = send(client_ns, proto, from, to, mark);
        (sent, seen.join().unwrap())
    })
}

/// Runs a command inside `netns` and returns its stdout; panics with its stderr on failure.
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
