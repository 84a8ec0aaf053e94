//! Privileged tests of the nf_tables firewall (`dyno_net::nft`).
//!
//! Each test plays "host" inside a fresh network namespace of its own, bound at
//! `/run/netns/dyno-t-fw<pid>-<n>` so that `ip netns exec` (and through it the `nft` binary,
//! used here only to look) reaches it. The host's own nf_tables are never touched. Traffic
//! through the rules is tested elsewhere, through the full dyno setup.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dyno_net::nft::{Firewall, FirewallConfig, FirewallError, ROUTER_MARK};
use dyno_net::ns::{self, Netns};

fn require_root() {
    if !rustix::process::geteuid().is_root() {
        panic!("this test needs root: run the suite as root (sudo -E cargo nextest run)");
    }
}

/// A namespace of this test, unbound (and so destroyed, once the last socket in it is closed)
/// when dropped, also when the test fails.
struct TestNetns {
    name: String,
    path: PathBuf,
    netns: Netns,
}

impl TestNetns {
    fn new() -> TestNetns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "dyno-t-fw{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let run_dir = PathBuf::from("/run/netns");
        std::fs::create_dir_all(&run_dir).expect("create /run/netns");
        let path = run_dir.join(&name);
        let (netns, ()) = Netns::create(|| ()).expect("create a test network namespace");
        netns.bind(&path).expect("bind the test network namespace");
        TestNetns { name, path, netns }
    }

    fn firewall(&self) -> Firewall {
        self.netns
            .run(Firewall::open)
            .expect("enter the test namespace")
            .expect("open the firewall")
    }

    fn firewall_with(&self, config: &FirewallConfig) -> Firewall {
        let config = config.clone();
        self.netns
            .run(move || Firewall::open_with(&config))
            .expect("enter the test namespace")
            .expect("open the firewall")
    }

    /// Runs `nft ARGS` inside the namespace; panics with nft's complaint when it fails.
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run `ip netns exec ... nft` (is the nftables package installed?)");
        let mut input = child.stdin.take().expect("piped stdin");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write nft's input");
        drop(input);
        let output = child.wait_with_output().expect("wait for nft");
        assert!(
            output.status.success(),
            "nft {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("nft prints UTF-8")
    }

    fn list_ruleset(&self) -> String {
        self.nft(&["list", "ruleset"], None)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(e) = ns::unbind(&self.path) {
            eprintln!("cleanup of {}: {e}", self.path.display());
        }
    }
}

/// The intended ruleset in nft notation, as the ARCHITECTURE and the issue state it, for a
/// configuration. (`meta l4proto tcp` is spelled out; nft itself would add it for `tcp dport`.)
fn intent(config: &FirewallConfig, elements: &[(Ipv4Addr, u16)]) -> String {
    let FirewallConfig {
        table,
        pool: (network, prefix_len),
        router_mark: mark,
        link_prefix: dy,
        link_local: (link_local, link_local_len),
        flows_per_dyno: flows,
        router_sources,
    } = config;
    let flows_size = dyno_net::nft::rules::flows_set_size(config.pool);
    let layout = dyno_net::nft::rules::layout_name(config);
    let from_sources = |chain_indent: &str| -> String {
        router_sources
            .iter()
            .flat_map(|(net, len)| {
                ["tcp", "udp"].map(|proto| {
                    format!(
                        "{chain_indent}oifname \"{dy}*\" ip saddr {net}/{len} meta l4proto {proto} ip daddr . {proto} dport @exposed accept\n"
                    )
                })
            })
            .collect()
    };
    let forward_sources = from_sources("    ");
    let output_sources = from_sources("    ");
    let elements = if elements.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = elements
            .iter()
            .map(|(ip, port)| format!("{ip} . {port}"))
            .collect();
        format!("elements = {{ {} }}", list.join(", "))
    };
    format!(
        r#"table inet {table} {{
  set exposed {{ type ipv4_addr . inet_service; {elements} }}
  set flows {{ type ipv4_addr; size {flows_size}; flags dynamic; }}
  set {layout} {{ type ipv4_addr; }}
  chain prerouting {{ type filter hook prerouting priority raw; policy accept;
    iifname "{dy}*" fib saddr . iif oif missing drop
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    iifname "{dy}*" oifname "{dy}*" drop
    iifname "{dy}*" ip daddr {link_local}/{link_local_len} drop
    oifname "{dy}*" ct state established,related accept
{forward_sources}    oifname "{dy}*" drop
    iifname "{dy}*" ct state new add @flows {{ ip saddr ct count over {flows} }} drop
    iifname "{dy}*" accept
  }}
  chain input {{ type filter hook input priority filter; policy accept;
    iifname "{dy}*" ct state established,related accept
    iifname "{dy}*" drop
  }}
  chain output {{ type filter hook output priority filter; policy accept;
    oifname "{dy}*" ct state established,related accept
    oifname "{dy}*" meta mark {mark:#010x} meta l4proto tcp ip daddr . tcp dport @exposed accept
    oifname "{dy}*" meta mark {mark:#010x} meta l4proto udp ip daddr . udp dport @exposed accept
{output_sources}    oifname "{dy}*" drop
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {network}/{prefix_len} oifname != "{dy}*" masquerade
  }}
}}
"#
    )
}

/// What `nft list ruleset` prints for the default configuration, normalised by [`blocks`]
/// (`LAYOUT` stands for the layout marker's name, see [`expected_listing`]).
/// nft shows `... meta mark 0x00006479 ip daddr . tcp dport @exposed accept`: it hides the
/// `meta l4proto tcp` of the intent because `tcp dport` implies it.
const EXPECTED_LISTING: &str = r#"
table inet dyno {
set exposed {
type ipv4_addr . inet_service
}
set flows {
type ipv4_addr
size 65536
flags dynamic
}
set LAYOUT {
type ipv4_addr
}
chain prerouting {
type filter hook prerouting priority raw; policy accept;
iifname "dy*" fib saddr . iif oif missing drop
}
chain forward {
type filter hook forward priority filter; policy accept;
iifname "dy*" oifname "dy*" drop
iifname "dy*" ip daddr 169.254.0.0/16 drop
oifname "dy*" ct state established,related accept
oifname "dy*" drop
iifname "dy*" ct state new add @flows { ip saddr ct count over 10000 } drop
iifname "dy*" accept
}
chain input {
type filter hook input priority filter; policy accept;
iifname "dy*" ct state established,related accept
iifname "dy*" drop
}
chain output {
type filter hook output priority filter; policy accept;
oifname "dy*" ct state established,related accept
oifname "dy*" meta mark 0x00006479 ip daddr . tcp dport @exposed accept
oifname "dy*" meta mark 0x00006479 ip daddr . udp dport @exposed accept
oifname "dy*" drop
}
chain postrouting {
type nat hook postrouting priority srcnat; policy accept;
ip saddr 10.213.0.0/16 oifname != "dy*" masquerade
}
}
"#;

fn expected_listing() -> String {
    let layout = dyno_net::nft::rules::layout_name(&FirewallConfig::default());
    EXPECTED_LISTING.replace("LAYOUT", &layout)
}

/// A listing cut into its tables' blocks (`set exposed`, `chain forward`, ...), each a list of
/// trimmed lines; a multi-line `elements = { ... }` becomes one line with sorted elements.
fn blocks(listing: &str) -> Vec<(String, Vec<String>)> {
    let mut lines: Vec<String> = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        match lines.last_mut() {
            Some(open) if open.starts_with("elements = {") && !open.ends_with('}') => {
                open.push(' ');
                open.push_str(&line);
            }
            _ => lines.push(line),
        }
    }
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in lines {
        if line.starts_with("table ") {
            blocks.push((line, Vec::new()));
        } else if let Some(header) = line.strip_suffix(" {") {
            current = Some((header.to_string(), Vec::new()));
        } else if line == "}" {
            if let Some(block) = current.take() {
                blocks.push(block);
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push(sort_elements(&line));
        } else {
            panic!("line outside of any block: {line:?}");
        }
    }
    blocks
}

fn sort_elements(line: &str) -> String {
    let Some(list) = line
        .strip_prefix("elements = { ")
        .and_then(|l| l.strip_suffix(" }"))
    else {
        return line.to_string();
    };
    let mut elements: Vec<&str> = list.split(", ").map(|e| e.trim_end_matches(',')).collect();
    elements.sort();
    format!("elements = {{ {} }}", elements.join(", "))
}

/// Compares two listings block by block, line by line, so a failure points at the rule.
fn assert_same_listing(actual: &str, expected: &str) {
    let actual = blocks(actual);
    let expected = blocks(expected);
    let names = |b: &[(String, Vec<String>)]| b.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&actual), names(&expected), "tables, sets and chains");
    for ((name, actual), (_, expected)) in actual.iter().zip(&expected) {
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert_eq!(a, e, "{name}, line {}", i + 1);
        }
        assert_eq!(actual.len(), expected.len(), "{name}: number of lines");
    }
}

/// The kernel's bytecode of a ruleset, as `nft --debug=netlink` prints it, without the handles
/// (which count differently for different histories) and with the set's elements sorted (a hash
/// set lists them in an order that depends on its random seed).
fn bytecode(netns: &TestNetns) -> Vec<String> {
    let mut lines: Vec<String> = netns
        .nft(&["--debug=netlink", "list", "ruleset"], None)
        .lines()
        .take_while(|line| !line.starts_with("table "))
        .map(|line| {
            if line.starts_with("inet ") {
                line.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                line.trim_end().to_string()
            }
        })
        .filter(|line| !line.is_empty())
        .collect();
    let is_element = |line: &String| line.trim_start().starts_with("element ");
    let first = lines.iter().position(is_element).unwrap_or(lines.len());
    let count = lines[first..].iter().take_while(|l| is_element(l)).count();
    lines[first..first + count].sort();
    lines
}

/// Our ruleset's bytecode equals what nft compiles from the intent (in a namespace of its own).
fn assert_bytecode_is_nfts(
    ours: &TestNetns,
    config: &FirewallConfig,
    elements: &[(Ipv4Addr, u16)],
) {
    let reference = TestNetns::new();
    reference.nft(&["-f", "-"], Some(&intent(config, elements)));
    let expected = bytecode(&reference);
    let actual = bytecode(ours);
    assert!(expected.len() > 40, "nft printed bytecode: {expected:#?}");
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "bytecode line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "bytecode lines");
}

fn tables(netns: &TestNetns) -> Vec<String> {
    netns
        .nft(&["list", "tables"], None)
        .lines()
        .map(str::to_string)
        .collect()
}

fn sorted(mut elements: Vec<(Ipv4Addr, u16)>) -> Vec<(Ipv4Addr, u16)> {
    elements.sort();
    elements
}

const WEB1: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 213, 0, 5), 5000);
const WEB2: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 213, 0, 6), 5001);
const WEB3: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 213, 1, 7), 80);

#[test]
fn install_gives_the_intended_ruleset() {
    require_root();
    let netns = TestNetns::new();
    let mut firewall = netns.firewall();
    let config = FirewallConfig::default();
    assert!(!firewall.is_installed(&config).unwrap());
    assert!(!firewall.is_current(&config).unwrap());

    firewall.install(&config, &[]).unwrap();

    assert!(firewall.is_installed(&config).unwrap());
    assert!(firewall.is_current(&config).unwrap());
    // Another configuration's ruleset is not this one's.
    let other = FirewallConfig {
        router_sources: vec![(Ipv4Addr::new(192, 0, 2, 0), 24)],
        ..FirewallConfig::default()
    };
    assert!(!firewall.is_current(&other).unwrap());
    assert_same_listing(&netns.list_ruleset(), &expected_listing());
    assert_bytecode_is_nfts(&netns, &config, &[]);
    assert_eq!(ROUTER_MARK, 0x6479);
}

#[test]
fn install_honours_a_custom_configuration() {
    require_root();
    let netns = TestNetns::new();
    let config = FirewallConfig {
        table: "dyno-custom".into(),
        pool: (Ipv4Addr::new(10, 208, 0, 0), 12),
        router_mark: 0x1234,
        link_prefix: "dz".into(),
        link_local: (Ipv4Addr::new(169, 254, 170, 0), 24),
        flows_per_dyno: 50,
        router_sources: vec![
            (Ipv4Addr::new(198, 51, 100, 0), 24),
            (Ipv4Addr::new(203, 0, 113, 7), 32),
        ],
    };
    let mut firewall = netns.firewall_with(&config);
    firewall.install(&config, &[WEB1]).unwrap();
    assert!(firewall.is_current(&config).unwrap());

    let listing = netns.list_ruleset();
    assert!(listing.contains("table inet dyno-custom {"), "{listing}");
    assert!(
        listing.contains(r#"ip saddr 10.208.0.0/12 oifname != "dz*" masquerade"#),
        "{listing}"
    );
    assert!(
        listing
            .contains(r#"oifname "dz*" meta mark 0x00001234 ip daddr . tcp dport @exposed accept"#),
        "{listing}"
    );
    assert!(
        listing.contains(r#"iifname "dz*" ip daddr 169.254.170.0/24 drop"#),
        "{listing}"
    );
    assert!(
        listing.contains(
            r#"iifname "dz*" ct state new add @flows { ip saddr ct count over 50 } drop"#
        ),
        "{listing}"
    );
    // Router sources reach exposed ports, forwarded (a router elsewhere) and from this host.
    for source in ["198.51.100.0/24", "203.0.113.7"] {
        let line =
            format!(r#"oifname "dz*" ip saddr {source} ip daddr . tcp dport @exposed accept"#);
        assert_eq!(listing.matches(&line).count(), 2, "{line} in {listing}");
    }
    // A /12 pool: room in the flows set for each of its addresses.
    assert!(listing.contains("size 1048576"), "{listing}");
    assert_bytecode_is_nfts(&netns, &config, &[WEB1]);
    assert_eq!(firewall.table(), "dyno-custom");
    assert_eq!(firewall.exposed().unwrap(), [WEB1]);
}

/// Installing again (a second instance starting, or a restart) leaves one table with the
/// intended rules, and a set with the elements it had (other instances' dynos expose their
/// ports there) as well as the given ones.
#[test]
fn installing_twice_leaves_one_table_with_the_elements_it_had_and_the_given_ones() {
    require_root();
    let netns = TestNetns::new();
    let mut firewall = netns.firewall();
    let config = FirewallConfig::default();

    firewall.install(&config, &[WEB1, WEB2]).unwrap();
    assert_eq!(sorted(firewall.exposed().unwrap()), [WEB1, WEB2]);

    // Something else changes the table meanwhile; installing again restores the rules.
    netns.nft(&["add", "rule", "inet", "dyno", "input", "accept"], None);
    firewall.install(&config, &[WEB2, WEB3]).unwrap();

    assert_eq!(tables(&netns), ["table inet dyno"]);
    assert_eq!(sorted(firewall.exposed().unwrap()), [WEB1, WEB2, WEB3]);
    assert_bytecode_is_nfts(&netns, &config, &[WEB1, WEB2, WEB3]);
}

/// Another handle (another instance) exposes a port after this one read the set: this one's
/// install still keeps it, because it reads the set in the generation its transaction is held to.
#[test]
fn an_install_keeps_what_another_instance_exposed_after_it_opened() {
    require_root();
    let netns = TestNetns::new();
    let config = FirewallConfig::default();
    let mut first = netns.firewall();
    first.install(&config, &[WEB1]).unwrap();
    let mut second = netns.firewall();
    let seen_at_open = second.exposed().unwrap();
    first.expose(WEB2.0, WEB2.1).unwrap();
    second.install(&config, &seen_at_open).unwrap();
    assert_eq!(sorted(second.exposed().unwrap()), [WEB1, WEB2]);
}

/// A daemon of this version starting on a host where an older dyno installed its table (without
/// the flows set and its rule): it reads the exposed ports and installs over the old table, as
/// `Network::open` and `Network::install` do, which leaves exactly today's ruleset.
#[test]
fn installing_over_an_older_dynos_table_upgrades_it() {
    require_root();
    let netns = TestNetns::new();
    let config = FirewallConfig::default();
    let older: String = intent(&config, &[WEB1])
        .lines()
        .filter(|line| !line.contains("flows"))
        .map(|line| format!("{line}\n"))
        .collect();
    netns.nft(&["-f", "-"], Some(&older));
    assert!(!netns.list_ruleset().contains("flows"));

    let mut firewall = netns.firewall();
    let exposed = firewall.exposed().unwrap();
    assert_eq!(exposed, [WEB1]);
    firewall.install(&config, &exposed).unwrap();

    assert_eq!(tables(&netns), ["table inet dyno"]);
    let expected = expected_listing().replace(
        "type ipv4_addr . inet_service\n",
        "type ipv4_addr . inet_service\nelements = { 10.213.0.5 . 5000 }\n",
    );
    assert_same_listing(&netns.list_ruleset(), &expected);
    assert_bytecode_is_nfts(&netns, &config, &[WEB1]);
}

#[test]
fn expose_and_unexpose_round_trip_and_are_idempotent() {
    require_root();
    let netns = TestNetns::new();
    let mut firewall = netns.firewall();
    firewall.install(&FirewallConfig::default(), &[]).unwrap();
    assert_eq!(firewall.exposed().unwrap(), []);

    let started = Instant::now();
    firewall.expose(WEB1.0, WEB1.1).unwrap();
    let first_expose = started.elapsed();
    firewall.expose(WEB1.0, WEB1.1).unwrap();
    firewall.expose(WEB2.0, WEB2.1).unwrap();
    assert_eq!(sorted(firewall.exposed().unwrap()), [WEB1, WEB2]);
    let listing = netns.nft(&["list", "set", "inet", "dyno", "exposed"], None);
    let set = blocks(&listing);
    assert_eq!(
        set[1].1,
        [
            "type ipv4_addr . inet_service",
            "elements = { 10.213.0.5 . 5000, 10.213.0.6 . 5001 }"
        ]
    );

    let started = Instant::now();
    firewall.unexpose(WEB1.0, WEB1.1).unwrap();
    let first_unexpose = started.elapsed();
    firewall.unexpose(WEB1.0, WEB1.1).unwrap();
    firewall.unexpose(WEB3.0, WEB3.1).unwrap();
    assert_eq!(firewall.exposed().unwrap(), [WEB2]);
    // Same address, other port: a different element.
    firewall.unexpose(WEB2.0, WEB2.1 + 1).unwrap();
    assert_eq!(firewall.exposed().unwrap(), [WEB2]);
    eprintln!("expose took {first_expose:?}, unexpose {first_unexpose:?}");
}

#[test]
fn removing_twice_is_fine_and_leaves_no_table() {
    require_root();
    let netns = TestNetns::new();
    let mut firewall = netns.firewall();
    let config = FirewallConfig::default();
    firewall.remove(&config).unwrap();

    firewall.install(&config, &[WEB1]).unwrap();
    firewall.remove(&config).unwrap();
    firewall.remove(&config).unwrap();

    assert!(!firewall.is_installed(&config).unwrap());
    assert_eq!(tables(&netns), Vec::<String>::new());
    assert_eq!(netns.list_ruleset().trim(), "");
}

#[test]
fn expose_without_the_table_says_to_install_first() {
    require_root();
    let netns = TestNetns::new();
    let mut firewall = netns.firewall();

    let error = firewall.expose(WEB1.0, WEB1.1).unwrap_err();
    assert!(
        matches!(&error, FirewallError::NotInstalled { table } if table == "dyno"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "nf_tables table inet dyno is not installed: run the `dyno net` setup \
         (Firewall::install) first"
    );
    assert!(matches!(
        firewall.exposed(),
        Err(FirewallError::NotInstalled { .. })
    ));
    // Nothing to take away: fine.
    firewall.unexpose(WEB1.0, WEB1.1).unwrap();
    assert_eq!(tables(&netns), Vec::<String>::new());
}

#[test]
fn an_invalid_configuration_is_refused_before_the_kernel_sees_it() {
    require_root();
    let netns = TestNetns::new();
    let mut firewall = netns.firewall();
    let config = FirewallConfig {
        pool: (Ipv4Addr::new(10, 213, 0, 1), 16),
        ..FirewallConfig::default()
    };
    let error = firewall.install(&config, &[]).unwrap_err();
    assert!(
        matches!(error, FirewallError::InvalidConfig { .. }),
        "{error:?}"
    );
    assert_eq!(tables(&netns), Vec::<String>::new());
}

/// Without CAP_NET_ADMIN nfnetlink refuses the whole batch at its first marker; the answer
/// must be that refusal, at once — not a wait for acknowledgements that never come.
#[test]
fn a_refused_batch_fails_at_once_with_the_kernels_reason() {
    require_root();
    let netns = TestNetns::new();
    let mut firewall = netns.firewall();
    firewall.install(&FirewallConfig::default(), &[]).unwrap();
    let (result, took) = std::thread::spawn(move || {
        // Capabilities are per thread: only this short-lived thread loses CAP_NET_ADMIN.
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        let mut caps = capabilities(None).expect("capget");
        caps.effective.remove(CapabilitySet::NET_ADMIN);
        set_capabilities(None, caps).expect("capset");
        let started = Instant::now();
        let result = firewall.expose(WEB1.0, WEB1.1);
        (result, started.elapsed())
    })
    .join()
    .expect("the unprivileged thread");
    let error = result.unwrap_err();
    assert_eq!(error.errno(), Some(libc::EPERM), "{error}");
    assert_eq!(
        error.to_string(),
        "nf_tables table inet dyno: element 10.213.0.5 . 5000 of set exposed: Operation not \
         permitted"
    );
    assert!(took.as_secs() < 2, "the refusal took {took:?}");
}
