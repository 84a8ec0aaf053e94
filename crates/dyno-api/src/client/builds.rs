//! The client's methods for builds: source uploads, builds and their output, the build cache
//! and the app's buildpacks, on Heroku's paths.

use bytes::Bytes;
use hyper::Method;

use crate::server::builds::{
    Build, BuildCreate, BuildpackInstallation, BuildpackInstallationsUpdate, BuildpackRef,
    BuildpackUpdate, Source, SourceBlob,
};

use super::{ApiClient, ClientError};

/// How long [`ApiClient::settled_build`] waits for a build to leave `pending`.
pub const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl ApiClient {
    /// `POST /apps/{app}/sources`: where to upload a source archive.
    pub async fn create_source(&self, app: &str) -> Result<Source, ClientError> {
        self.post(&format!("/apps/{app}/sources"), &serde_json::json!({}))
            .await
    }

    /// `PUT` of an archive to a source's `put_url`, over this client's own connection (the URL
    /// names this daemon; only its path is used).
    pub async fn upload_source(&self, put_url: &str, archive: Bytes) -> Result<(), ClientError> {
        let resp = self
            .request(
                Method::PUT,
                path_of(put_url),
                Some("application/octet-stream"),
                archive,
            )
            .await?;
        if resp.status == 200 {
            return Ok(());
        }
        self.decode::<serde_json::Value>(resp).map(|_| ())
    }

    /// `POST /apps/{app}/builds` of an uploaded source; `version` names it (a commit).
    pub async fn create_build(
        &self,
        app: &str,
        source_url: &str,
        version: Option<&str>,
        buildpacks: Option<Vec<String>>,
    ) -> Result<Build, ClientError> {
        let body = BuildCreate {
            source_blob: SourceBlob {
                url: source_url.to_owned(),
                version: version.map(str::to_owned),
                ..Default::default()
            },
            buildpacks: buildpacks.map(|urls| {
                urls.into_iter()
                    .map(|url| BuildpackRef { url, name: None })
                    .collect()
            }),
        };
        self.post(&format!("/apps/{app}/builds"), &body).await
    }

    /// A source archive built: uploaded as a new source of `app` (`POST …/sources`, `PUT`) and
    /// built from it (`POST …/builds`), named `version` (a commit); the build, `pending`.
    pub async fn build_archive(
        &self,
        app: &str,
        archive: Bytes,
        version: Option<&str>,
    ) -> Result<Build, ClientError> {
        let source = self.create_source(app).await?;
        self.upload_source(&source.source_blob.put_url, archive)
            .await?;
        self.create_build(app, &source.source_blob.get_url, version, None)
            .await
    }

    /// The build once it is no longer `pending` (its output stream ends as it settles; this
    /// waits a little for a daemon that records the end after it), or as it is after
    /// [`SETTLE_WAIT`].
    pub async fn settled_build(&self, app: &str, id: &str) -> Result<Build, ClientError> {
        let start = std::time::Instant::now();
        loop {
            let build = self.build(app, id).await?;
            if build.status != "pending" || start.elapsed() > SETTLE_WAIT {
                return Ok(build);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// `GET /apps/{app}/builds`, oldest first.
    pub async fn builds(&self, app: &str) -> Result<Vec<Build>, ClientError> {
        self.get_all(&format!("/apps/{app}/builds"), None).await
    }

    /// `GET /apps/{app}/builds/{id}`.
    pub async fn build(&self, app: &str, id: &str) -> Result<Build, ClientError> {
        self.get(&format!("/apps/{app}/builds/{id}")).await
    }

    /// A build's `output_stream_url`, line by line until the build ends.
    pub async fn stream_build_output(
        &self,
        output_stream_url: &str,
        on_lines: impl FnMut(&[String]),
    ) -> Result<(), ClientError> {
        self.stream_lines(path_of(output_stream_url), on_lines)
            .await
    }

    /// `DELETE /apps/{app}/build-cache`.
    pub async fn purge_build_cache(&self, app: &str) -> Result<(), ClientError> {
        self.delete::<serde_json::Value>(&format!("/apps/{app}/build-cache"))
            .await
            .map(|_| ())
    }

    /// `GET /apps/{app}/buildpack-installations`.
    pub async fn buildpacks(&self, app: &str) -> Result<Vec<BuildpackInstallation>, ClientError> {
        self.get_all(&format!("/apps/{app}/buildpack-installations"), None)
            .await
    }

    /// `PUT /apps/{app}/buildpack-installations`: the whole list, in order.
    pub async fn set_buildpacks(
        &self,
        app: &str,
        urls: &[String],
    ) -> Result<Vec<BuildpackInstallation>, ClientError> {
        let body = BuildpackInstallationsUpdate {
            updates: urls
                .iter()
                .map(|u| BuildpackUpdate {
                    buildpack: u.clone(),
                })
                .collect(),
        };
        self.send_json(
            Method::PUT,
            &format!("/apps/{app}/buildpack-installations"),
            &body,
        )
        .await
    }
}

/// The path of a URL this daemon handed out (`http://HOST/sources/…` → `/sources/…`).
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_of_urls() {
        assert_eq!(
            super::path_of("http://127.0.0.1:5000/sources/ab"),
            "/sources/ab"
        );
        assert_eq!(
            super::path_of("https://h/build-outputs/x"),
            "/build-outputs/x"
        );
        assert_eq!(super::path_of("/sources/ab"), "/sources/ab");
        assert_eq!(super::path_of("http://h"), "/");
    }
}
