//! A throwaway stand-in for the host, for tests and benchmarks: a fresh network namespace plays
//! the host (dyno links, routes, sysctls and nf_tables live there and vanish with it), wired to a
//! second namespace that plays "the internet" on documentation addresses. Nothing of the real
//! host's network is touched, and dropping the lab removes everything it made.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::dyno::{self, Host, NetError, RunDir};
use crate::netlink::route::{self, Rtnl, VethEnd, NETLINK_ROUTE};
use crate::netlink::Object;
use crate::ns::{Netns, NsError};

/// The lab host's uplink address (what the internet sees after masquerade).
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The internet side of the uplink, and the lab host's default gateway.
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// A "public server" in the internet namespace.
pub const INTERNET_SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const UPLINK: &str = "uplink0";
const INTERNET_IF: &str = "inet0";

pub struct Lab {
    pub host: Host,
    pub run_dir: RunDir,
    pub internet: Netns,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// A new lab; `tag` (e.g. the test's name) makes its run dir recognisable.
    pub fn new(tag: &str) -> Result<Lab, NetError> {
        Lab::with_uplink(tag, true)
    }

    /// A lab whose host has no address but `lo`'s (no uplink, so no internet): a host where
    /// nothing but the platform's own addresses can be the source of the router's connections.
    pub fn lo_only(tag: &str) -> Result<Lab, NetError> {
        Lab::with_uplink(tag, false)
    }

    fn with_uplink(tag: &str, uplink: bool) -> Result<Lab, NetError> {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let run_dir = RunDir(PathBuf::from(format!(
            "/run/dyno-lab/{}-{}-{n}",
            std::process::id(),
            tag
        )));
        run_dir.ensure()?;
        // Namespaces are bound on a tmpfs, as /run is on real hosts (here it may be the root
        // filesystem, whose inode allocator slows down when files come and go by the thousand).
        rustix::mount::mount(
            "tmpfs",
            &run_dir.0,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            c"mode=0755,size=4m",
        )
        .map_err(|e| {
            let _ = std::fs::remove_dir(&run_dir.0);
            NsError {
                context: format!("mount a tmpfs on {}", run_dir.0.display()),
                source: e.into(),
            }
        })?;
        let lab = Lab::wire(run_dir.clone(), uplink);
        if lab.is_err() {
            let _ = rustix::mount::unmount(&run_dir.0, UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&run_dir.0);
        }
        lab
    }

    fn wire(run_dir: RunDir, uplink: bool) -> Result<Lab, NetError> {
        let (host_ns, host_rtnl) = Netns::create(|| Rtnl::open(NETLINK_ROUTE))?;
        let mut host = Host::from_parts(host_ns, host_rtnl?);
        let (internet, inet_rtnl) = Netns::create(|| Rtnl::open(NETLINK_ROUTE))?;
        if uplink {
            wire_uplink(host.rtnl(), &mut inet_rtnl?, &internet)?;
        } else {
            bring_up_lo(host.rtnl())?;
        }
        host.enable_forwarding()?;
        Ok(Lab {
            host,
            run_dir,
            internet,
        })
    }

    /// Removes every dyno network bound in the lab's run dir.
    pub fn teardown_all(&mut self) -> Result<(), Vec<NetError>> {
        let mut errors = Vec::new();
        match self.run_dir.names() {
            Ok(names) => {
                for name in names {
                    if let Err(mut e) = dyno::teardown(&mut self.host, &self.run_dir, &name, None) {
                        errors.append(&mut e);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(errors) = self.teardown_all() {
            for e in errors {
                eprintln!("lab cleanup: {e}");
            }
        }
        if let Err(e) = rustix::mount::unmount(&self.run_dir.0, UnmountFlags::DETACH) {
            eprintln!("lab cleanup: unmount {}: {e}", self.run_dir.0.display());
        }
        if let Err(e) = std::fs::remove_dir(&self.run_dir.0) {
            eprintln!("lab cleanup: remove {}: {e}", self.run_dir.0.display());
        }
        // Shared by concurrent labs: only the last one out removes it.
        if let Some(parent) = self.run_dir.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        // The namespaces themselves go with their last file descriptor, taking every link,
        // route and nf_tables table inside with them.
    }
}

/// `lo` up (127.0.0.1), nothing else: the host of [`Lab::lo_only`].
fn bring_up_lo(host: &mut Rtnl) -> Result<(), NetError> {
    host.request(route::set_link_up(1), 0, Object::new("link", "lo"))?;
    Ok(())
}

fn wire_uplink(host: &mut Rtnl, internet: &mut Rtnl, internet_ns: &Netns) -> Result<(), NetError> {
    let mut batch = host.batch();
    host.push(
        &mut batch,
        route::new_veth_pair(
            &VethEnd {
                name: UPLINK,
                mac: [0x02, 0, 0xcb, 0, 0x71, 1],
                index: 0,
            },
            &VethEnd {
                name: INTERNET_IF,
                mac: [0x02, 0, 0xcb, 0, 0x71, 2],
                index: 2,
            },
            std::os::fd::AsRawFd::as_raw_fd(internet_ns),
        ),
        NLM_F_CREATE | NLM_F_EXCL,
        Object::new("veth", UPLINK),
    );
    host.push(
        &mut batch,
        route::set_link_up(1),
        0,
        Object::new("link", "lo"),
    );
    host.push(
        &mut batch,
        route::set_link_up_by_name(UPLINK),
        0,
        Object::new("link", UPLINK),
    );
    host.push(
        &mut batch,
        route::get_link_by_name(UPLINK),
        0,
        Object::new("link", UPLINK),
    );
    let replies = host.execute(batch)?.check()?;
    let uplink = index_in(&replies[3], UPLINK)?;
    let mut batch = host.batch();
    host.push(
        &mut batch,
        route::add_address(uplink, UPLINK_ADDR, 24),
        NLM_F_CREATE | NLM_F_EXCL,
        Object::new("address", UPLINK_ADDR),
    );
    host.push(
        &mut batch,
        route::add_route(Ipv4Addr::UNSPECIFIED, 0, uplink, Some(INTERNET_GATEWAY)),
        NLM_F_CREATE | NLM_F_EXCL,
        Object::new("route", "default"),
    );
    host.execute(batch)?.check()?;

    let mut batch = internet.batch();
    internet.push(
        &mut batch,
        route::set_link_up(1),
        0,
        Object::new("link", "lo"),
    );
    internet.push(
        &mut batch,
        route::set_link_up(2),
        0,
        Object::new("link", INTERNET_IF),
    );
    internet.push(
        &mut batch,
        route::get_link_by_name(INTERNET_IF),
        0,
        Object::new("link", INTERNET_IF),
    );
    internet.push(
        &mut batch,
        route::add_address(1, INTERNET_SERVER, 32),
        NLM_F_CREATE | NLM_F_EXCL,
        Object::new("address", INTERNET_SERVER),
    );
    let replies = internet.execute(batch)?.check()?;
    let inet = index_in(&replies[2], INTERNET_IF)?;
    let mut batch = internet.batch();
    internet.push(
        &mut batch,
        route::add_address(inet, INTERNET_GATEWAY, 24),
        NLM_F_CREATE | NLM_F_EXCL,
        Object::new("address", INTERNET_GATEWAY),
    );
    // The internet knows no route to the dyno pool: replies only come back because the lab host
    // masquerades dyno traffic behind its uplink address.
    internet.execute(batch)?.check()?;
    Ok(())
}

fn index_in(
    reply: &[netlink_packet_route::RouteNetlinkMessage],
    name: &str,
) -> Result<u32, NetError> {
    reply
        .first()
        .and_then(route::link_index_and_name)
        .map(|(index, _)| index)
        .ok_or_else(|| {
            NetError::Ns(NsError {
                context: format!("link {name}"),
                source: std::io::Error::other("the kernel did not return it"),
            })
        })
}
