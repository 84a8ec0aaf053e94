//! `dyno up DIR`: run a Procfile app in one command, every process in its own dyno, logs on
//! stdout in Heroku's format, everything removed again on Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dyno_net::network::NetworkConfig;
use dyno_router::{FnSink, Router, RouterConfig, RouterLog, TlsError, TlsSettings};
use dyno_sandbox::cgroup::DynoSize;
use dyno_state::model::ScaleChange;
use dyno_state::{ProcessType as ProcessTypeName, Quantity, SizeName};

use crate::daemon::uids::{app_uid_in, UidRange};
use crate::daemon::{Daemon, DaemonError, DaemonOptions};
use crate::procfile::{self, AppFileError, ProcessType};
use dyno_logs::logring::Filter;
use dyno_supervisor::lifecycle::Lifecycle;

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    /// The app's name; by default the directory's.
    pub app: Option<String>,
    /// `web=2,worker=1`; by default one dyno per process type.
    pub formation: Option<String>,
    pub port: u16,
    pub network: NetworkConfig,
    /// Where sandbox state dirs go (removed at the end).
    pub state_root: PathBuf,
    pub lifecycle: Lifecycle,
    /// The `dyno` binary (for `dyno __shim`).
    pub exe: PathBuf,
    /// Every dyno's size (memory quota, processes, CPU weight).
    pub size: DynoSize,
    /// Where the app's uid comes from.
    pub uids: UidRange,
    /// System calls the app's dynos may make on top of the default profile (checked names).
    pub seccomp_allow: Vec<String>,
    /// Where the router listens (`http://<app>.localhost:PORT`).
    pub router_listen: std::net::SocketAddr,
    /// The router's timeouts and limits (Heroku's by default).
    pub router: RouterConfig,
    /// HTTPS as well, when the operator gives a certificate.
    pub router_tls: Option<RouterTls>,
    /// Where LXCFS is (or is to be) mounted for the dynos' private `/proc`; `None`: off.
    pub lxcfs_dir: Option<PathBuf>,
    /// CPUs busy dynos stay off (see [`crate::cpu_placement`]).
    pub cpu_reserve: usize,
}

/// The router's TLS listener: the operator's certificate chain and key, and where to listen
/// (`https://<app>.localhost:PORT`). Plain HTTP stays on [`UpOptions::router_listen`].
#[derive(Debug, Clone)]
pub struct RouterTls {
    pub settings: TlsSettings,
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("app directory {0}: no such directory")]
    NoDir(PathBuf),
    #[error(transparent)]
    AppFile(#[from] AppFileError),
    #[error("--formation {0}")]
    Formation(String),
    #[error("{procfile}:{line}: command `{program}` not found (looked in the app directory and in {path})")]
    CommandNotFound {
        procfile: PathBuf,
        line: usize,
        program: String,
        path: String,
    },
    #[error("app name {0:?}: use lowercase letters, digits and '-', starting with a letter (--app NAME)")]
    AppName(String),
    #[error("{0}")]
    Network(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What `dyno up` has to tell its user while it runs (the binary prints each as
/// `dyno up: <note>` on stderr; the app's log lines go to `out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Every dyno started (web dynos up) and the app is served.
    Running { app: String, count: u32, uid: u32 },
    /// Where the router serves the app (plain HTTP).
    Serving {
        app: String,
        listen: std::net::SocketAddr,
    },
    /// Where the router serves the app over TLS.
    ServingTls {
        app: String,
        port: u16,
        cert: PathBuf,
    },
    /// A web dyno is up, and the router has it.
    WebUp {
        dyno: String,
        ip: std::net::Ipv4Addr,
        port: u16,
    },
    /// Ctrl-C (or SIGTERM) came while dynos were starting.
    Interrupted,
    /// Starting failed.
    Failed(String),
    /// Ctrl-C: every dyno is being stopped.
    Stopping { count: u32 },
    /// Everything is stopped and removed.
    Stopped,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::Running { app, count, uid } => {
                write!(f, "{app} running {count} dyno(s) as uid {uid}; Ctrl-C stops it")
            }
            Note::Serving { app, listen } => write!(
                f,
                "the router serves http://{app}.localhost:{}/ (e.g. curl -H 'Host: {app}.localhost' http://{listen}/)",
                listen.port()
            ),
            Note::ServingTls { app, port, cert } => write!(
                f,
                "the router serves https://{app}.localhost:{port}/ (HTTP/2 or HTTP/1.1; certificate {})",
                cert.display()
            ),
            Note::WebUp { dyno, ip, port } => write!(f, "{dyno} is up at {ip}:{port}"),
            Note::Interrupted => f.write_str("interrupted while starting; stopping"),
            Note::Failed(why) => write!(f, "{why}; stopping"),
            Note::Stopping { count } => write!(f, "stopping {count} dyno(s)"),
            Note::Stopped => f.write_str("stopped; nothing left behind"),
        }
    }
}

/// Where [`run`] sends its [`Note`]s.
pub type NoteSink = std::sync::Arc<dyn Fn(Note) + Send + Sync>;

/// What `dyno up` is about to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub app: String,
    pub uid: u32,
    /// Every process type of the Procfile with how many dynos it gets (0: none).
    pub dynos: Vec<(ProcessType, u32)>,
    pub env: Vec<(String, String)>,
}

/// Reads and checks everything before anything is started.
pub fn plan(options: &UpOptions) -> Result<Plan, UpError> {
    let dir = &options.dir;
    if !dir.is_dir() {
        return Err(UpError::NoDir(dir.clone()));
    }
    let procfile_path = dir.join("Procfile");
    let types = procfile::read_procfile(&procfile_path)?;
    let env = procfile::read_dotenv(&dir.join(".env"))?;
    let app = match &options.app {
        Some(app) => app.clone(),
        None => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_lowercase()))
            .unwrap_or_else(|| "app".into())
            .replace(['_', '.', ' '], "-"),
    };
    let app_ok = !app.is_empty()
        && app.len() <= 30
        && app.starts_with(|c: char| c.is_ascii_lowercase())
        && app
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !app_ok {
        return Err(UpError::AppName(app));
    }
    let counts = formation(options.formation.as_deref(), &types)?;
    for (i, t) in types.iter().enumerate() {
        // The release phase runs once at start, whatever the formation.
        if counts.get(&t.name).copied().unwrap_or(0) > 0 || t.name == ProcessTypeName::RELEASE {
            check_command(
                &procfile_path,
                line_of(&procfile_path, &t.name).unwrap_or(i + 1),
                dir,
                &t.command,
            )?;
        }
    }
    let dynos = types
        .into_iter()
        .map(|t| {
            let n = counts.get(&t.name).copied().unwrap_or(0);
            (t, n)
        })
        .collect();
    Ok(Plan {
        uid: app_uid_in(&app, options.uids),
        app,
        dynos,
        env,
    })
}

fn formation(spec: Option<&str>, types: &[ProcessType]) -> Result<BTreeMap<String, u32>, UpError> {
    let known: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
    let Some(spec) = spec else {
        // One of each, but the release phase is no dyno of the formation.
        return Ok(types
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    u32::from(t.name != ProcessTypeName::RELEASE),
                )
            })
            .collect());
    };
    let mut counts = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, count) = part.split_once('=').ok_or_else(|| {
            UpError::Formation(format!(
                "{part:?}: expected TYPE=COUNT, e.g. web=2,worker=1"
            ))
        })?;
        if !known.contains(&name) {
            return Err(UpError::Formation(format!(
                "{name:?}: the Procfile has no such process type (it has: {})",
                known.join(", ")
            )));
        }
        let count: u32 = count
            .parse()
            .ok()
            .filter(|c| *c <= 100)
            .ok_or_else(|| UpError::Formation(format!("{part:?}: COUNT must be 0 to 100")))?;
        counts.insert(name.to_string(), count);
    }
    if counts.values().all(|c| *c == 0) {
        return Err(UpError::Formation(format!("{spec:?} starts no dyno")));
    }
    Ok(counts)
}

fn line_of(procfile: &Path, name: &str) -> Option<usize> {
    let text = std::fs::read_to_string(procfile).ok()?;
    text.lines()
        .position(|l| l.trim_start().starts_with(&format!("{name}:")))
        .map(|i| i + 1)
}

const PATH: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// Lines the printer of `dyno up` may fall behind by (a burst of output) before lines are
/// dropped for it, with a line saying how many: about 6 MB of lines at most.
const PRINT_QUEUE_LINES: usize = 65_536;

/// The command's program must exist: in the app (a path) or on the dyno's PATH. Shell syntax
/// we cannot judge (variables, builtins, assignments) is left to the shell.
fn check_command(procfile: &Path, line: usize, dir: &Path, command: &str) -> Result<(), UpError> {
    let Some(program) = command.split_whitespace().next() else {
        return Ok(());
    };
    let builtin = [
        "exec", "cd", "source", ".", "export", "set", "if", "for", "while", "true", "echo", "trap",
        "{", "(", "[", "test", "eval", "ulimit", "umask", "sleep",
    ];
    if builtin.contains(&program) || program.contains(['$', '=', '`', '"', '\'']) {
        return Ok(());
    }
    let found = if program.contains('/') {
        let path = Path::new(program);
        if path.is_absolute() {
            path.exists()
        } else {
            dir.join(path).exists()
        }
    } else {
        PATH.iter().any(|p| Path::new(p).join(program).exists())
    };
    if found {
        Ok(())
    } else {
        Err(UpError::CommandNotFound {
            procfile: procfile.to_path_buf(),
            line,
            program: program.to_string(),
            path: PATH.join(":"),
        })
    }
}

/// Runs the app until Ctrl-C or SIGTERM; then stops every dyno gracefully and removes what it
/// made. Log lines go to `out`; what the user should know meanwhile to `notes`.
///
/// This is `dyno serve`'s daemon, embedded, on a data dir of its own under the state dir: the
/// app is created, `.env` set as its config, the directory deployed as its slug (the Procfile's
/// release phase included) and scaled to the formation asked for.
pub async fn run(
    options: UpOptions,
    mut out: impl Write + Send + 'static,
    notes: NoteSink,
) -> Result<(), UpError> {
    let plan = plan(&options)?;
    let mut shutdown = Shutdown::listen().map_err(|e| UpError::Network(format!("signals: {e}")))?;
    // The certificate and the router's ports are checked before anything is started.
    let tls = match &options.router_tls {
        Some(t) => Some((t.settings.load()?, t.listen)),
        None => None,
    };
    let app_dir = options
        .dir
        .canonicalize()
        .map_err(|_| UpError::NoDir(options.dir.clone()))?;
    let listener = tokio::net::TcpListener::bind(options.router_listen)
        .await
        .map_err(|e| {
            UpError::Network(format!("router: listen on {}: {e}", options.router_listen))
        })?;
    let tls = match tls {
        Some((acceptor, listen)) => {
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                UpError::Network(format!("router: listen on {listen} (--tls-listen): {e}"))
            })?;
            Some((acceptor, listener))
        }
        None => None,
    };
    let daemon = Daemon::open(DaemonOptions {
        data_dir: options.state_root.join("data"),
        state_root: options.state_root.join("dynos"),
        network: options.network.clone(),
        exe: options.exe.clone(),
        lifecycle: options.lifecycle.clone(),
        uids: options.uids,
        port: options.port,
        router_port: options.router_listen.port(),
        web_up: Some(crate::webdynos::WebUpSink({
            let notes = notes.clone();
            std::sync::Arc::new(move |dyno: &str, ip, port| {
                notes(Note::WebUp {
                    dyno: dyno.to_string(),
                    ip,
                    port,
                })
            })
        })),
        memory_mb: Some(options.size.memory_mb),
        runtime_metrics_interval: crate::daemon::runtime_metrics::DEFAULT_INTERVAL,
        seccomp: crate::daemon::seccomp::SeccompAdditions::new([
            crate::daemon::seccomp::AppCalls {
                app: plan.app.clone(),
                calls: options.seccomp_allow.clone(),
            },
        ]),
        lxcfs_dir: options.lxcfs_dir.clone(),
        cpu_reserve: options.cpu_reserve,
        build: Default::default(),
        api_socket: None,
    })
    .await
    .map_err(|e| UpError::Network(e.to_string()))?;
    let router = Router::new(options.router.clone(), daemon.routes.clone(), {
        let daemon = daemon.clone();
        FnSink(move |app: &str, line: RouterLog| daemon.router_line(app, line))
    });
    let router_task = tokio::spawn(router.clone().serve(listener));
    let tls_task =
        tls.map(|(acceptor, listener)| tokio::spawn(router.serve_tls(listener, acceptor)));
    let mut tail = daemon
        .hub
        .subscribe_with_room(&plan.app, Filter::all(), PRINT_QUEUE_LINES);
    let printer = tokio::spawn(async move {
        while let Some(line) = tail.next().await {
            let _ = writeln!(out, "{line}");
            // What else is queued goes out in the same write.
            while let Some(line) = tail.try_next() {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        }
    });
    let count: u32 = plan.dynos.iter().map(|(_, n)| n).sum();
    // Ctrl-C while dynos boot stops everything at once: the start (a preboot wait of up to the
    // boot timeout) is dropped, and `stop` below ends every dyno it started.
    let started = tokio::select! {
        started = start_app(&daemon, &options, &plan, &app_dir) => Some(started),
        () = shutdown.wait() => None,
    };
    match &started {
        None => notes(Note::Interrupted),
        Some(Err(e)) => notes(Note::Failed(e.to_string())),
        Some(Ok(())) => {
            notes(Note::Running {
                app: plan.app.clone(),
                count,
                uid: plan.uid,
            });
            if plan.dynos.iter().any(|(p, n)| p.name == "web" && *n > 0) {
                notes(Note::Serving {
                    app: plan.app.clone(),
                    listen: options.router_listen,
                });
                if let Some(t) = &options.router_tls {
                    notes(Note::ServingTls {
                        app: plan.app.clone(),
                        port: t.listen.port(),
                        cert: t.settings.cert.clone(),
                    });
                }
            }
            shutdown.wait().await;
            notes(Note::Stopping { count });
        }
    }
    daemon.stop().await;
    router_task.abort();
    let _ = router_task.await;
    if let Some(t) = tls_task {
        t.abort();
        let _ = t.await;
    }
    daemon.hub.remove_app(&plan.app);
    let _ = printer.await;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&options.state_root);
    // The default state root's parent (/run/dyno) goes too when nothing else is in it.
    if let Some(parent) = options.state_root.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    started.transpose()?;
    notes(Note::Stopped);
    Ok(())
}

/// The app as `dyno up` runs it: created, its `.env` as config vars, the directory deployed,
/// the formation scaled.
async fn start_app(
    daemon: &Daemon,
    options: &UpOptions,
    plan: &Plan,
    app_dir: &Path,
) -> Result<(), UpError> {
    let failed = |e: DaemonError| UpError::Network(e.message);
    daemon.create_app(&plan.app).await.map_err(failed)?;
    if !plan.env.is_empty() {
        daemon
            .config_set(&plan.app, plan.env.clone())
            .await
            .map_err(failed)?;
    }
    let size = SizeName::parse(options.size.name).map_err(|e| UpError::Formation(e.to_string()))?;
    let mut formation = Vec::new();
    for (t, quantity) in &plan.dynos {
        if t.name == ProcessTypeName::RELEASE {
            continue;
        }
        formation.push(ScaleChange {
            process_type: ProcessTypeName::parse(&t.name)
                .map_err(|e| UpError::Formation(e.to_string()))?,
            quantity: Some(
                Quantity::new(*quantity, 100).map_err(|e| UpError::Formation(e.to_string()))?,
            ),
            size: Some(size.clone()),
        });
    }
    daemon
        .deploy_with(&plan.app, app_dir, formation)
        .await
        .map_err(failed)?;
    Ok(())
}

/// Ctrl-C or SIGTERM, caught from the moment this is made: one that comes while the app is
/// still starting is not lost (nor does it kill the process the default way).
pub struct Shutdown {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn listen() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Shutdown {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Returns at once if a signal came already.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(names: &[&str]) -> Vec<ProcessType> {
        names
            .iter()
            .map(|n| ProcessType {
                name: n.to_string(),
                command: "true".into(),
            })
            .collect()
    }

    #[test]
    fn formation_defaults_to_one_each_and_checks_names() {
        let t = types(&["web", "worker"]);
        let f = formation(None, &t).unwrap();
        assert_eq!(f.get("web"), Some(&1));
        assert_eq!(f.get("worker"), Some(&1));
        let f = formation(Some("web=2,worker=0"), &t).unwrap();
        assert_eq!(f.get("web"), Some(&2));
        let e = formation(Some("clock=1"), &t).unwrap_err().to_string();
        assert!(
            e.contains("no such process type (it has: web, worker)"),
            "{e}"
        );
        assert!(formation(Some("web"), &t).is_err());
        assert!(formation(Some("web=x"), &t).is_err());
        assert!(formation(Some("web=0"), &t).is_err());
    }

    #[test]
    fn missing_commands_are_named_with_their_line() {
        let dir = std::env::temp_dir();
        let e = check_command(Path::new("Procfile"), 3, &dir, "no-such-program-xyz --flag")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Procfile:3: command `no-such-program-xyz` not found"),
            "{e}"
        );
        check_command(Path::new("Procfile"), 1, &dir, "python3 web.py").unwrap();
        check_command(Path::new("Procfile"), 1, &dir, "exec $CMD").unwrap();
    }
}
