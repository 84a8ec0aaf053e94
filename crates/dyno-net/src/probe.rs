//! Probes for tests and benchmarks: a TCP listener or UDP socket placed in a chosen network
//! namespace, and a client there that connects (from a chosen source, with a chosen socket
//! mark) and says whether it got through. A firewall's drop shows as a timeout of
//! [`DROP_WAIT`].

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::ns::Netns;

/// Long enough for anything on a veth to arrive; a packet dropped by the firewall never does.
pub const DROP_WAIT: Duration = Duration::from_millis(400);

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

/// A TCP connection from inside `netns` to `to`, optionally from source address `from` and
/// with socket mark `mark`: the socket once the handshake completed within `timeout` (a
/// firewall's drop shows as `TimedOut`).
pub fn connect(
    netns: &Netns,
    from: Option<Ipv4Addr>,
    to: SocketAddrV4,
    mark: Option<u32>,
    timeout: Duration,
) -> std::io::Result<Socket> {
    netns
        .run(move || {
            let socket = marked_socket(Proto::Tcp, from, mark)?;
            socket.connect_timeout(&SockAddr::from(to), timeout)?;
            Ok(socket)
        })
        .expect("run in namespace")
}

fn marked_socket(
    proto: Proto,
    from: Option<Ipv4Addr>,
    mark: Option<u32>,
) -> std::io::Result<Socket> {
    let socket = new_socket(proto)?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    if let Some(from) = from {
        socket.bind(&SockAddr::from(SocketAddrV4::new(from, 0)))?;
    }
    Ok(socket)
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
    match proto {
        Proto::Tcp => {
            let socket = connect(netns, from, to, mark, DROP_WAIT)?;
            let mut stream: std::net::TcpStream = socket.into();
            stream.set_read_timeout(Some(DROP_WAIT * 3))?;
            let mut answer = [0u8; 4];
            stream.read_exact(&mut answer)
        }
        Proto::Udp => netns
            .run(move || {
                let socket = marked_socket(proto, from, mark)?;
                socket.send_to(b"ping", &SockAddr::from(to)).map(drop)
            })
            .expect("run in namespace"),
    }
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
