//! Runs after the rest of the suite (it is `#[ignore]`d, and the README's test command runs the
//! ignored tests in a second pass): the suite must leave nothing on the real host. Tests build
//! their host side in throwaway namespaces, so nothing of theirs should ever be visible here.

use std::path::Path;

use dyno_net::dyno::Host;
use dyno_net::names::{DynoName, LINK_PREFIX, NETNS_PREFIX};
use dyno_net::nft::{Firewall, FirewallConfig};

#[test]
#[ignore = "runs after the suite, in the README's second pass: checks that it left nothing behind"]
fn the_suite_left_nothing_on_the_host() {
    assert!(
        rustix::process::geteuid().as_raw() == 0,
        "this test needs root (it reads the host's links and nf_tables): run the suite as root"
    );
    let mut host = Host::current().unwrap();
    let links: Vec<String> = host
        .links_with_prefix(LINK_PREFIX)
        .unwrap()
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| DynoName::from_host_link(name).is_some())
        .collect();
    assert!(links.is_empty(), "dyno links left on the host: {links:?}");

    let namespaces: Vec<String> = match std::fs::read_dir("/run/netns") {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(NETNS_PREFIX))
            .collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        namespaces.is_empty(),
        "dyno namespaces left in /run/netns: {namespaces:?}"
    );

    let mut firewall = Firewall::open().unwrap();
    assert!(
        !firewall.is_installed(&FirewallConfig::default()).unwrap(),
        "the host has an `inet dyno` nf_tables table: a test installed it outside its lab"
    );

    assert!(
        !Path::new("/run/dyno-lab").exists(),
        "a lab run dir is left in /run/dyno-lab"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains("dyno-lab") || l.contains("dynobench") || l.contains("/dyno-t-"))
        .collect();
    assert!(ours.is_empty(), "mounts left by the suite: {ours:?}");
    // Tests that need the private /proc view start an LXCFS in their scratch dir and stop it;
    // only an operator's (Debian's service, or `dyno up`'s default) may stay.
    let lxcfs: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains("fuse.lxcfs") && !l.contains(" /var/lib/lxcfs "))
        .collect();
    assert!(
        lxcfs.is_empty(),
        "LXCFS mounts left by the suite: {lxcfs:?}"
    );
}
