//! Host → app routing table, written by the supervisor, read lock-free by every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// An `up` web dyno the router may send requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Dyno name, `web.1`.
    pub dyno: String,
    /// Its `eth0` address and `$PORT`.
    pub addr: SocketAddr,
}

impl Backend {
    pub fn new(dyno: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            dyno: dyno.into(),
            addr,
        }
    }
}

/// State of an app as the router sees it.
#[derive(Debug, Clone, Default)]
pub struct AppRoute {
    /// App name.
    pub name: Arc<str>,
    /// Custom domains (lowercase, no port).
    pub domains: Vec<String>,
    /// `up` web dynos.
    pub backends: Arc<[Backend]>,
    /// Maintenance mode → `H80`.
    pub maintenance: bool,
    /// Never deployed (no release yet) → `H81`.
    pub blank: bool,
    /// Web dynos crashed → `H10` (instead of `H14`) while no backend is up.
    pub crashed: bool,
    /// Web dynos starting (not `up` yet). While none is up and some start, requests wait for
    /// one (up to [`RouterConfig::boot_wait`](crate::RouterConfig::boot_wait), then `H20`)
    /// instead of an immediate `H14`.
    pub starting: usize,
    /// Requests in flight for this app (shared across table updates), for `H11`.
    pub in_flight: Arc<AtomicUsize>,
    /// The app's own error and maintenance pages (`ERROR_PAGE_URL`, `MAINTENANCE_PAGE_URL`).
    pub pages: ErrorPages,
}

/// Where an app's own pages are (http or https URLs). The router serves them as Heroku does:
/// its answer keeps its status (503) and frames the page (`<iframe src=…>`), so the router
/// never fetches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    /// Shown for the H-codes (the app could not answer).
    pub error: Option<Arc<str>>,
    /// Shown in maintenance mode (`H80`).
    pub maintenance: Option<Arc<str>>,
}

impl ErrorPages {
    /// From an app's config vars; a value that is not an http(s) URL is ignored.
    pub fn from_config(error: Option<&str>, maintenance: Option<&str>) -> ErrorPages {
        let url = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| {
                    (v.starts_with("https://") || v.starts_with("http://"))
                        && v.len() <= 2048
                        && !v.chars().any(char::is_control)
                })
                .map(Arc::from)
        };
        ErrorPages {
            error: url(error),
            maintenance: url(maintenance),
        }
    }
}

impl AppRoute {
    /// A random backend (uniform), if any.
    pub fn pick(&self) -> Option<&Backend> {
        if self.backends.is_empty() {
            None
        } else {
            self.backends.get(fastrand::usize(..self.backends.len()))
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Table {
    apps: HashMap<Arc<str>, Arc<AppRoute>>,
    /// Custom domain → app name.
    domains: HashMap<String, Arc<str>>,
}

/// Cloneable handle on the routing table. Writes copy the (small) table and swap it in;
/// reads are a single atomic load.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    table: Arc<ArcSwap<Table>>,
    write: Arc<Mutex<()>>,
    /// Woken on every change (the router drops connections to dynos that left).
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Normalise a Host header value: lowercase, port stripped, trailing dot dropped.
/// `None` when it is not a plausible host name.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080"
        let end = rest.find(']')?;
        &host[..end + 2]
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    ok.then(|| name.to_ascii_lowercase())
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, f: impl FnOnce(&mut Table)) {
        // A poisoned lock only means another writer panicked; the table itself is immutable.
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = Table::clone(&self.table.load());
        f(&mut t);
        self.table.store(Arc::new(t));
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Changes of the table, from now on. A change that comes while the receiver is busy is
    /// not lost: its next `changed()` returns at once.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether `addr` is one of the `up` web dynos of any app.
    pub fn routes_to(&self, addr: SocketAddr) -> bool {
        self.table
            .load()
            .apps
            .values()
            .any(|a| a.backends.iter().any(|b| b.addr == addr))
    }

    fn modify_app(&self, app: &str, f: impl FnOnce(&mut AppRoute)) {
        self.update(|t| {
            let mut route = t
                .apps
                .get(app)
                .map(|r| AppRoute::clone(r))
                .unwrap_or_else(|| AppRoute {
                    name: Arc::from(app),
                    ..AppRoute::default()
                });
            f(&mut route);
            t.apps.insert(route.name.clone(), Arc::new(route));
        });
    }

    /// Create or update an app and its custom domains (`<app>.localhost` is always routed).
    pub fn set_app(&self, app: &str, domains: &[String]) {
        let domains: Vec<String> = domains.iter().filter_map(|d| normalize_host(d)).collect();
        self.update(|t| {
            let name: Arc<str> = Arc::from(app);
            t.domains.retain(|_, a| **a != *app);
            for d in &domains {
                t.domains.insert(d.clone(), name.clone());
            }
            let mut route = t
                .apps
                .get(app)
                .map(|r| AppRoute::clone(r))
                .unwrap_or_else(|| AppRoute {
                    name: name.clone(),
                    ..AppRoute::default()
                });
            route.domains = domains;
            t.apps.insert(name, Arc::new(route));
        });
    }

    /// Replace the app's `up` web dynos (creates the app if unknown).
    pub fn set_dynos(&self, app: &str, backends: Vec<Backend>) {
        self.modify_app(app, |r| r.backends = backends.into());
    }

    /// The app's web dynos in one change: the `up` ones, how many are starting, and whether
    /// they crashed. One swap, so a request waiting for a dyno to boot never sees a state half
    /// way (the old dyno gone, the new one not counted yet).
    pub fn set_web_dynos(&self, app: &str, backends: Vec<Backend>, starting: usize, crashed: bool) {
        self.modify_app(app, |r| {
            r.backends = backends.into();
            r.starting = starting;
            r.crashed = crashed;
        });
    }

    /// How many of the app's web dynos are starting (see [`AppRoute::starting`]).
    pub fn set_starting(&self, app: &str, starting: usize) {
        self.modify_app(app, |r| r.starting = starting);
    }

    /// The app's own error and maintenance pages.
    pub fn set_pages(&self, app: &str, pages: ErrorPages) {
        self.modify_app(app, |r| r.pages = pages);
    }

    /// Maintenance mode on/off (`H80`).
    pub fn set_maintenance(&self, app: &str, on: bool) {
        self.modify_app(app, |r| r.maintenance = on);
    }

    /// The app has no release yet (`H81`), or has one now.
    pub fn set_blank(&self, app: &str, blank: bool) {
        self.modify_app(app, |r| r.blank = blank);
    }

    /// Mark the app's web dynos crashed (`H10` while none is up).
    pub fn set_crashed(&self, app: &str, crashed: bool) {
        self.modify_app(app, |r| r.crashed = crashed);
    }

    /// Forget an app and its domains.
    pub fn remove_app(&self, app: &str) {
        self.update(|t| {
            t.apps.remove(app);
            t.domains.retain(|_, a| **a != *app);
        });
    }

    /// The app for a (normalised) host: `<app>.localhost` or a custom domain.
    pub fn lookup(&self, host: &str) -> Option<Arc<AppRoute>> {
        let t = self.table.load();
        if let Some(app) = t.domains.get(host) {
            return t.apps.get(app).cloned();
        }
        let app = host.strip_suffix(".localhost")?;
        t.apps.get(app).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("MyApp.LocalHost:8080").as_deref(),
            Some("myapp.localhost")
        );
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host("a:b"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn table() {
        let t = RouteTable::new();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        t.set_app("myapp", &["www.Example.com:443".into()]);
        t.set_dynos("myapp", vec![Backend::new("web.1", a)]);
        assert_eq!(
            t.lookup("myapp.localhost").map(|r| r.backends.len()),
            Some(1)
        );
        assert_eq!(
            t.lookup("www.example.com")
                .map(|r| r.name.to_string())
                .as_deref(),
            Some("myapp")
        );
        assert!(t.lookup("other.localhost").is_none());
        t.set_app("myapp", &[]);
        assert!(t.lookup("www.example.com").is_none());
        t.remove_app("myapp");
        assert!(t.lookup("myapp.localhost").is_none());
    }
}
