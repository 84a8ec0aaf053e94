//! What the store takes and returns. Times are milliseconds since the Unix epoch.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use crate::validate::{shown, AppName, DrainUrl, ProcessType, Quantity, SizeName, ValidationError};

/// Config vars: name → value.
pub type Config = BTreeMap<String, String>;
/// A release's process types: type → command (from the Procfile).
pub type ProcessTypes = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct App {
    pub name: String,
    pub created_at_ms: i64,
    pub maintenance: bool,
    /// Heroku's labs feature `log-runtime-metrics`: load and memory samples in the app's log.
    pub metrics_enabled: bool,
    pub stack: String,
    /// The newest release's version (every app has v1 from its creation).
    pub current_release: u32,
    /// A number no other app of this store has now: the row's SQLite rowid (the store never
    /// runs VACUUM, which could renumber it). Heroku's numeric app id, as in runtime metrics'
    /// `dyno=heroku.<app id>.<dyno uuid>`.
    pub id: i64,
    /// Heroku's app id (the Platform API's `id`): a random UUID, kept across a rename.
    pub uuid: String,
    /// Its custom domains (`domains:add`), sorted.
    pub domains: Vec<String>,
    /// Heroku's app feature `preboot`: a new release's web dynos take traffic before the old
    /// ones stop. Off (the default): they are stopped first, then started again.
    pub preboot: bool,
}

/// A slug: the immutable copy of a deployed directory, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slug {
    pub path: PathBuf,
    /// `sha256:` and 64 lowercase hex digits.
    pub digest: String,
}

impl Slug {
    /// `path` must be absolute; `digest` is 64 hex digits, with or without `sha256:`.
    pub fn new(path: impl Into<PathBuf>, digest: &str) -> Result<Slug, ValidationError> {
        let path = path.into();
        if !path.is_absolute() || path.to_str().is_none() {
            return Err(ValidationError::new(
                "slug",
                format!(
                    "slug path {} must be an absolute UTF-8 path",
                    path.display()
                ),
            ));
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(ValidationError::new(
                "slug",
                format!(
                    "slug digest {} must be a SHA-256: 64 hex digits, optionally after `sha256:`",
                    shown(digest)
                ),
            ));
        }
        Ok(Slug {
            path,
            digest: format!("sha256:{}", hex.to_ascii_lowercase()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a deploy brings: the slug, its Procfile's process types and a description such as
/// Heroku's `Deploy 3f2a9c1`.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub slug: Slug,
    pub process_types: Vec<(ProcessType, String)>,
    pub description: String,
    /// Config vars the app gets where it has none of that name (a buildpack's `bin/release`
    /// `config_vars`); checked by the caller.
    pub default_config: Config,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub app: String,
    /// `v3` is 3.
    pub version: u32,
    pub created_at_ms: i64,
    /// `Initial release`, `Deploy 3f2a9c1`, `Set FOO, BAR config vars`, `Remove FOO config
    /// vars`, `Rollback to v3`.
    pub description: String,
    /// None until the first deploy.
    pub slug: Option<Slug>,
    pub process_types: ProcessTypes,
    pub config: Config,
    pub status: ReleaseStatus,
}

/// Heroku's release `status`: a release whose release phase runs is `pending` until the
/// command ends; one whose command failed or timed out stays in the list as `failed` and
/// never runs (the app's current release is its newest succeeded one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    Pending,
    Succeeded,
    Failed,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Pending => "pending",
            ReleaseStatus::Succeeded => "succeeded",
            ReleaseStatus::Failed => "failed",
        }
    }

    /// The store's text (its CHECK allows these three only).
    pub fn from_db(text: &str) -> Option<ReleaseStatus> {
        match text {
            "pending" => Some(ReleaseStatus::Pending),
            "succeeded" => Some(ReleaseStatus::Succeeded),
            "failed" => Some(ReleaseStatus::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormationEntry {
    pub process_type: String,
    pub quantity: u32,
    pub size: String,
}

/// One line of `ps:scale web=3 worker=1:Standard-2X` / `ps:type worker=Performance-M`: a new
/// quantity, a new size, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleChange {
    pub process_type: ProcessType,
    pub quantity: Option<Quantity>,
    pub size: Option<SizeName>,
}

/// A dyno's life as the store records it. `Stopping` is the teardown intent: once there, a dyno
/// only leaves by [`crate::Store::remove_dyno`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DynoState {
    /// Recorded; its netns, link, address and shim may or may not exist yet.
    Starting,
    Up,
    Crashed,
    Down,
    /// Being torn down; the row goes when its resources are gone.
    Stopping,
}

impl DynoState {
    pub fn as_str(self) -> &'static str {
        match self {
            DynoState::Starting => "starting",
            DynoState::Up => "up",
            DynoState::Crashed => "crashed",
            DynoState::Down => "down",
            DynoState::Stopping => "stopping",
        }
    }
}

impl fmt::Display for DynoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DynoState {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<DynoState, ValidationError> {
        Ok(match s {
            "starting" => DynoState::Starting,
            "up" => DynoState::Up,
            "crashed" => DynoState::Crashed,
            "down" => DynoState::Down,
            "stopping" => DynoState::Stopping,
            _ => {
                return Err(ValidationError::new(
                    "dyno state",
                    format!(
                        "no dyno state {}; use starting, up, crashed, down or stopping",
                        shown(s)
                    ),
                ))
            }
        })
    }
}

/// A dyno to record before anything of it exists.
#[derive(Debug, Clone)]
pub struct NewDyno {
    pub app: AppName,
    /// A Procfile type of the release, or `run` for a one-off.
    pub process_type: String,
    /// `web.1` has index 1; one-offs use a random index (`run.4821`).
    pub index: u32,
    pub release_version: u32,
    pub size: SizeName,
    /// The names of its resources, chosen by the caller (the network layer names them; a
    /// caller that shares the host with other instances picks names unique across them).
    pub net: NetNames,
}

/// The names a dyno's resources get: recorded before they exist, so that a restarted daemon
/// knows what to adopt or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNames {
    /// Its network, cgroup and state dir: `mxct6afs0393r`.
    pub net_name: String,
    /// Its network namespace's file in the run dir: `dyno-mxct6afs0393r`.
    pub netns: String,
    /// Its host link: `dymxct6afs0393r`.
    pub link: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dyno {
    /// Monotonic, never reused.
    pub id: i64,
    pub app: String,
    /// `web.1`, `run.4821`.
    pub name: String,
    pub process_type: String,
    pub release_version: u32,
    pub size: String,
    pub state: DynoState,
    /// The dyno's hostname.
    pub uuid: String,
    /// The network name (base 36 of `id`), from which the next two derive.
    pub net_name: String,
    /// The netns file in the run dir: `dyno-<net_name>`.
    pub netns: String,
    /// The host end of the veth pair: `dy<net_name>`.
    pub link: String,
    /// The leased address (None only if the lease was released by hand).
    pub address: Option<Ipv4Addr>,
    pub shim_pid: Option<u32>,
    pub created_at_ms: i64,
    pub state_changed_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub exit_status: Option<i32>,
    pub exited_at_ms: Option<i64>,
}

/// A change to a dyno row; fields left `None` stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynoUpdate {
    pub state: Option<DynoState>,
    pub shim_pid: Option<u32>,
    pub exit_status: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub owner: String,
    pub dyno_id: Option<i64>,
    pub leased_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drain {
    /// `d.<uuid>`, as Heroku's drain ids.
    pub token: String,
    pub app: String,
    pub url: DrainUrl,
    pub created_at_ms: i64,
}

/// An app's certificate and key (Heroku's SNI endpoint), as uploaded.
#[derive(Clone, PartialEq, Eq)]
pub struct SniEndpoint {
    /// A UUID.
    pub id: String,
    /// Heroku-style name, unique in the store (`sni-<8 hex>`).
    pub name: String,
    /// The app's name (as it is now).
    pub app: String,
    pub certificate_chain: String,
    pub private_key: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for SniEndpoint {
    /// Never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniEndpoint")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// What [`crate::Store::destroy_app`] leaves for the caller to tear down. The app's data rows
/// are gone; its dynos are now `stopping` (call `remove_dyno` for each once its resources are
/// gone); its slug directories are no longer referenced by any release and may be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestroyedApp {
    pub name: String,
    pub dynos: Vec<Dyno>,
    pub slugs: Vec<PathBuf>,
    pub drains: Vec<Drain>,
}

/// A build of an app (Heroku's `/apps/{app}/builds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// A UUID.
    pub id: String,
    /// The app's name (as it is now).
    pub app: String,
    pub app_uuid: String,
    pub status: BuildStatus,
    pub source_url: String,
    /// What names the source (a commit).
    pub source_version: Option<String>,
    /// The buildpacks it ran (or was asked to run), in order.
    pub buildpacks: Vec<String>,
    /// The last part of its `output_stream_url`: the output's credential.
    pub output_secret: String,
    /// The release it made, when it succeeded.
    pub release_version: Option<u32>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Pending,
    Succeeded,
    Failed,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<BuildStatus> {
        match s {
            "pending" => Some(BuildStatus::Pending),
            "succeeded" => Some(BuildStatus::Succeeded),
            "failed" => Some(BuildStatus::Failed),
            _ => None,
        }
    }
}
