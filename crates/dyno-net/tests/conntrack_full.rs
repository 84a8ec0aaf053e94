//! The hole the per-dyno flow limit closes, shown for real (privileged: run as root): dyno
//! egress is forwarded and masqueraded by the host, so every flow of every dyno holds an entry
//! in the host's conntrack table, which has room for `nf_conntrack_max` entries. Without a limit
//! one dyno with that many flows fills the table, and then every other new flow is dropped
//! ("nf_conntrack: table full"): other dynos' egress, and the router's connections to the
//! dynos. With the default limit the same dyno stops at its share and everyone else goes on.
//!
//! The flood is made of UDP flows that the far end answers, as an attacker's own server would:
//! it needs no open file per flow (a UDP flow lives in conntrack, not in a socket), and once a
//! flow has seen an answer and goes on past 2 s conntrack marks it assured, which the kernel
//! never evicts to make room (unanswered flows it would).
//!
//! `nf_conntrack_max` cannot be lowered inside a namespace (it is read-only there, and global),
//! but the count is per namespace: the lab host's table fills on its own, the real host's table
//! never sees these flows.

mod common;

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{exchange, lab_network_with, listener, open_flows, run_in, serve, Proto};
use dyno_net::lab::INTERNET_SERVER;
use dyno_net::network::NetworkConfig;
use dyno_net::nft::ROUTER_MARK;
use dyno_net::ns::Netns;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const FIRST_PORT: u16 = 7000;
const WEB_PORT: u16 = 5000;
const CONNECT: Duration = Duration::from_secs(2);
/// Sockets of the hostile dyno: each sends to every echo port, one flow per pair.
const SOCKETS: usize = 8_000;
/// Rounds of one datagram per flow: the first creates the flows, the later ones (each more than
/// 2 s after the one before) make the answered ones assured. While the table is full, a new flow
/// evicts one that is not assured yet, so it takes a few rounds until all are.
const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 12;

fn read_sysctl(netns: &Netns, path: &'static str) -> u64 {
    netns
        .run(move || std::fs::read_to_string(path))
        .expect("run in namespace")
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// UDP sockets in the fake internet that answer every datagram, each on its own thread, until
/// `stop`. Their count of answers lets the sender keep pace.
struct Echo {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(internet: &Netns, ports: &[u16]) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let threads = ports
            .iter()
            .map(|&port| {
                let socket = internet
                    .run(move || -> io::Result<Socket> {
                        let socket =
                            Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
                        // Room for bursts: a datagram lost here is a flow that stays unanswered.
                        socket.set_recv_buffer_size(8 << 20)?;
                        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                        socket.bind(&SockAddr::from(SocketAddrV4::new(INTERNET_SERVER, port)))?;
                        Ok(socket)
                    })
                    .expect("run in the internet namespace")
                    .unwrap_or_else(|e| panic!("UDP socket on port {port}: {e}"));
                let (stop, answered) = (stop.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut buf = [MaybeUninit::new(0u8); 16];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((len, peer)) = socket.recv_from(&mut buf) {
                            let _ = socket.send_to(&[0u8][..len.min(1)], &peer);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Echo {
            stop,
            answered,
            threads,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Sends one datagram on each of `flows` flows (socket and port pairs), round after round, pausing
/// when the echo falls behind so that the flows are answered; from [`MIN_ROUNDS`] on, stops once
/// `done` says so. Returns the datagrams sent and the rounds.
fn send_rounds(
    netns: &Netns,
    ports: &[u16],
    flows: u64,
    echo: &Echo,
    mut done: impl FnMut() -> bool,
) -> (u64, usize) {
    let sockets = netns
        .run(|| -> io::Result<Vec<Socket>> {
            (0..SOCKETS)
                .map(|_| {
                    let socket =
                        Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
                    socket.set_nonblocking(true)?;
                    socket.bind(&SockAddr::from(SocketAddrV4::new(0.into(), 0)))?;
                    Ok(socket)
                })
                .collect()
        })
        .expect("run in the dyno's namespace")
        .expect("UDP sockets in the dyno");
    let mut sent = 0u64;
    let mut round = 0;
    loop {
        round += 1;
        let started = Instant::now();
        let mut left = flows;
        for &port in ports {
            let to = SockAddr::from(SocketAddrV4::new(INTERNET_SERVER, port));
            for socket in sockets.iter().take(left.min(SOCKETS as u64) as usize) {
                // The answers are not read: the flow is what counts, not the data.
                if socket.send_to(b"x", &to).is_ok() {
                    sent += 1;
                }
                left -= 1;
            }
            // Let the echo catch up, while it makes progress (what the host drops is never
            // answered).
            loop {
                let answered = echo.answered.load(Ordering::Relaxed);
                if answered + 2_000 >= sent {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                if echo.answered.load(Ordering::Relaxed) == answered {
                    break;
                }
            }
        }
        if round >= MIN_ROUNDS && (round == MAX_ROUNDS || done()) {
            return (sent, round);
        }
        // conntrack marks an answered UDP flow assured on a packet more than 2 s after its first.
        std::thread::sleep(Duration::from_millis(2_500).saturating_sub(started.elapsed()));
    }
}

/// Takes the flow limit's rule out of the lab host's ruleset, which is then the ruleset of
/// dyno before the limit.
fn remove_flow_limit(host: &Netns) {
    let chain = run_in(
        host,
        "nft",
        &["-a", "list", "chain", "inet", "dyno", "forward"],
    );
    let handle = chain
        .lines()
        .find(|l| l.contains("@flows"))
        .and_then(|l| l.rsplit("# handle ").next())
        .expect("the flow limit's rule")
        .trim()
        .to_string();
    run_in(
        host,
        "nft",
        &[
            "delete", "rule", "inet", "dyno", "forward", "handle", &handle,
        ],
    );
    let chain = run_in(host, "nft", &["list", "chain", "inet", "dyno", "forward"]);
    assert!(!chain.contains("@flows"), "{chain}");
}

struct Flood {
    /// Flows the hostile dyno tried to have (as many as the table holds).
    flows: u64,
    /// The lab host's conntrack entries after the flood.
    count: u64,
    max: u64,
    took: Duration,
    /// Whether another dyno could still open a connection to the internet...
    other_dyno: io::Result<()>,
    /// ... and the router one to a web dyno's $PORT.
    router: io::Result<()>,
}

/// A dyno tries to have `nf_conntrack_max` answered UDP flows (exactly: more would keep evicting
/// each other before they are assured, and so leave room for others); then another dyno and the
/// router try to open a TCP connection each.
fn flood(tag: &str, flows_per_dyno: Option<u32>) -> Flood {
    let limit = flows_per_dyno.unwrap_or(NetworkConfig::default().flows_per_dyno);
    let (lab, mut network) = lab_network_with(tag, "10.213.0.0/16", limit);
    let hostile = network.up("cth", None).unwrap();
    let web = network.up("ctw", Some(WEB_PORT)).unwrap();
    if flows_per_dyno.is_none() {
        remove_flow_limit(lab.host.netns());
    }
    let app = serve(&web.netns, Proto::Tcp, SocketAddrV4::new(web.ip, WEB_PORT));
    let _listener = listener(&lab.internet, FIRST_PORT, 16);
    let max = read_sysctl(lab.host.netns(), "/proc/sys/net/netfilter/nf_conntrack_max");
    let port_count = max.div_ceil(SOCKETS as u64) as u16;
    let ports: Vec<u16> = (FIRST_PORT..FIRST_PORT + port_count).collect();
    let echo = Echo::start(&lab.internet, &ports);

    let started = Instant::now();
    // Without the limit: until another dyno cannot open a flow any more. With it: the minimum.
    let others_stopped = || {
        flows_per_dyno.is_some()
            || open_flows(&web.netns, &[FIRST_PORT], 1, Duration::from_millis(500))
                .1
                .is_some()
    };
    let (sent, rounds) = send_rounds(&hostile.netns, &ports, max, &echo, others_stopped);
    let took = started.elapsed();
    let count = read_sysctl(
        lab.host.netns(),
        "/proc/sys/net/netfilter/nf_conntrack_count",
    );
    let (_held, other) = open_flows(&web.netns, &[FIRST_PORT], 1, CONNECT);
    let other_dyno = other.map_or(Ok(()), Err);
    let to = SocketAddrV4::new(web.ip, WEB_PORT);
    let (router, _) = exchange(
        lab.host.netns(),
        Proto::Tcp,
        None,
        &app,
        to,
        Some(ROUTER_MARK),
    );
    let flood = Flood {
        flows: max,
        count,
        max,
        took,
        other_dyno,
        router,
    };
    eprintln!(
        "flows_per_dyno={flows_per_dyno:?} flows={} rounds={rounds} sent={sent} answered={} \
         count={} max={} took={:?} other_dyno={:?} router={:?}",
        flood.flows,
        echo.answered.load(Ordering::Relaxed),
        flood.count,
        flood.max,
        flood.took,
        flood.other_dyno,
        flood.router
    );
    flood
}

/// About 20 s: `nf_conntrack_max` flows, 3 datagrams each (runs alone, see .config/nextest.toml).
#[test]
fn without_the_limit_one_dyno_fills_the_hosts_conntrack_table() {
    let flood = flood("ct-full", None);
    assert!(flood.count >= flood.max, "{} of {}", flood.count, flood.max);
    let other = flood.other_dyno.expect_err("the other dyno's egress");
    assert_eq!(other.kind(), io::ErrorKind::TimedOut, "{other}");
    let router = flood.router.expect_err("the router's connection to a dyno");
    assert_eq!(router.kind(), io::ErrorKind::TimedOut, "{router}");
}

#[test]
fn with_the_default_limit_one_dyno_takes_only_its_share() {
    let limit = NetworkConfig::default().flows_per_dyno;
    let flood = flood("ct-share", Some(limit));
    assert!(flood.flows > 10 * u64::from(limit));
    // The dyno's flows, and the few of the test's own connections.
    let limit = u64::from(limit);
    assert!(
        (limit..limit + 10).contains(&flood.count),
        "{} entries for a limit of {limit}",
        flood.count
    );
    flood.other_dyno.expect("the other dyno's egress");
    flood.router.expect("the router's connection to a dyno");
}
