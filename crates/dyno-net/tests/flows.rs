//! The per-dyno flow limit (set `flows`, `ct count over N` in chain `forward`) with real traffic
//! (privileged: run as root). Dyno egress is forwarded and masqueraded by the host, so each of
//! a dyno's flows holds an entry in the host's one conntrack table; the limit keeps any dyno
//! from taking more than N of them, and must stop that dyno only. Every test builds its own lab
//! (a namespace standing in for the host, and a fake internet), so the host's own conntrack
//! table never sees a packet of these tests.

mod common;

use std::io;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use common::{lab_network_with, listener, open_flows, run_in, Proto, Server, DROP_WAIT};
use dyno_net::lab::INTERNET_SERVER;
use dyno_net::ns::Netns;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A small limit, so a test reaches it in a moment.
const LIMIT: u32 = 50;
const PORT: u16 = 7000;
/// Long enough for a handshake on a loaded machine; a dropped SYN (and each retransmission of
/// it, each again a new flow over the limit) never completes.
const CONNECT: Duration = Duration::from_secs(2);

/// One more connection from `netns`; `Ok` once the handshake completed.
fn connect(netns: &Netns, timeout: Duration) -> io::Result<Socket> {
    let (mut held, error) = open_flows(netns, &[PORT], 1, timeout);
    match error {
        Some(e) => Err(e),
        None => Ok(held.pop().expect("one connection")),
    }
}

/// Closes a connection with a reset: conntrack moves it to CLOSE at once, and a closed
/// connection no longer counts. (An orderly close would wait for the peer, here a listener that
/// never accepts, so never closes its end: such a flow rightly still counts.)
fn close_at_once(socket: Socket) {
    socket
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(socket);
}

/// The addresses in the lab host's `flows` set, as nft lists them.
fn flows_elements(host: &Netns) -> String {
    let listing = run_in(host, "nft", &["list", "set", "inet", "dyno", "flows"]);
    listing
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("elements"))
        .take_while(|l| *l != "}")
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_dyno_over_its_flow_limit_is_stopped_and_no_one_else() {
    let (lab, mut network) = lab_network_with("flows-tcp", "10.213.0.0/16", LIMIT);
    let a = network.up("fla", None).unwrap();
    let b = network.up("flb", None).unwrap();
    let _listener = listener(&lab.internet, PORT, 256);

    let (mut held, error) = open_flows(&a.netns, &[PORT], LIMIT as usize, CONNECT);
    assert!(error.is_none(), "under the limit: {error:?}");
    assert_eq!(held.len(), LIMIT as usize);
    let over = connect(&a.netns, CONNECT).map(drop).unwrap_err();
    assert_eq!(
        over.kind(),
        io::ErrorKind::TimedOut,
        "flow {}: {over}",
        LIMIT + 1
    );

    // Another dyno is not affected: its flows are its own.
    let (b_held, error) = open_flows(&b.netns, &[PORT], 5, CONNECT);
    assert!(error.is_none(), "the other dyno: {error:?}");
    assert_eq!(b_held.len(), 5);

    // Closing some gives room again, exactly as many.
    for socket in held.drain(..10) {
        close_at_once(socket);
    }
    let (more, error) = open_flows(&a.netns, &[PORT], 10, CONNECT);
    assert!(error.is_none(), "after closing 10: {error:?}");
    assert_eq!(more.len(), 10);
    let over = connect(&a.netns, CONNECT).map(drop).unwrap_err();
    assert_eq!(over.kind(), io::ErrorKind::TimedOut, "{over}");
    assert!(
        flows_elements(lab.host.netns()).contains(&a.ip.to_string()),
        "{}",
        flows_elements(lab.host.netns())
    );
}

/// UDP sockets bound in `netns`, each its own flow (its own source port) once it sends.
fn udp_sockets(netns: &Netns, count: usize) -> Vec<Socket> {
    netns
        .run(move || -> io::Result<Vec<Socket>> {
            (0..count)
                .map(|_| {
                    let socket =
                        Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
                    socket.connect(&SockAddr::from(SocketAddrV4::new(INTERNET_SERVER, PORT)))?;
                    Ok(socket)
                })
                .collect()
        })
        .expect("run in the dyno's namespace")
        .expect("UDP sockets")
}

/// Sends one datagram on `socket`, which the server answers: whether the answer came back. A
/// UDP flow is `ct state new` until conntrack sees an answer, then established, like a DNS query
/// and its reply.
fn udp_round_trip(server: &Server, socket: &Socket) -> bool {
    socket.send(b"ping").expect("send a datagram");
    let Some(peer) = server.receive() else {
        return false;
    };
    server
        .socket
        .send_to(b"pong", &SockAddr::from(peer))
        .expect("answer");
    socket.set_read_timeout(Some(DROP_WAIT)).unwrap();
    let mut buf = [std::mem::MaybeUninit::new(0u8); 8];
    socket.recv(&mut buf).is_ok()
}

#[test]
fn udp_flows_count_too() {
    let (lab, mut network) = lab_network_with("flows-udp", "10.213.0.0/16", LIMIT);
    let a = network.up("fua", None).unwrap();
    let b = network.up("fub", None).unwrap();
    let server = common::serve(
        &lab.internet,
        Proto::Udp,
        SocketAddrV4::new(INTERNET_SERVER, PORT),
    );

    let sockets = udp_sockets(&a.netns, LIMIT as usize + 1);
    for (i, socket) in sockets[..LIMIT as usize].iter().enumerate() {
        assert!(udp_round_trip(&server, socket), "datagram flow {i}");
    }
    let over = udp_round_trip(&server, &sockets[LIMIT as usize]);
    assert!(!over, "flow {} is over the limit", LIMIT + 1);
    // A flow that is already tracked goes on: only new flows are counted and stopped.
    assert!(udp_round_trip(&server, &sockets[0]), "an existing flow");
    let other = udp_sockets(&b.netns, 1);
    assert!(udp_round_trip(&server, &other[0]), "the other dyno");
}

/// The set does not keep an element per address ever seen: once a dyno's flows have ended its
/// count is 0 and the kernel's set GC removes the element, so addresses that come and go (dynos
/// restart on new ones) leave nothing behind.
#[test]
fn a_dynos_element_leaves_the_set_when_its_flows_end() {
    let (lab, mut network) = lab_network_with("flows-gc", "10.213.0.0/16", LIMIT);
    let a = network.up("fga", None).unwrap();
    let _listener = listener(&lab.internet, PORT, 64);
    let (held, error) = open_flows(&a.netns, &[PORT], 5, CONNECT);
    assert!(error.is_none(), "{error:?}");
    let elements = flows_elements(lab.host.netns());
    assert!(elements.contains(&a.ip.to_string()), "{elements}");

    for socket in held {
        close_at_once(socket);
    }
    let closed = Instant::now();
    let deadline = closed + Duration::from_secs(30);
    loop {
        let elements = flows_elements(lab.host.netns());
        if elements.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the element is still there 30 s after the flows ended: {elements}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("element gone {:?} after the flows ended", closed.elapsed());
}
