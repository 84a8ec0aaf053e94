//! Heroku's release phase: the Procfile's `release` command runs once, in a dyno `release.1`,
//! on the release about to be made: on a deploy (the new slug, the current config), a config
//! change (the current slug, the new config) and a rollback (the target's slug and config).
//! Meanwhile that release is listed as `pending`; if the command fails or outlasts
//! `--release-timeout` (Heroku: 1 hour) it is `failed`, and the app keeps its config,
//! formation and the dynos of its current release.

use std::path::Path;

use dyno_error::ErrorKind;
use dyno_sandbox::cgroup::DynoSize;
use dyno_state::model::Release;
use dyno_state::ReleaseChange;
use dyno_supervisor::{self as supervisor, State};

use super::{app_name, Daemon, DaemonError, Slot, RELEASE_PHASE};

impl Daemon {
    /// Makes the release of `change`. When its Procfile has a release command
    /// (`runs_phase`), the release is `pending` while the command runs, then settled:
    /// `succeeded` (returned) or `failed` (an error that says why; the release stays listed).
    pub(super) async fn make_release(
        &self,
        name: &str,
        change: ReleaseChange,
        runs_phase: bool,
    ) -> Result<Release, DaemonError> {
        let app = app_name(name)?;
        if !runs_phase {
            return self
                .with_store(move |s| match change {
                    ReleaseChange::Deploy(release) => s.create_release(&app, release),
                    ReleaseChange::SetConfig(pairs) => s.config_set(&app, &pairs),
                    ReleaseChange::UnsetConfig(keys) => s.config_unset(&app, &keys),
                    ReleaseChange::Rollback(version) => s.rollback(&app, version),
                })
                .await;
        }
        let pending = self
            .with_store({
                let app = app.clone();
                move |s| s.begin_release(&app, change)
            })
            .await?;
        let outcome = match (pending.process_types.get(RELEASE_PHASE), &pending.slug) {
            (Some(command), Some(slug)) => {
                self.release_phase(name, command, &slug.path, &pending)
                    .await
            }
            _ => Ok(()),
        };
        let version = pending.version;
        let succeeded = outcome.is_ok();
        let settled = self
            .with_store(move |s| s.settle_release(&app, version, succeeded))
            .await?;
        outcome.map(|()| settled)
    }

    /// Runs `command` on `slug` with `with`'s config and waits for it to end.
    async fn release_phase(
        &self,
        name: &str,
        command: &str,
        slug: &Path,
        with: &Release,
    ) -> Result<(), DaemonError> {
        let platform = {
            let mut apps = self.apps.lock().await;
            self.runtime_in(&mut apps, name).platform.clone()
        };
        let timeout = platform.lifecycle.release_timeout;
        let slot = Slot {
            process: RELEASE_PHASE.to_string(),
            index: 1,
            command: command.to_string(),
            restart: false,
            size: self.options.size(DynoSize::STANDARD_1X.name),
        };
        let def = self.options.dyno_def(name, with, slug, slot);
        let handle = supervisor::start(platform, def);
        let mut status = handle.status.clone();
        let ended = tokio::time::timeout(timeout, status.wait_for(|s| s.state == State::Down))
            .await
            .is_ok();
        let code = status.borrow().exit_code;
        handle.stop().await;
        let why = match (ended, code) {
            (true, Some(0)) => return Ok(()),
            (false, _) => format!(
                "`{command}` did not end within {}s (--release-timeout) and was stopped",
                timeout.as_secs()
            ),
            (true, code) => format!(
                "`{command}` exited with status {}",
                code.map_or("unknown".to_string(), |c| c.to_string())
            ),
        };
        Err(DaemonError::new(
            ErrorKind::ReleaseFailed,
            format!(
                "the release phase of v{} failed: {why}; v{} is recorded as failed and {name} \
                 keeps running its current release. See `heroku logs -a {name} --dyno release`, \
                 fix it and try again",
                with.version, with.version
            ),
        ))
    }
}
