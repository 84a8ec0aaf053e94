//! The daemon's options, and the one way a dyno's definition is made from them.
use super::*;

/// Where the daemon keeps things and how its dynos run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The store (`state.db`) and slugs.
    pub data_dir: PathBuf,
    /// Dynos' runtime state (sandbox dirs).
    pub state_root: PathBuf,
    pub network: NetworkConfig,
    /// The binary dynos' shims run (`dyno-shim` or `dyno`).
    pub exe: PathBuf,
    pub lifecycle: Lifecycle,
    pub uids: UidRange,
    /// `$PORT` of every dyno.
    pub port: u16,
    /// The router's port, for apps' web URLs.
    pub router_port: u16,
    /// Told where each web dyno is up, once the router has it (`dyno up` says so).
    pub web_up: Option<crate::webdynos::WebUpSink>,
    /// Every dyno's memory quota in MB instead of its size's (`dyno up --memory-mb`).
    pub memory_mb: Option<u64>,
    /// How often apps with `log-runtime-metrics` get their dynos' load and memory lines
    /// (Heroku: 20 s, [`runtime_metrics::DEFAULT_INTERVAL`]).
    pub runtime_metrics_interval: Duration,
    /// The operator's additions to the dynos' system-call profile, per app.
    pub seccomp: seccomp::SeccompAdditions,
    /// Where LXCFS is (or is to be) mounted for the dynos' private `/proc` view; `None`: off.
    pub lxcfs_dir: Option<PathBuf>,
    /// How many CPUs busy dynos stay off (see [`crate::cpu_placement`]); 0: none.
    pub cpu_reserve: usize,
    /// How builds run.
    pub build: super::builds::BuildOptions,
    /// The API's unix socket, which `git push`es build through (their hook's way back to
    /// the daemon); `None`: no pushes (`dyno up`).
    pub api_socket: Option<PathBuf>,
}

/// Which dyno of a release: its process type and number, what it runs, whether it is
/// restarted when it exits, its size.
pub(super) struct Slot {
    pub(super) process: String,
    pub(super) index: u32,
    pub(super) command: String,
    pub(super) restart: bool,
    pub(super) size: DynoSize,
}

impl DaemonOptions {
    /// The one way a dyno's definition is made: `slot` of `app` on `release` (its config and
    /// version), running from `slug` (the release's, or a new one for the release phase).
    pub(super) fn dyno_def(
        &self,
        app: &str,
        release: &Release,
        slug: &Path,
        slot: Slot,
    ) -> DynoDef {
        DynoDef {
            app: app.to_string(),
            process: slot.process,
            index: slot.index,
            command: slot.command,
            env: config_env(release),
            app_dir: slug.to_path_buf(),
            release: release.version,
            uid: app_uid_in(app, self.uids),
            port: self.port,
            restart: slot.restart,
            size: slot.size,
            attachment: None,
            binds: Vec::new(),
        }
    }

    /// The limits of a dyno of size `name` (Heroku's table; the default size for a name the
    /// store would not have accepted).
    pub(super) fn size(&self, name: &str) -> DynoSize {
        let mut size = DynoSize::lookup(name).copied().unwrap_or_default();
        if let Some(mb) = self.memory_mb {
            size.memory_mb = mb;
        }
        size
    }
}

/// The environment a release's dynos get from its config vars.
fn config_env(release: &Release) -> Vec<(String, String)> {
    release
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
