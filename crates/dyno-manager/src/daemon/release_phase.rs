//! Heroku's release phase: the Procfile's `release` command runs once, in a dyno `release.1`,
//! before a release exists: on a deploy (the new slug, the current config), a config change
//! (the current slug, the new config) and a rollback (the target's slug and config). If it
//! fails or outlasts `--release-timeout` (Heroku: 1 hour), nothing is released and the
//! formation keeps running the old release.

use std::path::Path;

use dyno_error::ErrorKind;
use dyno_sandbox::cgroup::DynoSize;
use dyno_state::model::Release;
use dyno_supervisor::{self as supervisor, State};

use super::{Daemon, DaemonError, Slot, RELEASE_PHASE};

impl Daemon {
    /// The release phase of a release about to be made from `next` (its slug, process types
    /// and config), when its Procfile has one.
    pub(super) async fn release_phase_of(
        &self,
        name: &str,
        next: &Release,
    ) -> Result<(), DaemonError> {
        match (next.process_types.get(RELEASE_PHASE), &next.slug) {
            (Some(command), Some(slug)) => {
                self.release_phase(name, command, &slug.path, next).await
            }
            _ => Ok(()),
        }
    }

    /// Runs `command` on `slug` with `with`'s config and waits for it to end.
    pub(super) async fn release_phase(
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
                "the release phase failed: {why}; nothing was released. See `dyno logs -a {name} \
                 --ps release.1`, fix it and try again"
            ),
        ))
    }
}
