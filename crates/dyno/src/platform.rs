//! The Heroku-style verbs (`dyno apps`, `apps:create`, `deploy`, `ps:scale`, `logs`, …): each
//! is one or two API calls to `dyno serve` and Heroku's output shape (`--json` for scripts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use dyno_api::{ApiClient, FormationUpdate, LogQuery};
use serde::Serialize;

use crate::progress::{self, Goal, Mode, Progress};

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
    /// Deploy a directory (with a Procfile) as a new release; the dynos roll to it
    Deploy {
        dir: PathBuf,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List releases, newest first
    Releases {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List dynos
    Ps {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Scale process types: `dyno ps:scale web=2 worker=1:Standard-2X -a APP`
    #[command(name = "ps:scale")]
    PsScale {
        /// TYPE=QUANTITY[:SIZE] …
        #[arg(required = true)]
        changes: Vec<String>,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the app's config vars
    Config {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set config vars (a new release; the dynos restart): `dyno config:set KEY=value … -a APP`
    #[command(name = "config:set")]
    ConfigSet {
        /// KEY=value …
        #[arg(required = true)]
        pairs: Vec<String>,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Unset config vars (a new release; the dynos restart)
    #[command(name = "config:unset")]
    ConfigUnset {
        #[arg(required = true)]
        keys: Vec<String>,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Roll back to a release (`v3` or `3`), as a new release
    Rollback {
        version: String,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resize process types: `dyno ps:type web=Standard-2X worker=Performance-M -a APP`
    #[command(name = "ps:type")]
    PsType {
        /// TYPE=SIZE …
        #[arg(required = true)]
        changes: Vec<String>,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a dyno (run.1), a process type's dynos (web) or one of them (web.1); formation
    /// dynos are started again, as on Heroku, one-offs end
    #[command(name = "ps:stop")]
    PsStop {
        dyno: String,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Restart all dynos, a process type's (web) or one (web.1)
    #[command(name = "ps:restart")]
    PsRestart {
        dyno: Option<String>,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Maintenance mode on: the router answers every request with the maintenance page (H80)
    #[command(name = "maintenance:on")]
    MaintenanceOn {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Maintenance mode off
    #[command(name = "maintenance:off")]
    MaintenanceOff {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a one-off dyno (run.N) on the current release, attached: its output here, its exit
    /// status as ours. `dyno run -a APP -- python3 manage.py migrate`
    Run {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[arg(required = true, last = true)]
        command: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the app's log drains
    Drains {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Copy the app's log lines to syslog://HOST:PORT, syslog+tls://HOST:PORT or https://…
    #[command(name = "drains:add")]
    DrainsAdd {
        url: String,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a log drain (by URL or token)
    #[command(name = "drains:remove")]
    DrainsRemove {
        url_or_token: String,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the app's Heroku Labs features, [+] when on
    ///
    /// Labs features are experimental switches per app. log-runtime-metrics: about every 20 s,
    /// each running dyno's load average and memory use go to the app's log as
    /// `heroku[web.1]: source=web.1 dyno=heroku.… sample#load_avg_1m=… sample#memory_rss=…`
    /// lines (see `dyno logs`).
    Labs {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn a Heroku Labs feature on: `dyno labs:enable log-runtime-metrics -a APP`
    ///
    /// Takes effect at once, no restart needed. See `dyno labs -a APP` for the features.
    #[command(name = "labs:enable")]
    LabsEnable {
        /// The feature (e.g. log-runtime-metrics)
        feature: String,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn a Heroku Labs feature off: `dyno labs:disable log-runtime-metrics -a APP`
    #[command(name = "labs:disable")]
    LabsDisable {
        /// The feature (e.g. log-runtime-metrics)
        feature: String,
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show recent log lines (Heroku's format), optionally following new ones
    Logs {
        /// The app (e.g. -a hello)
        #[arg(short, long)]
        app: String,
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
        #[command(flatten)]
        client: ClientArgs,
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
        quantity,
        size,
    })
}

impl PlatformCommand {
    fn client(&self) -> &ClientArgs {
        match self {
            PlatformCommand::Apps { client }
            | PlatformCommand::AppsCreate { client, .. }
            | PlatformCommand::AppsDestroy { client, .. }
            | PlatformCommand::Deploy { client, .. }
            | PlatformCommand::Releases { client, .. }
            | PlatformCommand::Ps { client, .. }
            | PlatformCommand::PsScale { client, .. }
            | PlatformCommand::Logs { client, .. }
            | PlatformCommand::Config { client, .. }
            | PlatformCommand::ConfigSet { client, .. }
            | PlatformCommand::ConfigUnset { client, .. }
            | PlatformCommand::Rollback { client, .. }
            | PlatformCommand::PsRestart { client, .. }
            | PlatformCommand::PsType { client, .. }
            | PlatformCommand::PsStop { client, .. }
            | PlatformCommand::MaintenanceOn { client, .. }
            | PlatformCommand::MaintenanceOff { client, .. }
            | PlatformCommand::Run { client, .. }
            | PlatformCommand::Drains { client, .. }
            | PlatformCommand::DrainsAdd { client, .. }
            | PlatformCommand::DrainsRemove { client, .. }
            | PlatformCommand::Labs { client, .. }
            | PlatformCommand::LabsEnable { client, .. }
            | PlatformCommand::LabsDisable { client, .. } => client,
        }
    }
}

async fn run_async(command: PlatformCommand) -> Result<(), String> {
    let api = ApiClient::unix(&command.client().socket);
    let json = command.client().json;
    let maintenance_on = matches!(command, PlatformCommand::MaintenanceOn { .. });
    let e = |e: dyno_api::ClientError| e.to_string();
    match command {
        PlatformCommand::Apps { .. } => {
            let apps = api.list_apps().await.map_err(e)?;
            out(json, &apps, || {
                let mut s = String::from("=== Apps\n");
                for a in &apps {
                    s.push_str(&format!("{}\n", a.name));
                }
                s
            });
        }
        PlatformCommand::AppsCreate { name, .. } => {
            let app = api.create_app(&name).await.map_err(e)?;
            out(json, &app, || {
                format!("Creating ⬢ {}... done\n{}\n", app.name, app.web_url)
            });
        }
        PlatformCommand::AppsDestroy { name, confirm, .. } => {
            if confirm.as_deref() != Some(name.as_str()) {
                return Err(format!(
                    "this destroys {name}, its dynos, releases and logs; to proceed, re-run with --confirm {name}"
                ));
            }
            let app = api.destroy_app(&name).await.map_err(e)?;
            out(json, &app, || {
                format!("Destroying ⬢ {}... done\n", app.name)
            });
        }
        PlatformCommand::Deploy { dir, app, .. } => {
            let dir = dir
                .canonicalize()
                .map_err(|err| format!("{}: {err}", dir.display()))?;
            let progress = Progress::start(
                Mode::for_output(json),
                &format!("Deploying {} to ⬢ {app}", dir.display()),
            );
            let goal = live_goal(&progress, progress::release_goal(&api, &app)).await;
            let dir = dir.to_string_lossy();
            let release = progress
                .follow(&api, &app, &goal, api.deploy(&app, &dir))
                .await
                .map_err(e)?;
            out(json, &release, || {
                format!("done, v{} ({})\n", release.version, release.description)
            });
        }
        PlatformCommand::Releases { app, .. } => {
            let list = api.releases(&app).await.map_err(e)?;
            out(json, &list, || {
                let mut s = format!("=== ⬢ {app} Releases\n");
                for r in &list {
                    s.push_str(&format!(
                        "v{:<4} {:<40} {}{}\n",
                        r.version,
                        r.description,
                        r.created_at,
                        if r.current { "  (current)" } else { "" }
                    ));
                }
                s
            });
        }
        PlatformCommand::Ps { app, .. } => {
            let list = api.dynos(&app).await.map_err(e)?;
            out(json, &list, || {
                if list.is_empty() {
                    return format!("No dynos on ⬢ {app}\n");
                }
                let mut s = String::new();
                let mut last_type = "";
                for d in &list {
                    if d.process_type != last_type {
                        let count = list
                            .iter()
                            .filter(|x| x.process_type == d.process_type)
                            .count();
                        s.push_str(&format!(
                            "=== {} ({}): {} ({count})\n",
                            d.process_type, d.size, d.command
                        ));
                        last_type = &d.process_type;
                    }
                    s.push_str(&format!("{}: {} (v{})\n", d.name, d.state, d.release));
                }
                s
            });
        }
        PlatformCommand::PsScale { changes, app, .. } => {
            let updates = changes
                .iter()
                .map(|c| parse_change(c))
                .collect::<Result<Vec<_>, _>>()?;
            let progress = Progress::start(Mode::for_output(json), "Scaling dynos");
            let goal = live_goal(&progress, scaled_goal(&api, &app, &updates)).await;
            let formation = progress
                .follow(&api, &app, &goal, patch_formation(&api, &app, updates))
                .await?;
            out(json, &formation, || {
                let now: Vec<String> = formation
                    .iter()
                    .map(|f| format!("{} at {}:{}", f.process_type, f.quantity, f.size))
                    .collect();
                format!("done, now running {}\n", now.join(", "))
            });
        }
        PlatformCommand::Config { app, .. } => {
            let config = api.config(&app).await.map_err(e)?;
            out(json, &config, || show_config(&app, &config));
        }
        PlatformCommand::ConfigSet { pairs, app, .. } => {
            let mut changes = BTreeMap::new();
            for pair in &pairs {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?}: expected KEY=value, e.g. LOG_LEVEL=debug"))?;
                changes.insert(k.to_string(), Some(v.to_string()));
            }
            let keys: Vec<&str> = changes.keys().map(|k| k.as_str()).collect();
            let title = format!("Setting {} and restarting ⬢ {app}", keys.join(", "));
            let (config, version) = patch_config(&api, &app, json, &title, &changes).await?;
            out(json, &config, || {
                format!("done{version}\n{}", show_config(&app, &config))
            });
        }
        PlatformCommand::ConfigUnset { keys, app, .. } => {
            let changes: BTreeMap<String, Option<String>> =
                keys.iter().map(|k| (k.clone(), None)).collect();
            let title = format!("Unsetting {} and restarting ⬢ {app}", keys.join(", "));
            let (config, version) = patch_config(&api, &app, json, &title, &changes).await?;
            out(json, &config, || format!("done{version}\n"));
        }
        PlatformCommand::Rollback { version, app, .. } => {
            let v: u32 = version
                .trim_start_matches('v')
                .parse()
                .map_err(|_| format!("{version:?}: give a release like v3"))?;
            let progress = Progress::start(
                Mode::for_output(json),
                &format!("Rolling back ⬢ {app} to v{v}"),
            );
            let goal = live_goal(&progress, progress::release_goal(&api, &app)).await;
            let release = progress
                .follow(&api, &app, &goal, api.rollback(&app, v))
                .await
                .map_err(e)?;
            out(json, &release, || {
                format!("done, v{} ({})\n", release.version, release.description)
            });
        }
        PlatformCommand::PsType { changes, app, .. } => {
            let updates = changes
                .iter()
                .map(|c| match c.split_once('=') {
                    // TYPE=SIZE is scale's TYPE:SIZE.
                    Some((t, size)) => parse_change(&format!("{t}:{size}")),
                    None => Err(format!("{c:?}: expected TYPE=SIZE, e.g. web=Standard-2X")),
                })
                .collect::<Result<Vec<_>, String>>()?;
            let progress = Progress::start(
                Mode::for_output(json),
                &format!("Resizing dynos on ⬢ {app}"),
            );
            let goal = live_goal(&progress, scaled_goal(&api, &app, &updates)).await;
            let formation = progress
                .follow(&api, &app, &goal, patch_formation(&api, &app, updates))
                .await?;
            out(json, &formation, || {
                let now: Vec<String> = formation
                    .iter()
                    .map(|f| format!("{}={}", f.process_type, f.size))
                    .collect();
                format!("done, now {}\n", now.join(", "))
            });
        }
        PlatformCommand::PsStop { dyno, app, .. } => {
            if !json {
                eprint!("Stopping {dyno} on ⬢ {app}... ");
            }
            let done = api.restart(&app, Some(&dyno)).await.map_err(e)?;
            out(json, &done, || "done\n".to_string());
        }
        PlatformCommand::PsRestart { dyno, app, .. } => {
            // Heroku's words: all dynos, all dynos of a type, or one dyno.
            let (action, only_type) = match dyno.as_deref() {
                None => (format!("Restarting all dynos on ⬢ {app}"), None),
                Some(d) => match d.split_once('.') {
                    Some((t, _)) => (format!("Restarting dyno {d} on ⬢ {app}"), Some(t)),
                    None => (format!("Restarting all {d} dynos on ⬢ {app}"), Some(d)),
                },
            };
            let progress = Progress::start(Mode::for_output(json), &action);
            let goal = live_goal(&progress, async {
                let (version, formation) = progress::current(&api, &app).await?;
                let goal = Goal::from_formation(version, &formation);
                Some(match only_type {
                    Some(t) => goal.only(t),
                    None => goal,
                })
            })
            .await;
            let done = progress
                .follow(&api, &app, &goal, api.restart(&app, dyno.as_deref()))
                .await
                .map_err(e)?;
            out(json, &done, || "done\n".to_string());
        }
        PlatformCommand::MaintenanceOn { app, .. }
        | PlatformCommand::MaintenanceOff { app, .. } => {
            let on = maintenance_on;
            if !json {
                eprint!(
                    "{} maintenance mode for ⬢ {app}... ",
                    if on { "Enabling" } else { "Disabling" }
                );
            }
            let updated = api.update_app(&app, on).await.map_err(e)?;
            out(json, &updated, || "done\n".to_string());
        }
        PlatformCommand::Run { app, command, .. } => {
            let command = command.join(" ");
            let dyno = api.run(&app, &command).await.map_err(e)?;
            if !json {
                eprintln!("Running {command} on ⬢ {app}... up, {}", dyno.name);
            }
            let code = attach(&api, &app, &dyno.name, json).await?;
            if code != 0 {
                return Err(format!("{} exited with status {code}", dyno.name));
            }
        }
        PlatformCommand::Drains { app, .. } => {
            let list = api.drains(&app).await.map_err(e)?;
            out(json, &list, || {
                let mut s = format!("=== ⬢ {app} Drains\n");
                for d in &list {
                    s.push_str(&format!("{} ({})\n", d.url, d.token));
                }
                s
            });
        }
        PlatformCommand::DrainsAdd { url, app, .. } => {
            let drain = api.add_drain(&app, &url).await.map_err(e)?;
            out(json, &drain, || {
                format!("Successfully added drain {}\n", drain.url)
            });
        }
        PlatformCommand::DrainsRemove {
            url_or_token, app, ..
        } => {
            // The API removes by token; a URL is looked up first.
            let token = if url_or_token.contains("://") {
                let list = api.drains(&app).await.map_err(e)?;
                list.into_iter()
                    .find(|d| d.url == url_or_token)
                    .map(|d| d.token)
                    .ok_or_else(|| {
                        format!("no drain {url_or_token} on {app}; see `dyno drains -a {app}`")
                    })?
            } else {
                url_or_token
            };
            let drain = api.remove_drain(&app, &token).await.map_err(e)?;
            out(json, &drain, || {
                format!("Successfully removed drain {}\n", drain.url)
            });
        }
        PlatformCommand::Labs { app, .. } => crate::labs::list(&api, &app, json).await?,
        PlatformCommand::LabsEnable { feature, app, .. } => {
            crate::labs::switch(&api, &app, &feature, true, json).await?
        }
        PlatformCommand::LabsDisable { feature, app, .. } => {
            crate::labs::switch(&api, &app, &feature, false, json).await?
        }
        PlatformCommand::Logs {
            app,
            num,
            ps,
            source,
            tail,
            ..
        } => {
            let query = LogQuery {
                n: Some(num),
                ps,
                source,
                tail,
            };
            if tail {
                // A stream: the recent lines, then each new one, until interrupted.
                api.tail_logs(&app, &query, |line| println!("{line}"))
                    .await
                    .map_err(e)?;
            } else {
                let lines = api.logs(&app, &query).await.map_err(e)?;
                for line in &lines {
                    println!("{line}");
                }
            }
        }
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

/// Follows a one-off dyno's log until it exits: its output on stdout (the bare messages, or
/// whole lines with `--json`), its exit status returned.
async fn attach(api: &ApiClient, app: &str, dyno: &str, json: bool) -> Result<i32, String> {
    let app_prefix = format!("app[{dyno}]: ");
    let exited = format!("heroku[{dyno}]: Process exited with status ");
    let query = LogQuery {
        n: Some(1500),
        ps: Some(dyno.to_string()),
        source: None,
        tail: false,
    };
    let mut printed = 0usize;
    loop {
        let lines = api.logs(app, &query).await.map_err(|e| e.to_string())?;
        for line in lines.iter().skip(printed) {
            if let Some((_, message)) = line.split_once(&app_prefix) {
                if json {
                    println!("{line}");
                } else {
                    println!("{message}");
                }
            }
            if let Some((_, code)) = line.split_once(&exited) {
                return Ok(code.trim().parse().unwrap_or(1));
            }
        }
        printed = lines.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
            ("web", Some(2), None)
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
