//! Builds: source uploads, a build dyno running Heroku's buildpack API over the unpacked
//! source, and the release it makes. A build runs sandboxed like any dyno (its own network
//! namespace with egress, the app's unprivileged uid, a cgroup of the build size, the seccomp
//! filter) with its directories on a tmpfs of its own ([`workspace`]); it has a timeout (15
//! minutes, Heroku's); one build of an app runs at a time (a second is refused, naming the
//! first). The output streams to whoever follows `output_stream_url` (`git push`, `dyno
//! deploy`) and stays readable after the build.

mod buildpacks;
mod output;
mod prepare;
mod run;
mod sources;
pub mod workspace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use buildpacks::Installed;
pub use output::BuildOutput;
pub use sources::Sources;

/// How builds run (`dyno serve --build-timeout …`).
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A build that runs longer is stopped and fails (Heroku: 15 minutes).
    pub timeout: Duration,
    /// The build dyno's size (its memory, processes and CPU share).
    pub size: String,
    /// The build's tmpfs: the source, the cache, the slug to be and the buildpacks together.
    pub disk_bytes: u64,
    /// The largest slug, compressed (Heroku: 500 MB).
    pub max_slug_bytes: u64,
    /// Buildpacks tried in order when an app has none set (after the operator's come the
    /// ones shipped with dyno).
    pub installed: Vec<Installed>,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            timeout: Duration::from_secs(15 * 60),
            size: "Performance-M".to_string(),
            disk_bytes: 2 << 30,
            max_slug_bytes: dyno_build::slug_size::DEFAULT_SLUG_LIMIT,
            installed: Vec::new(),
        }
    }
}

/// A build under way.
struct Running {
    app: String,
    output: Arc<BuildOutput>,
    /// `true`: stop it (its app is being destroyed).
    cancel: tokio::sync::watch::Sender<bool>,
}

/// The daemon's builds under way and its source uploads.
pub struct Builds {
    pub sources: Sources,
    /// The builds running now, by build id.
    running: Mutex<HashMap<String, Running>>,
    /// `true` once the daemon stops: running builds stop and fail.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Default for Builds {
    fn default() -> Builds {
        Builds {
            sources: Sources::default(),
            running: Mutex::default(),
            stopping: tokio::sync::watch::channel(false).0,
        }
    }
}

/// How long a stopping daemon (or an app's destruction) waits for builds to end (their dynos
/// get the stop grace).
const STOP_WAIT: Duration = Duration::from_secs(60);

impl Builds {
    /// Stops every running build (each fails, its dyno stopped, its workspace removed) and
    /// waits for them to end.
    pub async fn stop_all(&self) {
        self.stopping.send_replace(true);
        self.wait_until(|_| true).await;
    }

    /// Stops the running builds of `app` (it is being destroyed) and waits for them to end.
    pub async fn stop_app(&self, app: &str) {
        for running in crate::lock(&self.running).values() {
            if running.app == app {
                running.cancel.send_replace(true);
            }
        }
        self.wait_until(|r| r.app == app).await;
    }

    /// Waits until no running build is `which`, or [`STOP_WAIT`] passed.
    async fn wait_until(&self, which: impl Fn(&Running) -> bool) {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while crate::lock(&self.running).values().any(&which)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn output(&self, id: &str) -> Option<Arc<BuildOutput>> {
        crate::lock(&self.running).get(id).map(|r| r.output.clone())
    }

    /// Registers a build that starts; what stops it.
    fn start(
        &self,
        id: &str,
        app: &str,
        output: Arc<BuildOutput>,
    ) -> tokio::sync::watch::Receiver<bool> {
        let (cancel, stopped) = tokio::sync::watch::channel(false);
        crate::lock(&self.running).insert(
            id.to_string(),
            Running {
                app: app.to_string(),
                output,
                cancel,
            },
        );
        stopped
    }

    fn end(&self, id: &str) {
        crate::lock(&self.running).remove(id);
    }
}

/// Where builds' output is kept.
pub fn outputs_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("builds").join("output")
}

/// Where a build's output is kept (written as it comes).
pub fn output_file(data_dir: &std::path::Path, build_id: &str) -> PathBuf {
    outputs_dir(data_dir).join(format!("{build_id}.log"))
}

/// Where the apps' build caches are kept.
pub fn caches_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("builds").join("cache")
}

/// The app's build cache (kept between builds, keyed by the app's uuid so a rename keeps it).
pub fn cache_dir(data_dir: &std::path::Path, app_uuid: &str) -> PathBuf {
    caches_dir(data_dir).join(app_uuid)
}

/// Where the workspaces of running builds are mounted.
pub fn workspaces_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("builds").join("run")
}
