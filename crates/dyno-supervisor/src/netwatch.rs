//! Notices a dyno whose network was changed under it (an operator's `ip route flush`, a
//! misbehaving tool, a firewall reload by other software) so that it is never reported `up`
//! while the router cannot reach it.
//!
//! Every running incarnation is [`NetWatch::register`]ed with its address and, for a web dyno,
//! its `$PORT`. A thread of its own looks every [`INTERVAL`] at the host: one dump of the main
//! table's `/32` routes and one of the firewall's `exposed` set, whatever the number of dynos.
//!
//! - **route gone** (or turned into something else: a blackhole, another link): the dyno's
//!   link went with it or was set down (IPv4 drops a link's routes then), and no request
//!   reaches it. Its supervisor is told ([`Problem::Lost`]), says why in the app's log and
//!   starts the dyno afresh, on a new network.
//! - **exposed element gone** (route still there): the thread puts it back at once, and the
//!   supervisor logs that it did ([`Problem::Healed`]).
//!
//! An entry registered or unregistered while the thread was looking is left for the next look:
//! a dyno being set up or torn down is not broken.

use crate::lock;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use dyno_net::dyno::Host;
use dyno_net::netlink::route::HostRoute;
use dyno_net::nft::{Firewall, FirewallConfig};
use tokio::sync::Notify;

/// How often the host is looked at: a broken dyno is noticed within about this long.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// What one look found wrong with a dyno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Unreachable; the dyno must start again on a new network.
    Lost(String),
    /// Was broken and has been put right.
    Healed(String),
}

/// One running incarnation's network, as it must be.
#[derive(Debug)]
pub struct Watched {
    ip: Ipv4Addr,
    /// `$PORT`, for a web dyno (its `ip . port` must be in the exposed set).
    port: Option<u16>,
    /// The link its route must go out of, where known.
    host_ifindex: Option<u32>,
    problems: Mutex<Vec<Problem>>,
    noticed: Notify,
}

impl Watched {
    /// Waits until a look found something, and takes what it found.
    pub async fn problems(&self) -> Vec<Problem> {
        loop {
            let found = std::mem::take(&mut *lock(&self.problems));
            if !found.is_empty() {
                return found;
            }
            self.noticed.notified().await;
        }
    }

    fn report(&self, problem: Problem) {
        lock(&self.problems).push(problem);
        self.noticed.notify_one();
    }
}

/// A registration; dropping it takes the dyno off the watch (before its teardown starts).
pub struct Registration {
    id: u64,
    watched: Arc<Watched>,
    watch: Weak<Registry>,
}

impl Registration {
    pub fn watched(&self) -> &Watched {
        &self.watched
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(registry) = self.watch.upgrade() {
            lock(&registry.entries).remove(&self.id);
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    entries: Mutex<BTreeMap<u64, Arc<Watched>>>,
    next: AtomicU64,
}

/// The daemon's watch; its thread stops (and is joined) on drop.
pub struct NetWatch {
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetWatchError {
    #[error("network watch: {0}")]
    Net(#[from] dyno_net::dyno::NetError),
    #[error("network watch: {0}")]
    Ns(#[from] dyno_net::ns::NsError),
    #[error("network watch: {0}")]
    Firewall(#[from] dyno_net::nft::FirewallError),
    #[error("network watch: start its thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl NetWatch {
    /// Starts looking at the host namespace `host_netns` (with netlink sockets of its own) and
    /// its firewall table of `config`.
    pub fn for_host(
        host_netns: &dyno_net::ns::Netns,
        config: FirewallConfig,
    ) -> Result<NetWatch, NetWatchError> {
        let host = Host::in_netns(host_netns)?;
        let firewall = host_netns.run({
            let config = config.clone();
            move || Firewall::open_with(&config)
        })??;
        Ok(NetWatch::start(host, firewall, config)?)
    }

    /// Starts looking at the host of `host` and the firewall table of `firewall`.
    pub fn start(host: Host, firewall: Firewall, config: FirewallConfig) -> std::io::Result<Self> {
        let registry = Arc::new(Registry::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::downgrade(&registry), stop.clone());
        let thread = std::thread::Builder::new()
            .name("dyno-netwatch".into())
            .spawn(move || {
                let mut looker = Looker {
                    host,
                    firewall,
                    config,
                };
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::park_timeout(INTERVAL);
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    let Some(registry) = seen.upgrade() else {
                        break;
                    };
                    looker.look(&registry);
                }
            })?;
        Ok(NetWatch {
            registry,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Watches a running incarnation at `ip` (web: with `port`) until the registration is
    /// dropped.
    pub fn register(
        &self,
        ip: Ipv4Addr,
        port: Option<u16>,
        host_ifindex: Option<u32>,
    ) -> Registration {
        let watched = Arc::new(Watched {
            ip,
            port,
            host_ifindex,
            problems: Mutex::new(Vec::new()),
            noticed: Notify::new(),
        });
        let id = self.registry.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.registry.entries).insert(id, watched.clone());
        Registration {
            id,
            watched,
            watch: Arc::downgrade(&self.registry),
        }
    }
}

impl Drop for NetWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = lock(&self.thread).take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

struct Looker {
    host: Host,
    firewall: Firewall,
    config: FirewallConfig,
}

impl Looker {
    fn look(&mut self, registry: &Registry) {
        let before: BTreeSet<u64> = lock(&registry.entries).keys().copied().collect();
        let routes = match self.host.host_routes() {
            Ok(routes) => routes,
            Err(e) => {
                tracing::warn!(error = %e, "network watch: read the host's routes");
                return;
            }
        };
        // No table at all: the daemon's own install failed or someone removed it; then every
        // web dyno's element is missing, and putting it back fails the same way (logged).
        let exposed: BTreeSet<(Ipv4Addr, u16)> = self
            .firewall
            .exposed()
            .map(|e| e.into_iter().collect())
            .unwrap_or_default();
        let steady: Vec<Arc<Watched>> = lock(&registry.entries)
            .iter()
            .filter(|(id, _)| before.contains(id))
            .map(|(_, w)| w.clone())
            .collect();
        for watched in steady {
            match problem_of(&watched, &routes, &exposed) {
                None => {}
                Some(Finding::RouteLost(why)) => watched.report(Problem::Lost(why)),
                Some(Finding::PortClosed(ip, port)) => {
                    let put_back = self.firewall.expose(ip, port).or_else(|_| {
                        // The table itself is gone: install it again (with what it had).
                        self.firewall.install(&self.config, &[(ip, port)]).map(drop)
                    });
                    match put_back {
                        Ok(()) => watched.report(Problem::Healed(format!(
                            "the firewall no longer let the router reach {ip}:{port}; opened it again"
                        ))),
                        Err(e) => watched.report(Problem::Lost(format!(
                            "the firewall no longer lets the router reach {ip}:{port}, and \
                             opening it again failed: {e}"
                        ))),
                    }
                }
            }
        }
    }
}

/// What is wrong with one dyno's network.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    RouteLost(String),
    PortClosed(Ipv4Addr, u16),
}

fn problem_of(
    watched: &Watched,
    routes: &[HostRoute],
    exposed: &BTreeSet<(Ipv4Addr, u16)>,
) -> Option<Finding> {
    let ip = watched.ip;
    let route = routes.iter().find(|r| r.ip == ip);
    let fine = match (route, watched.host_ifindex) {
        (None, _) => false,
        (Some(route), Some(expected)) => route.oif == Some(expected),
        (Some(route), None) => route.oif.is_some(),
    };
    if !fine {
        let why = match route {
            None => format!("the host's route to {ip} is gone (its link was removed or set down)"),
            Some(_) => format!("the host's route to {ip} no longer leads to the dyno's link"),
        };
        return Some(Finding::RouteLost(why));
    }
    match watched.port {
        Some(port) if !exposed.contains(&(ip, port)) => Some(Finding::PortClosed(ip, port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 5);

    fn watched(port: Option<u16>, host_ifindex: Option<u32>) -> Watched {
        Watched {
            ip: IP,
            port,
            host_ifindex,
            problems: Mutex::new(Vec::new()),
            noticed: Notify::new(),
        }
    }

    fn route(oif: Option<u32>) -> HostRoute {
        HostRoute { ip: IP, oif }
    }

    #[test]
    fn a_dyno_with_its_route_and_port_is_fine() {
        let exposed = BTreeSet::from([(IP, 5000)]);
        let w = watched(Some(5000), Some(70_000));
        assert_eq!(problem_of(&w, &[route(Some(70_000))], &exposed), None);
        // A worker has no port to expose; an adopted dyno's link index is not known.
        let w = watched(None, None);
        assert_eq!(
            problem_of(&w, &[route(Some(70_000))], &BTreeSet::new()),
            None
        );
    }

    #[test]
    fn a_missing_or_wrong_route_loses_the_dyno() {
        let exposed = BTreeSet::from([(IP, 5000)]);
        let w = watched(Some(5000), Some(70_000));
        let other = HostRoute {
            ip: Ipv4Addr::new(10, 213, 0, 6),
            oif: Some(70_000),
        };
        let lost = |routes: &[HostRoute]| match problem_of(&w, routes, &exposed) {
            Some(Finding::RouteLost(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(lost(&[other]).contains("route to 10.213.0.5 is gone"));
        assert!(lost(&[route(None)]).contains("no longer leads"));
        assert!(lost(&[route(Some(70_001))]).contains("no longer leads"));
        // Without a known link, a blackhole (a claim) is still not a route to the dyno.
        let w = watched(None, None);
        assert!(matches!(
            problem_of(&w, &[route(None)], &exposed),
            Some(Finding::RouteLost(_))
        ));
    }

    #[test]
    fn a_missing_element_is_a_closed_port() {
        let w = watched(Some(5000), None);
        let exposed = BTreeSet::from([(IP, 5001)]);
        assert_eq!(
            problem_of(&w, &[route(Some(3))], &exposed),
            Some(Finding::PortClosed(IP, 5000))
        );
    }

    #[tokio::test]
    async fn problems_wait_for_a_report_and_are_taken_once() {
        let w = Arc::new(watched(None, None));
        let waiting = tokio::spawn({
            let w = w.clone();
            async move { w.problems().await }
        });
        tokio::task::yield_now().await;
        w.report(Problem::Lost("gone".into()));
        assert_eq!(waiting.await.unwrap(), [Problem::Lost("gone".into())]);
        assert!(lock(&w.problems).is_empty());
    }
}
