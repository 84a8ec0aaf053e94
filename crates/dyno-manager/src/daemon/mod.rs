//! The daemon behind `dyno serve`: apps, releases and formations in the state store
//! (`dyno-state`), their dynos run by supervisors, their web dynos fed to the router, their
//! logs in the log hub.
//!
//! Every operation first commits its change to the store (one transaction), then brings the
//! running dynos in line with it ([`Daemon::converge`]): what the store says is what should run.
//! A new release restarts the dynos in place, as Heroku does: the old ones stop, then the new
//! ones start. With the app feature `preboot`, the new web dynos start next to the old ones,
//! which stop once every new web dyno is `up` (or the boot timeout passed).
//!
//! Every incarnation of a dyno is recorded in the store before its resources exist
//! ([`ledger`]); a daemon that starts after a crash adopts the dynos that still run and
//! removes what is left of the others ([`reconcile`]).

pub mod api;
mod api_builds;
mod api_certs;
mod api_log;
mod api_shapes;
pub mod attach;
pub mod builds;
mod certs;
mod converge;
mod deploy;
mod domains;
mod git;
pub mod ledger;
mod log_sessions;
mod machine;
pub mod metrics;
mod options;
mod procview;
mod ps;
pub mod reconcile;
mod release_phase;
mod rename;
pub mod runtime_metrics;
pub mod seccomp;
pub mod slug;
mod takeover;
#[cfg(test)]
mod tests;
pub mod uids;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    AppName, ConfigKey, ConfigValue, DrainUrl, ProcessType, ReleaseChange, StateError, Store,
    StoreOptions,
};
use tokio::sync::mpsc;

use crate::cpu_placement::CpuPlacer;
use crate::procfile;
use crate::webdynos::{Preboot, WebDynos};
use converge::{stop_all, AppRuntime, Running};
use dyno_logs::drains::DrainOptions;
use dyno_logs::logring::LogHub;
use dyno_logs::logs::{LogLine, Source};
use dyno_supervisor::lifecycle::Lifecycle;
use dyno_supervisor::netwatch::NetWatch;
use dyno_supervisor::{
    self as supervisor, Adoptee, DynoDef, DynoHandle, Platform, SharedNetwork, State,
};
use machine::LinuxMachine;
pub use machine::Machine;
pub use options::DaemonOptions;
use options::Slot;
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

/// The process type of one-off dynos (`run.1`).
const ONE_OFF: &str = "run";
/// The Procfile's process type that runs once per deploy, before the release (Heroku's
/// release phase); never part of the formation.
const RELEASE_PHASE: &str = "release";

pub struct Daemon {
    store: Arc<Mutex<Store>>,
    pub hub: LogHub,
    pub routes: RouteTable,
    /// The apps' certificates (SNI endpoints) for the router's TLS listener.
    pub certs: dyno_router::SniCertificates,
    /// What the dynos run on.
    machine: Arc<dyn Machine>,
    options: DaemonOptions,
    apps: tokio::sync::Mutex<BTreeMap<String, AppRuntime>>,
    /// One convergence at a time *per app* (each reads the store first, so the last one
    /// wins); apps never wait for each other. Kept apart from `apps` so that a converge can
    /// hold its app's turn through a preboot without holding the map.
    turns: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cpu_placer: Mutex<Option<CpuPlacer>>,
    router_metrics: metrics::RouterMetrics,
    /// Builds under way and source uploads.
    pub(crate) builds: builds::Builds,
}

/// How long web dynos stopped by a restart stay up after leaving the router's table.
const ROUTER_DRAIN: Duration = Duration::from_millis(200);

fn app_name(name: &str) -> Result<AppName, DaemonError> {
    AppName::parse(name).map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))
}

impl Daemon {
    /// Runs `f` on the store off the async threads (every change waits for an fsync).
    pub(super) async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, DaemonError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = crate::lock(&store);
            f(&mut store)
        })
        .await
        .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(DaemonError::from)
    }

    /// The router's view of an app's settings.
    fn route(&self, app: &App) {
        self.routes.set_app(&app.name, &app.domains);
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
        self.announce_created(&app.name);
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
        // Its builds stop first: one that is releasing needs the app's turn.
        self.builds.stop_app(&app.name).await;
        let build_ids: Vec<String> = {
            let name = name.clone();
            self.with_store(move |s| s.builds(&name))
                .await
                .map(|builds| builds.into_iter().map(|b| b.id).collect())
                .unwrap_or_default()
        };
        let turn = self.turn_of(&app.name);
        let _turn = turn.lock().await;
        if let Some(runtime) = self.apps.lock().await.remove(&app.name) {
            runtime.web.close();
            stop_all(runtime.dynos).await;
        }
        self.routes.remove_app(&app.name);
        self.certs.remove_app(&app.name);
        let destroyed = self.with_store(move |s| s.destroy_app(&name)).await;
        self.lock_turns().remove(&app.name);
        let destroyed = destroyed?;
        // Slugs, the build cache and the git repository are trees of files: removed off the
        // async threads.
        let app_slugs = self.slugs_dir().join(&app.name);
        let cache = builds::cache_dir(&self.options.data_dir, &app.uuid);
        let data_dir = self.options.data_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for id in build_ids {
                let _ = std::fs::remove_file(builds::output_file(&data_dir, &id));
            }
            for slug in destroyed.slugs {
                let _ = std::fs::remove_dir_all(&slug);
            }
            let _ = std::fs::remove_dir(app_slugs);
            let _ = std::fs::remove_dir_all(cache);
            Daemon::remove_git_repository(&data_dir, &app.uuid);
        })
        .await;
        self.hub.remove_app(&app.name);
        self.router_metrics.remove_app(&app.name);
        Ok(())
    }

    /// Where source uploads are kept until they expire.
    pub(super) fn sources_dir(&self) -> PathBuf {
        self.options.data_dir.join("builds").join("sources")
    }

    fn slugs_dir(&self) -> PathBuf {
        self.options.data_dir.join(dyno_state::SLUGS_DIR)
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
        let runs_phase = self.runs_release_phase(&app).await?;
        let release = self
            .make_release(name, ReleaseChange::SetConfig(checked), runs_phase)
            .await?;
        self.announce_release(name, &release);
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
        let runs_phase = self.runs_release_phase(&app).await?;
        let release = self
            .make_release(name, ReleaseChange::UnsetConfig(keys), runs_phase)
            .await?;
        self.announce_release(name, &release);
        self.converge(name).await?;
        Ok(release)
    }

    /// `rollback vN`: a new release with vN's slug, process types and config.
    pub async fn rollback(&self, name: &str, version: u32) -> Result<Release, DaemonError> {
        let app = app_name(name)?;
        let target = self
            .with_store({
                let app = app.clone();
                move |s| s.release(&app, version)
            })
            .await?;
        let runs_phase = target.process_types.contains_key(RELEASE_PHASE) && target.slug.is_some();
        let release = self
            .make_release(name, ReleaseChange::Rollback(version), runs_phase)
            .await?;
        self.announce_release(name, &release);
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

    /// `features:enable preboot` / `features:disable preboot`: whether a new release's web
    /// dynos take traffic before the old ones stop (see [`Daemon::converge`]).
    pub async fn set_preboot(&self, name: &str, on: bool) -> Result<App, DaemonError> {
        let app = app_name(name)?;
        self.with_store(move |s| s.set_preboot(&app, on)).await
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
            // Requests that find no web dyno up while these restart wait for the new ones
            // (up to the router's boot wait) instead of getting H14.
            // The stopping ones leave the router first, so that no request goes to a dyno
            // that has stopped listening.
            let web: Vec<String> = stop
                .iter()
                .filter(|d| d.process == "web")
                .map(|d| d.name.clone())
                .collect();
            let starting_soon = runtime.web.announce_starting(web.len());
            runtime.web.withdraw(&web);
            (stop, starting_soon)
        };
        let (stopping, _starting_soon) = stopping;
        let _held = converge::StopsHeld::new(stopping.len());
        if stopping.iter().any(|d| d.process == "web") {
            // Requests the router sent them just before they left its table finish before
            // SIGTERM (most take milliseconds; a longer one is the dyno's to finish in its
            // stop grace, as on Heroku).
            tokio::time::sleep(ROUTER_DRAIN).await;
        }
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
        let tls = dyno_logs::drains::roots_from_pem_file(bundle)
            .ok()
            .map(dyno_logs::drains::tls_config);
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

    /// `dyno run -a APP CMD`: a one-off dyno `run.N` on the current release (`env` added to its
    /// config), never restarted. Its output goes to the log, or to its client when it is
    /// attached (`attachment`); its exit status to the log. Returns its name and its status.
    pub async fn run_one_off(
        &self,
        name: &str,
        command: &str,
        env: dyno_state::model::Config,
        size: &str,
        attachment: Option<dyno_supervisor::Attachment>,
    ) -> Result<
        (
            String,
            tokio::sync::watch::Receiver<dyno_supervisor::Status>,
        ),
        DaemonError,
    > {
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
        let mut release = self.current_release(name).await?;
        release.config.extend(env);
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
            size: self.options.size(size),
        };
        let mut def = self.options.dyno_def(name, &release, &slug.path, slot);
        def.attachment = attachment;
        let handle = supervisor::start(runtime.platform.clone(), def.clone());
        let status = handle.status.clone();
        runtime.track(handle, &def);
        Ok((def.name(), status))
    }

    /// `dyno ps:scale web=3 worker=1`: the new formation, then the dynos to match.
    pub async fn scale(
        &self,
        name: &str,
        changes: Vec<ScaleChange>,
    ) -> Result<Vec<FormationEntry>, DaemonError> {
        let app = app_name(name)?;
        let formation = self.with_store(move |s| s.scale(&app, &changes)).await?;
        self.announce_scale(name, &formation);
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

    /// Whether a config change of `app` runs a release phase: its current release's Procfile
    /// has one.
    async fn runs_release_phase(&self, app: &AppName) -> Result<bool, DaemonError> {
        let current = self.current_release(app.as_str()).await?;
        Ok(current.process_types.contains_key(RELEASE_PHASE) && current.slug.is_some())
    }

    async fn current_release(&self, app: &str) -> Result<Release, DaemonError> {
        let app = app_name(app)?;
        self.with_store(move |s| s.current_release(&app)).await
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
}
