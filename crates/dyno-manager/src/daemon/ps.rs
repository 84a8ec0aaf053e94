//! `ps`: an app's dynos as the API shows them, from the supervisors' live states.

use dyno_api::Dyno;

use super::{Daemon, DaemonError, ONE_OFF};

impl Daemon {
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
            .map(|d| {
                let status = d.handle.status.borrow();
                let since = dyno_api::rfc3339(status.since);
                Dyno {
                    name: d.name.clone(),
                    process_type: d.process.clone(),
                    state: status.state.as_str().to_string(),
                    release: dyno_api::heroku::ReleaseRef {
                        id: String::new(),
                        version: d.release,
                    },
                    size: d.size.name.to_string(),
                    command: (release.process_types.get(&d.process).cloned()).unwrap_or_default(),
                    created_at: since.clone(),
                    updated_at: since,
                    ..Default::default()
                }
            })
            .collect();
        list.sort_by(|a, b| (&a.process_type, &a.name).cmp(&(&b.process_type, &b.name)));
        Ok(list)
    }
}
