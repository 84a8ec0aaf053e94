//! The API server: hyper 1.x HTTP/1.1 over a unix socket (0600, the file mode is the
//! authentication) or over TCP with a bearer token. Generic over the [`Platform`] that holds the
//! state, so this crate knows nothing about SQLite.

mod app_routes;
pub mod attach;
pub mod builds;
pub mod git;
mod listen;
pub mod log_sessions;
mod routes;
pub mod sni_endpoints;
mod unix;
pub mod v3;

use std::future::Future;
use std::time::Duration;

use crate::error::ApiError;
use std::collections::BTreeMap;

use crate::heroku::{Account, Domain, DomainCreate, ReleaseName};
use crate::types::{
    App, AppFeature, AppFeatureUpdate, AppName, AppUpdate, Deploy, Dyno, DynoCreate, Formation,
    FormationUpdates, LogDrain, LogDrainCreate, LogQuery, Release,
};

pub use listen::{
    http1_acceptor, serve_tcp, serve_tls, serve_unix, serve_unix_listener,
    serve_unix_listener_with, Connection,
};
pub use unix::{bind_unix, UnixApiListener};

/// Largest request body accepted; more is `413 request_too_large`.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// A client must send a complete request head within this time, or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest bearer token `serve_tcp` accepts.
pub const MIN_TOKEN_LEN: usize = 16;
/// Connections served at once per listener; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// hyper's read buffer, which bounds the request head.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the API needs from the daemon's state. Names given to it are already validated.
///
/// Errors are returned as [`ApiError`] and sent as they are: use [`ApiError::app_not_found`],
/// [`ApiError::name_taken`], [`ApiError::read_only`], [`ApiError::disk_full`],
/// [`ApiError::internal`]. A method that fails must leave the state unchanged.
///
/// Implement with `async fn` in the `impl` block; the futures must be `Send`.
pub trait Platform: Send + Sync + 'static {
    /// Every app, sorted by name.
    fn list_apps(&self) -> impl Future<Output = Result<Vec<App>, ApiError>> + Send;
    /// Create an app; `409 conflict` ([`ApiError::name_taken`]) when the name exists.
    fn create_app(&self, name: AppName) -> impl Future<Output = Result<App, ApiError>> + Send;
    /// Destroy an app and return it as it was; `404` ([`ApiError::app_not_found`]) if unknown.
    fn destroy_app(&self, name: AppName) -> impl Future<Output = Result<App, ApiError>> + Send;
    /// One app; `404` ([`ApiError::app_not_found`]) if unknown.
    fn app(&self, name: AppName) -> impl Future<Output = Result<App, ApiError>> + Send;
    /// Deploy a directory of the host as a new release; the formation rolls to it.
    fn deploy(
        &self,
        name: AppName,
        deploy: Deploy,
    ) -> impl Future<Output = Result<Release, ApiError>> + Send {
        let _ = (name, deploy);
        async { Err(not_here("deploy")) }
    }
    /// The app's releases, newest first.
    fn releases(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<Vec<Release>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("releases")) }
    }
    /// The app's formation.
    fn formation(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<Vec<Formation>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("formation")) }
    }
    /// `ps:scale` / `ps:type`: all updates or none.
    fn scale(
        &self,
        name: AppName,
        updates: FormationUpdates,
    ) -> impl Future<Output = Result<Vec<Formation>, ApiError>> + Send {
        let _ = (name, updates);
        async { Err(not_here("scale")) }
    }
    /// The app's running dynos.
    fn dynos(&self, name: AppName) -> impl Future<Output = Result<Vec<Dyno>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("dynos")) }
    }
    /// The app's recent log lines (as `logs`), then every new one as it comes, until the
    /// receiver is dropped (`logs --tail`).
    fn tail(
        &self,
        name: AppName,
        query: LogQuery,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<String>, ApiError>> + Send {
        let _ = (name, query);
        async { Err(not_here("log tails")) }
    }
    /// The app's recent log lines, oldest first.
    fn logs(
        &self,
        name: AppName,
        query: LogQuery,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send {
        let _ = (name, query);
        async { Err(not_here("logs")) }
    }
    /// `maintenance:on` / `off`.
    fn update_app(
        &self,
        name: AppName,
        update: AppUpdate,
    ) -> impl Future<Output = Result<App, ApiError>> + Send {
        let _ = (name, update);
        async { Err(not_here("app updates")) }
    }
    /// The app's config vars.
    fn config(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("config")) }
    }
    /// Set (`Some`) and unset (`None`) config vars; the new config.
    fn update_config(
        &self,
        name: AppName,
        changes: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, ApiError>> + Send {
        let _ = (name, changes);
        async { Err(not_here("config")) }
    }
    /// Roll back to a release (as a new release).
    fn rollback(
        &self,
        name: AppName,
        version: u32,
    ) -> impl Future<Output = Result<Release, ApiError>> + Send {
        let _ = (name, version);
        async { Err(not_here("rollback")) }
    }
    /// One release, by version or id; `404 not_found` when the app has none such.
    fn release(
        &self,
        name: AppName,
        which: ReleaseName,
    ) -> impl Future<Output = Result<Release, ApiError>> + Send {
        let _ = (name, which);
        async { Err(not_here("releases")) }
    }
    /// The config vars a release runs with.
    fn release_config(
        &self,
        name: AppName,
        which: ReleaseName,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, ApiError>> + Send {
        let _ = (name, which);
        async { Err(not_here("releases")) }
    }
    /// Opens a log session of the app for `query`; its secret (the last segment of its URL).
    fn open_log_session(
        &self,
        name: AppName,
        query: LogQuery,
    ) -> impl Future<Output = Result<String, ApiError>> + Send {
        let _ = (name, query);
        async { Err(not_here("log sessions")) }
    }
    /// The app and query of an open log session; `404 not_found` for an unknown or expired one.
    fn log_session(
        &self,
        secret: String,
    ) -> impl Future<Output = Result<(AppName, LogQuery), ApiError>> + Send {
        let _ = secret;
        async { Err(not_here("log sessions")) }
    }
    /// The account every token acts as (`GET /account`).
    fn account(&self) -> impl Future<Output = Result<Account, ApiError>> + Send {
        async { Err(not_here("accounts")) }
    }
    /// The name of the app whose id is `id` (a UUID): the API names an app by either.
    fn app_name_of(&self, id: String) -> impl Future<Output = Result<AppName, ApiError>> + Send {
        let _ = id;
        async { Err(not_here("app ids")) }
    }
    /// Routes a custom domain to the app; `422` for a name another app has.
    fn add_domain(
        &self,
        name: AppName,
        domain: DomainCreate,
    ) -> impl Future<Output = Result<Domain, ApiError>> + Send {
        let _ = (name, domain);
        async { Err(not_here("domains")) }
    }
    /// Stops routing a custom domain (named by hostname or id) to the app; the domain as it was.
    fn remove_domain(
        &self,
        name: AppName,
        domain: String,
    ) -> impl Future<Output = Result<Domain, ApiError>> + Send {
        let _ = (name, domain);
        async { Err(not_here("domains")) }
    }
    /// The app's domains: its own name under the router's domain, then custom ones.
    fn domains(&self, name: AppName) -> impl Future<Output = Result<Vec<Domain>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("domains")) }
    }
    /// Associates a custom domain (hostname or id) with one of the app's SNI endpoints (name
    /// or id), or with none; `422` when the endpoint's certificate does not cover it.
    fn update_domain(
        &self,
        name: AppName,
        domain: String,
        update: sni_endpoints::DomainUpdate,
    ) -> impl Future<Output = Result<Domain, ApiError>> + Send {
        let _ = (name, domain, update);
        async { Err(not_here("domains")) }
    }
    /// The app's SNI endpoints (certificates the router serves by SNI), oldest first.
    fn sni_endpoints(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<Vec<sni_endpoints::SniEndpoint>, ApiError>> + Send {
        let _ = name;
        async { Ok(Vec::new()) }
    }
    /// `certs:add`: a checked chain and key (`422` for a bad one, the state unchanged).
    fn add_sni_endpoint(
        &self,
        name: AppName,
        cert: sni_endpoints::SniEndpointCreate,
    ) -> impl Future<Output = Result<sni_endpoints::SniEndpoint, ApiError>> + Send {
        let _ = (name, cert);
        async { Err(not_here("SNI endpoints")) }
    }
    /// `certs:update`: a new chain and key for an endpoint (name or id).
    fn update_sni_endpoint(
        &self,
        name: AppName,
        which: String,
        cert: sni_endpoints::SniEndpointCreate,
    ) -> impl Future<Output = Result<sni_endpoints::SniEndpoint, ApiError>> + Send {
        let _ = (name, which, cert);
        async { Err(not_here("SNI endpoints")) }
    }
    /// `certs:remove`: the endpoint as it was.
    fn remove_sni_endpoint(
        &self,
        name: AppName,
        which: String,
    ) -> impl Future<Output = Result<sni_endpoints::SniEndpoint, ApiError>> + Send {
        let _ = (name, which);
        async { Err(not_here("SNI endpoints")) }
    }
    /// Prometheus metrics, in the text exposition format.
    fn metrics(&self) -> impl Future<Output = Result<String, ApiError>> + Send {
        async { Err(not_here("metrics")) }
    }
    /// Start a one-off dyno.
    fn run(
        &self,
        name: AppName,
        dyno: DynoCreate,
    ) -> impl Future<Output = Result<Dyno, ApiError>> + Send {
        let _ = (name, dyno);
        async { Err(not_here("one-off dynos")) }
    }
    /// Claims the attached one-off behind `secret` (once): its relay, for the client's
    /// connection. `404 not_found` for an unknown, claimed or expired secret.
    fn attach(
        &self,
        secret: String,
    ) -> impl Future<Output = Result<attach::AttachRelay, ApiError>> + Send {
        let _ = secret;
        async { Err(not_here("attached one-off dynos")) }
    }
    /// The app's log drains.
    fn drains(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<Vec<LogDrain>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("log drains")) }
    }
    /// Add a log drain.
    fn add_drain(
        &self,
        name: AppName,
        drain: LogDrainCreate,
    ) -> impl Future<Output = Result<LogDrain, ApiError>> + Send {
        let _ = (name, drain);
        async { Err(not_here("log drains")) }
    }
    /// Remove a log drain by token (or URL).
    fn remove_drain(
        &self,
        name: AppName,
        token: String,
    ) -> impl Future<Output = Result<LogDrain, ApiError>> + Send {
        let _ = (name, token);
        async { Err(not_here("log drains")) }
    }
    /// Restart all dynos (`None`), a process type's (`web`) or one (`web.1`).
    fn restart(
        &self,
        name: AppName,
        which: Option<String>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        let _ = (name, which);
        async { Err(not_here("restart")) }
    }
    /// The app's Heroku Labs features and whether each is on (`dyno labs`).
    fn features(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<Vec<AppFeature>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("labs features")) }
    }
    /// One feature; `404 not_found` naming the features there are, for an unknown one. The
    /// feature name passed [`crate::validate_feature_name`].
    fn feature(
        &self,
        name: AppName,
        feature: String,
    ) -> impl Future<Output = Result<AppFeature, ApiError>> + Send {
        let _ = (name, feature);
        async { Err(not_here("labs features")) }
    }
    /// `labs:enable` / `labs:disable`: the feature as it is now.
    fn update_feature(
        &self,
        name: AppName,
        feature: String,
        update: AppFeatureUpdate,
    ) -> impl Future<Output = Result<AppFeature, ApiError>> + Send {
        let _ = (name, feature, update);
        async { Err(not_here("labs features")) }
    }
    /// `POST /apps/{app}/sources`: a new upload slot; its secret (the last segment of its
    /// `put_url` and `get_url`).
    fn create_source(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<String, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("source uploads")) }
    }
    /// `PUT /sources/{secret}`: store the upload (all of it, or nothing when it breaks off);
    /// `404` for an unknown secret.
    fn put_source(
        &self,
        secret: String,
        chunks: builds::SourceChunks,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        let _ = (secret, chunks);
        async { Err(not_here("source uploads")) }
    }
    /// `GET /sources/{secret}`: the uploaded archive, in chunks.
    fn get_source(
        &self,
        secret: String,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError>> + Send
    {
        let _ = secret;
        async { Err(not_here("source uploads")) }
    }
    /// `POST /apps/{app}/builds`: starts a build (it runs on after the answer, `pending`);
    /// `base` is the API's own URL, for the build's `output_stream_url`.
    fn create_build(
        &self,
        name: AppName,
        build: builds::BuildCreate,
        base: String,
    ) -> impl Future<Output = Result<builds::Build, ApiError>> + Send {
        let _ = (name, build, base);
        async { Err(not_here("builds")) }
    }
    /// The app's builds, oldest first.
    fn builds(
        &self,
        name: AppName,
        base: String,
    ) -> impl Future<Output = Result<Vec<builds::Build>, ApiError>> + Send {
        let _ = (name, base);
        async { Err(not_here("builds")) }
    }
    /// One build by id; `404` for an unknown one.
    fn build(
        &self,
        name: AppName,
        id: String,
        base: String,
    ) -> impl Future<Output = Result<builds::Build, ApiError>> + Send {
        let _ = (name, id, base);
        async { Err(not_here("builds")) }
    }
    /// `GET /build-outputs/{secret}`: the build's output so far, then the rest until it ends.
    fn build_output(
        &self,
        secret: String,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError>> + Send
    {
        let _ = secret;
        async { Err(not_here("builds")) }
    }
    /// `DELETE /apps/{app}/build-cache`.
    fn purge_build_cache(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        let _ = name;
        async { Err(not_here("build caches")) }
    }
    /// The app's buildpacks, in order.
    fn buildpacks(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<Vec<builds::BuildpackInstallation>, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("buildpacks")) }
    }
    /// Replace the app's buildpacks (`[]` clears them: detection again).
    fn set_buildpacks(
        &self,
        name: AppName,
        urls: Vec<String>,
    ) -> impl Future<Output = Result<Vec<builds::BuildpackInstallation>, ApiError>> + Send {
        let _ = (name, urls);
        async { Err(not_here("buildpacks")) }
    }
    /// The app's git repository (made on first use), for `git push` / `git clone` over the
    /// API's listeners; `404` ([`ApiError::app_not_found`]) for an unknown app.
    fn git_repository(
        &self,
        name: AppName,
    ) -> impl Future<Output = Result<git::GitRepository, ApiError>> + Send {
        let _ = name;
        async { Err(not_here("git repositories")) }
    }
}

fn not_here(what: &str) -> ApiError {
    ApiError::new(
        501,
        crate::error::ids::INTERNAL_ERROR,
        format!("This daemon does not implement {what}."),
    )
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another daemon listens on {0}; stop it first (or give this one another socket path)")]
    AlreadyListening(std::path::PathBuf),
    #[error("{path} exists and is not a socket; remove it or choose another socket path")]
    NotASocket { path: std::path::PathBuf },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the API token is too short ({len} bytes, at least {MIN_TOKEN_LEN}); generate one with \
         `openssl rand -hex 32`"
    )]
    WeakToken { len: usize },
}
