//! The client's methods per resource: apps, releases, formation, dynos, config, drains, logs,
//! each one request (or one list, every page of it) on Heroku's paths.

use std::collections::BTreeMap;

use crate::heroku::{LogSession, LogSessionCreate, ReleaseCreate, ReleaseName};
use crate::types::{
    App, AppCreate, AppFeature, AppFeatureUpdate, AppUpdate, Deploy, Dyno, DynoCreate, Formation,
    FormationUpdate, FormationUpdates, LogDrain, LogDrainCreate, LogQuery, Release,
};

use super::{ApiClient, ClientError};

impl ApiClient {
    /// `GET /apps`.
    pub async fn list_apps(&self) -> Result<Vec<App>, ClientError> {
        self.get_all("/apps", None).await
    }

    /// `POST /apps`.
    pub async fn create_app(&self, name: &str) -> Result<App, ClientError> {
        let body = AppCreate {
            name: name.to_owned(),
            ..Default::default()
        };
        self.post("/apps", &body).await
    }

    /// `GET /apps/{name}`. The name goes into the path as it is; the server validates it.
    pub async fn app(&self, name: &str) -> Result<App, ClientError> {
        self.get(&format!("/apps/{name}")).await
    }

    /// `DELETE /apps/{name}`.
    pub async fn destroy_app(&self, name: &str) -> Result<App, ClientError> {
        self.delete(&format!("/apps/{name}")).await
    }

    /// `GET /apps/{name}/features`: the app's Heroku Labs features.
    pub async fn features(&self, app: &str) -> Result<Vec<AppFeature>, ClientError> {
        self.get_all(&format!("/apps/{app}/features"), None).await
    }

    /// `PATCH /apps/{name}/features/{feature}`: `labs:enable` (`true`) / `labs:disable`.
    pub async fn set_feature(
        &self,
        app: &str,
        feature: &str,
        enabled: bool,
    ) -> Result<AppFeature, ClientError> {
        self.patch(
            &format!("/apps/{app}/features/{feature}"),
            &AppFeatureUpdate { enabled },
        )
        .await
    }

    /// `PATCH /apps/{name}`: maintenance mode on or off.
    pub async fn update_app(&self, app: &str, maintenance: bool) -> Result<App, ClientError> {
        let body = AppUpdate {
            maintenance: Some(maintenance),
            ..Default::default()
        };
        self.patch(&format!("/apps/{app}"), &body).await
    }

    /// `PATCH /apps/{name}` with a new name (`apps:rename`).
    pub async fn rename_app(&self, app: &str, new_name: &str) -> Result<App, ClientError> {
        let body = AppUpdate {
            name: Some(new_name.to_string()),
            ..Default::default()
        };
        self.patch(&format!("/apps/{app}"), &body).await
    }

    /// `GET /apps/{name}/releases`, every one, newest first.
    pub async fn releases(&self, app: &str) -> Result<Vec<Release>, ClientError> {
        self.get_all(
            &format!("/apps/{app}/releases"),
            Some("version ..; max=1000, order=desc"),
        )
        .await
    }

    /// `GET /apps/{name}/releases/{id or version}`.
    pub async fn release(&self, app: &str, which: &str) -> Result<Release, ClientError> {
        self.get(&format!("/apps/{app}/releases/{which}")).await
    }

    /// `POST /apps/{name}/releases`: `dir` (absolute, on the daemon's host) becomes the slug
    /// of a new release; the answer comes once the formation runs it.
    pub async fn deploy(&self, app: &str, dir: &str) -> Result<Release, ClientError> {
        let body = Deploy {
            dir: dir.to_owned(),
        };
        self.post(&format!("/apps/{app}/releases"), &body).await
    }

    /// `POST /apps/{name}/releases` `{"release":version}`: Heroku's rollback, a new release
    /// with `version`'s slug and config.
    pub async fn rollback(&self, app: &str, version: u32) -> Result<Release, ClientError> {
        let body = ReleaseCreate {
            release: Some(ReleaseName::Version(version)),
            ..Default::default()
        };
        self.post(&format!("/apps/{app}/releases"), &body).await
    }

    /// `GET /apps/{name}/formation`.
    pub async fn formation(&self, app: &str) -> Result<Vec<Formation>, ClientError> {
        self.get_all(&format!("/apps/{app}/formation"), None).await
    }

    /// `PATCH /apps/{name}/formation`: `ps:scale` and `ps:type`.
    pub async fn update_formation(
        &self,
        app: &str,
        updates: Vec<FormationUpdate>,
    ) -> Result<Vec<Formation>, ClientError> {
        self.patch(
            &format!("/apps/{app}/formation"),
            &FormationUpdates { updates },
        )
        .await
    }

    /// `GET /apps/{name}/dynos`.
    pub async fn dynos(&self, app: &str) -> Result<Vec<Dyno>, ClientError> {
        self.get_all(&format!("/apps/{app}/dynos"), None).await
    }

    /// `POST /apps/{name}/dynos`: a one-off dyno running `command`.
    pub async fn run(&self, app: &str, command: &str) -> Result<Dyno, ClientError> {
        let body = DynoCreate {
            command: command.to_owned(),
            attach: Some(false),
            ..Default::default()
        };
        self.post(&format!("/apps/{app}/dynos"), &body).await
    }

    /// `POST /apps/{name}/dynos` with a whole body (an attached one-off: see
    /// [`ApiClient::attach`]).
    pub async fn run_with(&self, app: &str, body: &DynoCreate) -> Result<Dyno, ClientError> {
        self.post(&format!("/apps/{app}/dynos"), body).await
    }

    /// `DELETE /apps/{name}/dynos[/{dyno}]`: `ps:restart` of every dyno, of a process type
    /// (`web`) or of one dyno (`web.1`).
    pub async fn restart(
        &self,
        app: &str,
        which: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        match which {
            Some(d) => self.delete(&format!("/apps/{app}/dynos/{d}")).await,
            None => self.delete(&format!("/apps/{app}/dynos")).await,
        }
    }

    /// `GET /apps/{name}/config-vars`.
    pub async fn config(&self, app: &str) -> Result<BTreeMap<String, String>, ClientError> {
        self.get(&format!("/apps/{app}/config-vars")).await
    }

    /// `PATCH /apps/{name}/config`: `Some` sets a var, `None` unsets it; the new config.
    pub async fn update_config(
        &self,
        app: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        self.patch(&format!("/apps/{app}/config-vars"), changes)
            .await
    }

    /// `GET /apps/{name}/log-drains`.
    pub async fn drains(&self, app: &str) -> Result<Vec<LogDrain>, ClientError> {
        self.get_all(&format!("/apps/{app}/log-drains"), None).await
    }

    /// `POST /apps/{name}/log-drains`.
    pub async fn add_drain(&self, app: &str, url: &str) -> Result<LogDrain, ClientError> {
        let body = LogDrainCreate {
            url: url.to_owned(),
        };
        self.post(&format!("/apps/{app}/log-drains"), &body).await
    }

    /// `DELETE /apps/{name}/log-drains/{token}`.
    pub async fn remove_drain(&self, app: &str, token: &str) -> Result<LogDrain, ClientError> {
        self.delete(&format!("/apps/{app}/log-drains/{token}"))
            .await
    }

    /// The recent lines the query selects (Heroku's log session, read to its end).
    pub async fn logs(&self, app: &str, query: &LogQuery) -> Result<Vec<String>, ClientError> {
        let path = self.log_session(app, query, false).await?;
        let mut lines = Vec::new();
        self.stream_lines(&path, |batch| {
            lines.extend(
                batch
                    .iter()
                    .filter_map(|l| event_data(l))
                    .map(str::to_owned),
            );
        })
        .await?;
        Ok(lines)
    }

    /// The recent lines, then the new ones as they come (a log session with `tail`), a batch
    /// at a time, until the daemon ends the stream.
    pub async fn tail_logs(
        &self,
        app: &str,
        query: &LogQuery,
        mut on_lines: impl FnMut(&[&str]),
    ) -> Result<(), ClientError> {
        let path = self.log_session(app, query, true).await?;
        self.stream_lines(&path, |batch| {
            let lines: Vec<&str> = batch.iter().filter_map(|l| event_data(l)).collect();
            if !lines.is_empty() {
                on_lines(&lines);
            }
        })
        .await
    }

    /// `POST /apps/{name}/log-sessions`: the path of the session's stream (read over this
    /// client's own socket or address, whatever host the URL names).
    async fn log_session(
        &self,
        app: &str,
        query: &LogQuery,
        tail: bool,
    ) -> Result<String, ClientError> {
        let body = LogSessionCreate {
            dyno: query.ps.clone(),
            lines: query.n,
            source: query.source.clone(),
            tail: Some(tail),
            ..Default::default()
        };
        let session: LogSession = self
            .post(&format!("/apps/{app}/log-sessions"), &body)
            .await?;
        match session.logplex_url.find("/log-sessions/") {
            Some(i) => Ok(session.logplex_url[i..].to_owned()),
            None => Err(self.protocol(
                201,
                &format!(
                    "a log session URL without its path: {}",
                    session.logplex_url
                ),
            )),
        }
    }
}

/// The text of an event stream's `data:` line; `None` for ids, comments and blank lines.
fn event_data(line: &str) -> Option<&str> {
    let data = line.strip_prefix("data:")?;
    Some(data.strip_prefix(' ').unwrap_or(data))
}
