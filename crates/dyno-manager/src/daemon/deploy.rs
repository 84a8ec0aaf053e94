//! Deploys: a tree (a directory of the host, or a build's slug) copied into the slug store and
//! released; the formation rolls to it.

use super::*;

impl Daemon {
    /// A directory of the host deployed as it is (`dyno up`, `POST /releases {"dir"}`): it
    /// becomes an immutable slug and a new release; the formation rolls to it.
    pub async fn deploy(&self, name: &str, dir: &Path) -> Result<Release, DaemonError> {
        self.deploy_with(name, dir, Vec::new()).await
    }

    /// [`Daemon::deploy`], with the formation changed in the same step (one convergence):
    /// `dyno up DIR --formation web=0,worker=1` starts no web dyno.
    pub async fn deploy_with(
        &self,
        name: &str,
        dir: &Path,
        formation: Vec<ScaleChange>,
    ) -> Result<Release, DaemonError> {
        let types = procfile::read_procfile(&dir.join("Procfile"))
            .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))?;
        let types = types.into_iter().map(|t| (t.name, t.command)).collect();
        self.deploy_tree(name, dir, types, None, Default::default(), formation)
            .await
    }

    /// Deploys the tree at `dir` (copied into the slug store) running `types` (the Procfile's,
    /// or a build's), as a release described as `description` (`Deploy <digest>` when `None`),
    /// with the formation changed in the same step.
    pub(super) async fn deploy_tree(
        &self,
        name: &str,
        dir: &Path,
        types: Vec<(String, String)>,
        description: Option<String>,
        default_config: BTreeMap<String, String>,
        mut formation: Vec<ScaleChange>,
    ) -> Result<Release, DaemonError> {
        let app = app_name(name)?;
        let mut process_types = Vec::new();
        for (type_name, command) in &types {
            let pt = ProcessType::parse(type_name)
                .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))?;
            process_types.push((pt, command.clone()));
        }
        self.with_store({
            let app = app.clone();
            move |s| s.app(&app)
        })
        .await?;
        let dest = slug::new_slug_path(&self.slugs_dir(), app.as_str());
        let src = dir.to_path_buf();
        let copy_to = dest.clone();
        let data_dir = self.options.data_dir.clone();
        let digest =
            tokio::task::spawn_blocking(move || slug::copy_into_store(&src, &copy_to, &data_dir))
                .await
                .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))??;
        let slug = Slug::new(&dest, &digest)
            .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?;
        let release = NewRelease {
            slug,
            process_types,
            description: description.unwrap_or_else(|| format!("Deploy {}", &digest[..7])),
            default_config,
        };
        let runs_phase = types.iter().any(|(t, _)| t == RELEASE_PHASE);
        let made = if runs_phase {
            self.make_release(name, ReleaseChange::Deploy(release), true)
                .await
        } else {
            // Release and formation in one step (one transaction).
            let app = app.clone();
            let formation = std::mem::take(&mut formation);
            self.with_store(move |s| {
                let release = s.create_release(&app, release)?;
                if !formation.is_empty() {
                    s.scale(&app, &formation)?;
                }
                Ok(release)
            })
            .await
        };
        let release = match made {
            Ok(release) => release,
            // The failed release stays listed, with its slug.
            Err(e) if e.kind == ErrorKind::ReleaseFailed => return Err(e),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dest);
                return Err(e);
            }
        };
        if !formation.is_empty() {
            self.with_store(move |s| s.scale(&app, &formation)).await?;
        }
        self.routes.set_blank(name, false);
        self.announce_release(name, &release);
        self.converge(name).await?;
        Ok(release)
    }
}
