//! inet_diag: the TCP listeners of one network namespace, as Raindrops reports them.
//!
//! A `NETLINK_SOCK_DIAG` socket answers for the network namespace it was opened in, so a
//! [`SockDiag`] opened inside a dyno's namespace sees that dyno's sockets and nothing else. The
//! supervisor uses it for boot readiness ([`SockDiag::is_listening`]: "something LISTENs on
//! `$PORT`", no connect probe) and for Raindrops-style listen-queue metrics
//! ([`SockDiag::tcp_listeners`]).
//!
//! inet_diag dumps one address family per request, so every question is two dumps, `AF_INET`
//! then `AF_INET6`, on the one socket (netlink runs one dump per socket at a time).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DESTROY, TCP_ESTABLISHED, TCP_LISTEN,
};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use crate::netlink::{NetlinkError, NetlinkSocket, Object};
use crate::ns::{Netns, NsError};

/// One listening address and port, with its accept queue.
///
/// Sockets sharing an address and port (`SO_REUSEPORT`) are reported as one listener, the way
/// Raindrops keys its stats by `addr:port`: their `queued` and `backlog` add up (the kernel
/// spreads connections over their separate accept queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The local address; `0.0.0.0` or `::` for a wildcard listener. An IPv6 socket keeps its
    /// IPv6 form, even for a v4-mapped address.
    pub addr: IpAddr,
    pub port: u16,
    /// Connections fully established and waiting in the accept queue (`idiag_rqueue` of a
    /// listener: `sk_ack_backlog`).
    pub queued: u32,
    /// The listen backlog (`idiag_wqueue` of a listener: `sk_max_ack_backlog`, i.e. the
    /// `listen()` argument capped by `net.core.somaxconn`).
    pub backlog: u32,
    /// Accepted connections in state ESTABLISHED on this address and port (Raindrops "active").
    /// Connections still in the accept queue are counted in `queued`, not here.
    pub active: u32,
}

/// An error of inet_diag.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("inet_diag: {0}")]
    Netlink(#[source] NetlinkError),
    /// The kernel has no TCP handler for sock_diag (`CONFIG_INET_TCP_DIAG`, module `tcp_diag`).
    #[error("inet_diag: {0}: this kernel cannot report TCP sockets (no tcp_diag support)")]
    Unsupported(Object),
    #[error("inet_diag: unexpected reply to {object}: {reason}")]
    UnexpectedReply { object: Object, reason: String },
    #[error("inet_diag: {0}")]
    Namespace(#[from] NsError),
}

impl From<NetlinkError> for DiagError {
    fn from(error: NetlinkError) -> Self {
        match error {
            // inet_diag answers ENOENT to a dump when it has no handler for the protocol.
            NetlinkError::Kernel {
                object,
                errno: libc::ENOENT,
                ..
            } => DiagError::Unsupported(object),
            other => DiagError::Netlink(other),
        }
    }
}

/// A sock_diag socket bound to one network namespace. Open it inside the namespace (directly
/// or with [`SockDiag::open_in`]), then use it from any thread.
pub struct SockDiag {
    socket: NetlinkSocket<SockDiagMessage>,
}

impl fmt::Debug for SockDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockDiag").finish_non_exhaustive()
    }
}

impl SockDiag {
    /// Opens a sock_diag socket in the calling thread's network namespace.
    pub fn open() -> Result<SockDiag, DiagError> {
        Ok(SockDiag {
            socket: NetlinkSocket::open(NETLINK_SOCK_DIAG)?,
        })
    }

    /// Opens a sock_diag socket inside `netns` (on the namespace thread).
    pub fn open_in(netns: &Netns) -> Result<SockDiag, DiagError> {
        netns.run(SockDiag::open)?
    }

    /// Every TCP listener of the namespace, IPv4 and IPv6, sorted by port then address.
    ///
    /// One dump per family asks for LISTEN and ESTABLISHED sockets together, so `active` costs
    /// no extra dump. The ESTABLISHED part walks the kernel's connection hash table, which every
    /// namespace shares unless `net.ipv4.tcp_child_ehash_entries` gave it its own: its cost
    /// grows with the host's connections, not only the dyno's. Readiness uses
    /// [`SockDiag::is_listening`], which walks the listening sockets only.
    pub fn tcp_listeners(&mut self) -> Result<Vec<Listener>, DiagError> {
        let sockets = self.dump(StateFlags::LISTEN | StateFlags::ESTABLISHED, None)?;
        Ok(summarize(&sockets))
    }

    /// The listeners on `port` only, with their accept queues (`active` is left 0): only
    /// listening sockets on that port are dumped, so the cost does not grow with the host's
    /// connections the way [`SockDiag::tcp_listeners`]' does. For metrics scrapes.
    pub fn listeners_on(&mut self, port: u16) -> Result<Vec<Listener>, DiagError> {
        let sockets = self.dump(StateFlags::LISTEN, Some(port))?;
        let mut listeners = summarize(&sockets);
        // The kernel already filtered; checking again costs nothing and does not trust it.
        listeners.retain(|l| l.port == port);
        Ok(listeners)
    }

    /// Whether a TCP socket LISTENs on `port`, on any address, IPv4 or IPv6.
    ///
    /// Cheap: only listening sockets are dumped, and the kernel itself keeps those whose local
    /// port is `port` (the socket id's source port filters a dump).
    pub fn is_listening(&mut self, port: u16) -> Result<bool, DiagError> {
        let sockets = self.dump(StateFlags::LISTEN, Some(port))?;
        // The kernel already filtered; checking again costs nothing and does not trust it.
        Ok(sockets
            .iter()
            .any(|s| s.state == TCP_LISTEN && s.port == port))
    }

    /// Destroys every TCP socket of the namespace but its listeners (`SOCK_DESTROY`, as `ss -K`
    /// does) and says how many went. For a dyno whose processes are all gone: what is left are
    /// orphans (a FIN still unanswered, data unacknowledged) that would hold the namespace, and
    /// its host link, for up to a couple of minutes; its listeners went with their processes.
    /// Asking for no listener spares the kernel its walk of the listening hash, which holds
    /// every namespace's listeners (one per dyno): a scale-down of 1,000 dynos spent a fifth of
    /// its CPU there. A kernel without `CONFIG_INET_DIAG_DESTROY` refuses with `EOPNOTSUPP`:
    /// then the kernel's own timers end them.
    pub fn destroy_tcp_sockets(&mut self) -> Result<usize, DiagError> {
        let mut destroyed = 0;
        for family in Family::BOTH {
            let object = family.object();
            let make_request =
                || tcp_dump_request(family, StateFlags::all() - StateFlags::LISTEN, None);
            for message in self.socket.dump(make_request, object.clone())? {
                let SockDiagMessage::InetResponse(response) = message else {
                    continue;
                };
                let request = SockDiagMessage::InetRequest(InetRequest {
                    family: response.header.family,
                    protocol: IPPROTO_TCP,
                    extensions: ExtensionFlags::empty(),
                    states: StateFlags::all(),
                    socket_id: response.header.socket_id.clone(),
                });
                match self
                    .socket
                    .request_as(request, SOCK_DESTROY, object.clone())
                {
                    Ok(_) => destroyed += 1,
                    // Gone meanwhile, or a kind the kernel does not destroy (TIME_WAIT).
                    Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EINVAL)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(destroyed)
    }

    /// TCP sockets in `states` (and on local port `port`, if given), IPv4 then IPv6.
    fn dump(
        &mut self,
        states: StateFlags,
        port: Option<u16>,
    ) -> Result<Vec<DiagSocket>, DiagError> {
        let mut sockets = Vec::new();
        // One dump after the other, not both in one batch: a netlink socket runs one dump at a
        // time, and the kernel refuses a second dump request of the same write with EBUSY
        // while the first is still being read. Two sockets would not save a system call.
        for family in Family::BOTH {
            let object = family.object();
            let make_request = || tcp_dump_request(family, states.clone(), port);
            for message in self.socket.dump(make_request, object.clone())? {
                sockets.push(DiagSocket::from_message(&object, message)?);
            }
        }
        Ok(sockets)
    }
}

#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn object(self) -> Object {
        match self {
            Family::V4 => Object::new("tcp sockets", "ipv4"),
            Family::V6 => Object::new("tcp sockets", "ipv6"),
        }
    }
}

/// A dump request for TCP sockets of `family` in `states`. With `port`, the kernel only reports
/// sockets whose local port is `port` (inet_diag compares the request's source port, when not
/// zero, while it walks its hashes).
fn tcp_dump_request(family: Family, states: StateFlags, port: Option<u16>) -> SockDiagMessage {
    let (af, mut socket_id) = match family {
        Family::V4 => (AF_INET, SocketId::new_v4()),
        Family::V6 => (AF_INET6, SocketId::new_v6()),
    };
    socket_id.source_port = port.unwrap_or(0);
    SockDiagMessage::InetRequest(InetRequest {
        family: af,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states,
        socket_id,
    })
}

/// What we use of one socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiagSocket {
    state: u8,
    addr: IpAddr,
    port: u16,
    /// `idiag_rqueue`: accept queue length for a listener, unread bytes otherwise.
    recv_queue: u32,
    /// `idiag_wqueue`: backlog for a listener, unacknowledged bytes otherwise.
    send_queue: u32,
    /// 0 while a connection waits in the accept queue: it has no `struct socket` yet.
    inode: u32,
}

impl DiagSocket {
    fn from_message(object: &Object, message: SockDiagMessage) -> Result<Self, DiagError> {
        let unexpected = |kind: &str| DiagError::UnexpectedReply {
            object: object.clone(),
            reason: format!("{kind} instead of an inet socket"),
        };
        match message {
            SockDiagMessage::InetResponse(response) => {
                let header = &response.header;
                Ok(DiagSocket {
                    state: header.state,
                    addr: header.socket_id.source_address,
                    port: header.socket_id.source_port,
                    recv_queue: header.recv_queue,
                    send_queue: header.send_queue,
                    inode: header.inode,
                })
            }
            SockDiagMessage::UnixResponse(_) => Err(unexpected("a unix socket")),
            SockDiagMessage::InetRequest(_) => Err(unexpected("an inet request")),
            SockDiagMessage::UnixRequest(_) => Err(unexpected("a unix request")),
        }
    }
}

/// Listeners with their queues and the accepted connections counted against them.
fn summarize(sockets: &[DiagSocket]) -> Vec<Listener> {
    let mut listeners: Vec<Listener> = Vec::new();
    let mut by_address: HashMap<(IpAddr, u16), usize> = HashMap::new();
    for socket in sockets.iter().filter(|s| s.state == TCP_LISTEN) {
        match by_address.get(&(socket.addr, socket.port)) {
            Some(&i) => {
                let listener = &mut listeners[i];
                listener.queued = listener.queued.saturating_add(socket.recv_queue);
                listener.backlog = listener.backlog.saturating_add(socket.send_queue);
            }
            None => {
                by_address.insert((socket.addr, socket.port), listeners.len());
                listeners.push(Listener {
                    addr: socket.addr,
                    port: socket.port,
                    queued: socket.recv_queue,
                    backlog: socket.send_queue,
                    active: 0,
                });
            }
        }
    }
    // Raindrops' rule: an ESTABLISHED socket without an inode is still in the accept queue.
    let accepted = sockets
        .iter()
        .filter(|s| s.state == TCP_ESTABLISHED && s.inode != 0);
    for connection in accepted {
        // The listener bound to exactly this address wins over a wildcard one (the kernel's
        // own lookup order). A connection accepted by an IPv6 listener is an IPv6 socket, even
        // from an IPv4 client (v4-mapped), so it finds `::`, never `0.0.0.0`.
        let exact = by_address.get(&(connection.addr, connection.port));
        let wildcard = || by_address.get(&(unspecified_like(connection.addr), connection.port));
        if let Some(&i) = exact.or_else(wildcard) {
            listeners[i].active = listeners[i].active.saturating_add(1);
        }
    }
    listeners.sort_by_key(|l| (l.port, l.addr));
    listeners
}

fn unspecified_like(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkSerializable};
    use netlink_packet_sock_diag::constants::{AF_UNIX, SOCK_DIAG_BY_FAMILY};

    fn socket(
        state: u8,
        addr: &str,
        port: u16,
        recv_queue: u32,
        send_queue: u32,
        inode: u32,
    ) -> DiagSocket {
        DiagSocket {
            state,
            addr: addr.parse().expect("test address"),
            port,
            recv_queue,
            send_queue,
            inode,
        }
    }

    fn listen(addr: &str, port: u16, queued: u32, backlog: u32) -> DiagSocket {
        socket(TCP_LISTEN, addr, port, queued, backlog, 1000)
    }

    fn accepted(addr: &str, port: u16) -> DiagSocket {
        socket(TCP_ESTABLISHED, addr, port, 0, 0, 2000)
    }

    fn listener(addr: &str, port: u16, queued: u32, backlog: u32, active: u32) -> Listener {
        Listener {
            addr: addr.parse().expect("test address"),
            port,
            queued,
            backlog,
            active,
        }
    }

    #[test]
    fn request_carries_family_states_and_source_port() {
        let request = tcp_dump_request(Family::V6, StateFlags::LISTEN, Some(8080));
        assert_eq!(request.message_type(), SOCK_DIAG_BY_FAMILY);
        let mut bytes = vec![0u8; NetlinkSerializable::buffer_len(&request)];
        request.serialize(&mut bytes);
        // struct inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
        // starting with the source port in network byte order.
        assert_eq!(bytes[0], AF_INET6);
        assert_eq!(bytes[1], IPPROTO_TCP);
        assert_eq!(bytes[2], 0, "no extensions: the bare header has the queues");
        assert_eq!(&bytes[4..8], &(1u32 << TCP_LISTEN).to_ne_bytes());
        assert_eq!(&bytes[8..10], &8080u16.to_be_bytes());
        assert_eq!(
            &bytes[10..12],
            &[0, 0],
            "no destination port: that would skip listeners"
        );
    }

    #[test]
    fn request_without_port_filters_nothing() {
        let request = tcp_dump_request(
            Family::V4,
            StateFlags::LISTEN | StateFlags::ESTABLISHED,
            None,
        );
        let mut bytes = vec![0u8; NetlinkSerializable::buffer_len(&request)];
        request.serialize(&mut bytes);
        assert_eq!(bytes[0], AF_INET);
        let states = (1u32 << TCP_LISTEN) | (1u32 << TCP_ESTABLISHED);
        assert_eq!(&bytes[4..8], &states.to_ne_bytes());
        assert_eq!(&bytes[8..10], &[0, 0]);
    }

    /// `struct inet_diag_msg` as the kernel writes it, for an IPv4 socket.
    fn inet_diag_msg_v4(
        state: u8,
        addr: [u8; 4],
        port: u16,
        rqueue: u32,
        wqueue: u32,
        inode: u32,
    ) -> Vec<u8> {
        let mut raw = vec![AF_INET, state, 0, 0];
        raw.extend_from_slice(&port.to_be_bytes());
        raw.extend_from_slice(&0u16.to_be_bytes());
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&addr);
        raw.extend_from_slice(&src);
        raw.extend_from_slice(&[0u8; 16]); // destination
        raw.extend_from_slice(&0u32.to_ne_bytes()); // interface
        raw.extend_from_slice(&[0xffu8; 8]); // cookie
        for value in [0, rqueue, wqueue, 0, inode] {
            // expires, rqueue, wqueue, uid, inode
            raw.extend_from_slice(&value.to_ne_bytes());
        }
        raw
    }

    fn deserialize(payload: &[u8]) -> SockDiagMessage {
        let mut header = NetlinkHeader::default();
        header.message_type = SOCK_DIAG_BY_FAMILY;
        SockDiagMessage::deserialize(&header, payload).expect("a valid sock_diag message")
    }

    #[test]
    fn listener_queues_come_from_rqueue_and_wqueue() {
        let raw = inet_diag_msg_v4(TCP_LISTEN, [127, 0, 0, 1], 5000, 3, 16, 4242);
        let object = Family::V4.object();
        let socket = DiagSocket::from_message(&object, deserialize(&raw)).expect("inet socket");
        assert_eq!(socket, listen("127.0.0.1", 5000, 3, 16).with_inode(4242));
        assert_eq!(
            summarize(&[socket]),
            vec![listener("127.0.0.1", 5000, 3, 16, 0)]
        );
    }

    impl DiagSocket {
        fn with_inode(mut self, inode: u32) -> Self {
            self.inode = inode;
            self
        }
    }

    #[test]
    fn a_unix_socket_in_an_inet_dump_is_an_error_not_a_panic() {
        // struct unix_diag_msg: family, type, state, pad, inode, cookie.
        let mut raw = vec![AF_UNIX, libc::SOCK_STREAM as u8, TCP_LISTEN, 0];
        raw.extend_from_slice(&7u32.to_ne_bytes());
        raw.extend_from_slice(&[0u8; 8]);
        let error = DiagSocket::from_message(&Family::V4.object(), deserialize(&raw))
            .expect_err("a unix socket is not an inet socket");
        assert_eq!(
            error.to_string(),
            "inet_diag: unexpected reply to tcp sockets ipv4: a unix socket instead of an inet socket"
        );
    }

    #[test]
    fn accepted_connections_count_as_active_queued_ones_do_not() {
        let sockets = [
            listen("127.0.0.1", 5000, 2, 16),
            accepted("127.0.0.1", 5000),
            accepted("127.0.0.1", 5000),
            // Still in the accept queue: no inode yet.
            socket(TCP_ESTABLISHED, "127.0.0.1", 5000, 0, 0, 0),
            // The client end of a connection to the listener: local port is ephemeral.
            accepted("127.0.0.1", 40001),
        ];
        assert_eq!(
            summarize(&sockets),
            vec![listener("127.0.0.1", 5000, 2, 16, 2)]
        );
    }

    #[test]
    fn exact_address_wins_over_wildcard_and_families_stay_apart() {
        let sockets = [
            listen("0.0.0.0", 80, 0, 128),
            listen("10.213.0.7", 80, 0, 64),
            listen("::", 80, 0, 32),
            accepted("10.213.0.7", 80),
            accepted("127.0.0.1", 80),
            accepted("127.0.0.1", 80),
            // An IPv4 client of the IPv6 listener: a v4-mapped IPv6 socket.
            accepted("::ffff:127.0.0.1", 80),
            accepted("::1", 80),
        ];
        assert_eq!(
            summarize(&sockets),
            vec![
                listener("0.0.0.0", 80, 0, 128, 2),
                listener("10.213.0.7", 80, 0, 64, 1),
                listener("::", 80, 0, 32, 2),
            ]
        );
    }

    #[test]
    fn reuseport_siblings_are_one_listener() {
        let sockets = [
            listen("0.0.0.0", 3000, 1, 16),
            listen("0.0.0.0", 3000, 2, 16),
            accepted("127.0.0.1", 3000),
        ];
        assert_eq!(
            summarize(&sockets),
            vec![listener("0.0.0.0", 3000, 3, 32, 1)]
        );
    }

    #[test]
    fn connections_without_listener_are_ignored_and_output_is_sorted() {
        let sockets = [
            listen("::", 9000, 0, 8),
            listen("127.0.0.1", 9000, 0, 8),
            listen("127.0.0.1", 22, 0, 8),
            accepted("127.0.0.1", 5432),
        ];
        assert_eq!(
            summarize(&sockets),
            vec![
                listener("127.0.0.1", 22, 0, 8, 0),
                listener("127.0.0.1", 9000, 0, 8, 0),
                listener("::", 9000, 0, 8, 0),
            ]
        );
    }

    #[test]
    fn enoent_means_no_tcp_diag() {
        let error = DiagError::from(NetlinkError::Kernel {
            object: Family::V4.object(),
            errno: libc::ENOENT,
            detail: None,
        });
        assert!(matches!(error, DiagError::Unsupported(_)));
        assert_eq!(
            error.to_string(),
            "inet_diag: tcp sockets ipv4: this kernel cannot report TCP sockets (no tcp_diag support)"
        );
        let error = DiagError::from(NetlinkError::Kernel {
            object: Family::V6.object(),
            errno: libc::EPERM,
            detail: None,
        });
        assert_eq!(
            error.to_string(),
            "inet_diag: tcp sockets ipv6: Operation not permitted"
        );
    }
}
