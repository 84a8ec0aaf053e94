//! An app's web dynos as the router sees them: every `up` one is a backend; while none is up
//! and one has crashed, the router answers H10 rather than H14.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dyno_router::{Backend, RouteTable};

use dyno_supervisor::{State, Status};

/// How a preboot wait ([`WebDynos::wait_all_up`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preboot {
    Up,
    TimedOut,
    Closed,
}

/// Called with a web dyno's name (`web.1`), address and port once it is up.
pub type WebUpFn = dyn Fn(&str, std::net::Ipv4Addr, u16) + Send + Sync;

/// Told that a web dyno is up (see [`WebUpFn`]).
#[derive(Clone)]
pub struct WebUpSink(pub Arc<WebUpFn>);

impl std::fmt::Debug for WebUpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebUpSink")
    }
}

/// Follows the status of an app's web dynos and keeps the router's table in step. Dynos are
/// keyed by incarnation, so that the old and the new `web.1` of a rolling deploy are both
/// backends while they overlap.
#[derive(Clone)]
pub struct WebDynos {
    routes: RouteTable,
    app: String,
    port: u16,
    /// Told when a dyno comes up (`dyno up` says where), once the router has it.
    on_up: Option<WebUpSink>,
    /// key → (dyno name, last status)
    states: Arc<Mutex<BTreeMap<String, (String, Status)>>>,
    /// The app is gone: late status changes must not bring it back into the table.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Woken on every status change and on close: a preboot waits on it instead of polling.
    changed: Arc<tokio::sync::Notify>,
    /// Web dynos about to start that no supervisor reports yet (a restart stops the old ones
    /// first): counted as starting, so requests wait for them rather than get `H14`.
    announced: Arc<std::sync::atomic::AtomicUsize>,
    /// Keys of web dynos being stopped for a restart: out of the router already, whatever
    /// they report until their supervisor ends.
    withdrawn: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

/// Holds web dynos announced as starting (see [`WebDynos::announce_starting`]) until dropped.
pub struct StartingSoon {
    web: WebDynos,
    count: usize,
}

impl Drop for StartingSoon {
    fn drop(&mut self) {
        self.web
            .announced
            .fetch_sub(self.count, std::sync::atomic::Ordering::SeqCst);
        self.web.publish(&crate::lock(&self.web.states));
    }
}

impl WebDynos {
    pub fn new(routes: RouteTable, app: String, port: u16, on_up: Option<WebUpSink>) -> WebDynos {
        WebDynos {
            routes,
            app,
            port,
            on_up,
            states: Arc::default(),
            closed: Arc::default(),
            changed: Arc::default(),
            announced: Arc::default(),
            withdrawn: Arc::default(),
        }
    }

    /// The router stops sending requests to the web dynos `names` (`web.1`) now, before they
    /// are stopped: a dyno that stops listening while still a backend would turn requests
    /// into `H21`/`H13`. Their later status changes are ignored.
    pub fn withdraw(&self, names: &[String]) {
        let mut states = crate::lock(&self.states);
        let mut withdrawn = crate::lock(&self.withdrawn);
        states.retain(|key, (name, _)| {
            let keep = !names.contains(name);
            if !keep {
                withdrawn.insert(key.clone());
            }
            keep
        });
        drop(withdrawn);
        self.publish(&states);
    }

    /// `count` web dynos will start soon (a restart that stops the old ones first): until the
    /// guard is dropped — once their supervisors report — the router counts them as starting,
    /// and requests that find no dyno up wait for one (`H20` after the boot wait) instead of
    /// getting `H14`.
    pub fn announce_starting(&self, count: usize) -> StartingSoon {
        self.announced
            .fetch_add(count, std::sync::atomic::Ordering::SeqCst);
        self.publish(&crate::lock(&self.states));
        StartingSoon {
            web: self.clone(),
            count,
        }
    }

    /// Stop following: the app leaves the router (its dynos may still report while stopping).
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let _states = crate::lock(&self.states);
        self.routes.remove_app(&self.app);
        self.changed.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Follows one web dyno (`key` unique per incarnation, `name` like `web.1`) for as long as
    /// it runs; it leaves the table when its supervisor ends.
    pub fn follow(
        &self,
        key: String,
        name: String,
        mut status: tokio::sync::watch::Receiver<Status>,
    ) {
        let web = self.clone();
        // The state it starts in counts too (a dyno `starting` is one requests may wait for).
        let first = status.borrow_and_update().clone();
        web.update(&key, &name, Some(first));
        tokio::spawn(async move {
            // Where it is now (a dyno already up when followed, after a rename, is a backend
            // at once), then every change.
            let now = status.borrow_and_update().clone();
            web.show(&key, &name, now);
            while status.changed().await.is_ok() {
                let now = status.borrow().clone();
                web.show(&key, &name, now);
            }
            web.update(&key, &name, None);
        });
    }

    /// One status of a followed dyno into the table; once the router has an `up` dyno,
    /// whoever hears of it may send it requests.
    fn show(&self, key: &str, name: &str, now: Status) {
        let up_at = match (&self.on_up, now.state, now.ip) {
            (Some(_), State::Up, Some(ip)) => Some(ip),
            _ => None,
        };
        self.update(key, name, Some(now));
        if let (Some(on_up), Some(ip)) = (&self.on_up, up_at) {
            (on_up.0)(name, ip, self.port);
        }
    }

    /// The whole list each time: the router swaps its table, it never patches it.
    fn update(&self, key: &str, name: &str, status: Option<Status>) {
        let mut states = crate::lock(&self.states);
        if self.is_closed() {
            return;
        }
        {
            let mut withdrawn = crate::lock(&self.withdrawn);
            if withdrawn.contains(key) {
                if status.is_none() {
                    withdrawn.remove(key);
                }
                return;
            }
        }
        match status {
            Some(s) => {
                states.insert(key.to_string(), (name.to_string(), s));
            }
            None => {
                states.remove(key);
            }
        }
        self.publish(&states);
    }

    /// Hands the router the app's web dynos as `states` has them (and wakes preboot waits).
    fn publish(&self, states: &BTreeMap<String, (String, Status)>) {
        if self.is_closed() {
            return;
        }
        let backends: Vec<Backend> = states
            .values()
            .filter_map(|(dyno, s)| match (s.state, s.ip) {
                (State::Up, Some(ip)) => Some(Backend::new(
                    dyno.clone(),
                    std::net::SocketAddr::new(ip.into(), self.port),
                )),
                _ => None,
            })
            .collect();
        let starting = states
            .values()
            .filter(|(_, s)| s.state == State::Starting)
            .count()
            + self.announced.load(std::sync::atomic::Ordering::SeqCst);
        let crashed =
            backends.is_empty() && states.values().any(|(_, s)| s.state == State::Crashed);
        self.routes
            .set_web_dynos(&self.app, backends, starting, crashed);
        self.changed.notify_waiters();
    }

    /// Waits until every web dyno of `keys` is up ([`Preboot::Up`]), the app is closed (it is
    /// being destroyed: [`Preboot::Closed`]) or `deadline` passes ([`Preboot::TimedOut`]).
    /// Woken by the dynos' status changes, never by polling.
    pub async fn wait_all_up(&self, keys: &[String], deadline: tokio::time::Instant) -> Preboot {
        loop {
            // Registered before the check, so that a change between the two is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_closed() {
                return Preboot::Closed;
            }
            if self.all_up(keys) {
                return Preboot::Up;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return if self.all_up(keys) { Preboot::Up } else { Preboot::TimedOut };
                }
            }
        }
    }

    /// Whether every web dyno of `keys` is up (a rolling deploy waits for this).
    pub fn all_up(&self, keys: &[String]) -> bool {
        let states = crate::lock(&self.states);
        keys.iter()
            .all(|k| states.get(k).is_some_and(|(_, s)| s.state == State::Up))
    }
}

/// Preboot and the router's table, driven by fake dyno statuses: no root, no dyno.
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;
    use tokio::sync::watch;

    const PORT: u16 = 5000;

    fn status(state: State, ip: Option<Ipv4Addr>) -> Status {
        Status {
            state,
            ip,
            net_name: None,
            restarts: 0,
            exit_code: None,
            since: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    /// A followed web dyno whose status the test sets.
    fn follow(web: &WebDynos, key: &str, name: &str) -> watch::Sender<Status> {
        let (tx, rx) = watch::channel(status(State::Starting, None));
        web.follow(key.into(), name.into(), rx);
        tx
    }

    fn app_route(routes: &RouteTable) -> Option<Arc<dyno_router::routes::AppRoute>> {
        routes.lookup("hello.localhost")
    }

    fn web() -> (RouteTable, WebDynos) {
        let routes = RouteTable::new();
        routes.set_app("hello", &[]);
        let web = WebDynos::new(routes.clone(), "hello".into(), PORT, None);
        (routes, web)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn preboot_waits_until_every_new_web_dyno_is_up_and_the_router_has_it() {
        let (routes, web) = web();
        let a = follow(&web, "web.1#1", "web.1");
        let b = follow(&web, "web.2#2", "web.2");
        let keys = vec!["web.1#1".to_string(), "web.2#2".to_string()];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let waiting = tokio::spawn({
            let web = web.clone();
            async move { web.wait_all_up(&keys, deadline).await }
        });
        a.send_replace(status(State::Up, Some(Ipv4Addr::new(10, 213, 0, 1))));
        settle().await;
        assert!(!waiting.is_finished(), "web.2 is still starting");
        let route = app_route(&routes).unwrap();
        assert_eq!(route.backends.len(), 1);
        assert_eq!(route.backends[0].dyno, "web.1");
        b.send_replace(status(State::Up, Some(Ipv4Addr::new(10, 213, 0, 2))));
        assert_eq!(waiting.await.unwrap(), Preboot::Up);
        assert_eq!(app_route(&routes).unwrap().backends.len(), 2);
    }

    #[tokio::test]
    async fn preboot_gives_up_at_the_deadline_and_a_closed_app_ends_the_wait() {
        let (_routes, web) = web();
        let _a = follow(&web, "web.1#1", "web.1");
        let keys = vec!["web.1#1".to_string()];
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert_eq!(web.wait_all_up(&keys, soon).await, Preboot::TimedOut);

        let later = tokio::time::Instant::now() + Duration::from_secs(60);
        let waiting = tokio::spawn({
            let web = web.clone();
            async move { web.wait_all_up(&keys, later).await }
        });
        settle().await;
        web.close();
        assert_eq!(waiting.await.unwrap(), Preboot::Closed);
    }

    #[tokio::test]
    async fn a_crashed_web_dyno_with_none_up_marks_the_app_crashed_and_a_gone_one_leaves() {
        let (routes, web) = web();
        let a = follow(&web, "web.1#1", "web.1");
        a.send_replace(status(State::Crashed, None));
        settle().await;
        let route = app_route(&routes).unwrap();
        assert!(route.crashed, "H10, not H14");
        assert!(route.backends.is_empty());
        a.send_replace(status(State::Up, Some(Ipv4Addr::new(10, 213, 0, 1))));
        settle().await;
        let route = app_route(&routes).unwrap();
        assert!(!route.crashed);
        assert_eq!(route.backends.len(), 1);
        // The supervisor ends (the sender goes): the dyno leaves the table.
        drop(a);
        settle().await;
        assert!(app_route(&routes).unwrap().backends.is_empty());
    }

    #[tokio::test]
    async fn starting_dynos_are_counted_from_their_first_state_and_a_restart_hands_over() {
        let (routes, web) = web();
        let a = follow(&web, "web.1#1", "web.1");
        // Followed in `starting`: counted at once, before any change is reported.
        assert_eq!(app_route(&routes).unwrap().starting, 1);
        a.send_replace(status(State::Up, Some(Ipv4Addr::new(10, 213, 0, 1))));
        settle().await;
        let route = app_route(&routes).unwrap();
        assert_eq!((route.backends.len(), route.starting), (1, 0));

        // A restart: its replacement is announced, the old one leaves the router before it
        // stops, and what the old one reports while stopping is ignored.
        let soon = web.announce_starting(1);
        web.withdraw(&["web.1".to_string()]);
        let route = app_route(&routes).unwrap();
        assert_eq!((route.backends.len(), route.starting), (0, 1));
        a.send_replace(status(State::Crashed, None));
        settle().await;
        let route = app_route(&routes).unwrap();
        assert!(
            !route.crashed,
            "a withdrawn dyno's exit is not a crash of the app"
        );
        drop(a);
        let _b = follow(&web, "web.1#2", "web.1");
        drop(soon);
        settle().await;
        let route = app_route(&routes).unwrap();
        assert_eq!(
            (route.backends.len(), route.starting),
            (0, 1),
            "the new web.1 starts"
        );
    }

    #[tokio::test]
    async fn the_web_up_sink_hears_of_a_dyno_once_the_router_has_it() {
        let routes = RouteTable::new();
        routes.set_app("hello", &[]);
        let heard: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = WebUpSink(Arc::new({
            let heard = heard.clone();
            let routes = routes.clone();
            move |dyno: &str, ip: Ipv4Addr, port: u16| {
                let routed = routes.routes_to(std::net::SocketAddr::new(ip.into(), port));
                heard
                    .lock()
                    .unwrap()
                    .push(format!("{dyno} {ip}:{port} {routed}"));
            }
        }));
        let web = WebDynos::new(routes.clone(), "hello".into(), PORT, Some(sink));
        let a = follow(&web, "web.1#1", "web.1");
        a.send_replace(status(State::Up, Some(Ipv4Addr::new(10, 213, 0, 9))));
        settle().await;
        assert_eq!(*heard.lock().unwrap(), ["web.1 10.213.0.9:5000 true"]);
    }
}
