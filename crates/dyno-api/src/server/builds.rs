//! Builds in Heroku's Platform API shapes: `POST /apps/{app}/sources` (a `put_url`/`get_url`
//! pair on this API's own host, whose secret is the credential, as Heroku's signed URLs are),
//! `POST /apps/{app}/builds` from a `source_blob` URL, `GET` of builds with their `status` and
//! `output_stream_url`, `DELETE /apps/{app}/build-cache`, and the app's buildpack installations
//! (`heroku buildpacks`, `buildpacks:add`, `:set`, `:remove`, `:clear`).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::routes::{json, list, plain, read_json, Failure, Resp};
use super::Platform;
use crate::error::ApiError;
use crate::heroku::UserRef;
use crate::types::AppName;

/// Largest source archive `PUT` to a `put_url` (Heroku's own limit is in the same range).
pub const MAX_SOURCE_BYTES: u64 = 512 << 20;

/// `POST /apps/{app}/sources`: where to upload an archive, and where it can be read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub source_blob: SourceUrls,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceUrls {
    pub get_url: String,
    pub put_url: String,
}

/// A build's source: a gzipped (or plain) tarball at `url`; `version` names it (a commit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBlob {
    pub url: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub version_description: Option<String>,
}

/// A buildpack as builds and installations name it: a URL (git, `.tgz`, `file://`) or a
/// directory of the daemon's host, or the name of an installed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackRef {
    pub url: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /apps/{app}/builds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCreate {
    pub source_blob: SourceBlob,
    /// Buildpacks for this build only; the app's installations when absent.
    #[serde(default)]
    pub buildpacks: Option<Vec<BuildpackRef>>,
}

/// `{"id": …}`: the release or slug a build made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: String,
}

/// A build as the API shows it. `status` is `pending`, `succeeded` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub id: String,
    pub app: IdRef,
    pub buildpacks: Option<Vec<BuildpackRef>>,
    pub created_at: String,
    pub updated_at: String,
    /// The build's output, streamed while it runs (a credential URL, like Heroku's).
    pub output_stream_url: String,
    pub release: Option<IdRef>,
    pub slug: Option<IdRef>,
    pub source_blob: SourceBlob,
    pub stack: String,
    pub status: String,
    pub user: UserRef,
}

/// One line of `heroku buildpacks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackInstallation {
    /// 0 first.
    pub ordinal: u32,
    pub buildpack: BuildpackRef,
}

/// `PUT /apps/{app}/buildpack-installations`: the whole new list, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackInstallationsUpdate {
    pub updates: Vec<BuildpackUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackUpdate {
    pub buildpack: String,
}

/// A source upload's bytes as they arrive; an `Err` ends it (the client broke off, or it is
/// over [`MAX_SOURCE_BYTES`]).
pub type SourceChunks = mpsc::Receiver<Result<Bytes, String>>;

/// The scheme and host this API was reached at (`http://127.0.0.1:5000`), for the URLs it
/// hands out: the `Host` the client sent (checked to be a plain host), and `https` when the
/// connection came over TLS (the server marks such requests with [`Tls`]).
pub fn base_url(headers: &HeaderMap, tls: bool) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// Marks a request that came over TLS (a request extension set by the TLS listener).
#[derive(Debug, Clone, Copy)]
pub struct Tls;

/// The request's base URL (see [`base_url`]).
pub(super) fn request_base(req: &Request<Incoming>) -> String {
    base_url(req.headers(), req.extensions().get::<Tls>().is_some())
}

/// The routes below `/apps/{app}/`: `sources`, `builds`, `build-cache`,
/// `buildpack-installations`.
pub(super) async fn app_build_route<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    name: AppName,
    rest: &[&str],
    path: &str,
    range: Option<&str>,
) -> Result<Resp, Failure> {
    let method = req.method().clone();
    let not_allowed = |allow| {
        (
            ApiError::method_not_allowed(method.as_str(), path, allow),
            Some(allow),
        )
    };
    let base = request_base(&req);
    match (rest, &method) {
        (["sources"], &Method::POST) => {
            let secret = platform.create_source(name).await.map_err(plain)?;
            json(
                StatusCode::CREATED,
                &Source {
                    source_blob: SourceUrls {
                        get_url: format!("{base}/sources/{secret}"),
                        put_url: format!("{base}/sources/{secret}"),
                    },
                },
            )
        }
        (["sources"], _) => Err(not_allowed("POST")),
        (["builds"], &Method::GET) => list(
            range,
            &platform.builds(name, base).await.map_err(plain)?,
            &["created_at", "id"],
        ),
        (["builds"], &Method::POST) => {
            let body: BuildCreate = read_json(req).await.map_err(plain)?;
            if body.source_blob.url.trim().is_empty() {
                return Err(plain(ApiError::invalid_params(
                    "Send {\"source_blob\":{\"url\":\"…\",\"version\":\"…\"}}: the URL of a \
                     source tarball (from POST /apps/{app}/sources).",
                )));
            }
            json(
                StatusCode::CREATED,
                &platform
                    .create_build(name, body, base)
                    .await
                    .map_err(plain)?,
            )
        }
        (["builds"], _) => Err(not_allowed("GET, POST")),
        (["builds", id], &Method::GET) => json(
            StatusCode::OK,
            &platform
                .build(name, (*id).to_owned(), base)
                .await
                .map_err(plain)?,
        ),
        (["builds", _], _) => Err(not_allowed("GET")),
        (["build-cache"], &Method::DELETE) => {
            platform.purge_build_cache(name).await.map_err(plain)?;
            json(StatusCode::ACCEPTED, &serde_json::json!({}))
        }
        (["build-cache"], _) => Err(not_allowed("DELETE")),
        (["buildpack-installations"], &Method::GET) => list(
            range,
            &platform.buildpacks(name).await.map_err(plain)?,
            &["ordinal"],
        ),
        (["buildpack-installations"], &Method::PUT) => {
            let body: BuildpackInstallationsUpdate = read_json(req).await.map_err(plain)?;
            let urls = body.updates.into_iter().map(|u| u.buildpack).collect();
            json(
                StatusCode::OK,
                &platform.set_buildpacks(name, urls).await.map_err(plain)?,
            )
        }
        (["buildpack-installations"], _) => Err(not_allowed("GET, PUT")),
        _ => Err(plain(ApiError::not_found(format!("No route for {path}.")))),
    }
}

/// `/sources/{secret}`: `PUT` stores an upload, `GET` reads it back. The secret is the
/// credential (no token), as on Heroku's signed URLs.
pub(super) async fn source_route<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    secret: &str,
) -> Result<Resp, Failure> {
    match *req.method() {
        Method::PUT => {
            let declared = req
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_SOURCE_BYTES) {
                return Err(plain(source_too_large()));
            }
            let (tx, rx) = mpsc::channel(16);
            let pump = tokio::spawn(pump_body(req.into_body(), tx));
            let stored = platform.put_source(secret.to_owned(), rx).await;
            pump.abort();
            stored.map_err(plain)?;
            Ok(empty(StatusCode::OK))
        }
        Method::GET => {
            let chunks = platform
                .get_source(secret.to_owned())
                .await
                .map_err(plain)?;
            let mut resp = Response::new(super::log_sessions::ChannelBody(chunks).boxed());
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(resp)
        }
        _ => Err((
            ApiError::method_not_allowed(req.method().as_str(), req.uri().path(), "GET, PUT"),
            Some("GET, PUT"),
        )),
    }
}

fn source_too_large() -> ApiError {
    ApiError::new(
        413,
        crate::error::ids::REQUEST_TOO_LARGE,
        format!(
            "The source archive is larger than {} MB; leave build output, dependencies and \
             data out of it (.slugignore) or keep them elsewhere.",
            MAX_SOURCE_BYTES >> 20
        ),
    )
}

/// Moves the request body into `tx`, counting: over [`MAX_SOURCE_BYTES`] ends it with an error.
async fn pump_body(mut body: Incoming, tx: mpsc::Sender<Result<Bytes, String>>) {
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) => {
                let _ = tx.send(Err(format!("the upload broke off: {e}"))).await;
                return;
            }
        };
        total += chunk.len() as u64;
        if total > MAX_SOURCE_BYTES {
            let _ = tx.send(Err(source_too_large().message)).await;
            return;
        }
        if tx.send(Ok(chunk)).await.is_err() {
            return;
        }
    }
}

/// `GET /build-outputs/{secret}`: the build's output so far, then the rest as it comes, until
/// the build ends (`text/plain`, chunked).
pub(super) async fn output_route<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    secret: &str,
) -> Result<Resp, Failure> {
    if req.method() != Method::GET {
        return Err((
            ApiError::method_not_allowed(req.method().as_str(), req.uri().path(), "GET"),
            Some("GET"),
        ));
    }
    let rx = platform
        .build_output(secret.to_owned())
        .await
        .map_err(plain)?;
    let mut resp = Response::new(super::log_sessions::ChannelBody(rx).boxed());
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(http_body_util::Full::new(Bytes::new()).boxed());
    *resp.status_mut() = status;
    resp
}
