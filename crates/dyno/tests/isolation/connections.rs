//! Connections of others: nothing the attacker can read about sockets shows another dyno's
//! addresses, ports or sockets (the victim listens on 6001–6004 and `@victim-secret`, and holds
//! a connection to 198.51.100.10:7000).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::record::*;
use crate::rig::*;

const T: Duration = Duration::from_secs(20);

/// What must not show up in the attacker's views: every other dyno's address (dotted and as
/// `/proc/net/tcp` prints it), the victim's ports (in socket tables), its abstract socket and
/// the fake internet server the victim talks to.
pub struct Needles {
    addresses: Vec<(String, String)>,
}

impl Needles {
    pub fn for_dyno(rig: &Rig, own: &DynoInfo) -> Needles {
        let mut addresses: Vec<Ipv4Addr> = rig.other_addresses(own);
        // The fake internet server the victim talks to (the attacker never does). Not the lab
        // host's uplink: the router's requests to the attacker come from it.
        addresses.push(dyno_net::lab::INTERNET_SERVER);
        Needles {
            addresses: addresses
                .iter()
                .map(|ip| (ip.to_string(), proc_net_hex(*ip)))
                .collect(),
        }
    }

    /// What of the others `text` (the file `name`) shows.
    pub fn found_in(&self, name: &str, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (dotted, hex) in &self.addresses {
            if text.contains(dotted.as_str()) {
                found.push(format!("{name}: {dotted}"));
            }
            if is_socket_table(name) && text.contains(hex.as_str()) {
                found.push(format!("{name}: {dotted} (as {hex})"));
            }
        }
        if is_socket_table(name) {
            for port in [
                VICTIM_TCP,
                VICTIM_UDP,
                VICTIM_TCP6,
                VICTIM_UDP6,
                OUTBOUND_PORT,
            ] {
                let hex = format!(":{port:04X} ");
                if text.contains(&hex) {
                    found.push(format!("{name}: port {port}"));
                }
            }
        }
        if text.contains("victim-secret") {
            found.push(format!("{name}: @victim-secret"));
        }
        found
    }
}

fn is_socket_table(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    ["tcp", "udp", "raw", "icmp"]
        .iter()
        .any(|p| file.starts_with(p))
}

/// An address as `/proc/net/tcp` prints it: the raw big-endian word, in host order, in hex.
fn proc_net_hex(ip: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_le_bytes(ip.octets()))
}

/// Checks a `{file: text}` map from both attacker dynos.
fn check_files(
    rig: &Rig,
    what: &str,
    web: &serde_json::Value,
    worker: &serde_json::Value,
) -> Outcome {
    let mut found = Vec::new();
    let mut read = 0;
    for (dyno, files) in [("web.1", web), ("worker.1", worker)] {
        let needles = Needles::for_dyno(rig, rig.dyno("attacker", dyno));
        for (name, text) in files.as_object().unwrap() {
            read += 1;
            for hit in needles.found_in(name, text.as_str().unwrap_or_default()) {
                found.push(format!("{dyno} {hit}"));
            }
        }
    }
    if found.is_empty() && read > 0 {
        Outcome::new(
            true,
            format!("{what}: nothing of other dynos, the victim or the host"),
        )
    } else {
        Outcome::new(
            false,
            format!("{what}: {read} files read, leaks: {}", found.join("; ")),
        )
    }
}

#[test]
fn proc_net_files_show_only_own_sockets() {
    const EXPECT: &str =
        "every /proc/net file shows only the dyno's own sockets, links and addresses";
    attack(
        Attack {
            test: "proc_net_files_show_only_own_sockets",
            category: CONNECTIONS,
            attack: "read every file of /proc/net",
            expect: EXPECT,
            others: "Heroku, Docker, podman: /proc/net is the container's network namespace's",
        },
        |rig| {
            let snippet = r#"
files = {}
for name in sorted(os.listdir("/proc/net")):
    path = "/proc/net/" + name
    if os.path.isdir(path):
        for sub in sorted(os.listdir(path)):
            files[path + "/" + sub] = read(path + "/" + sub)
    else:
        files[path] = read(path)
done(files)
"#;
            let (web, worker) = rig.run_both(snippet, T);
            let (web, worker) = (web.value(), worker.value());
            let mut outcome = check_files(rig, "every /proc/net file (web, worker)", &web, &worker);
            // The links: only the dyno's own.
            for files in [&web, &worker] {
                let dev = files["/proc/net/dev"].as_str().unwrap_or_default();
                let links: Vec<&str> = dev
                    .lines()
                    .skip(2)
                    .filter_map(|l| l.split(':').next().map(str::trim))
                    .collect();
                if links != ["lo", "eth0"] && links != ["eth0", "lo"] {
                    outcome = Outcome::new(false, format!("/proc/net/dev lists {links:?}"));
                }
            }
            outcome
        },
    );
}

/// The Python side of an inet_diag / unix_diag dump (NETLINK_SOCK_DIAG).
const DIAG_PY: &str = r#"
import struct
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10

def diag(family, proto):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    if family == AF_UNIX:
        # unix_diag_req: every state, show the name
        req = struct.pack("=BBHIIIII", AF_UNIX, 0, 0, 0xffffffff, 0, 1, 0xffffffff, 0xffffffff)
    else:
        # inet_diag_req_v2: every state, any socket id
        req = struct.pack("=BBBBI", family, proto, 0, 0, 0xffffffff) + bytes(48)
    s.sendto(struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req, (0, 0))
    out = []
    while True:
        data = s.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            body = data[off + 16: off + length]
            off += (length + 3) & ~3
            if kind == 3:  # NLMSG_DONE
                return out
            if kind == 2:  # NLMSG_ERROR
                return "error %s" % name_of(-struct.unpack_from("=i", body)[0])
            if family == AF_UNIX:
                name, a = "", 16
                while a + 4 <= len(body):
                    alen, atype = struct.unpack_from("=HH", body, a)
                    if atype == 0:
                        name = body[a + 4: a + alen].replace(b"\0", b"@").decode("utf-8", "replace")
                    a += (alen + 3) & ~3
                out.append("unix " + name)
            else:
                fam = socket.AF_INET if family == AF_INET else socket.AF_INET6
                size = 4 if family == AF_INET else 16
                sport, dport = struct.unpack_from(">HH", body, 4)
                src = socket.inet_ntop(fam, body[8:8 + size])
                dst = socket.inet_ntop(fam, body[24:24 + size])
                out.append("%s:%d %s:%d" % (src, sport, dst, dport))

dumps = {}
for label, family, proto in [("tcp", AF_INET, 6), ("udp", AF_INET, 17), ("tcp6", AF_INET6, 6),
                             ("udp6", AF_INET6, 17), ("unix", AF_UNIX, 0)]:
    try:
        dumps[label] = diag(family, proto)
    except OSError as e:
        dumps[label] = "error " + name_of(e.errno)
done(dumps)
"#;

#[test]
fn inet_diag_dumps_show_only_own_sockets() {
    const EXPECT: &str =
        "sock_diag dumps (TCP/UDP over IPv4/IPv6, unix) list the dyno's own sockets only";
    attack(
        Attack {
            test: "inet_diag_dumps_show_only_own_sockets",
            category: CONNECTIONS,
            attack:
                "dump every socket with NETLINK_SOCK_DIAG (inet_diag, unix_diag), as `ss -a` does",
            expect: EXPECT,
            others:
                "Heroku, Docker, podman: sock_diag answers for the caller's network namespace only",
        },
        |rig| {
            let (web, worker) = rig.run_both(DIAG_PY, T);
            let mut problems = Vec::new();
            for (dyno, run, own) in [
                ("web.1", web, format!(":{WEB_PORT} 0.0.0.0:0")),
                ("worker.1", worker, "127.0.0.1:7777 0.0.0.0:0".to_string()),
            ] {
                let dumps = run.value();
                let needles = Needles::for_dyno(rig, rig.dyno("attacker", dyno));
                let mut all = String::new();
                for (label, list) in dumps.as_object().unwrap() {
                    match list.as_array() {
                        Some(list) => {
                            for s in list {
                                all.push_str(s.as_str().unwrap_or_default());
                                all.push('\n');
                            }
                        }
                        None => problems.push(format!("{dyno} {label}: {list}")),
                    }
                }
                // /proc/net/tcp-style hex needles do not apply: the dump is dotted.
                problems.extend(
                    needles
                        .found_in("diag", &all)
                        .into_iter()
                        .map(|h| format!("{dyno} {h}")),
                );
                for port in [
                    VICTIM_TCP,
                    VICTIM_UDP,
                    VICTIM_TCP6,
                    VICTIM_UDP6,
                    OUTBOUND_PORT,
                ] {
                    if all.contains(&format!(":{port} ")) || all.contains(&format!(":{port}\n")) {
                        problems.push(format!("{dyno}: port {port}"));
                    }
                }
                if !all.contains(&own) {
                    problems.push(format!(
                        "{dyno}: its own listener is missing (dump broken?): {all}"
                    ));
                }
            }
            if problems.is_empty() {
                Outcome::new(
                    true,
                    "every dump (web, worker) lists the dyno's own sockets only",
                )
            } else {
                Outcome::new(false, problems.join("; "))
            }
        },
    );
}

#[test]
fn proc_pid_net_shows_only_own_sockets() {
    const EXPECT: &str = "/proc/<pid>/net of every visible pid shows the dyno's own network only";
    attack(
        Attack {
            test: "proc_pid_net_shows_only_own_sockets",
            category: CONNECTIONS,
            attack: "read /proc/<pid>/net/{tcp,tcp6,udp,udp6,unix,dev} of every visible pid",
            expect: EXPECT,
            others: "Docker, podman: only the container's pids are visible (pid namespace); Heroku: same (LXC)",
        },
        |rig| {
            let snippet = r#"
files = {}
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    for name in ["tcp", "tcp6", "udp", "udp6", "unix", "dev"]:
        path = "/proc/%s/net/%s" % (pid, name)
        files[path] = read(path)
done(files)
"#;
            let (web, worker) = rig.run_both(snippet, T);
            check_files(rig, "/proc/<pid>/net of every visible pid (web, worker)", &web.value(), &worker.value())
        },
    );
}

#[test]
fn conntrack_shows_nothing_of_others() {
    const EXPECT: &str = "no conntrack entry of another dyno: /proc/net/nf_conntrack absent or empty, ctnetlink dump refused or empty";
    attack(
        Attack {
            test: "conntrack_shows_nothing_of_others",
            category: CONNECTIONS,
            attack: "read /proc/net/nf_conntrack and dump conntrack over NETLINK_NETFILTER",
            expect: EXPECT,
            others: "Docker, podman: the container's namespace has its own (empty) table; ctnetlink needs CAP_NET_ADMIN",
        },
        |rig| {
            let snippet = r#"
import struct
proc = read("/proc/net/nf_conntrack")
try:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    # IPCTNL_MSG_CT_GET in NFNL_SUBSYS_CTNETLINK, dump; nfgenmsg for AF_INET
    s.sendto(struct.pack("=IHHII", 20, 0x101, 0x301, 1, 0) + struct.pack("=BBH", 2, 0, 0), (0, 0))
    s.settimeout(2)
    entries, result = 0, None
    while result is None:
        data = s.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == 3:
                result = "done"
            elif kind == 2:
                result = "error " + name_of(-struct.unpack_from("=i", data, off + 16)[0])
            else:
                entries += 1
            off += (length + 3) & ~3
    dump = "%s, %d entries" % (result, entries)
except OSError as e:
    dump = name_of(e.errno) if e.errno else str(e)
done({"proc": proc, "dump": dump})
"#;
            let (web, worker) = rig.run_both(snippet, T);
            let mut seen = Vec::new();
            let mut pass = true;
            for (dyno, run) in [("web.1", web), ("worker.1", worker)] {
                let value = run.value();
                let proc = value["proc"].as_str().unwrap_or_default();
                let dump = value["dump"].as_str().unwrap_or_default();
                let needles = Needles::for_dyno(rig, rig.dyno("attacker", dyno));
                let leaks = needles.found_in("nf_conntrack", proc);
                let proc_ok = proc.starts_with('!') || proc.trim().is_empty();
                let dump_ok = dump.starts_with("error") || dump.ends_with(" 0 entries") || !dump.starts_with("done");
                pass &= leaks.is_empty() && proc_ok && dump_ok;
                let proc_text = if proc.starts_with('!') { proc.trim_start_matches('!').to_string() } else { format!("{} lines", proc.lines().count()) };
                seen.push(format!("{dyno}: /proc/net/nf_conntrack {proc_text}, ctnetlink dump {dump}"));
            }
            Outcome::new(pass, seen.join("; "))
        },
    );
}

#[test]
fn abstract_unix_socket_of_the_victim_is_unreachable() {
    const EXPECT: &str = "connect to @victim-secret fails (ECONNREFUSED: abstract sockets are per network namespace); the victim sees nothing";
    attack(
        Attack {
            test: "abstract_unix_socket_of_the_victim_is_unreachable",
            category: CONNECTIONS,
            attack: "connect to the victim's abstract unix socket @victim-secret",
            expect: EXPECT,
            others: "Docker, podman: abstract sockets are scoped by the network namespace (--network=host shares them); Heroku: per dyno",
        },
        |rig| {
            let snippet = r#"
def connect(_):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect("\0victim-secret")
done(outcome(connect, None))
"#;
            let (web, worker) = rig.run_both(snippet, T);
            let (web, worker) = (web.value(), worker.value());
            let hits = rig.victim_hits();
            let pass = web != "ok" && worker != "ok" && hits.is_empty();
            Outcome::new(pass, format!("web: {}, worker: {}; victim contacts: {}", web.as_str().unwrap_or("?"), worker.as_str().unwrap_or("?"), hits.len()))
        },
    );
}
