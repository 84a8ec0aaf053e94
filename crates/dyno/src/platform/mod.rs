//! The Heroku-style verbs (`dyno apps`, `apps:create`, `deploy`, `ps:scale`, `logs`, …): each
//! is one or two API calls to `dyno serve` and Heroku's output shape (`--json` for scripts).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use dyno_api::{ApiClient, FormationUpdate};
use serde::Serialize;

use crate::progress::{self, Goal, Mode, Progress};

mod attach;
mod build_verbs;
mod verbs;
use verbs::*;

/// How to reach the daemon, and the output format.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The daemon's API socket
    #[arg(long, env = "DYNO_SOCKET", default_value = dyno_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON (for scripts) instead of text
    #[arg(long)]
    json: bool,
}

/// The app a verb acts on, and how to reach the daemon: `-a APP`, defined once.
#[derive(Args, Clone)]
pub struct AppArgs {
    /// The app (e.g. -a hello)
    #[arg(short, long)]
    app: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
pub enum PlatformCommand {
    /// List apps
    Apps {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create an app (NAME: 3–30 of a-z, 0-9, '-', starting with a letter)
    #[command(name = "apps:create")]
    AppsCreate {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rename an app: its releases, config, dynos, domains, drains and logs go with it; the
    /// old name is free at once
    #[command(name = "apps:rename")]
    AppsRename {
        new_name: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Destroy an app: its dynos, releases, config and logs
    #[command(name = "apps:destroy")]
    AppsDestroy {
        name: String,
        /// The app's name again, to confirm
        #[arg(long)]
        confirm: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Build a directory of this machine (uploaded as a tarball, built with buildpacks like a
    /// `git push`) and release it; the dynos roll to it
    Deploy {
        dir: PathBuf,
        #[command(flatten)]
        on: AppArgs,
    },
    /// List the app's builds (git pushes, `deploy`), newest last
    Builds {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Show a build (the latest when no ID is given) and its output
    #[command(name = "builds:info")]
    BuildsInfo {
        /// The build's id (see `dyno builds`)
        id: Option<String>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Forget the app's build cache: the next build starts from nothing
    #[command(name = "builds:cache:purge")]
    BuildsCachePurge {
        #[command(flatten)]
        on: AppArgs,
    },
    /// List the app's buildpacks (none: the installed ones are tried in order)
    Buildpacks {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Add a buildpack: a directory of the daemon's host, a git URL (`URL#ref`), a .tgz URL,
    /// or an installed one by name (`python`, `procfile`)
    #[command(name = "buildpacks:add")]
    BuildpacksAdd {
        buildpack: String,
        /// Its place, 1 first (default: last)
        #[arg(short, long)]
        index: Option<usize>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Make a buildpack the app's only one
    #[command(name = "buildpacks:set")]
    BuildpacksSet {
        buildpack: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Remove a buildpack (by its URL or `--index`)
    #[command(name = "buildpacks:remove")]
    BuildpacksRemove {
        buildpack: Option<String>,
        #[arg(short, long)]
        index: Option<usize>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Remove every buildpack: builds detect one again
    #[command(name = "buildpacks:clear")]
    BuildpacksClear {
        #[command(flatten)]
        on: AppArgs,
    },
    /// List releases, newest first
    Releases {
        #[command(flatten)]
        on: AppArgs,
    },
    /// List dynos
    Ps {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Scale process types: `dyno ps:scale web=2 worker=1:Standard-2X -a APP`
    #[command(name = "ps:scale")]
    PsScale {
        /// TYPE=QUANTITY[:SIZE] …
        #[arg(required = true)]
        changes: Vec<String>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Show the app's config vars
    Config {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Set config vars (a new release; the dynos restart): `dyno config:set KEY=value … -a APP`
    #[command(name = "config:set")]
    ConfigSet {
        /// KEY=value …
        #[arg(required = true)]
        pairs: Vec<String>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Unset config vars (a new release; the dynos restart)
    #[command(name = "config:unset")]
    ConfigUnset {
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Roll back to a release (`v3` or `3`), as a new release
    Rollback {
        version: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Resize process types: `dyno ps:type web=Standard-2X worker=Performance-M -a APP`
    #[command(name = "ps:type")]
    PsType {
        /// TYPE=SIZE …
        #[arg(required = true)]
        changes: Vec<String>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Stop a dyno (run.1), a process type's dynos (web) or one of them (web.1); formation
    /// dynos are started again, as on Heroku, one-offs end
    #[command(name = "ps:stop")]
    PsStop {
        dyno: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Restart all dynos, a process type's (web) or one (web.1)
    #[command(name = "ps:restart")]
    PsRestart {
        dyno: Option<String>,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Maintenance mode on: the router answers every request with the maintenance page (H80)
    #[command(name = "maintenance:on")]
    MaintenanceOn {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Maintenance mode off
    #[command(name = "maintenance:off")]
    MaintenanceOff {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Run a one-off dyno (run.N) on the current release, attached: our stdin to it (our
    /// terminal, when we have one: Ctrl-C goes to the dyno), its output here, its exit status
    /// as ours. The one-off ends when we leave. `dyno run -a APP -- python3 manage.py migrate`
    Run {
        #[command(flatten)]
        on: AppArgs,
        /// Give the dyno pipes, not a terminal, even when we have one
        #[arg(long)]
        no_tty: bool,
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Run a one-off dyno in the background: its output goes to the app's log
    /// (`dyno logs --dyno run.N`). `dyno run:detached -a APP -- rake cleanup`
    #[command(name = "run:detached")]
    RunDetached {
        #[command(flatten)]
        on: AppArgs,
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// List the app's log drains
    Drains {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Copy the app's log lines to syslog://HOST:PORT, syslog+tls://HOST:PORT or https://…
    #[command(name = "drains:add")]
    DrainsAdd {
        url: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Remove a log drain (by URL or token)
    #[command(name = "drains:remove")]
    DrainsRemove {
        url_or_token: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// List the app's Heroku Labs features, [+] when on
    ///
    /// Labs features are experimental switches per app. log-runtime-metrics: about every 20 s,
    /// each running dyno's load average and memory use go to the app's log as
    /// `heroku[web.1]: source=web.1 dyno=heroku.… sample#load_avg_1m=… sample#memory_rss=…`
    /// lines (see `dyno logs`).
    Labs {
        #[command(flatten)]
        on: AppArgs,
    },
    /// Turn a Heroku Labs feature on: `dyno labs:enable log-runtime-metrics -a APP`
    ///
    /// Takes effect at once, no restart needed. See `dyno labs -a APP` for the features.
    #[command(name = "labs:enable")]
    LabsEnable {
        /// The feature (e.g. log-runtime-metrics)
        feature: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Turn a Heroku Labs feature off: `dyno labs:disable log-runtime-metrics -a APP`
    #[command(name = "labs:disable")]
    LabsDisable {
        /// The feature (e.g. log-runtime-metrics)
        feature: String,
        #[command(flatten)]
        on: AppArgs,
    },
    /// Show recent log lines (Heroku's format), optionally following new ones
    Logs {
        #[command(flatten)]
        on: AppArgs,
        /// Number of lines (1–1500)
        #[arg(short = 'n', long, default_value_t = 100)]
        num: usize,
        /// Only this dyno (web.1) or process type (web)
        #[arg(long)]
        ps: Option<String>,
        /// Only this source: app, heroku or router
        #[arg(long)]
        source: Option<String>,
        /// Keep printing new lines until interrupted
        #[arg(short, long)]
        tail: bool,
    },
}

pub fn run(command: PlatformCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the runtime: {e}"))?;
    runtime.block_on(run_async(command))
}

pub(crate) fn out<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", text());
    }
}

/// `web=2`, `worker=1:Standard-2X`, `web:Performance-M` (size only).
fn parse_change(spec: &str) -> Result<FormationUpdate, String> {
    let bad =
        || format!("{spec:?}: expected TYPE=QUANTITY, TYPE=QUANTITY:SIZE or TYPE:SIZE, e.g. web=2");
    let (process_type, rest) = match spec.split_once('=') {
        Some((t, rest)) => (t, Some(rest)),
        None => (spec, None),
    };
    let (process_type, quantity, size) = match rest {
        Some(rest) => {
            let (q, size) = match rest.split_once(':') {
                Some((q, s)) => (q, Some(s.to_string())),
                None => (rest, None),
            };
            let q: u32 = q.parse().map_err(|_| bad())?;
            (process_type.to_string(), Some(q), size)
        }
        None => {
            let (t, s) = process_type.split_once(':').ok_or_else(bad)?;
            (t.to_string(), None, Some(s.to_string()))
        }
    };
    if process_type.is_empty() {
        return Err(bad());
    }
    Ok(FormationUpdate {
        process_type,
        quantity: quantity.map(dyno_api::heroku::QuantityChange::To),
        size,
    })
}

impl PlatformCommand {
    fn client(&self) -> &ClientArgs {
        use PlatformCommand::*;
        match self {
            Apps { client } | AppsCreate { client, .. } | AppsDestroy { client, .. } => client,
            AppsRename { on, .. }
            | Deploy { on, .. }
            | Builds { on }
            | BuildsInfo { on, .. }
            | BuildsCachePurge { on }
            | Buildpacks { on }
            | BuildpacksAdd { on, .. }
            | BuildpacksSet { on, .. }
            | BuildpacksRemove { on, .. }
            | BuildpacksClear { on }
            | Releases { on }
            | Ps { on }
            | PsScale { on, .. }
            | Logs { on, .. }
            | Config { on }
            | ConfigSet { on, .. }
            | ConfigUnset { on, .. }
            | Rollback { on, .. }
            | PsRestart { on, .. }
            | PsType { on, .. }
            | PsStop { on, .. }
            | MaintenanceOn { on }
            | MaintenanceOff { on }
            | Run { on, .. }
            | RunDetached { on, .. }
            | Drains { on }
            | DrainsAdd { on, .. }
            | DrainsRemove { on, .. }
            | Labs { on }
            | LabsEnable { on, .. }
            | LabsDisable { on, .. } => &on.client,
        }
    }
}

async fn run_async(command: PlatformCommand) -> Result<(), String> {
    let api = ApiClient::unix(&command.client().socket);
    let json = command.client().json;
    match command {
        PlatformCommand::Apps { .. } => apps(&api, json).await?,
        PlatformCommand::AppsCreate { name, .. } => apps_create(&api, json, name).await?,
        PlatformCommand::AppsDestroy { name, confirm, .. } => {
            apps_destroy(&api, json, name, confirm).await?
        }
        PlatformCommand::AppsRename { new_name, on } => {
            apps_rename(&api, json, on.app, new_name).await?
        }
        PlatformCommand::Deploy { dir, on } => build_verbs::deploy(&api, json, dir, on.app).await?,
        PlatformCommand::Builds { on } => build_verbs::builds(&api, json, on.app).await?,
        PlatformCommand::BuildsInfo { id, on } => {
            build_verbs::builds_info(&api, json, id, on.app).await?
        }
        PlatformCommand::BuildsCachePurge { on } => {
            build_verbs::cache_purge(&api, json, on.app).await?
        }
        PlatformCommand::Buildpacks { on } => {
            build_verbs::buildpacks(&api, json, on.app, build_verbs::Change::None).await?
        }
        PlatformCommand::BuildpacksAdd {
            buildpack,
            index,
            on,
        } => {
            let change = build_verbs::Change::Add(buildpack, index);
            build_verbs::buildpacks(&api, json, on.app, change).await?
        }
        PlatformCommand::BuildpacksSet { buildpack, on } => {
            let change = build_verbs::Change::Set(buildpack);
            build_verbs::buildpacks(&api, json, on.app, change).await?
        }
        PlatformCommand::BuildpacksRemove {
            buildpack,
            index,
            on,
        } => {
            let change = build_verbs::Change::Remove(buildpack, index);
            build_verbs::buildpacks(&api, json, on.app, change).await?
        }
        PlatformCommand::BuildpacksClear { on } => {
            build_verbs::buildpacks(&api, json, on.app, build_verbs::Change::Clear).await?
        }
        PlatformCommand::Releases { on } => releases(&api, json, on.app).await?,
        PlatformCommand::Ps { on } => ps(&api, json, on.app).await?,
        PlatformCommand::PsScale { changes, on } => ps_scale(&api, json, changes, on.app).await?,
        PlatformCommand::Config { on } => config(&api, json, on.app).await?,
        PlatformCommand::ConfigSet { pairs, on } => config_set(&api, json, pairs, on.app).await?,
        PlatformCommand::ConfigUnset { keys, on } => config_unset(&api, json, keys, on.app).await?,
        PlatformCommand::Rollback { version, on } => rollback(&api, json, version, on.app).await?,
        PlatformCommand::PsType { changes, on } => ps_type(&api, json, changes, on.app).await?,
        PlatformCommand::PsStop { dyno, on } => ps_stop(&api, json, dyno, on.app).await?,
        PlatformCommand::PsRestart { dyno, on } => ps_restart(&api, json, dyno, on.app).await?,
        PlatformCommand::MaintenanceOn { on } => maintenance(&api, json, on.app, true).await?,
        PlatformCommand::MaintenanceOff { on } => maintenance(&api, json, on.app, false).await?,
        PlatformCommand::Run {
            on,
            no_tty,
            command,
        } => run_one_off(&api, json, on.app, command, no_tty).await?,
        PlatformCommand::RunDetached { on, command } => {
            run_detached(&api, json, on.app, command).await?
        }
        PlatformCommand::Drains { on } => drains(&api, json, on.app).await?,
        PlatformCommand::DrainsAdd { url, on } => drains_add(&api, json, url, on.app).await?,
        PlatformCommand::DrainsRemove { url_or_token, on } => {
            drains_remove(&api, json, url_or_token, on.app).await?
        }
        PlatformCommand::Labs { on } => crate::labs::list(&api, &on.app, json).await?,
        PlatformCommand::LabsEnable { feature, on } => {
            crate::labs::switch(&api, &on.app, &feature, true, json).await?
        }
        PlatformCommand::LabsDisable { feature, on } => {
            crate::labs::switch(&api, &on.app, &feature, false, json).await?
        }
        PlatformCommand::Logs {
            on,
            num,
            ps,
            source,
            tail,
        } => logs(&api, on.app, num, ps, source, tail).await?,
    }
    Ok(())
}

/// What a live progress line counts towards; nothing is asked for when the line is not live.
async fn live_goal(
    progress: &Progress,
    goal: impl std::future::Future<Output = Option<Goal>>,
) -> Goal {
    if progress.is_live() {
        goal.await.unwrap_or_default()
    } else {
        Goal::default()
    }
}

/// The formation `updates` lead to, on the current release.
async fn scaled_goal(api: &ApiClient, app: &str, updates: &[FormationUpdate]) -> Option<Goal> {
    let (version, formation) = progress::current(api, app).await?;
    Some(Goal::scaled(version, &formation, updates))
}

/// `, v4`: the app's current release, for Heroku's `done, v4` after a config change (empty if
/// it cannot be read: the change itself succeeded).
/// `config:set` / `config:unset`: one PATCH (a new release), with progress while the dynos
/// restart on it. Returns the new config and the end of the `done` line (`, v7`; nothing with
/// --json).
async fn patch_config(
    api: &ApiClient,
    app: &str,
    json: bool,
    title: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<(BTreeMap<String, String>, String), String> {
    let progress = Progress::start(Mode::for_output(json), title);
    let goal = live_goal(&progress, progress::release_goal(api, app)).await;
    let config: BTreeMap<String, String> = progress
        .follow(api, app, &goal, api.update_config(app, changes))
        .await
        .map_err(|e| e.to_string())?;
    let version = if json {
        String::new()
    } else {
        current_version(api, app).await
    };
    Ok((config, version))
}

async fn current_version(api: &ApiClient, app: &str) -> String {
    let releases = api.releases(app).await;
    match releases
        .ok()
        .and_then(|r| r.iter().map(|r| r.version).max())
    {
        Some(v) => format!(", v{v}"),
        None => String::new(),
    }
}

/// `PATCH /apps/{app}/formation`: the new formation.
async fn patch_formation(
    api: &ApiClient,
    app: &str,
    updates: Vec<FormationUpdate>,
) -> Result<Vec<dyno_api::Formation>, String> {
    api.update_formation(app, updates)
        .await
        .map_err(|e| e.to_string())
}

/// Heroku's `config` shape: `=== ⬢ app Config Vars` then `KEY: value`, keys aligned.
fn show_config(app: &str, config: &BTreeMap<String, String>) -> String {
    let width = config.keys().map(|k| k.len() + 1).max().unwrap_or(0);
    let mut s = format!("=== ⬢ {app} Config Vars\n");
    for (k, v) in config {
        s.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_specs() {
        let c = parse_change("web=2").unwrap();
        assert_eq!(
            (c.process_type.as_str(), c.quantity, c.size),
            ("web", Some(dyno_api::heroku::QuantityChange::To(2)), None)
        );
        let c = parse_change("worker=1:Standard-2X").unwrap();
        assert_eq!(c.size.as_deref(), Some("Standard-2X"));
        let c = parse_change("web:Performance-M").unwrap();
        assert_eq!(
            (c.quantity, c.size.as_deref()),
            (None, Some("Performance-M"))
        );
        for bad in ["web", "web=x", "=2", "web=-1", ""] {
            assert!(parse_change(bad).is_err(), "{bad}");
        }
    }
}
