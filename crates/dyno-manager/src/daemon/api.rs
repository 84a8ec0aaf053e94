//! The daemon as the API's [`Platform`]: validated API input in, the daemon's operations,
//! API shapes out, each daemon error mapped to its HTTP status by its stable id.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use dyno_api::heroku::{Account, Domain, DomainCreate, Ref, ReleaseName, UserRef};
use dyno_api::server::builds::{Build, BuildCreate, BuildpackInstallation, SourceChunks};
use dyno_api::server::sni_endpoints::{DomainUpdate, SniEndpoint, SniEndpointCreate};
use dyno_api::{
    ApiError, App, AppFeature, AppFeatureUpdate, AppName, AppUpdate, Deploy, Dyno, DynoCreate,
    Formation, FormationUpdates, LogDrain, LogDrainCreate, LogQuery, Platform, Release,
};
use dyno_state::ids::{release_uuid, release_version_of};
use dyno_state::model::ScaleChange;
use dyno_state::{ProcessType, Quantity, SizeName};

use super::api_shapes::{
    domain_shape, drain_out, feature_of, features_of, filter, formation_out, invalid,
    release_shape, time,
};
use super::attach::Attachments;
use super::log_sessions::LogSessions;
use super::runtime_metrics::{LOG_RUNTIME_METRICS, PREBOOT};
use super::{Daemon, DaemonError};

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        ApiError::from_kind(e.kind, e.message)
    }
}

/// `Arc<Daemon>` serves the API.
pub struct DaemonApi {
    pub daemon: std::sync::Arc<Daemon>,
    log_sessions: LogSessions,
    /// The account, read from the store once (it never changes).
    account: std::sync::OnceLock<Account>,
    /// Attached one-offs waiting for their client.
    pub(super) attachments: std::sync::Arc<Attachments>,
    /// Where Heroku's CLI attaches to one-offs (`rendezvous://…`); `None`: only through the API
    /// (`dyno run`).
    pub(super) rendezvous: Option<std::net::SocketAddr>,
}

impl DaemonApi {
    pub fn new(daemon: std::sync::Arc<Daemon>) -> DaemonApi {
        DaemonApi {
            daemon,
            log_sessions: LogSessions::default(),
            account: std::sync::OnceLock::new(),
            attachments: Default::default(),
            rendezvous: None,
        }
    }

    /// Attached one-offs wait this long for their client (default
    /// [`super::attach::ATTACH_WINDOW`]).
    pub fn with_attach_window(mut self, window: std::time::Duration) -> DaemonApi {
        self.attachments = std::sync::Arc::new(Attachments::new(window));
        self
    }

    /// Heroku's CLI attaches to one-offs at this rendezvous address (see
    /// [`dyno_api::rendezvous`]).
    pub fn with_rendezvous(mut self, addr: std::net::SocketAddr) -> DaemonApi {
        self.rendezvous = Some(addr);
        self
    }
}

impl DaemonApi {
    fn app_out(&self, app: &dyno_state::model::App, owner: &UserRef) -> Result<App, ApiError> {
        let name = AppName::new(app.name.as_str())?;
        let mut out = App::new(&name, &app.uuid, owner.clone(), time(app.created_at_ms));
        out.maintenance = app.maintenance;
        out.web_url = self.daemon.web_url(&app.name);
        Ok(out)
    }

    /// The account every token acts as, and as an app's owner.
    async fn the_account(&self) -> Result<Account, ApiError> {
        if let Some(account) = self.account.get() {
            return Ok(account.clone());
        }
        let id = self.daemon.with_store(|s| s.account_uuid()).await?;
        Ok(self
            .account
            .get_or_init(|| Account::new(id, dyno_api::rfc3339(UNIX_EPOCH)))
            .clone())
    }

    async fn owner(&self) -> Result<UserRef, ApiError> {
        Ok(self.the_account().await?.as_owner())
    }

    pub(super) async fn owner_ref(&self) -> Result<UserRef, ApiError> {
        self.owner().await
    }

    pub(super) async fn app_ref(
        &self,
        name: &AppName,
    ) -> Result<(dyno_state::model::App, Ref), ApiError> {
        let app = self.daemon.app(name.as_str()).await?;
        let r = Ref {
            id: app.uuid.clone(),
            name: app.name.clone(),
        };
        Ok((app, r))
    }

    /// Every release of the app in Heroku's shape, oldest first, with the store's rows.
    async fn releases_out(
        &self,
        name: &AppName,
    ) -> Result<Vec<(Release, dyno_state::model::Release)>, ApiError> {
        let (app, app_ref) = self.app_ref(name).await?;
        let user = self.owner().await?;
        let list = self.daemon.releases(name.as_str()).await?;
        // The current release: the newest that succeeded (a failed or pending one never ran).
        let current = app.current_release;
        Ok(list
            .into_iter()
            .map(|r| {
                let out = release_shape(&r, &app.uuid, &app_ref, &user, current);
                (out, r)
            })
            .collect())
    }

    async fn find_release(
        &self,
        name: &AppName,
        which: &ReleaseName,
    ) -> Result<(Release, dyno_state::model::Release), ApiError> {
        let releases = self.releases_out(name).await?;
        // A release id holds its version (see `release_uuid`); every release names its app.
        let version = which.version().or_else(|| {
            let app_id = &releases.first()?.0.app.id;
            release_version_of(app_id, &which.text())
        });
        let found = version.and_then(|v| releases.into_iter().find(|(r, _)| r.version == v));
        found.ok_or_else(|| {
            ApiError::not_found(format!(
                "No release {} of {name}: see `heroku releases -a {name}`.",
                which.text()
            ))
        })
    }
}

impl Platform for DaemonApi {
    async fn list_apps(&self) -> Result<Vec<App>, ApiError> {
        let apps = self.daemon.list_apps().await?;
        let owner = self.owner().await?;
        apps.iter().map(|a| self.app_out(a, &owner)).collect()
    }

    async fn create_app(&self, name: AppName) -> Result<App, ApiError> {
        let app = match self.daemon.create_app(name.as_str()).await {
            Err(e) if e.kind == dyno_error::ErrorKind::Conflict => {
                return Err(ApiError::name_taken(name.as_str()))
            }
            other => other?,
        };
        self.app_out(&app, &self.owner().await?)
    }

    async fn destroy_app(&self, name: AppName) -> Result<App, ApiError> {
        let app = self.daemon.app(name.as_str()).await?;
        self.daemon.destroy_app(name.as_str()).await?;
        self.app_out(&app, &self.owner().await?)
    }

    async fn app(&self, name: AppName) -> Result<App, ApiError> {
        let app = self.daemon.app(name.as_str()).await?;
        self.app_out(&app, &self.owner().await?)
    }

    async fn git_repository(
        &self,
        name: AppName,
    ) -> Result<dyno_api::server::git::GitRepository, ApiError> {
        Ok(self.daemon.git_repository(name.as_str()).await?)
    }

    async fn open_log_session(&self, name: AppName, query: LogQuery) -> Result<String, ApiError> {
        // An unknown app is a 404 now, not when the stream is read.
        self.daemon.app(name.as_str()).await?;
        Ok(self.log_sessions.open(name, query))
    }

    async fn log_session(&self, secret: String) -> Result<(AppName, LogQuery), ApiError> {
        self.log_sessions.get(&secret)
    }

    async fn account(&self) -> Result<Account, ApiError> {
        self.the_account().await
    }

    async fn app_name_of(&self, id: String) -> Result<AppName, ApiError> {
        let app = self.daemon.with_store(move |s| s.app_by_uuid(&id)).await?;
        AppName::new(app.name)
    }

    async fn release(&self, name: AppName, which: ReleaseName) -> Result<Release, ApiError> {
        Ok(self.find_release(&name, &which).await?.0)
    }

    async fn release_config(
        &self,
        name: AppName,
        which: ReleaseName,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let (_, row) = self.find_release(&name, &which).await?;
        Ok(row.config.into_iter().collect())
    }

    async fn domains(&self, name: AppName) -> Result<Vec<Domain>, ApiError> {
        let (app, app_ref) = self.app_ref(&name).await?;
        let added = self.daemon.domains_added(name.as_str()).await?;
        let own = format!("{}.localhost", app.name);
        let mut list = vec![domain_shape(
            &app,
            &app_ref,
            &own,
            "heroku",
            app.created_at_ms,
        )];
        for hostname in &app.domains {
            let at = added.get(hostname).copied().unwrap_or(app.created_at_ms);
            list.push(domain_shape(&app, &app_ref, hostname, "custom", at));
        }
        self.with_endpoints(&name, list).await
    }

    async fn update_domain(
        &self,
        name: AppName,
        domain: String,
        update: DomainUpdate,
    ) -> Result<Domain, ApiError> {
        let all = self.domains(name.clone()).await?;
        self.update_domain_out(name, domain, update, all).await
    }

    async fn create_source(&self, name: AppName) -> Result<String, ApiError> {
        self.create_source_out(name).await
    }

    async fn put_source(&self, secret: String, chunks: SourceChunks) -> Result<(), ApiError> {
        self.put_source_out(secret, chunks).await
    }

    async fn get_source(
        &self,
        secret: String,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        self.get_source_out(secret).await
    }

    async fn create_build(
        &self,
        name: AppName,
        build: BuildCreate,
        base: String,
    ) -> Result<Build, ApiError> {
        self.create_build_out(name, build, base).await
    }

    async fn builds(&self, name: AppName, base: String) -> Result<Vec<Build>, ApiError> {
        self.builds_out(name, base).await
    }

    async fn build(&self, name: AppName, id: String, base: String) -> Result<Build, ApiError> {
        self.build_out(name, id, base).await
    }

    async fn build_output(
        &self,
        secret: String,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        self.build_output_out(secret).await
    }

    async fn purge_build_cache(&self, name: AppName) -> Result<(), ApiError> {
        Ok(self.daemon.purge_build_cache(name.as_str()).await?)
    }

    async fn buildpacks(&self, name: AppName) -> Result<Vec<BuildpackInstallation>, ApiError> {
        self.buildpacks_out(name).await
    }

    async fn set_buildpacks(
        &self,
        name: AppName,
        urls: Vec<String>,
    ) -> Result<Vec<BuildpackInstallation>, ApiError> {
        self.set_buildpacks_out(name, urls).await
    }

    async fn sni_endpoints(&self, name: AppName) -> Result<Vec<SniEndpoint>, ApiError> {
        self.sni_endpoints_out(name).await
    }

    async fn add_sni_endpoint(
        &self,
        name: AppName,
        cert: SniEndpointCreate,
    ) -> Result<SniEndpoint, ApiError> {
        self.add_sni_endpoint_out(name, cert).await
    }

    async fn update_sni_endpoint(
        &self,
        name: AppName,
        which: String,
        cert: SniEndpointCreate,
    ) -> Result<SniEndpoint, ApiError> {
        self.update_sni_endpoint_out(name, which, cert).await
    }

    async fn remove_sni_endpoint(
        &self,
        name: AppName,
        which: String,
    ) -> Result<SniEndpoint, ApiError> {
        self.remove_sni_endpoint_out(name, which).await
    }

    async fn add_domain(&self, name: AppName, domain: DomainCreate) -> Result<Domain, ApiError> {
        let hostname = dyno_state::Hostname::parse(&domain.hostname).map_err(invalid)?;
        if let Some(cert) = &domain.sni_endpoint {
            self.check_endpoint_covers(&name, cert, hostname.as_str())
                .await?;
        }
        let app = match self
            .daemon
            .add_domain(name.as_str(), hostname.as_str())
            .await
        {
            // Heroku answers a domain of another app with 422.
            Err(e) if e.kind == dyno_error::ErrorKind::Conflict => {
                return Err(ApiError::invalid_params(e.message))
            }
            other => other?,
        };
        self.domains(AppName::new(app.name)?)
            .await?
            .into_iter()
            .find(|d| d.hostname == hostname.as_str())
            .ok_or_else(|| ApiError::internal("the domain just added is not listed"))
    }

    async fn remove_domain(&self, name: AppName, domain: String) -> Result<Domain, ApiError> {
        let domain = domain.to_ascii_lowercase();
        let found = self
            .domains(name.clone())
            .await?
            .into_iter()
            .find(|d| d.kind == "custom" && (d.hostname == domain || d.id == domain))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "{domain} is not a custom domain of {name}: see `heroku domains -a {name}`."
                ))
            })?;
        self.daemon
            .remove_domain(name.as_str(), &found.hostname)
            .await?;
        Ok(found)
    }

    async fn deploy(&self, name: AppName, deploy: Deploy) -> Result<Release, ApiError> {
        let dir = Path::new(&deploy.dir);
        if !dir.is_absolute() || !dir.is_dir() {
            return Err(invalid(format!(
                "dir must be an absolute path to a directory on the daemon's host: got {:?}.",
                deploy.dir
            )));
        }
        let release = self.daemon.deploy(name.as_str(), dir).await?;
        self.release(name, ReleaseName::Version(release.version))
            .await
    }

    async fn releases(&self, name: AppName) -> Result<Vec<Release>, ApiError> {
        let mut list: Vec<Release> = self
            .releases_out(&name)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        // Newest first, as the trait promises (the API sorts pages by the client's Range).
        list.sort_by_key(|r| std::cmp::Reverse(r.version));
        Ok(list)
    }

    async fn formation(&self, name: AppName) -> Result<Vec<Formation>, ApiError> {
        let (app, app_ref) = self.app_ref(&name).await?;
        let list = self.daemon.formation(name.as_str()).await?;
        let release = self.daemon.current_release(name.as_str()).await?;
        Ok(list
            .into_iter()
            .map(|f| formation_out(f, &app, &app_ref, &release))
            .collect())
    }

    async fn scale(
        &self,
        name: AppName,
        updates: FormationUpdates,
    ) -> Result<Vec<Formation>, ApiError> {
        if updates.updates.is_empty() {
            return Err(invalid(
                "updates is empty: give at least one, e.g. {\"type\":\"web\",\"quantity\":2}.",
            ));
        }
        let current = self.daemon.formation(name.as_str()).await?;
        let mut changes = Vec::new();
        for u in updates.updates {
            if u.quantity.is_none() && u.size.is_none() {
                return Err(invalid(format!(
                    "update for {} has neither quantity nor size.",
                    u.process_type
                )));
            }
            changes.push(ScaleChange {
                process_type: ProcessType::parse(&u.process_type).map_err(invalid)?,
                quantity: u
                    .quantity
                    .map(|q| {
                        let now = current
                            .iter()
                            .find(|f| f.process_type == u.process_type)
                            .map_or(0, |f| f.quantity);
                        let to = q.apply(now).ok_or_else(|| {
                            invalid(format!(
                                "{} has {now} dynos: that change would leave fewer than none.",
                                u.process_type
                            ))
                        })?;
                        Quantity::new(to, Quantity::DEFAULT_MAX).map_err(invalid)
                    })
                    .transpose()?,
                size: u
                    .size
                    .as_deref()
                    // Any case (Heroku's CLI sends `standard-2x` as typed).
                    .map(SizeName::parse)
                    .transpose()
                    .map_err(invalid)?,
            });
        }
        self.daemon.scale(name.as_str(), changes).await?;
        self.formation(name).await
    }

    async fn dynos(&self, name: AppName) -> Result<Vec<Dyno>, ApiError> {
        let (app, app_ref) = self.app_ref(&name).await?;
        let mut list = self.daemon.ps(name.as_str()).await?;
        for d in &mut list {
            d.app = app_ref.clone();
            d.release.id = release_uuid(&app.uuid, d.release.version);
        }
        Ok(list)
    }

    async fn update_app(&self, name: AppName, update: AppUpdate) -> Result<App, ApiError> {
        let mut name = name;
        if let Some(new_name) = update.name.as_deref().filter(|n| *n != name.as_str()) {
            let to = AppName::new(new_name)?;
            // Heroku's answer for a taken name is a 422 (the store refuses it too, in the
            // rename's own transaction; any other conflict stays a 409).
            if self.daemon.app(to.as_str()).await.is_ok() {
                return Err(ApiError::name_taken(to.as_str()));
            }
            self.daemon.rename_app(name.as_str(), to.as_str()).await?;
            self.log_sessions.rename_app(&name, &to);
            name = to;
        }
        let app = match update.maintenance {
            Some(on) => self.daemon.set_maintenance(name.as_str(), on).await?,
            None => self.daemon.app(name.as_str()).await?,
        };
        self.app_out(&app, &self.owner().await?)
    }

    async fn config(&self, name: AppName) -> Result<BTreeMap<String, String>, ApiError> {
        Ok(self.daemon.config(name.as_str()).await?)
    }

    async fn update_config(
        &self,
        name: AppName,
        changes: BTreeMap<String, Option<String>>,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let mut set = Vec::new();
        let mut unset = Vec::new();
        for (k, v) in changes {
            match v {
                Some(v) => set.push((k, v)),
                None => unset.push(k),
            }
        }
        // Heroku makes one release per change; a PATCH with both sets and unsets makes two.
        if !set.is_empty() {
            self.daemon.config_set(name.as_str(), set).await?;
        }
        if !unset.is_empty() {
            self.daemon.config_unset(name.as_str(), unset).await?;
        }
        Ok(self.daemon.config(name.as_str()).await?)
    }

    async fn rollback(&self, name: AppName, version: u32) -> Result<Release, ApiError> {
        let release = self.daemon.rollback(name.as_str(), version).await?;
        self.release(name, ReleaseName::Version(release.version))
            .await
    }

    async fn metrics(&self) -> Result<String, ApiError> {
        Ok(self.daemon.metrics().await)
    }

    async fn run(&self, name: AppName, dyno: DynoCreate) -> Result<Dyno, ApiError> {
        self.one_off(name, dyno).await
    }

    async fn attach(&self, secret: String) -> Result<dyno_api::AttachRelay, ApiError> {
        self.attachments.claim(&self.daemon, &secret)
    }

    async fn drains(&self, name: AppName) -> Result<Vec<LogDrain>, ApiError> {
        let list = self.daemon.drains(name.as_str()).await?;
        Ok(list.into_iter().map(drain_out).collect())
    }

    async fn add_drain(&self, name: AppName, drain: LogDrainCreate) -> Result<LogDrain, ApiError> {
        Ok(drain_out(
            self.daemon.add_drain(name.as_str(), &drain.url).await?,
        ))
    }

    async fn remove_drain(&self, name: AppName, token: String) -> Result<LogDrain, ApiError> {
        Ok(drain_out(
            self.daemon.remove_drain(name.as_str(), &token).await?,
        ))
    }

    async fn restart(&self, name: AppName, which: Option<String>) -> Result<(), ApiError> {
        Ok(self.daemon.restart(name.as_str(), which.as_deref()).await?)
    }

    async fn tail(
        &self,
        name: AppName,
        query: LogQuery,
    ) -> Result<tokio::sync::mpsc::Receiver<String>, ApiError> {
        self.daemon.app(name.as_str()).await?;
        let n = query.n.unwrap_or(dyno_logs::logring::DEFAULT_LINES);
        let (recent, mut tail) = self.daemon.hub.tail(name.as_str(), filter(&query), n);
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            for line in recent {
                if tx.send(line.to_string()).await.is_err() {
                    return;
                }
            }
            // Until the client goes away (the send fails) or the app's log does.
            while let Some(event) = tail.next().await {
                if tx.send(event.to_string()).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn features(&self, name: AppName) -> Result<Vec<AppFeature>, ApiError> {
        Ok(features_of(&self.daemon.app(name.as_str()).await?))
    }

    async fn feature(&self, name: AppName, feature: String) -> Result<AppFeature, ApiError> {
        feature_of(&self.daemon.app(name.as_str()).await?, &feature)
    }

    async fn update_feature(
        &self,
        name: AppName,
        feature: String,
        update: AppFeatureUpdate,
    ) -> Result<AppFeature, ApiError> {
        // Unknown features are refused before anything changes.
        feature_of(&self.daemon.app(name.as_str()).await?, &feature)?;
        let app = match feature.as_str() {
            LOG_RUNTIME_METRICS => {
                self.daemon
                    .set_runtime_metrics(name.as_str(), update.enabled)
                    .await?
            }
            PREBOOT => {
                self.daemon
                    .set_preboot(name.as_str(), update.enabled)
                    .await?
            }
            _ => {
                return Err(ApiError::internal(format!(
                    "feature {feature} has no switch"
                )))
            }
        };
        feature_of(&app, &feature)
    }

    async fn logs(&self, name: AppName, query: LogQuery) -> Result<Vec<String>, ApiError> {
        // An unknown app is a 404, not an empty log.
        self.daemon.app(name.as_str()).await?;
        let n = query.n.unwrap_or(dyno_logs::logring::DEFAULT_LINES);
        Ok(self
            .daemon
            .hub
            .recent(name.as_str(), &filter(&query), n)
            .iter()
            .map(|l| l.to_string())
            .collect())
    }
}
