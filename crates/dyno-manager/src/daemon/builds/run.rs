//! One build from start to end: the workspace, the source, the cache and config, the
//! buildpacks, the build dyno, then the slug, the cache and the release. Every failure ends the
//! build `failed` with its reason as the output's last lines; nothing is released then.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use dyno_build::driver;
use dyno_error::ErrorKind;
use dyno_state::{Build, BuildStatus, NewBuild};
use dyno_supervisor::Attachment;

use super::prepare::Preparation;
use super::workspace::{self, Workspace};
use super::{cache_dir, caches_dir, output_file, outputs_dir, workspaces_dir, BuildOutput};
use crate::daemon::options::Slot;
use crate::daemon::{app_name, procfile, uids, Daemon, DaemonError};

/// How a build asked for ended, in the output's words.
type Failure = String;

/// One build under way: what it builds, where its output goes, what stops it.
struct Job {
    build: Build,
    source: std::path::PathBuf,
    output: Arc<BuildOutput>,
    /// `true` when its app is being destroyed.
    cancelled: tokio::sync::watch::Receiver<bool>,
}

/// How long the build's output may take to end once its dyno is down.
const RELAY_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a line the supervisor logs about the build dyno belongs in the build's output:
/// not its routine states (starting, up, exited, stopping), which the build's own lines say.
fn worth_telling(message: &str) -> bool {
    const ROUTINE: [&str; 6] = [
        "Starting process with command",
        "State changed from",
        "Process exited with status",
        "Stopping all processes with SIGTERM",
        "Stopping remaining processes with SIGKILL",
        "Stopping process with SIGKILL",
    ];
    !ROUTINE.iter().any(|r| message.starts_with(r))
}

/// `15 minutes`, `3 seconds`.
fn spoken(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        60.. if secs.is_multiple_of(60) => {
            format!("{} minute{}", secs / 60, if secs == 60 { "" } else { "s" })
        }
        _ => format!("{secs} second{}", if secs == 1 { "" } else { "s" }),
    }
}

impl Daemon {
    /// Starts a build of `name` from an uploaded source (`source_url`, named by `version`);
    /// it runs on after this returns the `pending` build.
    pub async fn start_build(
        self: &Arc<Self>,
        name: &str,
        source_url: &str,
        version: Option<String>,
        buildpacks: Option<Vec<String>>,
    ) -> Result<Build, DaemonError> {
        let app = app_name(name)?;
        if *self.builds.stopping.borrow() {
            return Err(DaemonError::new(
                ErrorKind::Busy,
                "the dyno daemon is stopping; build again once it is back",
            ));
        }
        let (_, source) = self.builds.sources.by_url(source_url)?;
        let asked = match buildpacks {
            Some(list) => list,
            None => {
                let app = app.clone();
                self.with_store(move |s| s.buildpacks(&app)).await?
            }
        };
        let build = {
            let (app, url, version, asked) = (
                app.clone(),
                source_url.to_string(),
                version.clone(),
                asked.clone(),
            );
            self.with_store(move |s| {
                s.start_build(
                    &app,
                    NewBuild {
                        source_url: &url,
                        source_version: version.as_deref(),
                        buildpacks: &asked,
                    },
                )
            })
            .await?
        };
        let output = BuildOutput::new(output_file(&self.options.data_dir, &build.id));
        let cancelled = self.builds.start(&build.id, name, output.clone());
        self.api_line(
            name,
            format!("Build started by user {}", dyno_api::heroku::ACCOUNT_EMAIL),
        );
        let daemon = self.clone();
        let started = build.clone();
        tokio::spawn(async move {
            let job = Job {
                build: started.clone(),
                source,
                output: output.clone(),
                cancelled,
            };
            let outcome = daemon.run_build(&job, asked).await;
            let (status, version, ran) = match outcome {
                Ok((version, ran)) => (BuildStatus::Succeeded, Some(version), ran),
                Err((failure, ran)) => {
                    for line in failure.lines() {
                        output.line(line);
                    }
                    (BuildStatus::Failed, None, ran)
                }
            };
            let id = started.id.clone();
            let settled = daemon
                .with_store(move |s| s.finish_build(&id, status, version, &ran))
                .await;
            if let Err(e) = settled {
                tracing::warn!("build {}: could not record its end: {e}", started.id);
            }
            output.finish();
            daemon.builds.end(&started.id);
            let word = match status {
                BuildStatus::Succeeded => "succeeded",
                _ => "failed",
            };
            daemon.api_line(&started.app, format!("Build {word}"));
        });
        Ok(build)
    }

    /// A build cannot outlive the daemon that ran it (its build dyno is not adopted): a
    /// daemon that starts fails the builds left pending and removes their workspaces.
    pub(in crate::daemon) async fn settle_interrupted_builds(&self) {
        let root = workspaces_dir(&self.options.data_dir);
        let pending = self.with_store(|s| s.pending_builds()).await;
        for build in pending.unwrap_or_default() {
            let id = build.id.clone();
            let ran = build.buildpacks.clone();
            let failed = self
                .with_store(move |s| s.finish_build(&id, BuildStatus::Failed, None, &ran))
                .await;
            if failed.is_ok() {
                // Its output so far is in its file; the reason goes after it.
                let output = BuildOutput::new(output_file(&self.options.data_dir, &build.id));
                output.line(" !     The build was cut off: the dyno daemon stopped while it ran.");
                output.finish();
            }
            tracing::warn!(app = %build.app, build = %build.id, "the daemon stopped during a build: build marked failed");
        }
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                if let Err(e) = workspace::remove_at(&entry.path()) {
                    tracing::warn!("leftover build workspace {}: {e}", entry.path().display());
                }
            }
        }
        self.sweep_build_files().await;
    }

    /// Removes what the data dir keeps for builds that nothing refers to any more: uploads
    /// (their slots live in memory, so a restarted daemon has none), the caches and git
    /// repositories of apps that are gone, and the output of builds that are gone (a daemon
    /// that died during `apps:destroy` leaves them).
    async fn sweep_build_files(&self) {
        let known = self
            .with_store(|s| Ok((s.list_apps()?, s.build_ids()?)))
            .await;
        let Ok((apps, builds)) = known else {
            return;
        };
        let uuids: std::collections::HashSet<String> = apps.into_iter().map(|a| a.uuid).collect();
        let data_dir = self.options.data_dir.clone();
        let sources = self.sources_dir();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&sources);
            let gone = |dir: PathBuf, keep: &dyn Fn(&str) -> bool| {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !keep(&name) {
                        let path = entry.path();
                        let removed = if path.is_dir() {
                            std::fs::remove_dir_all(&path)
                        } else {
                            std::fs::remove_file(&path)
                        };
                        if let Err(e) = removed {
                            tracing::warn!("leftover {}: {e}", path.display());
                        }
                    }
                }
            };
            gone(caches_dir(&data_dir), &|n| uuids.contains(n));
            gone(outputs_dir(&data_dir), &|n| {
                n.strip_suffix(".log").is_some_and(|id| builds.contains(id))
            });
            gone(data_dir.join(crate::daemon::git::GIT_DIR), &|n| {
                n == crate::daemon::git::HOOKS_DIR
                    || n.strip_suffix(".git").is_some_and(|u| uuids.contains(u))
                    || n.starts_with(".new-")
            });
        })
        .await;
    }

    /// The build's output: followed while it runs, from its file after.
    pub fn build_output(&self, build: &Build) -> tokio::sync::mpsc::Receiver<bytes::Bytes> {
        match self.builds.output(&build.id) {
            Some(output) => output.follow(),
            None => super::output::finished(output_file(&self.options.data_dir, &build.id)),
        }
    }

    /// Runs the build; the release version and the buildpacks that ran, or why it failed.
    async fn run_build(
        self: &Arc<Self>,
        job: &Job,
        asked: Vec<String>,
    ) -> Result<(u32, Vec<String>), (Failure, Vec<String>)> {
        let build = &job.build;
        let uid = uids::app_uid_in(&build.app, self.options.uids);
        let root = workspaces_dir(&self.options.data_dir).join(&build.id);
        let options = self.options.build.clone();
        let ws = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || Workspace::create(&root, options.disk_bytes, uid))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| {
                    (
                        format!(" !     Could not set up the build: {e}"),
                        asked.clone(),
                    )
                })?
        };
        let result = self.build_in(&ws, job, asked.clone(), uid).await;
        let removed = tokio::task::spawn_blocking(move || ws.remove()).await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(std::io::Error::other) {
            tracing::warn!("build {}: workspace {}: {e}", build.id, root.display());
        }
        result.map_err(|failure| (failure, asked))
    }

    async fn build_in(
        self: &Arc<Self>,
        ws: &Workspace,
        job: &Job,
        asked: Vec<String>,
        uid: u32,
    ) -> Result<(u32, Vec<String>), Failure> {
        let (build, source, output) = (&job.build, job.source.as_path(), &job.output);
        let current = self
            .current_release(&build.app)
            .await
            .map_err(|e| format!(" !     {e}"))?;
        let preparation = Preparation {
            workspace: ws.root.clone(),
            source: source.to_path_buf(),
            uid,
            cache: cache_dir(&self.options.data_dir, &build.app_uuid),
            config: current.config.clone(),
            installed: self.options.build.installed.clone(),
            asked,
        };
        tokio::task::spawn_blocking(move || preparation.run())
            .await
            .map_err(|e| e.to_string())??;
        let code = self.run_build_dyno(ws, job, &current).await?;
        let ran = std::fs::read_to_string(ws.meta().join(driver::RAN))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        if code != 0 {
            return Err(String::new());
        }
        let (types, default_config) = process_types(ws, output)?;
        let size = {
            let (dir, limit) = (ws.app(), self.options.build.max_slug_bytes);
            tokio::task::spawn_blocking(move || dyno_build::slug_size::compressed_size(&dir, limit))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!(" !     Could not measure the slug: {e}"))?
        };
        output.line("-----> Compressing...");
        if size.bytes > self.options.build.max_slug_bytes {
            return Err(format!(
                " !     Compiled slug size: {} is too large (max is {}).",
                dyno_build::slug_size::human(size.bytes),
                dyno_build::slug_size::human(self.options.build.max_slug_bytes)
            ));
        }
        output.line(&format!(
            "       Done: {}",
            dyno_build::slug_size::human(size.bytes)
        ));
        self.keep_cache(ws, build).await;
        output.line("-----> Launching...");
        let description = build
            .source_version
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| format!("Deploy {}", &v[..v.len().min(8)]));
        let release = match self
            .deploy_tree(
                &build.app,
                &ws.app(),
                types,
                description,
                default_config,
                Vec::new(),
            )
            .await
        {
            Ok(release) => release,
            // The slug was built and its release made; its release phase failed (Heroku: the
            // build succeeded, the release is `failed`, `heroku releases` shows it).
            Err(e) if e.kind == ErrorKind::ReleaseFailed => {
                output.line(&format!(" !     {e}"));
                let app = app_name(&build.app).map_err(|e| e.to_string())?;
                let newest = self
                    .with_store(move |s| s.releases(&app))
                    .await
                    .map_err(|e| format!(" !     {e}"))?;
                let version = newest.iter().map(|r| r.version).max().unwrap_or(0);
                return Ok((version, ran));
            }
            Err(e) => return Err(format!(" !     Release failed: {e}")),
        };
        output.line(&format!("       Released v{}", release.version));
        output.line(&format!(
            "       {} deployed to dyno",
            self.web_url(&build.app)
        ));
        output.line("");
        Ok((release.version, ran))
    }

    /// Runs the build dyno to its end (or the timeout); its exit status.
    async fn run_build_dyno(
        self: &Arc<Self>,
        ws: &Workspace,
        job: &Job,
        current: &dyno_state::Release,
    ) -> Result<i32, Failure> {
        let (build, output) = (&job.build, &job.output);
        let (client, ends) = dyno_sandbox::terminal::open(false, None)
            .map_err(|e| format!(" !     Could not start the build: {e}"))?;
        let dyno_sandbox::terminal::ClientEnds::Pipes { stdin, output: out } = client else {
            return Err(" !     Could not start the build: no pipes".to_string());
        };
        drop(stdin);
        let slot = Slot {
            process: "build".to_string(),
            index: 1,
            command: driver::COMMAND.to_string(),
            restart: false,
            size: self.options.size(&self.options.build.size),
        };
        let mut def = self.options.dyno_def(&build.app, current, &ws.app(), slot);
        def.attachment = Some(Attachment::new(ends));
        def.binds = ws.binds();
        // The build dyno's own lines (its states, its exit) are not the app's log, as on
        // Heroku; what says why it failed (a denied call, memory) goes to the build's output.
        let (log, mut lines) = tokio::sync::mpsc::unbounded_channel::<dyno_logs::logs::LogLine>();
        let platform = self.platform_for(&build.app, log);
        {
            let output = output.clone();
            tokio::spawn(async move {
                while let Some(line) = lines.recv().await {
                    if worth_telling(&line.message) {
                        output.line(&format!(" !     {}", line.message));
                    }
                }
            });
        }
        let handle = dyno_supervisor::start(platform, def);
        let mut status = handle.status.clone();
        let relay = {
            let output = output.clone();
            tokio::task::spawn_blocking(move || {
                let mut file = std::fs::File::from(out);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match file.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => output.append(&buf[..n]),
                    }
                }
            })
        };
        let timeout = self.options.build.timeout;
        // The build ends when its main process does; what it left running is stopped with
        // the dyno, and only then does its output reach its end.
        let mut stopping = self.builds.stopping.subscribe();
        let mut cancelled = job.cancelled.clone();
        let ended = tokio::select! {
            ended = tokio::time::timeout(
                timeout,
                status.wait_for(|s| {
                    s.exit_code.is_some() || s.state == dyno_supervisor::State::Down
                }),
            ) => ended.map(|e| e.map(|s| s.exit_code.unwrap_or(1)).unwrap_or(1)).map_err(|_| {
                format!(
                    " !     Timed out compiling the app after {}: the build was stopped.",
                    spoken(timeout)
                )
            }),
            _ = stopping.wait_for(|stop| *stop) => Err(
                " !     The dyno daemon is stopping: the build was stopped.".to_string()
            ),
            _ = cancelled.wait_for(|stop| *stop) => Err(
                " !     The app is being destroyed: the build was stopped.".to_string()
            ),
        };
        handle.stop().await;
        if tokio::time::timeout(RELAY_DRAIN, relay).await.is_err() {
            tracing::warn!("build {}: its output did not end with its dyno", build.id);
        }
        ended
    }

    /// Keeps what the build left in its cache for the app's next build.
    async fn keep_cache(&self, ws: &Workspace, build: &Build) {
        let (from, to) = (
            ws.cache(),
            cache_dir(&self.options.data_dir, &build.app_uuid),
        );
        let kept = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let fresh = to.with_extension("new");
            let _ = std::fs::remove_dir_all(&fresh);
            std::fs::create_dir_all(&fresh)?;
            workspace::copy_owned(&from, &fresh, Some(0))?;
            let old = to.with_extension("old");
            let _ = std::fs::remove_dir_all(&old);
            if to.exists() {
                std::fs::rename(&to, &old)?;
            }
            std::fs::rename(&fresh, &to)?;
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        })
        .await;
        if let Ok(Err(e)) = kept {
            tracing::warn!("build {}: the cache was not kept: {e}", build.id);
        }
    }

    /// `heroku builds:cache:purge`.
    pub async fn purge_build_cache(&self, name: &str) -> Result<(), DaemonError> {
        let app = app_name(name)?;
        let found = self.with_store(move |s| s.app(&app)).await?;
        let dir = cache_dir(&self.options.data_dir, &found.uuid);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("purge the build cache: {e}")))
    }
}

/// The slug's process types (its Procfile's, else the buildpacks' defaults; said in the output
/// as Heroku says it) and the buildpacks' default config vars.
fn process_types(ws: &Workspace, output: &BuildOutput) -> Result<(Types, Config), Failure> {
    output.line("-----> Discovering process types");
    let mut infos = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(ws.meta())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        infos.push(
            dyno_build::release::parse_release(&text)
                .map_err(|e| format!(" !     A buildpack's bin/release: {e}"))?,
        );
    }
    let merged = dyno_build::release::merge(&infos);
    for key in merged.config_vars.keys() {
        dyno_state::ConfigKey::parse(key)
            .map_err(|e| format!(" !     A buildpack's bin/release config var: {e}"))?;
    }
    let procfile = ws.app().join("Procfile");
    if procfile.exists() {
        let types = procfile::read_procfile(&procfile).map_err(|e| format!(" !     {e}"))?;
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        output.line(&format!(
            "       Procfile declares types -> {}",
            names.join(", ")
        ));
        let types = types.into_iter().map(|t| (t.name, t.command)).collect();
        return Ok((types, merged.config_vars));
    }
    if merged.default_process_types.is_empty() {
        return Err(
            " !     No Procfile and no default process types: add a Procfile \
                    (`web: COMMAND`) to the app."
                .to_string(),
        );
    }
    let names: Vec<&str> = merged
        .default_process_types
        .keys()
        .map(String::as_str)
        .collect();
    output.line(&format!(
        "       Procfile declares types     -> (none)\n       Default types for buildpack -> {}",
        names.join(", ")
    ));
    Ok((
        merged.default_process_types.into_iter().collect(),
        merged.config_vars,
    ))
}

type Types = Vec<(String, String)>;
type Config = std::collections::BTreeMap<String, String>;
