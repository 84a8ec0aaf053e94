//! dyno's control-plane API (issue 6): HTTP/JSON on a unix socket (`/run/dyno/api.sock`, 0600),
//! optionally on TCP with a bearer token, and the client the CLI uses.
//!
//! - [`error`] has [`ApiError`], `{"id":"not_found","message":"…"}` with stable ids.
//! - [`types`] has the request/response bodies ([`App`], [`AppCreate`]) and the app name rule.
//! - [`server`] has the [`Platform`] trait the daemon implements over its store, and
//!   [`serve_unix`] / [`serve_tcp`] / [`serve_tls`]; [`server::git`] serves the apps' git
//!   repositories (`git push`) on the same listeners.
//! - [`client`] has [`ApiClient`].
//!
//! Endpoints: `GET /apps`, `POST /apps`, `GET /apps/{name}`, `DELETE /apps/{name}` (see
//! [`types`] for the bodies).

#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod heroku;
mod logquery;
pub mod rendezvous;
pub mod server;
pub mod types;

pub use client::{ApiClient, ClientError, RawResponse, DEFAULT_SOCKET};
pub use error::{ids, ApiError};
pub use server::attach::{exit_status_line, AttachIo, AttachOptions, AttachRelay};
pub use server::{
    bind_unix, http1_acceptor, serve_tcp, serve_tls, serve_unix, serve_unix_listener,
    serve_unix_listener_with, Platform, ServeError, UnixApiListener, HEADER_READ_TIMEOUT,
    MAX_BODY_BYTES,
};
pub use types::{
    rfc3339, validate_app_name, validate_feature_name, web_url, App, AppCreate, AppFeature,
    AppFeatureUpdate, AppName, AppUpdate, Deploy, Dyno, DynoCreate, Formation, FormationUpdate,
    FormationUpdates, LogDrain, LogDrainCreate, LogQuery, Release, Utc,
};
