//! `heroku apps:rename NEW` (`PATCH /apps/OLD {"name": NEW}`): everything the app's name keys
//! follows it — the store's rows, the daemon's runtime, the router's routes (`NEW.localhost`
//! and the custom domains) and SNI certificates, the log hub's lines, tails, sessions and
//! drains — and the old name is free at once, as on Heroku.
//!
//! The formation's dynos restart under the new name: a dyno's definition carries its app's
//! name (its supervisor records every incarnation under it, restarts and cycles with it) and
//! the sandbox's uid and system-call profile come from it, none of which changes under a
//! running process. They restart as a release does: in place, or with `preboot` the new ones
//! first while the old web dynos keep serving under the new name. One-off dynos run on to
//! their end (they are never restarted); their log lines go to the new name.

use super::*;

impl Daemon {
    pub async fn rename_app(&self, name: &str, new_name: &str) -> Result<App, DaemonError> {
        let from = app_name(name)?;
        let to = app_name(new_name)?;
        if from == to {
            return self.app(name).await;
        }
        // No convergence of the app runs meanwhile.
        let turn = self.turn_of(from.as_str());
        let _turn = turn.lock().await;
        let app = self
            .with_store({
                let (from, to) = (from.clone(), to.clone());
                move |s| s.rename_app(&from, &to)
            })
            .await?;
        let (from, to) = (from.as_str(), to.as_str());

        let mut apps = self.apps.lock().await;
        let mut runtime = apps.remove(from).unwrap_or_else(|| self.runtime(to));
        *runtime.log_name.write().unwrap_or_else(|e| e.into_inner()) = to.to_string();
        // The old name leaves the router; the app's web dynos are followed under the new one.
        runtime.web.close();
        runtime.web = WebDynos::new(
            self.routes.clone(),
            to.to_string(),
            self.options.port,
            self.options.web_up.clone(),
        );
        // New dynos are made for the new name (its system-call profile); the log channel,
        // ledger and network watch stay.
        let old = runtime.platform.clone();
        let mut platform = Platform::new(
            self.machine.host_for(to, &self.options),
            old.lifecycle.clone(),
            old.logs.clone(),
        )
        .with_netwatch(old.netwatch.clone());
        platform.ledger = old.ledger.clone();
        runtime.platform = Arc::new(platform);
        let (one_offs, formation): (Vec<Running>, Vec<Running>) =
            std::mem::take(&mut runtime.dynos)
                .into_iter()
                .partition(|d| d.process == ONE_OFF);
        runtime.dynos = one_offs;
        if app.preboot {
            for (i, d) in formation.iter().enumerate() {
                if d.process == "web" && !d.handle.is_finished() {
                    runtime.web.follow(
                        format!("{}#renamed{i}", d.name),
                        d.name.clone(),
                        d.handle.status.clone(),
                    );
                }
            }
        }
        apps.insert(to.to_string(), runtime);
        drop(apps);
        self.lock_turns().remove(from);
        self.router_metrics.remove_app(from);

        for drain in self.hub.rename_app(from, to) {
            if let Err(e) =
                self.hub
                    .add_drain_with_token(to, &drain.url, &drain.token, self.drain_options())
            {
                tracing::warn!(app = %to, error = %e, "drain not restarted after a rename");
            }
        }
        self.route(&app);
        // The router's SNI certificates are keyed by the app's name (the store's by its id).
        self.certs.remove_app(from);
        self.serve_certificates(to).await?;
        let deployed = self.current_release(to).await?.slug.is_some();
        self.routes.set_blank(to, !deployed);

        if app.preboot {
            self.converge(to).await?;
            stop_all(formation).await;
        } else {
            // Requests for the new name wait for its new web dynos meanwhile (not H14).
            let web = formation.iter().filter(|d| d.process == "web").count();
            let _starting_soon = self
                .apps
                .lock()
                .await
                .get(to)
                .map(|runtime| runtime.web.announce_starting(web));
            stop_all(formation).await;
            self.converge(to).await?;
        }
        Ok(app)
    }
}
