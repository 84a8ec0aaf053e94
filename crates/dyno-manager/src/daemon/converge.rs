//! Each app's running side ([`AppRuntime`]) and how it is brought in line with the store
//! ([`Daemon::converge`]), one app at a time and never one app waiting for another; and the
//! daemon's stop.
use super::*;

/// A dyno the daemon runs.
pub(super) struct Running {
    /// `web.1`
    pub(super) name: String,
    pub(super) process: String,
    pub(super) index: u32,
    pub(super) release: u32,
    pub(super) size: DynoSize,
    pub(super) handle: DynoHandle,
}

/// An app's running side.
pub(super) struct AppRuntime {
    /// The name its dynos' log lines go to the hub under; changed by a rename, so that the
    /// lines of dynos that run on (one-offs) follow the app.
    pub(super) log_name: Arc<std::sync::RwLock<String>>,
    pub(super) platform: Arc<Platform>,
    pub(super) web: WebDynos,
    pub(super) dynos: Vec<Running>,
    pub(super) incarnations: u64,
    /// One-off dynos started (`run.N`).
    pub(super) one_offs: u32,
}

impl AppRuntime {
    /// Keeps a started (or adopted) dyno; a web dyno is fed to the router once `up`. Returns
    /// its key for [`WebDynos::all_up`].
    pub(super) fn track(&mut self, handle: DynoHandle, def: &DynoDef) -> String {
        self.incarnations += 1;
        let key = format!("{}#{}", def.name(), self.incarnations);
        if def.is_web() {
            self.web
                .follow(key.clone(), def.name(), handle.status.clone());
        }
        self.dynos.push(Running {
            name: def.name(),
            process: def.process.clone(),
            index: def.index,
            release: def.release,
            size: def.size,
            handle,
        });
        key
    }
}

impl Daemon {
    /// Brings the app's running dynos in line with the store: the current release, the
    /// formation's quantities. New dynos first; the ones they replace stop once the new web
    /// dynos are up.
    pub async fn converge(&self, name: &str) -> Result<(), DaemonError> {
        // One convergence of this app at a time: each reads the store first, so the last one
        // wins. The dyno map itself is locked only briefly, so `ps` answers while dynos boot
        // and other apps converge meanwhile.
        let turn = self.turn_of(name);
        let _turn = turn.lock().await;
        let release = self.current_release(name).await?;
        self.routes.set_pages(
            name,
            dyno_router::ErrorPages::from_config(
                release.config.get("ERROR_PAGE_URL").map(String::as_str),
                release
                    .config
                    .get("MAINTENANCE_PAGE_URL")
                    .map(String::as_str),
            ),
        );
        let formation = self.formation(name).await?;
        let preboot = self.app(name).await?.preboot;
        let mut apps = self.apps.lock().await;
        let runtime = self.runtime_in(&mut apps, name);
        let Some(slug) = &release.slug else {
            // Never deployed: nothing runs.
            let all = std::mem::take(&mut runtime.dynos);
            drop(apps);
            stop_all(all).await;
            return Ok(());
        };
        // Heroku restarts dynos in place: a dyno that a new one replaces (another release or
        // size in its slot) stops first. Only web dynos of an app with `preboot` keep serving
        // until their replacements are up.
        let replaced = replaced_in_place(runtime, &formation, &release, preboot, |size| {
            self.options.size(size)
        });
        // As a restart does: the replaced web dynos leave the router before they stop, and
        // requests that find none up meanwhile wait for their successors (the router's boot
        // wait) instead of getting H14, until this convergence is done.
        let mut _starting_soon = None;
        if !replaced.is_empty() {
            let web: Vec<String> = replaced
                .iter()
                .filter(|d| d.process == "web")
                .map(|d| d.name.clone())
                .collect();
            _starting_soon = Some(runtime.web.announce_starting(web.len()));
            runtime.web.withdraw(&web);
            drop(apps);
            let _held = StopsHeld::new(replaced.len());
            if !web.is_empty() {
                tokio::time::sleep(ROUTER_DRAIN).await;
            }
            stop_all(replaced).await;
            apps = self.apps.lock().await;
        }
        let runtime = self.runtime_in(&mut apps, name);
        let mut started_web = Vec::new();
        let mut wanted = Vec::new();
        for entry in &formation {
            let Some(command) = release.process_types.get(&entry.process_type) else {
                continue;
            };
            let size = self.options.size(&entry.size);
            for index in 1..=entry.quantity {
                wanted.push((entry.process_type.clone(), index));
                let current = runtime.dynos.iter().any(|d| {
                    d.process == entry.process_type
                        && d.index == index
                        && d.release == release.version
                        && d.size == size
                        && !d.handle.is_finished()
                });
                if current {
                    continue;
                }
                let slot = Slot {
                    process: entry.process_type.clone(),
                    index,
                    command: command.clone(),
                    restart: true,
                    size,
                };
                let def = self.options.dyno_def(name, &release, &slug.path, slot);
                let handle = supervisor::start(runtime.platform.clone(), def.clone());
                let key = runtime.track(handle, &def);
                if def.is_web() {
                    started_web.push(key);
                }
            }
        }
        // The new web dynos are up before this returns; with preboot, the old ones serve
        // meanwhile.
        if !started_web.is_empty() {
            let web = runtime.web.clone();
            drop(apps);
            let boot = self.options.lifecycle.boot_timeout + Duration::from_secs(1);
            let deadline = tokio::time::Instant::now() + boot;
            if web.wait_all_up(&started_web, deadline).await == Preboot::Closed {
                // Being destroyed: the destroy stops every dyno, these included.
                return Ok(());
            }
            apps = self.apps.lock().await;
        }
        let Some(runtime) = apps.get_mut(name) else {
            // Destroyed meanwhile.
            return Ok(());
        };
        let (keep, retire): (Vec<Running>, Vec<Running>) = std::mem::take(&mut runtime.dynos)
            .into_iter()
            .partition(|d| {
                // One-off dynos run to their end, whatever the formation says.
                let one_off = d.process == ONE_OFF;
                !d.handle.is_finished()
                    && (one_off
                        || (d.release == release.version
                            && wanted.contains(&(d.process.clone(), d.index))))
            });
        // Of several incarnations of one name in `keep`, the newest stays.
        let mut newest: BTreeMap<String, Running> = BTreeMap::new();
        let mut superseded = retire;
        for d in keep {
            if let Some(old) = newest.remove(&d.name) {
                superseded.push(old);
            }
            newest.insert(d.name.clone(), d);
        }
        runtime.dynos = newest.into_values().collect();
        drop(apps);
        stop_all(superseded).await;
        Ok(())
    }

    /// The app's convergence turn (see [`Daemon::turns`]).
    pub(super) fn turn_of(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock_turns()
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    pub(super) fn lock_turns(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<tokio::sync::Mutex<()>>>> {
        crate::lock(&self.turns)
    }

    /// The app's runtime in `apps`, made on first use.
    pub(super) fn runtime_in<'a>(
        &self,
        apps: &'a mut BTreeMap<String, AppRuntime>,
        app: &str,
    ) -> &'a mut AppRuntime {
        apps.entry(app.to_string())
            .or_insert_with(|| self.runtime(app))
    }

    /// A supervisor platform for `app`'s dynos whose log lines go to `log`; their incarnations
    /// are recorded in the store (a later daemon finds them).
    pub(super) fn platform_for(
        &self,
        app: &str,
        log: mpsc::UnboundedSender<LogLine>,
    ) -> Arc<Platform> {
        Arc::new(
            Platform::new(
                self.machine.host_for(app, &self.options),
                self.options.lifecycle.clone(),
                log,
            )
            .with_ledger(Arc::new(ledger::StoreLedger {
                store: self.store.clone(),
            }))
            .with_netwatch(self.machine.netwatch()),
        )
    }

    /// A new app runtime: its own supervisor platform whose log lines go to the app's ring.
    pub(super) fn runtime(&self, app: &str) -> AppRuntime {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
        let hub = self.hub.clone();
        let log_name = Arc::new(std::sync::RwLock::new(app.to_string()));
        let name = log_name.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let name = name.read().unwrap_or_else(|e| e.into_inner());
                hub.append(&name, line);
            }
        });
        let platform = self.platform_for(app, tx);
        AppRuntime {
            log_name,
            platform,
            web: WebDynos::new(
                self.routes.clone(),
                app.to_string(),
                self.options.port,
                self.options.web_up.clone(),
            ),
            dynos: Vec::new(),
            incarnations: 0,
            one_offs: 0,
        }
    }

    /// Stops every dyno of every app (daemon shutdown); then what they shared on the machine
    /// goes too, unless dynos of someone else still use it.
    pub async fn stop(&self) {
        self.builds.stop_all().await;
        let runtimes: Vec<AppRuntime> = std::mem::take(&mut *self.apps.lock().await)
            .into_values()
            .collect();
        let all: Vec<Running> = runtimes.into_iter().flat_map(|r| r.dynos).collect();
        stop_all(all).await;
        wait_for_stops().await;
        drop(crate::lock(&self.cpu_placer).take());
        self.machine.shut_down();
        // Sandbox state of stopped dynos only: the store keeps what must survive.
        let _ = std::fs::remove_dir_all(&self.options.state_root);
    }

    /// Whether a dyno's state is `up` (tests, `dyno ps`).
    pub async fn count_up(&self, app: &str) -> usize {
        let apps = self.apps.lock().await;
        apps.get(app).map_or(0, |r| {
            r.dynos
                .iter()
                .filter(|d| d.handle.status.borrow().state == State::Up)
                .count()
        })
    }
}

/// The running dynos of `runtime` that a new dyno will replace in their slot (the same
/// process type and index, another release or size) and that must stop before it starts:
/// all of them, or, with `preboot`, those that are not web dynos. Taken out of `runtime`.
fn replaced_in_place(
    runtime: &mut AppRuntime,
    formation: &[FormationEntry],
    release: &Release,
    preboot: bool,
    size_of: impl Fn(&str) -> DynoSize,
) -> Vec<Running> {
    let replaced = |d: &Running| {
        if d.process == ONE_OFF || d.handle.is_finished() || (preboot && d.process == "web") {
            return false;
        }
        formation.iter().any(|entry| {
            entry.process_type == d.process
                && d.index <= entry.quantity
                && release.process_types.contains_key(&entry.process_type)
                && (d.release != release.version || d.size != size_of(&entry.size))
        })
    };
    let (stop, keep): (Vec<Running>, Vec<Running>) = std::mem::take(&mut runtime.dynos)
        .into_iter()
        .partition(replaced);
    runtime.dynos = keep;
    stop
}

/// Stops dynos concurrently (SIGTERM, grace, SIGKILL each) and waits for all.
pub(super) async fn stop_all(dynos: Vec<Running>) {
    let stops: Vec<_> = dynos
        .into_iter()
        .map(|d| {
            let held = StopsHeld::new(1);
            tokio::spawn(async move {
                d.handle.stop().await;
                drop(held);
            })
        })
        .collect();
    for s in stops {
        let _ = s.await;
    }
}

/// Counts `n` dyno stops as under way until dropped: taken by code that takes dynos out of an
/// app's list and waits before it stops them (a restart's drain), so that a shutdown meanwhile
/// still waits for them.
pub(super) struct StopsHeld(usize);

impl StopsHeld {
    pub(super) fn new(n: usize) -> StopsHeld {
        stops_in_flight().send_modify(|count| *count += n);
        StopsHeld(n)
    }
}

impl Drop for StopsHeld {
    fn drop(&mut self) {
        let n = self.0;
        stops_in_flight().send_modify(|count| *count -= n);
    }
}

/// How many dyno stops are under way in this process. Some take their dynos out of the app's
/// list first (a restart, a one-off whose client left): a daemon that shuts down meanwhile
/// waits for them too ([`wait_for_stops`]), or its exit would cut their teardown off half-way
/// and leave their cgroup and network behind.
fn stops_in_flight() -> &'static tokio::sync::watch::Sender<usize> {
    static IN_FLIGHT: std::sync::OnceLock<tokio::sync::watch::Sender<usize>> =
        std::sync::OnceLock::new();
    IN_FLIGHT.get_or_init(|| tokio::sync::watch::channel(0).0)
}

/// Until no dyno stop is under way in this process.
pub(super) async fn wait_for_stops() {
    let mut stops = stops_in_flight().subscribe();
    let _ = stops.wait_for(|n| *n == 0).await;
}
