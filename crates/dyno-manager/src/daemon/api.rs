//! The daemon as the API's [`Platform`]: validated API input in, the daemon's operations,
//! API shapes out, each daemon error mapped to its HTTP status by its stable id.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dyno_api::{
    ApiError, App, AppFeature, AppFeatureUpdate, AppName, AppUpdate, Deploy, Dyno, DynoCreate,
    Formation, FormationUpdates, LogDrain, LogDrainCreate, LogQuery, Platform, Release, Rollback,
};
use dyno_state::model::ScaleChange;
use dyno_state::{ProcessType, Quantity, SizeName};

use super::runtime_metrics::{FEATURES, LOG_RUNTIME_METRICS};
use super::{Daemon, DaemonError};
use dyno_logs::logring::Filter;
use dyno_logs::logs::Source;

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        ApiError::from_kind(e.kind, e.message)
    }
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_params(e.to_string())
}

/// `Arc<Daemon>` serves the API.
pub struct DaemonApi(pub std::sync::Arc<Daemon>);

impl DaemonApi {
    fn app_out(&self, app: &dyno_state::model::App) -> App {
        App {
            name: app.name.clone(),
            created_at: dyno_api::rfc3339(time(app.created_at_ms)),
            maintenance: app.maintenance,
            web_url: self.0.web_url(&app.name),
        }
    }
}

/// The labs features of `app`, as it is now.
fn features_of(app: &dyno_state::model::App) -> Vec<AppFeature> {
    FEATURES
        .iter()
        .map(|(name, description)| AppFeature {
            name: (*name).to_string(),
            description: (*description).to_string(),
            enabled: match *name {
                LOG_RUNTIME_METRICS => app.metrics_enabled,
                _ => false,
            },
        })
        .collect()
}

/// `feature` of `app`, or a 404 that names the features there are.
fn feature_of(app: &dyno_state::model::App, feature: &str) -> Result<AppFeature, ApiError> {
    features_of(app)
        .into_iter()
        .find(|f| f.name == feature)
        .ok_or_else(|| {
            let known: Vec<&str> = FEATURES.iter().map(|(name, _)| *name).collect();
            ApiError::not_found(format!(
                "No labs feature {feature}: the features are {}. See `dyno labs -a {}`.",
                known.join(", "),
                app.name
            ))
        })
}

impl Platform for DaemonApi {
    async fn list_apps(&self) -> Result<Vec<App>, ApiError> {
        let apps = self.0.list_apps().await?;
        Ok(apps.iter().map(|a| self.app_out(a)).collect())
    }

    async fn create_app(&self, name: AppName) -> Result<App, ApiError> {
        let app = self.0.create_app(name.as_str()).await?;
        Ok(self.app_out(&app))
    }

    async fn destroy_app(&self, name: AppName) -> Result<App, ApiError> {
        let app = self.0.app(name.as_str()).await?;
        self.0.destroy_app(name.as_str()).await?;
        Ok(self.app_out(&app))
    }

    async fn app(&self, name: AppName) -> Result<App, ApiError> {
        let app = self.0.app(name.as_str()).await?;
        Ok(self.app_out(&app))
    }

    async fn deploy(&self, name: AppName, deploy: Deploy) -> Result<Release, ApiError> {
        let dir = Path::new(&deploy.dir);
        if !dir.is_absolute() || !dir.is_dir() {
            return Err(invalid(format!(
                "dir must be an absolute path to a directory on the daemon's host: got {:?}.",
                deploy.dir
            )));
        }
        let release = self.0.deploy(name.as_str(), dir).await?;
        Ok(release_out(release))
    }

    async fn releases(&self, name: AppName) -> Result<Vec<Release>, ApiError> {
        let list = self.0.releases(name.as_str()).await?;
        let newest = list.iter().map(|r| r.version).max().unwrap_or(0);
        Ok(list
            .into_iter()
            .map(|r| Release {
                version: r.version,
                current: r.version == newest,
                description: r.description,
                created_at: dyno_api::rfc3339(time(r.created_at_ms)),
            })
            .collect())
    }

    async fn formation(&self, name: AppName) -> Result<Vec<Formation>, ApiError> {
        let list = self.0.formation(name.as_str()).await?;
        Ok(list.into_iter().map(formation_out).collect())
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
                    .map(|q| Quantity::new(q, Quantity::DEFAULT_MAX))
                    .transpose()
                    .map_err(invalid)?,
                size: u
                    .size
                    .as_deref()
                    .map(SizeName::parse)
                    .transpose()
                    .map_err(invalid)?,
            });
        }
        let list = self.0.scale(name.as_str(), changes).await?;
        Ok(list.into_iter().map(formation_out).collect())
    }

    async fn dynos(&self, name: AppName) -> Result<Vec<Dyno>, ApiError> {
        Ok(self.0.ps(name.as_str()).await?)
    }

    async fn update_app(&self, name: AppName, update: AppUpdate) -> Result<App, ApiError> {
        let app = self
            .0
            .set_maintenance(name.as_str(), update.maintenance)
            .await?;
        Ok(self.app_out(&app))
    }

    async fn config(&self, name: AppName) -> Result<BTreeMap<String, String>, ApiError> {
        Ok(self.0.config(name.as_str()).await?)
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
            self.0.config_set(name.as_str(), set).await?;
        }
        if !unset.is_empty() {
            self.0.config_unset(name.as_str(), unset).await?;
        }
        Ok(self.0.config(name.as_str()).await?)
    }

    async fn rollback(&self, name: AppName, rollback: Rollback) -> Result<Release, ApiError> {
        let release = self.0.rollback(name.as_str(), rollback.version).await?;
        Ok(release_out(release))
    }

    async fn metrics(&self) -> Result<String, ApiError> {
        Ok(self.0.metrics().await)
    }

    async fn run(&self, name: AppName, dyno: DynoCreate) -> Result<Dyno, ApiError> {
        let started = self.0.run_one_off(name.as_str(), &dyno.command).await?;
        let release = self.0.app(name.as_str()).await?.current_release;
        Ok(Dyno {
            name: started,
            process_type: "run".into(),
            state: "starting".into(),
            release,
            size: "Standard-1X".into(),
            command: dyno.command,
        })
    }

    async fn drains(&self, name: AppName) -> Result<Vec<LogDrain>, ApiError> {
        let list = self.0.drains(name.as_str()).await?;
        Ok(list.into_iter().map(drain_out).collect())
    }

    async fn add_drain(&self, name: AppName, drain: LogDrainCreate) -> Result<LogDrain, ApiError> {
        Ok(drain_out(
            self.0.add_drain(name.as_str(), &drain.url).await?,
        ))
    }

    async fn remove_drain(&self, name: AppName, token: String) -> Result<LogDrain, ApiError> {
        Ok(drain_out(self.0.remove_drain(name.as_str(), &token).await?))
    }

    async fn restart(&self, name: AppName, which: Option<String>) -> Result<(), ApiError> {
        Ok(self.0.restart(name.as_str(), which.as_deref()).await?)
    }

    async fn tail(
        &self,
        name: AppName,
        query: LogQuery,
    ) -> Result<tokio::sync::mpsc::Receiver<String>, ApiError> {
        self.0.app(name.as_str()).await?;
        let n = query.n.unwrap_or(dyno_logs::logring::DEFAULT_LINES);
        let (recent, mut tail) = self.0.hub.tail(name.as_str(), filter(&query), n);
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
        Ok(features_of(&self.0.app(name.as_str()).await?))
    }

    async fn feature(&self, name: AppName, feature: String) -> Result<AppFeature, ApiError> {
        feature_of(&self.0.app(name.as_str()).await?, &feature)
    }

    async fn update_feature(
        &self,
        name: AppName,
        feature: String,
        update: AppFeatureUpdate,
    ) -> Result<AppFeature, ApiError> {
        // Unknown features are refused before anything changes.
        feature_of(&self.0.app(name.as_str()).await?, &feature)?;
        let app = match feature.as_str() {
            LOG_RUNTIME_METRICS => {
                self.0
                    .set_runtime_metrics(name.as_str(), update.enabled)
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
        self.0.app(name.as_str()).await?;
        let n = query.n.unwrap_or(dyno_logs::logring::DEFAULT_LINES);
        Ok(self
            .0
            .hub
            .recent(name.as_str(), &filter(&query), n)
            .iter()
            .map(|l| l.to_string())
            .collect())
    }
}

/// The log hub's filter for an API query.
fn filter(query: &LogQuery) -> Filter {
    Filter {
        ps: query.ps.clone(),
        source: query.source.as_deref().map(|s| match s {
            "app" => Source::App,
            "router" => Source::Router,
            _ => Source::Heroku,
        }),
    }
}

fn drain_out(d: dyno_state::model::Drain) -> LogDrain {
    LogDrain {
        token: d.token,
        url: d.url.as_str().to_string(),
        created_at: dyno_api::rfc3339(time(d.created_at_ms)),
    }
}

fn release_out(r: dyno_state::model::Release) -> Release {
    Release {
        version: r.version,
        description: r.description,
        created_at: dyno_api::rfc3339(time(r.created_at_ms)),
        current: true,
    }
}

fn formation_out(f: dyno_state::model::FormationEntry) -> Formation {
    Formation {
        process_type: f.process_type,
        quantity: f.quantity,
        size: f.size,
    }
}
