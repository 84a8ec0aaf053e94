//! Custom domains: stored first, then the router sends their requests to the app.

use std::collections::BTreeMap;

use dyno_error::ErrorKind;
use dyno_state::model::App;
use dyno_state::Hostname;

use super::{app_name, Daemon, DaemonError};

fn hostname(given: &str) -> Result<Hostname, DaemonError> {
    Hostname::parse(given).map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))
}

impl Daemon {
    /// `domains:add`: the app with its domains as they are now.
    pub async fn add_domain(&self, name: &str, domain: &str) -> Result<App, DaemonError> {
        let (name, domain) = (app_name(name)?, hostname(domain)?);
        let app = self
            .with_store(move |s| s.add_domain(&name, &domain))
            .await?;
        self.route(&app);
        Ok(app)
    }

    /// `domains:remove`.
    pub async fn remove_domain(&self, name: &str, domain: &str) -> Result<App, DaemonError> {
        let (name, domain) = (app_name(name)?, hostname(domain)?);
        let app = self
            .with_store(move |s| s.remove_domain(&name, &domain))
            .await?;
        self.route(&app);
        Ok(app)
    }

    /// When each custom domain was added (ms since the epoch), by hostname.
    pub async fn domains_added(&self, name: &str) -> Result<BTreeMap<String, i64>, DaemonError> {
        let name = app_name(name)?;
        self.with_store(move |s| s.domains_added(&name)).await
    }
}
