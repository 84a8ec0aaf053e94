//! Heroku's `app[api]` log lines: what the platform did to the app and on whose behalf
//! (`Set FOO config vars by user dyno@localhost`, `Release v3 created by user …`,
//! `Scaled to web@2:Standard-1X by user …`).

use dyno_logs::logs::{LogLine, Source};
use dyno_state::model::{FormationEntry, Release};

use super::Daemon;

/// Who every change is made by: the daemon's one account.
const BY: &str = dyno_api::heroku::ACCOUNT_EMAIL;

impl Daemon {
    pub(super) fn api_line(&self, app: &str, message: String) {
        self.hub
            .append(app, LogLine::now(Source::App, "api", message));
    }

    /// A new release: what made it (its description), then its creation.
    pub(super) fn announce_release(&self, app: &str, release: &Release) {
        self.api_line(app, format!("{} by user {BY}", release.description));
        self.api_line(
            app,
            format!("Release v{} created by user {BY}", release.version),
        );
    }

    /// A new app and its v1.
    pub(super) fn announce_created(&self, app: &str) {
        self.api_line(app, format!("Initial release by user {BY}"));
        self.api_line(app, format!("Release v1 created by user {BY}"));
    }

    /// A formation change, the whole formation as it is now.
    pub(super) fn announce_scale(&self, app: &str, formation: &[FormationEntry]) {
        let mut entries: Vec<String> = formation
            .iter()
            .map(|f| format!("{}@{}:{}", f.process_type, f.quantity, f.size))
            .collect();
        entries.sort();
        self.api_line(app, format!("Scaled to {} by user {BY}", entries.join(" ")));
    }
}
