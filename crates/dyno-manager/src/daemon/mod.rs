//! The daemon behind `dyno serve`: apps, releases and formations in the state store
//! (`dyno-state`), their dynos run by supervisors, their web dynos fed to the router, their
//! logs in the log hub.
//!
//! Every operation first commits its change to the store (one transaction), then brings the
//! running dynos in line with it ([`Daemon::converge`]): what the store says is what should run.
//! A new release rolls like Heroku's preboot: the new web dynos start next to the old ones, the
//! old ones stop once every new web dyno is `up` (or the boot timeout passed).
//!
//! Every incarnation of a dyno is recorded in the store before its resources exist
//! ([`ledger`]); a daemon that starts after a crash adopts the dynos that still run and
//! removes what is left of the others ([`reconcile`]).

pub mod api;
pub mod ledger;
pub mod metrics;
mod procview;
pub mod reconcile;
pub mod runtime_metrics;
pub mod seccomp;
pub mod slug;
pub mod uids;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dyno_api::Dyno;
use dyno_error::ErrorKind;
use dyno_net::dyno::Host;
use dyno_net::ipam::{LeaseStore, MemoryStore};
use dyno_net::network::{Network, NetworkConfig};
use dyno_router::RouteTable;
use dyno_sandbox::cgroup::{Cgroups, DynoSize};
use dyno_state::model::{
    App, Drain, DynoState, DynoUpdate, FormationEntry, NewRelease, Release, ScaleChange, Slug,
};
use dyno_state::{
    AppName, ConfigKey, ConfigValue, DrainUrl, ProcessType, StateError, Store, StoreOptions,
};
use tokio::sync::mpsc;

use crate::cpu_placement::CpuPlacer;
use crate::drains::DrainOptions;
use crate::lifecycle::Lifecycle;
use crate::logring::LogHub;
use crate::logs::{LogLine, Source};
use crate::netwatch::NetWatch;
use crate::procfile;
use crate::supervisor::{self, Adoptee, DynoDef, DynoHandle, Platform, SharedNetwork, State};
use crate::webdynos::{Preboot, WebDynos};
use uids::{app_uid_in, UidRange};

/// A failed daemon operation: what kind of failure (the API makes its id and status of it) and
/// a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DaemonError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DaemonError {
        DaemonError {
            kind,
            message: message.into(),
        }
    }
}

impl From<StateError> for DaemonError {
    fn from(e: StateError) -> Self {
        DaemonError::new(e.kind(), e.to_string())
    }
}

/// Where the daemon keeps things and how its dynos run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The store (`state.db`) and slugs.
    pub data_dir: PathBuf,
    /// Dynos' runtime state (sandbox dirs).
    pub state_root: PathBuf,
    pub network: NetworkConfig,
    /// The binary dynos' shims run (`dyno-shim` or `dyno`).
    pub exe: PathBuf,
    pub lifecycle: Lifecycle,
    pub uids: UidRange,
    /// `$PORT` of every dyno.
    pub port: u16,
    /// The router's port, for apps' web URLs.
    pub router_port: u16,
    /// Say on stderr where each web dyno is up (`dyno up`: `… web.1 is up at IP:PORT`).
    pub announce_web: bool,
    /// Every dyno's memory quota in MB instead of its size's (`dyno up --memory-mb`).
    pub memory_mb: Option<u64>,
    /// How often apps with `log-runtime-metrics` get their dynos' load and memory lines
    /// (Heroku: 20 s, [`runtime_metrics::DEFAULT_INTERVAL`]).
    pub runtime_metrics_interval: Duration,
    /// The operator's additions to the dynos' system-call profile, per app.
    pub seccomp: seccomp::SeccompAdditions,
    /// Where LXCFS is (or is to be) mounted for the dynos' private `/proc` view; `None`: off.
    pub lxcfs_dir: Option<PathBuf>,
    /// How many CPUs busy dynos stay off (see [`crate::cpu_placement`]); 0: none.
    pub cpu_reserve: usize,
}

/// Which dyno of a release: its process type and number, what it runs, whether it is
/// restarted when it exits, its size.
struct Slot {
    process: String,
    index: u32,
    command: String,
    restart: bool,
    size: DynoSize,
}

impl DaemonOptions {
    /// The one way a dyno's definition is made: `slot` of `app` on `release` (its config and
    /// version), running from `slug` (the release's, or a new one for the release phase).
    fn dyno_def(&self, app: &str, release: &Release, slug: &Path, slot: Slot) -> DynoDef {
        DynoDef {
            app: app.to_string(),
            process: slot.process,
            index: slot.index,
            command: slot.command,
            env: config_env(release),
            app_dir: slug.to_path_buf(),
            release: release.version,
            uid: app_uid_in(app, self.uids),
            port: self.port,
            restart: slot.restart,
            size: slot.size,
        }
    }

    /// The limits of a dyno of size `name` (Heroku's table; the default size for a name the
    /// store would not have accepted).
    fn size(&self, name: &str) -> DynoSize {
        let mut size = DynoSize::lookup(name).copied().unwrap_or_default();
        if let Some(mb) = self.memory_mb {
            size.memory_mb = mb;
        }
        size
    }
}

/// The process type of one-off dynos (`run.1`).
const ONE_OFF: &str = "run";
/// The Procfile's process type that runs once per deploy, before the release (Heroku's
/// release phase); never part of the formation.
const RELEASE_PHASE: &str = "release";

/// A dyno the daemon runs.
struct Running {
    /// `web.1`
    name: String,
    process: String,
    index: u32,
    release: u32,
    size: DynoSize,
    handle: DynoHandle,
}

/// An app's running side.
struct AppRuntime {
    platform: Arc<Platform>,
    web: WebDynos,
    dynos: Vec<Running>,
    incarnations: u64,
    /// One-off dynos started (`run.N`).
    one_offs: u32,
}

impl AppRuntime {
    /// Keeps a started (or adopted) dyno; a web dyno is fed to the router once `up`. Returns
    /// its key for [`WebDynos::all_up`].
    fn track(&mut self, handle: DynoHandle, def: &DynoDef) -> String {
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

/// The environment a release's dynos get from its config vars.
fn config_env(release: &Release) -> Vec<(String, String)> {
    release
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The definition of a recorded dyno, from its release (for a daemon adopting it).
fn adopted_def(
    store: &Store,
    options: &DaemonOptions,
    dyno: &dyno_state::model::Dyno,
) -> Result<DynoDef, DaemonError> {
    let app = app_name(&dyno.app)?;
    let release = store.release(&app, dyno.release_version)?;
    let slug = release.slug.clone().ok_or_else(|| {
        DaemonError::new(
            ErrorKind::Conflict,
            format!("{} v{} has no slug", dyno.app, release.version),
        )
    })?;
    let index = dyno
        .name
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| {
            DaemonError::new(ErrorKind::Conflict, format!("bad dyno name {}", dyno.name))
        })?;
    let size = options.size(&dyno.size);
    let slot = Slot {
        process: dyno.process_type.clone(),
        index,
        // A one-off's command is not in the release; it only shows in the start line, which
        // an adopted dyno does not log again.
        command: release
            .process_types
            .get(&dyno.process_type)
            .cloned()
            .unwrap_or_default(),
        restart: dyno.process_type != ONE_OFF,
        size,
    };
    Ok(options.dyno_def(&dyno.app, &release, &slug.path, slot))
}

pub struct Daemon {
    store: Arc<Mutex<Store>>,
    pub hub: LogHub,
    pub routes: RouteTable,
    network: SharedNetwork,
    cgroups: Option<Cgroups>,
    /// The LXCFS mount the dynos' `/proc` view comes from.
    proc_view: Option<PathBuf>,
    options: DaemonOptions,
    apps: tokio::sync::Mutex<BTreeMap<String, AppRuntime>>,
    /// One convergence at a time *per app* (each reads the store first, so the last one
    /// wins); apps never wait for each other. Kept apart from `apps` so that a converge can
    /// hold its app's turn through a preboot without holding the map.
    turns: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cpu_placer: Mutex<Option<CpuPlacer>>,
    /// Notices dynos whose network was changed under them (`None`: it could not start; said).
    netwatch: Option<Arc<NetWatch>>,
    router_metrics: metrics::RouterMetrics,
}

/// Busy dynos stay off the first `reserve` CPUs; where that cannot be, the operator is told
/// once and dynos run on every CPU.
fn reserve_cpus(mut cgroups: Cgroups, reserve: usize) -> Cgroups {
    if reserve == 0 {
        return cgroups;
    }
    match cgroups.reserve_cpus(reserve) {
        Ok(()) => {
            if let Some(p) = cgroups.cpu_placement() {
                tracing::info!(reserved = reserve, busy_cpus = %p.busy, "busy dynos stay off the reserved CPUs");
            }
        }
        Err(reason) => tracing::warn!(
            "busy dynos share every CPU with the router and quiet dynos: {reason} \
             (--cpu-reserve 0 says this is meant)"
        ),
    }
    cgroups
}

fn app_name(name: &str) -> Result<AppName, DaemonError> {
    AppName::parse(name).map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))
}

impl Daemon {
    /// Opens the store, takes over what an earlier daemon left (see [`reconcile`]), installs
    /// the firewall and starts what the store says should run.
    pub async fn open(options: DaemonOptions) -> Result<Arc<Daemon>, DaemonError> {
        let pool = &options.network.pool;
        let pool = ipnet::Ipv4Net::new(pool.network(), pool.prefix_len())
            .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("pool {pool}: {e}")))?;
        let store = Store::open_with(
            &options.data_dir,
            StoreOptions {
                pool,
                ..StoreOptions::default()
            },
        )?;
        let host =
            Host::current().map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?;
        let cgroups = match Cgroups::detect().and_then(|c| c.vacate_own_cgroup().map(|()| c)) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroups: memory and process limits are off");
                None
            }
        };
        for (app, calls) in options.seccomp.iter() {
            tracing::warn!(
                app = %app,
                calls = %calls.join(","),
                "this app's dynos may make these system calls beyond the default seccomp profile"
            );
        }
        let proc_view = procview::open(options.lxcfs_dir.as_deref()).await;
        let cgroups = cgroups.map(|c| match proc_view {
            Some(_) => c.with_proc_view(),
            None => c,
        });
        let cgroups = cgroups.map(|c| reserve_cpus(c, options.cpu_reserve));
        let rows = store.all_dynos()?;
        let mut stock = reconcile::take_stock(&options, rows, cgroups.as_ref());
        let mut adoptees = Vec::new();
        for live in std::mem::take(&mut stock.live) {
            match adopted_def(&store, &options, &live.dyno) {
                Ok(def) => adoptees.push((live, def)),
                Err(e) => {
                    tracing::warn!(dyno = %live.dyno.net_name, error = %e, "not adopted");
                    stock
                        .ended
                        .push(reconcile::end_now(&options, live, cgroups.as_ref()));
                }
            }
        }
        let leases: Box<dyn LeaseStore + Send> = Box::new(MemoryStore);
        let mut network = Network::open(host, &options.network, leases)
            .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("network: {e}")))?;
        let recorded = adoptees
            .iter()
            .map(|(live, _)| &live.dyno)
            .chain(stock.ended.iter().map(|e| &e.dyno));
        for dyno in recorded {
            if let Some(ip) = dyno.address {
                if let Err(e) = network.adopt(&dyno.net_name, ip) {
                    tracing::warn!(dyno = %dyno.net_name, error = %e, "reconcile: lease");
                }
            }
        }
        network
            .install()
            .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("firewall: {e}")))?;
        let gone: Vec<&str> = stock
            .ended
            .iter()
            .map(|e| e.dyno.net_name.as_str())
            .chain(stock.orphans.iter().map(String::as_str))
            .collect();
        for name in &gone {
            supervisor::destroy_leftover_sockets_of(network.run_dir(), name);
            if let Err(e) = network.down(name) {
                tracing::warn!(dyno = %name, error = %e, "reconcile: remove the network");
            }
        }
        for e in network.close_unleased_ports() {
            tracing::warn!(error = %e, "reconcile: close a port");
        }
        reconcile::remove_leftovers(&options, &gone, cgroups.as_ref());
        let netwatch = match NetWatch::for_host(network.host().netns(), options.network.firewall())
        {
            Ok(watch) => Some(Arc::new(watch)),
            Err(e) => {
                tracing::warn!(error = %e, "dynos whose network breaks will not be noticed");
                None
            }
        };
        std::fs::create_dir_all(&options.state_root).map_err(|e| {
            DaemonError::new(
                ErrorKind::Internal,
                format!("state dir {}: {e}", options.state_root.display()),
            )
        })?;
        let daemon = Arc::new(Daemon {
            store: Arc::new(Mutex::new(store)),
            hub: LogHub::new(),
            routes: RouteTable::new(),
            network: Arc::new(Mutex::new(network)),
            cgroups,
            proc_view,
            options,
            apps: tokio::sync::Mutex::new(BTreeMap::new()),
            turns: Mutex::new(BTreeMap::new()),
            cpu_placer: Mutex::new(None),
            netwatch,
            router_metrics: metrics::RouterMetrics::default(),
        });
        if let Some(cgroups) = &daemon.cgroups {
            *daemon.cpu_placer.lock().unwrap_or_else(|p| p.into_inner()) =
                CpuPlacer::start(cgroups.clone());
        }
        // How the ended dynos ended is not lost: it goes into their apps' logs.
        for ended in &stock.ended {
            for (source, line) in ended.log_lines() {
                daemon.hub.append(
                    &ended.dyno.app,
                    LogLine::now(source, &ended.dyno.name, line),
                );
            }
        }
        // Their rows go last (a full or read-only data dir keeps them for the next start: the
        // daemon still starts and adopts what runs).
        let ended_ids: Vec<i64> = stock.ended.iter().map(|e| e.dyno.id).collect();
        let forgotten = daemon
            .with_store(move |s| {
                for id in ended_ids {
                    let stopping = DynoUpdate {
                        state: Some(DynoState::Stopping),
                        ..DynoUpdate::default()
                    };
                    s.update_dyno(id, &stopping)?;
                    s.remove_dyno(id)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = forgotten {
            tracing::warn!(error = %e, "reconcile: forget the ended dynos");
        }
        if !adoptees.is_empty() || !stock.ended.is_empty() || !stock.orphans.is_empty() {
            eprintln!(
                "dyno serve: took over from an earlier daemon: {} dyno(s) adopted, {} ended \
                 (their exit statuses are in their apps' logs), {} orphan(s) removed",
                adoptees.len(),
                stock.ended.len(),
                stock.orphans.len()
            );
        }
        daemon.adopt_all(adoptees).await;
        let apps = daemon.with_store(|s| s.list_apps()).await?;
        runtime_metrics::spawn(&daemon);
        for app in apps {
            daemon.route(&app);
            for drain in daemon.drains(&app.name).await? {
                if let Err(e) = daemon.hub.add_drain_with_token(
                    &app.name,
                    drain.url.as_str(),
                    &drain.token,
                    daemon.drain_options(),
                ) {
                    tracing::warn!(app = %app.name, error = %e, "drain not restarted");
                }
            }
            daemon.converge(&app.name).await?;
        }
        Ok(daemon)
    }

    /// Supervisors for the dynos found running.
    async fn adopt_all(&self, adoptees: Vec<(reconcile::Live, DynoDef)>) {
        let mut apps = self.apps.lock().await;
        for (live, def) in adoptees {
            let Some(ip) = live.dyno.address else {
                continue;
            };
            let runtime = self.runtime_in(&mut apps, &def.app);
            if def.process == ONE_OFF {
                runtime.one_offs = runtime.one_offs.max(def.index);
            }
            let found = Adoptee {
                intent: live.dyno.id,
                net_name: live.dyno.net_name.clone(),
                ip,
                shim_pid: live.shim_pid,
            };
            runtime.track(
                supervisor::adopt(runtime.platform.clone(), def.clone(), found),
                &def,
            );
        }
    }

    /// Runs `f` on the store off the async threads (every change waits for an fsync).
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, DaemonError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut store)
        })
        .await
        .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(DaemonError::from)
    }

    /// The router's view of an app's settings.
    fn route(&self, app: &App) {
        self.routes.set_app(&app.name, &[]);
        self.routes.set_maintenance(&app.name, app.maintenance);
    }

    pub fn web_url(&self, app: &str) -> String {
        format!("http://{app}.localhost:{}/", self.options.router_port)
    }

    pub async fn list_apps(&self) -> Result<Vec<App>, DaemonError> {
        self.with_store(|s| s.list_apps()).await
    }

    pub async fn app(&self, name: &str) -> Result<App, DaemonError> {
        let name = app_name(name)?;
        self.with_store(move |s| s.app(&name)).await
    }

    pub async fn create_app(&self, name: &str) -> Result<App, DaemonError> {
        let name = app_name(name)?;
        let app = self.with_store(move |s| s.create_app(&name)).await?;
        self.route(&app);
        self.routes.set_blank(&app.name, true);
        Ok(app)
    }

    /// Stops every dyno of the app, then forgets it: releases, config, slugs, logs.
    pub async fn destroy_app(&self, name: &str) -> Result<(), DaemonError> {
        let name = app_name(name)?;
        // Exists? (a typo must not look like success)
        let app = self
            .with_store({
                let name = name.clone();
                move |s| s.app(&name)
            })
            .await?;
        // Destroy wins over a converge of this app that waits for new web dynos to boot:
        // closing the app's web dynos ends that wait at once, and the turn comes free.
        if let Some(runtime) = self.apps.lock().await.get(&app.name) {
            runtime.web.close();
        }
        let turn = self.turn_of(&app.name);
        let _turn = turn.lock().await;
        if let Some(runtime) = self.apps.lock().await.remove(&app.name) {
            runtime.web.close();
            stop_all(runtime.dynos).await;
        }
        self.routes.remove_app(&app.name);
        let destroyed = self.with_store(move |s| s.destroy_app(&name)).await;
        self.lock_turns().remove(&app.name);
        let destroyed = destroyed?;
        // A slug is a tree of the app's files: removed off the async threads.
        let app_slugs = self.slugs_dir().join(&app.name);
        let _ = tokio::task::spawn_blocking(move || {
            for slug in destroyed.slugs {
                let _ = std::fs::remove_dir_all(&slug);
            }
            let _ = std::fs::remove_dir(app_slugs);
        })
        .await;
        self.hub.remove_app(&app.name);
        self.router_metrics.remove_app(&app.name);
        Ok(())
    }

    fn slugs_dir(&self) -> PathBuf {
        self.options.data_dir.join(dyno_state::SLUGS_DIR)
    }

    /// `dyno deploy DIR -a APP`: the directory becomes an immutable slug and a new release;
    /// the formation rolls to it.
    pub async fn deploy(&self, name: &str, dir: &Path) -> Result<Release, DaemonError> {
        self.deploy_with(name, dir, Vec::new()).await
    }

    /// [`Daemon::deploy`], with the formation changed in the same step (one convergence):
    /// `dyno up DIR --formation web=0,worker=1` starts no web dyno.
    pub async fn deploy_with(
        &self,
        name: &str,
        dir: &Path,
        formation: Vec<ScaleChange>,
    ) -> Result<Release, DaemonError> {
        let app = app_name(name)?;
        let types = procfile::read_procfile(&dir.join("Procfile"))
            .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))?;
        let mut process_types = Vec::new();
        for t in &types {
            let pt = ProcessType::parse(&t.name)
                .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))?;
            process_types.push((pt, t.command.clone()));
        }
        self.with_store({
            let app = app.clone();
            move |s| s.app(&app)
        })
        .await?;
        let dest = slug::new_slug_path(&self.slugs_dir(), app.as_str());
        let src = dir.to_path_buf();
        let copy_to = dest.clone();
        let data_dir = self.options.data_dir.clone();
        let digest =
            tokio::task::spawn_blocking(move || slug::copy_into_store(&src, &copy_to, &data_dir))
                .await
                .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))??;
        if let Some(release) = types.iter().find(|t| t.name == RELEASE_PHASE) {
            if let Err(e) = self.release_phase(name, &release.command, &dest).await {
                let _ = std::fs::remove_dir_all(&dest);
                return Err(e);
            }
        }
        let slug = Slug::new(&dest, &digest)
            .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?;
        let release = NewRelease {
            slug,
            process_types,
            description: format!("Deploy {}", &digest[..7]),
        };
        let created = self
            .with_store(move |s| {
                let release = s.create_release(&app, release)?;
                if !formation.is_empty() {
                    s.scale(&app, &formation)?;
                }
                Ok(release)
            })
            .await;
        let release = match created {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dest);
                return Err(e);
            }
        };
        self.routes.set_blank(name, false);
        self.converge(name).await?;
        Ok(release)
    }

    /// Heroku's release phase: the Procfile's `release` command runs once, in a dyno
    /// `release.1` on the new slug with the app's current config, before the release exists;
    /// if it fails, nothing is released and the formation keeps running the old one.
    async fn release_phase(
        &self,
        name: &str,
        command: &str,
        slug: &Path,
    ) -> Result<(), DaemonError> {
        let current = self.current_release(name).await?;
        let platform = {
            let mut apps = self.apps.lock().await;
            self.runtime_in(&mut apps, name).platform.clone()
        };
        let slot = Slot {
            process: RELEASE_PHASE.to_string(),
            index: 1,
            command: command.to_string(),
            restart: false,
            size: self.options.size(DynoSize::STANDARD_1X.name),
        };
        let def = self.options.dyno_def(name, &current, slug, slot);
        let handle = supervisor::start(platform, def);
        let mut status = handle.status.clone();
        let _ = status.wait_for(|s| s.state == State::Down).await;
        let code = status.borrow().exit_code;
        handle.stop().await;
        match code {
            Some(0) => Ok(()),
            code => Err(DaemonError::new(
                ErrorKind::ReleaseFailed,
                format!(
                    "the release phase failed: `{command}` exited with status {}; nothing was \
                     released. See `dyno logs -a {name} --ps release.1`, fix it and deploy again",
                    code.map_or("unknown".to_string(), |c| c.to_string())
                ),
            )),
        }
    }

    /// The app's config vars.
    pub async fn config(&self, name: &str) -> Result<BTreeMap<String, String>, DaemonError> {
        let app = app_name(name)?;
        self.with_store(move |s| s.config(&app)).await
    }

    /// `config:set K=V…` (a new release; the dynos restart on it).
    pub async fn config_set(
        &self,
        name: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<Release, DaemonError> {
        let app = app_name(name)?;
        let mut checked = Vec::new();
        for (k, v) in pairs {
            let key = ConfigKey::parse(&k)
                .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))?;
            let value = ConfigValue::parse(&v)
                .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))?;
            checked.push((key, value));
        }
        let release = self
            .with_store(move |s| s.config_set(&app, &checked))
            .await?;
        self.converge(name).await?;
        Ok(release)
    }

    /// `config:unset K…` (a new release; the dynos restart on it).
    pub async fn config_unset(
        &self,
        name: &str,
        keys: Vec<String>,
    ) -> Result<Release, DaemonError> {
        let app = app_name(name)?;
        let keys = keys
            .iter()
            .map(|k| {
                ConfigKey::parse(k)
                    .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let release = self
            .with_store(move |s| s.config_unset(&app, &keys))
            .await?;
        self.converge(name).await?;
        Ok(release)
    }

    /// `rollback vN`: a new release with vN's slug, process types and config.
    pub async fn rollback(&self, name: &str, version: u32) -> Result<Release, DaemonError> {
        let app = app_name(name)?;
        let release = self.with_store(move |s| s.rollback(&app, version)).await?;
        self.converge(name).await?;
        Ok(release)
    }

    /// `maintenance:on` / `off`: the router answers H80 while on.
    pub async fn set_maintenance(&self, name: &str, on: bool) -> Result<App, DaemonError> {
        let app = app_name(name)?;
        let app = self
            .with_store(move |s| s.set_maintenance(&app, on))
            .await?;
        self.routes.set_maintenance(&app.name, app.maintenance);
        Ok(app)
    }

    /// `ps:restart [web.1|web]`: the dynos stop (SIGTERM, grace) and start again.
    pub async fn restart(&self, name: &str, which: Option<&str>) -> Result<(), DaemonError> {
        self.app(name).await?;
        let stopping = {
            let mut apps = self.apps.lock().await;
            let Some(runtime) = apps.get_mut(name) else {
                return Ok(());
            };
            let matches = |d: &Running| match which {
                None => true,
                Some(w) if w.contains('.') => d.name == w,
                Some(w) => d.process == w,
            };
            let (stop, keep): (Vec<Running>, Vec<Running>) = std::mem::take(&mut runtime.dynos)
                .into_iter()
                .partition(matches);
            runtime.dynos = keep;
            stop
        };
        if stopping.is_empty() {
            if let Some(w) = which {
                return Err(DaemonError::new(
                    ErrorKind::NotFound,
                    format!("no dyno {w} on {name}; see `dyno ps -a {name}`"),
                ));
            }
        }
        stop_all(stopping).await;
        self.converge(name).await
    }

    /// The options every drain of this daemon gets: TLS roots from the system's CA bundle
    /// (`ca-certificates`), when there is one.
    fn drain_options(&self) -> DrainOptions {
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        let tls = crate::drains::roots_from_pem_file(bundle)
            .ok()
            .map(crate::drains::tls_config);
        DrainOptions {
            tls,
            ..DrainOptions::default()
        }
    }

    /// `drains:add URL`: recorded, then started (removed again if it cannot start).
    pub async fn add_drain(&self, name: &str, url: &str) -> Result<Drain, DaemonError> {
        let app = app_name(name)?;
        let url = DrainUrl::parse(url)
            .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))?;
        let drain = self.with_store(move |s| s.add_drain(&app, &url)).await?;
        if let Err(e) = self.hub.add_drain_with_token(
            name,
            drain.url.as_str(),
            &drain.token,
            self.drain_options(),
        ) {
            let app = app_name(name)?;
            let token = drain.token.clone();
            let _ = self.with_store(move |s| s.remove_drain(&app, &token)).await;
            return Err(DaemonError::new(ErrorKind::InvalidParams, e.to_string()));
        }
        Ok(drain)
    }

    pub async fn drains(&self, name: &str) -> Result<Vec<Drain>, DaemonError> {
        let app = app_name(name)?;
        self.with_store(move |s| s.drains(&app)).await
    }

    /// `drains:remove URL|TOKEN`.
    pub async fn remove_drain(&self, name: &str, url_or_token: &str) -> Result<Drain, DaemonError> {
        let app = app_name(name)?;
        let key = url_or_token.to_string();
        let drain = self.with_store(move |s| s.remove_drain(&app, &key)).await?;
        self.hub.remove_drain(name, &drain.token);
        Ok(drain)
    }

    /// `dyno run -a APP CMD`: a one-off dyno `run.N` on the current release, never restarted.
    /// Returns its name; its output and exit status are in the app's log.
    pub async fn run_one_off(&self, name: &str, command: &str) -> Result<String, DaemonError> {
        if command.trim().is_empty() {
            return Err(DaemonError::new(
                ErrorKind::InvalidParams,
                "give a command to run, e.g. `dyno run -a APP -- python3 manage.py migrate`",
            ));
        }
        if command.contains('\0') {
            return Err(DaemonError::new(
                ErrorKind::InvalidParams,
                "the command contains a NUL byte, which no process's arguments can hold; \
                 remove it (quote binary data, e.g. in base64)",
            ));
        }
        let release = self.current_release(name).await?;
        let Some(slug) = release.slug.clone() else {
            return Err(DaemonError::new(
                ErrorKind::Conflict,
                format!(
                    "{name} has no release to run: deploy it first (`dyno deploy DIR -a {name}`)"
                ),
            ));
        };
        let mut apps = self.apps.lock().await;
        let runtime = self.runtime_in(&mut apps, name);
        // Finished one-offs leave the list; numbers are not reused while the daemon runs.
        runtime
            .dynos
            .retain(|d| !(d.process == ONE_OFF && d.handle.is_finished()));
        runtime.one_offs += 1;
        let slot = Slot {
            process: ONE_OFF.to_string(),
            index: runtime.one_offs,
            command: command.to_string(),
            restart: false,
            size: self.options.size(DynoSize::STANDARD_1X.name),
        };
        let def = self.options.dyno_def(name, &release, &slug.path, slot);
        let handle = supervisor::start(runtime.platform.clone(), def.clone());
        runtime.track(handle, &def);
        Ok(def.name())
    }

    /// `dyno ps:scale web=3 worker=1`: the new formation, then the dynos to match.
    pub async fn scale(
        &self,
        name: &str,
        changes: Vec<ScaleChange>,
    ) -> Result<Vec<FormationEntry>, DaemonError> {
        let app = app_name(name)?;
        let formation = self.with_store(move |s| s.scale(&app, &changes)).await?;
        self.converge(name).await?;
        Ok(formation)
    }

    pub async fn formation(&self, name: &str) -> Result<Vec<FormationEntry>, DaemonError> {
        let app = app_name(name)?;
        self.with_store(move |s| s.formation(&app)).await
    }

    pub async fn releases(&self, name: &str) -> Result<Vec<Release>, DaemonError> {
        let app = app_name(name)?;
        self.with_store(move |s| s.releases(&app)).await
    }

    /// `dyno ps`: the app's dynos and their states.
    pub async fn ps(&self, name: &str) -> Result<Vec<Dyno>, DaemonError> {
        // One store read: it fails for an unknown app too.
        let release = self.current_release(name).await?;
        let apps = self.apps.lock().await;
        let Some(runtime) = apps.get(name) else {
            return Ok(Vec::new());
        };
        let mut list: Vec<Dyno> = runtime
            .dynos
            .iter()
            // A finished one-off is gone (its exit status is in the log).
            .filter(|d| !(d.process == ONE_OFF && d.handle.is_finished()))
            .map(|d| Dyno {
                name: d.name.clone(),
                process_type: d.process.clone(),
                state: d.handle.status.borrow().state.as_str().to_string(),
                release: d.release,
                size: d.size.name.to_string(),
                command: release
                    .process_types
                    .get(&d.process)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        list.sort_by(|a, b| (&a.process_type, &a.name).cmp(&(&b.process_type, &b.name)));
        Ok(list)
    }

    async fn current_release(&self, app: &str) -> Result<Release, DaemonError> {
        let app = app_name(app)?;
        self.with_store(move |s| s.current_release(&app)).await
    }

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
        let formation = self.formation(name).await?;
        let mut apps = self.apps.lock().await;
        let runtime = self.runtime_in(&mut apps, name);
        let Some(slug) = &release.slug else {
            // Never deployed: nothing runs.
            let all = std::mem::take(&mut runtime.dynos);
            drop(apps);
            stop_all(all).await;
            return Ok(());
        };
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
        // Preboot: the old web dynos serve until the new ones are up.
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
    fn turn_of(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock_turns()
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    fn lock_turns(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The app's runtime in `apps`, made on first use.
    fn runtime_in<'a>(
        &self,
        apps: &'a mut BTreeMap<String, AppRuntime>,
        app: &str,
    ) -> &'a mut AppRuntime {
        apps.entry(app.to_string())
            .or_insert_with(|| self.runtime(app))
    }

    /// A new app runtime: its own supervisor platform whose log lines go to the app's ring.
    fn runtime(&self, app: &str) -> AppRuntime {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
        let hub = self.hub.clone();
        let name = app.to_string();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                hub.append(&name, line);
            }
        });
        let platform = Arc::new(
            Platform::new(
                self.network.clone(),
                self.options.exe.clone(),
                self.options.state_root.clone(),
                self.options.lifecycle.clone(),
                tx,
                self.cgroups.clone(),
            )
            .with_ledger(Arc::new(ledger::StoreLedger {
                store: self.store.clone(),
            }))
            .with_seccomp(self.options.seccomp.spec_for(app))
            .with_proc_view(self.proc_view.clone())
            .with_netwatch(self.netwatch.clone()),
        );
        AppRuntime {
            platform,
            web: WebDynos::new(
                self.routes.clone(),
                app.to_string(),
                self.options.port,
                self.options.announce_web,
            ),
            dynos: Vec::new(),
            incarnations: 0,
            one_offs: 0,
        }
    }

    /// A router log line for `app` (the router's sink): counted, then into the app's log.
    pub fn router_line(&self, app: &str, line: dyno_router::RouterLog) {
        self.router_metrics.observe(app, &line);
        self.hub.append(
            app,
            LogLine::now(Source::Heroku, "router", line.to_string()),
        );
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> String {
        let mut counts = BTreeMap::new();
        for (app, runtime) in self.apps.lock().await.iter() {
            for d in &runtime.dynos {
                if d.process == ONE_OFF && d.handle.is_finished() {
                    continue;
                }
                let state = d.handle.status.borrow().state.as_str().to_string();
                *counts.entry((app.clone(), state)).or_insert(0usize) += 1;
            }
        }
        let mut out = String::new();
        metrics::render_dynos(&mut out, &counts);
        metrics::render_dyno_series(&mut out, &self.dyno_series().await);
        self.router_metrics.render(&mut out);
        out
    }

    /// Stops every dyno of every app (daemon shutdown); then the firewall goes too, unless
    /// dynos of someone else still use it.
    pub async fn stop(&self) {
        let runtimes: Vec<AppRuntime> = std::mem::take(&mut *self.apps.lock().await)
            .into_values()
            .collect();
        let all: Vec<Running> = runtimes.into_iter().flat_map(|r| r.dynos).collect();
        stop_all(all).await;
        drop(
            self.cpu_placer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let mut network = self.network.lock().unwrap_or_else(|p| p.into_inner());
        if network.list().map(|l| l.is_empty()).unwrap_or(false) {
            if let Err(e) = network.uninstall() {
                tracing::warn!(error = %e, "remove the firewall");
            }
        }
        drop(network);
        // The parent of our dyno cgroups goes too, unless another manager's dynos use it.
        if let Some(cgroups) = &self.cgroups {
            let _ = cgroups.remove_dyno_root_if_unused();
        }
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

/// Stops dynos concurrently (SIGTERM, grace, SIGKILL each) and waits for all.
async fn stop_all(dynos: Vec<Running>) {
    let stops: Vec<_> = dynos
        .into_iter()
        .map(|d| tokio::spawn(d.handle.stop()))
        .collect();
    for s in stops {
        let _ = s.await;
    }
}
