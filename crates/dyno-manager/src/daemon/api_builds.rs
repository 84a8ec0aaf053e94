//! Builds, source uploads and buildpack installations in the Platform API's shapes.

use dyno_api::server::builds::{
    Build, BuildCreate, BuildpackInstallation, BuildpackRef, IdRef, SourceBlob, SourceChunks,
};
use dyno_api::{ApiError, AppName};
use dyno_state::ids::release_uuid;

use super::api::DaemonApi;
use super::api_shapes::time;

/// A build as the API shows it; `base` is the API's own URL.
fn build_shape(b: &dyno_state::Build, owner: &dyno_api::heroku::UserRef, base: &str) -> Build {
    Build {
        id: b.id.clone(),
        app: IdRef {
            id: b.app_uuid.clone(),
        },
        buildpacks: Some(
            b.buildpacks
                .iter()
                .map(|url| BuildpackRef {
                    url: url.clone(),
                    name: Some(url.clone()),
                })
                .collect(),
        ),
        created_at: dyno_api::rfc3339(time(b.created_at_ms)),
        updated_at: dyno_api::rfc3339(time(b.updated_at_ms)),
        output_stream_url: format!("{base}/build-outputs/{}", b.output_secret),
        release: b.release_version.map(|v| IdRef {
            id: release_uuid(&b.app_uuid, v),
        }),
        slug: None,
        source_blob: SourceBlob {
            url: b.source_url.clone(),
            version: b.source_version.clone(),
            checksum: None,
            version_description: None,
        },
        stack: "heroku-22".to_string(),
        status: b.status.as_str().to_string(),
        user: owner.clone(),
    }
}

fn installations(urls: Vec<String>) -> Vec<BuildpackInstallation> {
    urls.into_iter()
        .enumerate()
        .map(|(i, url)| BuildpackInstallation {
            ordinal: i as u32,
            buildpack: BuildpackRef {
                name: Some(url.clone()),
                url,
            },
        })
        .collect()
}

impl DaemonApi {
    pub(super) async fn create_source_out(&self, name: AppName) -> Result<String, ApiError> {
        self.daemon.app(name.as_str()).await?;
        let dir = self.daemon.sources_dir();
        Ok(self.daemon.builds.sources.create(name.as_str(), &dir)?)
    }

    pub(super) async fn put_source_out(
        &self,
        secret: String,
        chunks: SourceChunks,
    ) -> Result<(), ApiError> {
        let data_dir = self.daemon.options.data_dir.clone();
        Ok(self
            .daemon
            .builds
            .sources
            .put(&secret, chunks, &data_dir)
            .await?)
    }

    pub(super) async fn get_source_out(
        &self,
        secret: String,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        Ok(self.daemon.builds.sources.get(&secret).await?)
    }

    pub(super) async fn create_build_out(
        &self,
        name: AppName,
        body: BuildCreate,
        base: String,
    ) -> Result<Build, ApiError> {
        let buildpacks = body
            .buildpacks
            .map(|list| list.into_iter().map(|b| b.url).collect());
        let build = self
            .daemon
            .start_build(
                name.as_str(),
                &body.source_blob.url,
                body.source_blob.version,
                buildpacks,
            )
            .await?;
        Ok(build_shape(&build, &self.owner_ref().await?, &base))
    }

    pub(super) async fn builds_out(
        &self,
        name: AppName,
        base: String,
    ) -> Result<Vec<Build>, ApiError> {
        let name = super::app_name(name.as_str())?;
        let builds = self.daemon.with_store(move |s| s.builds(&name)).await?;
        let owner = self.owner_ref().await?;
        Ok(builds
            .iter()
            .map(|b| build_shape(b, &owner, &base))
            .collect())
    }

    pub(super) async fn build_out(
        &self,
        name: AppName,
        id: String,
        base: String,
    ) -> Result<Build, ApiError> {
        let name = super::app_name(name.as_str())?;
        let build = self.daemon.with_store(move |s| s.build(&name, &id)).await?;
        Ok(build_shape(&build, &self.owner_ref().await?, &base))
    }

    pub(super) async fn build_output_out(
        &self,
        secret: String,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        let build = self
            .daemon
            .with_store(move |s| s.build_by_output_secret(&secret))
            .await?;
        Ok(self.daemon.build_output(&build))
    }

    pub(super) async fn buildpacks_out(
        &self,
        name: AppName,
    ) -> Result<Vec<BuildpackInstallation>, ApiError> {
        let name = super::app_name(name.as_str())?;
        let urls = self.daemon.with_store(move |s| s.buildpacks(&name)).await?;
        Ok(installations(urls))
    }

    pub(super) async fn set_buildpacks_out(
        &self,
        name: AppName,
        urls: Vec<String>,
    ) -> Result<Vec<BuildpackInstallation>, ApiError> {
        let mut checked = Vec::new();
        for url in urls {
            let url = url.trim().to_string();
            if url.is_empty() || url.len() > 2048 || url.chars().any(char::is_control) {
                return Err(ApiError::invalid_params(
                    "A buildpack is a directory of the daemon's host, a git or .tgz URL, or the \
                     name of an installed one (e.g. `python`).",
                ));
            }
            if !checked.contains(&url) {
                checked.push(url);
            }
        }
        let name = super::app_name(name.as_str())?;
        let urls = self
            .daemon
            .with_store(move |s| s.set_buildpacks(&name, &checked))
            .await?;
        Ok(installations(urls))
    }
}
