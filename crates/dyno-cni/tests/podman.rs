//! `dyno-cni` under the real podman (4.3, CNI backend, runc): `podman run --network dyno`, end to
//! end. Podman runs inside a lab namespace standing in for the host, so the plugin's links,
//! routes, sysctls and `inet dyno` table land there and vanish with it; everything podman
//! writes lives under the world's root (see `dyno_bench::podman`). Needs root, podman, runc and
//! busybox-static.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dyno_bench::podman::PodmanWorld;
use dyno_net::lab::{Lab, INTERNET_SERVER, UPLINK_ADDR};
use dyno_net::nft::ROUTER_MARK;
use dyno_net::ns::Netns;
use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const SUBNET: &str = "10.216.0.0/24";
/// The web container's `$PORT` (from `-p`, i.e. portMappings).
const PORT: u16 = 5000;
/// Another port the web container listens on, never exposed.
const OTHER_PORT: u16 = 6000;
/// The fake internet's listener.
const INTERNET_PORT: u16 = 8000;
/// A dropped SYN is never answered: this long without a connection means dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Paths podman (and the plugin, without `dataDir`) would use on a host without our
/// configuration; none may appear. (`/run/netns` is checked for podman's own names only:
/// other tools make that directory too.)
const PODMAN_DEFAULTS: [&str; 6] = [
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/run/runc",
    "/var/lib/cni",
    "/var/lib/dyno-cni",
];
const DEBIAN_BRIDGE_CONFLIST: &str = "/etc/cni/net.d/87-podman-bridge.conflist";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "dyno-cni's podman test needs root (network namespaces, nf_tables, rootful podman)"
    );
}

/// The lab and the podman world in it; the world goes first (its containers' DEL needs the
/// lab namespace).
struct Setup {
    world: PodmanWorld,
    lab: Lab,
}

impl Setup {
    fn new() -> Setup {
        require_root();
        let lab = Lab::new("cni-podman").expect("lab");
        let world = PodmanWorld::new(lab.host.netns(), "dynocni-podman").expect("podman world");
        world
            .add_plugin("dyno-cni", Path::new(env!("CARGO_BIN_EXE_dyno-cni")))
            .expect("link the plugin");
        world
            .write_dyno_network("dyno", SUBNET, None)
            .expect("write the dyno network");
        Setup { world, lab }
    }

    fn data_dir(&self) -> PathBuf {
        self.world.dyno_data_dir("dyno")
    }

    fn lease_count(&self) -> usize {
        let leases: Value = std::fs::read(self.data_dir().join("leases.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        leases["leases"].as_object().map_or(0, |m| m.len())
    }

    fn exposed(&self) -> Vec<(Ipv4Addr, u16)> {
        crate::common::exposed(&self.lab)
    }

    fn dy_links(&mut self) -> Vec<String> {
        crate::common::dy_links(&mut self.lab)
    }
}

/// A TCP connection from the lab host to `to`, with SO_MARK `mark` if given; the socket if the
/// handshake completed within [`CONNECT_TIMEOUT`].
fn connect_from(netns: &Netns, to: SocketAddrV4, mark: Option<u32>) -> std::io::Result<Socket> {
    dyno_net::probe::connect(netns, None, to, mark, CONNECT_TIMEOUT)
}

/// An HTTP request over a connected socket; the status line.
fn http_status(mut socket: Socket) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("send request");
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The container's `eth0` as busybox prints it: ifindex, IPv4 addresses, routes.
fn inspect_inside(world: &PodmanWorld, image: &str) -> (String, String, String) {
    let script =
        "cat /sys/class/net/eth0/ifindex; echo ---; ip -4 addr show dev eth0; echo ---; ip route";
    let out = world
        .run_container_ok(&["--rm", "--network", "dyno", image, "sh", "-c", script])
        .expect("inspecting container");
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 3, "unexpected output: {out}");
    (
        parts[0].trim().to_owned(),
        parts[1].to_owned(),
        parts[2].to_owned(),
    )
}

/// A listener on the fake internet's server that accepts one connection and closes it at once
/// (busybox nc then sees EOF and exits); the peer's address, if one came within 15 s.
fn internet_listener(internet: &Netns) -> std::thread::JoinHandle<Option<Ipv4Addr>> {
    let listener = internet
        .run(|| -> std::io::Result<Socket> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.bind(&SockAddr::from(SocketAddrV4::new(
                INTERNET_SERVER,
                INTERNET_PORT,
            )))?;
            socket.listen(8)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .expect("internet namespace")
        .expect("internet listener");
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok((_, peer)) = listener.accept() {
                return peer.as_socket_ipv4().map(|p| *p.ip());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

#[test]
fn podman_run_on_a_dyno_network() {
    require_root();
    let preexisting: Vec<&str> = PODMAN_DEFAULTS.into_iter().filter(|p| exists(p)).collect();
    let bridge_before = std::fs::read(DEBIAN_BRIDGE_CONFLIST).ok();
    let mut setup = Setup::new();
    let root = setup.world.root().to_path_buf();
    let image = setup.world.import_busybox("dynobox").expect("import");

    // Inside: eth0 is ifindex 2 with a /32 from the subnet, default route via 169.254.1.1.
    let (ifindex, addresses, routes) = inspect_inside(&setup.world, &image);
    assert_eq!(ifindex, "2");
    let inet: Vec<&str> = addresses
        .lines()
        .filter_map(|l| l.trim().strip_prefix("inet "))
        .collect();
    assert_eq!(inet.len(), 1, "one IPv4 address on eth0: {addresses}");
    assert!(
        inet[0].starts_with("10.216.0.") && inet[0].contains("/32 "),
        "a /32 from {SUBNET}: {addresses}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.trim().starts_with("default via 169.254.1.1 dev eth0")),
        "default route via the gateway: {routes}"
    );
    // --rm: conmon's cleanup ran DEL.
    assert_eq!(setup.lease_count(), 0);
    assert!(setup.dy_links().is_empty(), "left: {:?}", setup.dy_links());

    // A web container: $PORT from `-p` (portMappings), another listener on OTHER_PORT.
    let serve = format!("httpd -p 0.0.0.0:{OTHER_PORT} -h /; exec httpd -f -p 0.0.0.0:{PORT} -h /");
    let port_mapping = format!("{PORT}:{PORT}");
    setup
        .world
        .run_container_ok(&[
            "-d",
            "--name",
            "web",
            "--network",
            "dyno",
            "-p",
            &port_mapping,
            &image,
            "sh",
            "-c",
            &serve,
        ])
        .expect("web container");
    let web_ip: Ipv4Addr = setup
        .world
        .run_ok(&[
            "inspect",
            "web",
            "--format",
            "{{.NetworkSettings.Networks.dyno.IPAddress}}",
        ])
        .expect("inspect web")
        .trim()
        .parse()
        .expect("web's address");
    assert_eq!(
        setup.exposed(),
        vec![(web_ip, PORT)],
        "$PORT open to the router"
    );
    assert_eq!(setup.lease_count(), 1);
    assert_eq!(setup.dy_links().len(), 1);

    // The router's mark reaches $PORT (retried while httpd starts).
    let host = setup.lab.host.netns().try_clone().expect("netns");
    let at = |port| SocketAddrV4::new(web_ip, port);
    let mut marked = connect_from(&host, at(PORT), Some(ROUTER_MARK));
    for _ in 0..20 {
        if marked.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        marked = connect_from(&host, at(PORT), Some(ROUTER_MARK));
    }
    let status = http_status(marked.expect("marked connection to $PORT"));
    assert!(status.starts_with("HTTP/1."), "httpd answered: {status:?}");
    // Control: both ports are listened on inside, so a failure below is the firewall's.
    let listening = setup
        .world
        .run_ok(&["exec", "web", "netstat", "-ltn"])
        .expect("netstat in web");
    for port in [PORT, OTHER_PORT] {
        assert!(
            listening.contains(&format!("0.0.0.0:{port} ")),
            "web listens on {port}: {listening}"
        );
    }
    // Without the mark: dropped. Another port, even marked: dropped.
    assert!(
        connect_from(&host, at(PORT), None).is_err(),
        "an unmarked socket must not reach $PORT"
    );
    assert!(
        connect_from(&host, at(OTHER_PORT), Some(ROUTER_MARK)).is_err(),
        "a marked socket must not reach a port other than $PORT"
    );

    // A second container reaches neither of web's ports, but the internet, masqueraded.
    let internet = internet_listener(&setup.lab.internet);
    let probe = format!(
        "for p in {PORT} {OTHER_PORT} 22 80; do nc -w 1 {web_ip} $p </dev/null && echo reached $p; done; \
         nc -w 2 {INTERNET_SERVER} {INTERNET_PORT} </dev/null && echo internet"
    );
    let seen = setup
        .world
        .run_container_ok(&["--rm", "--network", "dyno", &image, "sh", "-c", &probe])
        .expect("client container");
    assert!(!seen.contains("reached"), "container → container: {seen}");
    assert!(seen.contains("internet"), "container → internet: {seen}");
    let peer = internet.join().expect("listener thread");
    assert_eq!(
        peer,
        Some(UPLINK_ADDR),
        "seen from the uplink address (masquerade)"
    );
    // The client's attachment went with --rm; web's is untouched.
    assert_eq!(setup.exposed(), vec![(web_ip, PORT)]);
    assert_eq!(setup.lease_count(), 1);

    // State: only under the world's root.
    assert!(setup.data_dir().join("leases.json").is_file());
    assert!(setup.data_dir().starts_with(&root));

    // podman rm: nothing left of web's attachment.
    setup
        .world
        .run_ok(&["rm", "--force", "--time", "0", "web"])
        .expect("podman rm web");
    assert!(setup.dy_links().is_empty(), "left: {:?}", setup.dy_links());
    assert_eq!(setup.lease_count(), 0, "lease released");
    assert!(setup.exposed().is_empty(), "port closed");
    assert!(connect_from(&host, at(PORT), Some(ROUTER_MARK)).is_err());

    // The world's cleanup leaves nothing on the host.
    setup.world.cleanup().expect("cleanup");
    assert_eq!(setup.world.mounts(), Vec::<PathBuf>::new(), "mounts left");
    assert_eq!(setup.world.cgroups(), Vec::<PathBuf>::new(), "cgroups left");
    assert!(!root.exists(), "{} left", root.display());
    for path in PODMAN_DEFAULTS {
        assert!(
            preexisting.contains(&path) || !exists(path),
            "podman wrote {path} on the host"
        );
    }
    let podman_netns: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("netns-") || name.starts_with("cni-"))
        .collect();
    assert_eq!(
        podman_netns,
        Vec::<String>::new(),
        "podman's namespaces in /run/netns"
    );
    assert_eq!(
        std::fs::read(DEBIAN_BRIDGE_CONFLIST).ok(),
        bridge_before,
        "{DEBIAN_BRIDGE_CONFLIST} changed"
    );
}

/// The bench's measurement (`dyno_bench::podman`): `podman run --rm IMAGE true` on a dyno
/// network and on a ptp + host-local one, a few rounds each; every round succeeds and leaves
/// nothing behind (in the lab: no dyno link; on the host: not the world's root).
#[test]
fn timed_runs_on_dyno_and_ptp_networks() {
    require_root();
    let mut lab = Lab::new("cni-podman-timed").expect("lab");
    let plugin = Path::new(env!("CARGO_BIN_EXE_dyno-cni"));
    let timings =
        dyno_bench::podman::time_dyno_against_ptp(lab.host.netns(), plugin, 3).expect("timed runs");
    eprintln!("podman run --rm IMAGE true: {timings:?}");
    assert_eq!(timings.dyno.len(), 3);
    assert_eq!(timings.ptp.len(), 3);
    assert!(timings
        .dyno
        .iter()
        .chain(&timings.ptp)
        .all(|t| *t > Duration::ZERO));
    let links = lab.host.links_with_prefix("dy").expect("links");
    assert!(links.is_empty(), "left: {links:?}");
    let ours = format!("dynobench-podman-{}-", std::process::id());
    let roots: Vec<String> = std::fs::read_dir("/tmp")
        .expect("/tmp")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&ours))
        .collect();
    assert_eq!(roots, Vec::<String>::new(), "world roots left");
}
