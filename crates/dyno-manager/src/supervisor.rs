//! One task per dyno, running Heroku's lifecycle: `starting → up → crashed/down`, with the log
//! lines Heroku writes at each step.
//!
//! Each start is a fresh incarnation: a new network (a new monotonic name, never reused), a new
//! sandbox. A web dyno is `up` once something LISTENs on `$PORT` inside its network namespace
//! (inet_diag: no connect probes), else R10 at the boot timeout. A dyno that exits (with any
//! status: 0 too, it is not meant to end) crashes, and is restarted per the cool-off schedule.
//! Stopping is SIGTERM to every process of the dyno, the grace period, then SIGKILL and R12.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dyno_net::diag::SockDiag;
use dyno_net::ipam::LeaseStore;
use dyno_net::network::Network;
use dyno_sandbox::cgroup::{Cgroups, DynoCgroup, DynoSize};
use dyno_sandbox::spec::{ExitRecord, SandboxSpec, SeccompSpec, StateDir};
use dyno_sandbox::{launch, sys};
use rustix::process::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::heroku::RuntimeError;
pub use crate::ids::uuid_v4;
use crate::ids::{base36, random_unit};
use crate::lifecycle::Lifecycle;
use crate::logs::{LogLine, Source};
use crate::memory::{Logger, MemoryVerdict, MemoryWatch};
use crate::netwatch::{NetWatch, Problem, Registration};

pub type SharedNetwork = Arc<Mutex<Network<Box<dyn LeaseStore + Send>>>>;

/// Why the ledger could not record an incarnation.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The dyno's app or size is not one the store accepts.
    #[error("record the dyno: {0}")]
    Invalid(#[from] dyno_state::ValidationError),
    #[error("record the dyno: {0}")]
    Store(#[from] dyno_state::StateError),
    #[error("record the dyno: no address leased to {0}")]
    NoAddress(String),
}

/// Why an incarnation could not start or be adopted; the app's log gets
/// `Error starting dyno: <this>`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Network(#[from] dyno_net::network::NetworkError),
    #[error(transparent)]
    Name(#[from] dyno_net::names::NameError),
    #[error(transparent)]
    Netns(#[from] dyno_net::ns::NsError),
    #[error("state dir {}: {source}", .path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the dyno's cgroup: {0}")]
    Cgroup(#[from] dyno_sandbox::cgroup::CgroupError),
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    #[error("start the shim: {0}")]
    Spawn(std::io::Error),
    #[error("watch the shim {pid}: {source}")]
    WatchShim { pid: u32, source: std::io::Error },
}

/// Where each incarnation is recorded before its resources exist and forgotten after they are
/// gone (the daemon's store; see `dyno-state`'s intent-before-resource rule), so that a daemon
/// restarted after a crash finds every resource it has to adopt or remove. The calls block (a
/// transaction each); the supervisor makes them off the async threads.
pub trait Ledger: Send + Sync {
    /// Records an incarnation about to be made; returns its record's id and the address leased
    /// to it.
    fn begin(&self, def: &DynoDef, net_name: &str) -> Result<(i64, Ipv4Addr), LedgerError>;
    /// Leases record `id` another address: the one it has is another instance's on this host.
    fn relocate(&self, id: i64) -> Result<Ipv4Addr, LedgerError>;
    /// Its teardown starts: from here on a restarted daemon stops it rather than adopting it.
    fn stopping(&self, id: i64);
    /// Its resources are gone.
    fn end(&self, id: i64);
}

/// A dyno found running after a restart (see [`adopt`]).
#[derive(Debug, Clone)]
pub struct Adoptee {
    /// Its record in the [`Ledger`].
    pub intent: i64,
    pub net_name: String,
    pub ip: Ipv4Addr,
    /// Its shim, checked to be alive and ours by the caller.
    pub shim_pid: u32,
}

/// What every dyno of this manager shares.
pub struct Platform {
    pub network: SharedNetwork,
    /// The `dyno` binary (for `dyno __shim`).
    pub exe: PathBuf,
    /// Where dynos' sandbox state dirs go.
    pub state_root: PathBuf,
    pub lifecycle: Lifecycle,
    pub logs: mpsc::UnboundedSender<LogLine>,
    /// Per-dyno cgroups (memory, pids, cpu); `None` where the host has none for us.
    pub cgroups: Option<Cgroups>,
    /// Records of incarnations; `None` for a manager that keeps nothing across restarts.
    pub ledger: Option<Arc<dyn Ledger>>,
    /// The system-call filter of this app's dynos: the default profile plus the operator's
    /// additions for the app.
    pub seccomp: SeccompSpec,
    /// The LXCFS mount for the dynos' private `/proc` view; `None`: the kernel's figures.
    pub proc_view: Option<PathBuf>,
    /// Notices dynos whose network was changed under them; `None`: nobody looks.
    pub netwatch: Option<Arc<NetWatch>>,
}

impl Platform {
    pub fn new(
        network: SharedNetwork,
        exe: PathBuf,
        state_root: PathBuf,
        lifecycle: Lifecycle,
        logs: mpsc::UnboundedSender<LogLine>,
        cgroups: Option<Cgroups>,
    ) -> Platform {
        Platform {
            network,
            exe,
            state_root,
            lifecycle,
            logs,
            cgroups,
            ledger: None,
            seccomp: SeccompSpec::default(),
            proc_view: None,
            netwatch: None,
        }
    }

    pub fn with_netwatch(mut self, netwatch: Option<Arc<NetWatch>>) -> Platform {
        self.netwatch = netwatch;
        self
    }

    pub fn with_seccomp(mut self, seccomp: SeccompSpec) -> Platform {
        self.seccomp = seccomp;
        self
    }

    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Platform {
        self.ledger = Some(ledger);
        self
    }

    pub fn with_proc_view(mut self, lxcfs_dir: Option<PathBuf>) -> Platform {
        self.proc_view = lxcfs_dir;
        self
    }

    /// Runs a ledger call off the async threads; nothing without a ledger.
    async fn record<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Ledger) -> T + Send + 'static,
    ) -> Option<T> {
        let ledger = self.ledger.clone()?;
        tokio::task::spawn_blocking(move || call(&*ledger))
            .await
            .ok()
    }

    /// A network name never used before, 13 characters of base 36: milliseconds since the
    /// epoch (the kernel destroys namespaces asynchronously; a reused name could still be
    /// taken), a counter shared by every app of this process, and a part random per process
    /// (the dyno cgroups of every manager on the host share one parent).
    fn next_net_name(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let process = *PROCESS.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                % (36 * 36 * 36)
        });
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) % (36 * 36);
        format!("{}{:0>2}{:0>3}", base36(millis), base36(n), base36(process))
    }

    /// The shared network (a poisoned lock is still usable: its state is kept consistent by
    /// `Network` itself, transaction by transaction).
    pub fn network(&self) -> std::sync::MutexGuard<'_, Network<Box<dyn LeaseStore + Send>>> {
        self.network.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, source: Source, dyno: &str, message: impl Into<String>) {
        let _ = self.logs.send(LogLine::now(source, dyno, message));
    }
}

/// One dyno of an app's formation.
#[derive(Debug, Clone)]
pub struct DynoDef {
    pub app: String,
    /// The process type (`web`, `worker`) or `run` for one-off dynos.
    pub process: String,
    pub index: u32,
    pub command: String,
    /// Config vars.
    pub env: Vec<(String, String)>,
    pub app_dir: PathBuf,
    /// The release it runs (recorded in the [`Ledger`]).
    pub release: u32,
    pub uid: u32,
    pub port: u16,
    /// One-off dynos are never restarted.
    pub restart: bool,
    /// Memory quota, processes, CPU weight.
    pub size: DynoSize,
}

impl DynoDef {
    /// `web.1`
    pub fn name(&self) -> String {
        format!("{}.{}", self.process, self.index)
    }

    pub fn is_web(&self) -> bool {
        self.process == "web"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Up,
    Crashed,
    Down,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Up => "up",
            State::Crashed => "crashed",
            State::Down => "down",
        }
    }
}

/// What the outside can see of a dyno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    pub ip: Option<Ipv4Addr>,
    /// The running incarnation's network name: its namespace `dyno-<net>`, link `dy<net>`,
    /// cgroup and state dir are named by it.
    pub net_name: Option<String>,
    /// How often the dyno was started again after it crashed.
    pub restarts: u32,
    /// The exit status of its last incarnation that ended (Heroku's `Process exited with
    /// status N`).
    pub exit_code: Option<i32>,
}

/// The handle of a running supervisor.
pub struct DynoHandle {
    pub name: String,
    pub status: watch::Receiver<Status>,
    stop: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl DynoHandle {
    /// Stops the dyno (SIGTERM, grace, SIGKILL) and waits until it is down and cleaned up.
    pub async fn stop(self) {
        let _ = self.stop.send(()).await;
        let _ = self.task.await;
    }

    /// Whether the supervisor ended on its own (a one-off dyno finished).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

pub fn start(platform: Arc<Platform>, def: DynoDef) -> DynoHandle {
    spawn(platform, def, None)
}

/// Supervises a dyno that was running before this supervisor existed (the daemon restarted):
/// its first incarnation is the one found, later ones are started as usual.
pub fn adopt(platform: Arc<Platform>, def: DynoDef, found: Adoptee) -> DynoHandle {
    spawn(platform, def, Some(found))
}

fn spawn(platform: Arc<Platform>, def: DynoDef, found: Option<Adoptee>) -> DynoHandle {
    let (stop_tx, stop_rx) = mpsc::channel(1);
    let (status_tx, status_rx) = watch::channel(Status {
        state: State::Starting,
        ip: None,
        net_name: None,
        restarts: 0,
        exit_code: None,
    });
    let name = def.name();
    let task = tokio::spawn(supervise(platform, def, found, stop_rx, status_tx));
    DynoHandle {
        name,
        status: status_rx,
        stop: stop_tx,
        task,
    }
}

/// How one incarnation of a dyno ended.
enum Ended {
    /// Its main process exited (a crash, for a dyno not meant to end; the status is logged).
    Exited,
    /// We stopped it on request.
    Stopped,
    /// Daily cycling stopped it; it starts again at once.
    Cycled,
}

struct Supervisor {
    platform: Arc<Platform>,
    def: DynoDef,
    name: String,
    status: watch::Sender<Status>,
    state: State,
    /// The current incarnation's network name.
    net_name: Option<String>,
    restarts: u32,
}

impl Logger for Supervisor {
    fn log(&self, message: String) {
        self.platform.log(Source::Heroku, &self.name, message);
    }
}

impl Supervisor {
    fn log(&self, message: impl Into<String>) {
        self.platform.log(Source::Heroku, &self.name, message);
    }

    fn change(&mut self, to: State, ip: Option<Ipv4Addr>) {
        if self.state != to {
            self.log(format!(
                "State changed from {} to {}",
                self.state.as_str(),
                to.as_str()
            ));
        }
        self.state = to;
        let net_name = ip.and(self.net_name.clone());
        let exit_code = self.status.borrow().exit_code;
        self.status.send_replace(Status {
            state: to,
            ip,
            net_name,
            restarts: self.restarts,
            exit_code,
        });
    }
}

async fn supervise(
    platform: Arc<Platform>,
    def: DynoDef,
    mut found: Option<Adoptee>,
    mut stop: mpsc::Receiver<()>,
    status: watch::Sender<Status>,
) {
    let mut sup = Supervisor {
        name: def.name(),
        platform,
        def,
        status,
        state: State::Starting,
        net_name: None,
        restarts: 0,
    };
    let mut crashes: u32 = 0;
    loop {
        let started = Instant::now();
        let incarnation = match found.take() {
            Some(found) => {
                let (platform, def, name) =
                    (sup.platform.clone(), sup.def.clone(), sup.name.clone());
                let taken = found.clone();
                let adopted =
                    in_setup_lane(move || Incarnation::adopt(&platform, &def, &name, taken)).await;
                if adopted.is_err() {
                    discard(&sup, &found).await;
                }
                adopted
            }
            None => {
                sup.log(format!(
                    "Starting process with command `{}`",
                    sup.def.command
                ));
                Incarnation::start(&sup).await
            }
        };
        let ended = match incarnation {
            Ok(mut run) => {
                sup.net_name = Some(run.net_name.clone());
                let ended = run.supervise(&mut sup, &mut stop).await;
                run.clean_up(&sup).await;
                ended
            }
            Err(message) => {
                sup.log(format!("Error starting dyno: {message}"));
                Ended::Exited
            }
        };
        match ended {
            Ended::Stopped => {
                sup.change(State::Down, None);
                return;
            }
            Ended::Cycled => {
                sup.change(State::Starting, None);
                continue;
            }
            Ended::Exited if !sup.def.restart => {
                sup.change(State::Down, None);
                return;
            }
            Ended::Exited => {
                sup.change(State::Crashed, None);
                if started.elapsed() >= sup.platform.lifecycle.stable_after {
                    crashes = 0;
                }
                crashes += 1;
                let wait = sup.platform.lifecycle.cooloff(crashes);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.recv() => {
                        sup.change(State::Down, None);
                        return;
                    }
                }
                sup.restarts += 1;
                sup.change(State::Starting, None);
            }
        }
    }
}

/// One run of a dyno: its network, sandbox and shim.
struct Incarnation {
    net_name: String,
    ip: Ipv4Addr,
    netns: dyno_net::ns::Netns,
    state: StateDir,
    shim: Shim,
    pumps: Vec<JoinHandle<()>>,
    cgroup: Option<DynoCgroup>,
    /// Its record in the platform's [`Ledger`].
    intent: Option<i64>,
    /// Whether the record says `stopping` already.
    stopping_recorded: bool,
    /// Its network on the platform's [`NetWatch`] while it runs.
    watch: Option<Registration>,
}

/// The shim of an incarnation.
enum Shim {
    /// Started by this supervisor: tokio reaps it. Signalled through its pidfd (taken right
    /// after the spawn, while it cannot have been reaped yet).
    Child {
        child: tokio::process::Child,
        pidfd: Option<std::os::fd::OwnedFd>,
    },
    /// Found running after a restart: someone else's child (init reaps it); its pidfd becomes
    /// readable when it exits. Its exit status is in the state dir (the shim records it).
    Adopted {
        exited: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    },
}

impl Shim {
    fn started(child: tokio::process::Child) -> Shim {
        let pidfd = child
            .id()
            .and_then(|pid| dyno_sandbox::sys::pidfd_open(pid as libc::pid_t).ok());
        Shim::Child { child, pidfd }
    }

    /// `signal` to the shim, through its pidfd where there is one. Gone already: nothing.
    fn signal(&self, signal: Signal) {
        let _ = match self {
            Shim::Child {
                pidfd: Some(pidfd), ..
            } => sys::signal_pidfd(pidfd, signal),
            Shim::Adopted { exited, .. } => sys::signal_pidfd(exited.get_ref(), signal),
            Shim::Child { child, pidfd: None } => match child.id() {
                Some(pid) => sys::signal_pid(pid as libc::pid_t, signal),
                None => Ok(()),
            },
        };
    }

    async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        match self {
            Shim::Child { child, .. } => child.wait().await.ok(),
            Shim::Adopted { exited, .. } => {
                let _ = exited.readable().await;
                None
            }
        }
    }
}

/// What the platform's [`NetWatch`] found wrong with this incarnation's network; never, for
/// one that is not watched.
async fn network_problems(watch: &Option<Registration>) -> Vec<Problem> {
    match watch {
        Some(registration) => registration.watched().problems().await,
        None => std::future::pending().await,
    }
}

fn is_address_taken<T>(made: &Result<T, StartError>) -> bool {
    use dyno_net::dyno::NetError;
    use dyno_net::network::NetworkError;
    matches!(
        made,
        Err(StartError::Network(NetworkError::Net(
            NetError::AddressTaken { .. }
        )))
    )
}

impl Incarnation {
    async fn start(sup: &Supervisor) -> Result<Incarnation, StartError> {
        let platform = &sup.platform;
        let net_name = platform.next_net_name();
        let intent = match platform
            .record({
                let def = sup.def.clone();
                let net_name = net_name.clone();
                move |ledger| ledger.begin(&def, &net_name)
            })
            .await
        {
            Some(Ok(recorded)) => Some(recorded),
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        let mut intent = intent;
        let mut taken = 0;
        let made = loop {
            let (lane_platform, def, name) = (platform.clone(), sup.def.clone(), sup.name.clone());
            let net_name = net_name.clone();
            let made = in_setup_lane(move || {
                Incarnation::make(&lane_platform, &def, &name, net_name, intent)
            })
            .await;
            // Another instance on this host routes the address our store leased: lease the
            // next one and set up again (nothing of the failed setup is left).
            let Some((id, _)) = intent else { break made };
            if !is_address_taken(&made) || taken >= dyno_net::network::TAKEN_ATTEMPTS {
                break made;
            }
            taken += 1;
            match platform.record(move |l| l.relocate(id)).await {
                Some(Ok(ip)) => intent = Some((id, ip)),
                Some(Err(e)) => break Err(e.into()),
                None => break made,
            }
        };
        if made.is_err() {
            if let Some((id, _)) = intent {
                // Whatever `make` created it removed again.
                platform.record(move |l| l.stopping(id)).await;
                platform.record(move |l| l.end(id)).await;
            }
        }
        made
    }

    /// Takes over the running incarnation a restarted daemon found. Blocking, like `make`.
    fn adopt(
        platform: &Arc<Platform>,
        def: &DynoDef,
        dyno: &str,
        found: Adoptee,
    ) -> Result<Incarnation, StartError> {
        let name = dyno_net::names::DynoName::new(&found.net_name)?;
        let netns_path = platform.network().run_dir().netns_path(&name);
        let netns = dyno_net::ns::Netns::open(&netns_path)?;
        let pid = found.shim_pid;
        let watch_error = |source: std::io::Error| StartError::WatchShim { pid, source };
        let pidfd =
            dyno_sandbox::sys::pidfd_open(found.shim_pid as libc::pid_t).map_err(watch_error)?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and unchanged
        // for as long as it lives.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| watch_error(e.into()))?;
        let state = StateDir(platform.state_root.join(&found.net_name));
        // `create` on the existing cgroup writes the same limits again and hands back a
        // handle that knows the quota (R14/R15 are measured against it).
        let cgroup = match &platform.cgroups {
            Some(cgroups) => Some(cgroups.create(&found.net_name, &def.size)?),
            None => None,
        };
        let pumps = vec![relay_pump(
            state.log_socket(),
            platform.clone(),
            def.app.clone(),
            dyno.to_owned(),
        )];
        Ok(Incarnation {
            net_name: found.net_name,
            ip: found.ip,
            netns,
            state,
            shim: Shim::Adopted { exited: pidfd },
            pumps,
            cgroup,
            intent: Some(found.intent),
            stopping_recorded: false,
            watch: platform
                .netwatch
                .as_ref()
                .map(|w| w.register(found.ip, def.is_web().then_some(def.port), None)),
        })
    }

    /// Network, state dir, cgroup, sandbox, shim: each undone again if a later step fails.
    /// Blocking (netlink, nf_tables, namespaces, cgroup files): run it off the runtime.
    fn make(
        platform: &Arc<Platform>,
        def: &DynoDef,
        name: &str,
        net_name: String,
        intent: Option<(i64, Ipv4Addr)>,
    ) -> Result<Incarnation, StartError> {
        let net = {
            let mut network = platform.network();
            let port = def.is_web().then_some(def.port);
            match intent {
                Some((_, ip)) => network.up_at(&net_name, ip, port),
                None => network.up(&net_name, port),
            }?
        };
        let state = StateDir(platform.state_root.join(&net_name));
        // The state dir names the dyno before its cgroup exists: a daemon restarted after a
        // crash knows by it which dyno cgroups are its own (see `daemon::reconcile`).
        if let Err(e) = std::fs::create_dir_all(&state.0) {
            let _ = platform.network().down(&net_name);
            return Err(StartError::StateDir {
                path: state.0.clone(),
                source: e,
            });
        }
        let cgroup = match &platform.cgroups {
            Some(cgroups) => match cgroups.create_new(&net_name, &def.size) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    let _ = platform.network().down(&net_name);
                    return Err(e.into());
                }
            },
            None => None,
        };
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/app".into()),
            ("DYNO".into(), name.to_owned()),
        ];
        if def.is_web() {
            env.push(("PORT".into(), def.port.to_string()));
        }
        for (k, v) in &def.env {
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        let spec = SandboxSpec {
            name: name.to_owned(),
            hostname: uuid_v4(),
            netns: net.netns_path.clone(),
            ip: net.ip,
            app_dir: def.app_dir.clone(),
            stack: SandboxSpec::default_stack(),
            uid: def.uid,
            gid: def.uid,
            env,
            command: def.command.clone(),
            nameservers: Vec::new(),
            cgroup: cgroup.clone(),
            output: dyno_sandbox::spec::OutputMode::Relay,
            seccomp: platform.seccomp.clone(),
            proc_view: platform.proc_view.clone(),
        };
        let started = launch::prepare(&state, &spec)
            .map_err(StartError::from)
            .and_then(|()| {
                let mut command =
                    tokio::process::Command::from(launch::shim_command(&platform.exe, &state));
                // The app's output comes through the shim's log socket: nothing of the dyno
                // writes into a pipe of ours, which would break when we die before it.
                command.stdout(Stdio::null()).stderr(Stdio::null());
                command.spawn().map_err(StartError::Spawn)
            });
        let shim = match started {
            Ok(shim) => shim,
            Err(e) => {
                let _ = platform.network().down(&net_name);
                let _ = std::fs::remove_dir_all(&state.0);
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                return Err(e);
            }
        };
        let pumps = vec![relay_pump(
            state.log_socket(),
            platform.clone(),
            def.app.clone(),
            name.to_owned(),
        )];
        Ok(Incarnation {
            net_name,
            ip: net.ip,
            netns: net.netns,
            state,
            shim: Shim::started(shim),
            pumps,
            cgroup,
            intent: intent.map(|(id, _)| id),
            stopping_recorded: false,
            watch: platform.netwatch.as_ref().map(|w| {
                w.register(
                    net.ip,
                    def.is_web().then_some(def.port),
                    Some(net.host_ifindex),
                )
            }),
        })
    }

    async fn supervise(&mut self, sup: &mut Supervisor, stop: &mut mpsc::Receiver<()>) -> Ended {
        let lifecycle = sup.platform.lifecycle.clone();
        let launched = Instant::now();
        let mut diag = if sup.def.is_web() {
            // Opened inside the dyno's namespace, by the namespace thread: off the runtime, but
            // not in the setup lane (a web dyno is not held up behind other dynos' setups).
            let netns = self.netns.try_clone();
            let opened = off_runtime(move || SockDiag::open_in(&netns?)).await;
            match opened {
                Ok(diag) => Some(diag),
                Err(e) => {
                    sup.log(format!("Error watching $PORT: {e}"));
                    None
                }
            }
        } else {
            None
        };
        if diag.is_none() {
            sup.change(State::Up, Some(self.ip));
        }
        let cycle_at = lifecycle
            .next_cycle(random_unit())
            .map(|d| tokio::time::Instant::now() + d);
        // Check for the listener early and then less often: most apps bind within milliseconds,
        // a few (Java) take seconds; the interval doubles from 2 ms up to `readiness_poll`.
        let mut readiness_delay = Duration::from_millis(2).min(lifecycle.readiness_poll);
        let mut next_readiness = tokio::time::Instant::now() + readiness_delay;
        let mut memory = tokio::time::interval(lifecycle.memory_poll);
        let mut memory_watch = MemoryWatch::new(self.cgroup.as_ref());
        loop {
            tokio::select! {
                status = self.shim.wait() => {
                    // Killed by the kernel at the hard limit (2× quota): that is R15.
                    if memory_watch.oom_killed(self.cgroup.as_ref()) {
                        memory_watch.r15(sup);
                    }
                    self.reap(sup, status).await;
                    return Ended::Exited;
                }
                _ = memory.tick(), if self.cgroup.is_some() => {
                    match memory_watch.check(sup, self.cgroup.as_ref(), &lifecycle) {
                        MemoryVerdict::Fine => {}
                        MemoryVerdict::Kill => {
                            self.kill_and_reap(sup).await;
                            return Ended::Exited;
                        }
                    }
                }
                _ = stop.recv() => {
                    self.stop(sup, &lifecycle).await;
                    return Ended::Stopped;
                }
                problems = network_problems(&self.watch) => {
                    let mut lost = false;
                    for problem in problems {
                        match problem {
                            Problem::Healed(what) => sup.log(format!("Network: {what}")),
                            Problem::Lost(what) => {
                                sup.log(format!("Network lost: {what}; restarting the dyno"));
                                lost = true;
                            }
                        }
                    }
                    if lost {
                        self.stop(sup, &lifecycle).await;
                        return Ended::Cycled;
                    }
                }
                _ = sleep_until(cycle_at) => {
                    sup.log("Cycling");
                    self.stop(sup, &lifecycle).await;
                    return Ended::Cycled;
                }
                _ = tokio::time::sleep_until(next_readiness), if sup.state == State::Starting && diag.is_some() => {
                    readiness_delay = (readiness_delay * 2).min(lifecycle.readiness_poll);
                    next_readiness = tokio::time::Instant::now() + readiness_delay;
                    let listening = diag
                        .as_mut()
                        .map(|d| d.is_listening(sup.def.port).unwrap_or(false))
                        .unwrap_or(false);
                    if listening {
                        diag = None;
                        sup.change(State::Up, Some(self.ip));
                    } else if launched.elapsed() >= lifecycle.boot_timeout {
                        sup.log(RuntimeError::BootTimeout { within: lifecycle.boot_timeout }.to_string());
                        sup.log("Stopping process with SIGKILL");
                        self.kill_and_reap(sup).await;
                        return Ended::Exited;
                    }
                }
            }
        }
    }

    /// SIGTERM to every process of the dyno (the shim forwards it to PID 1, which sends it to
    /// all), the grace period, then SIGKILL to PID 1 (which takes the whole pid namespace).
    async fn stop(&mut self, sup: &mut Supervisor, lifecycle: &Lifecycle) {
        // Off the watch before anything of it goes.
        self.watch = None;
        self.record_stopping(sup).await;
        unroute(sup);
        sup.log("Stopping all processes with SIGTERM");
        self.shim.signal(Signal::TERM);
        let status = match tokio::time::timeout(lifecycle.stop_grace, self.shim.wait()).await {
            Ok(status) => status,
            Err(_) => {
                sup.log(
                    RuntimeError::ExitTimeout {
                        within: lifecycle.stop_grace,
                    }
                    .to_string(),
                );
                sup.log("Stopping remaining processes with SIGKILL");
                self.kill();
                self.shim.wait().await
            }
        };
        self.reap(sup, status).await;
    }

    /// SIGKILL, then [`Incarnation::reap`].
    async fn kill_and_reap(&mut self, sup: &Supervisor) {
        self.kill();
        let status = self.shim.wait().await;
        self.reap(sup, status).await;
    }

    /// From here on a restarted daemon finishes this incarnation's teardown.
    async fn record_stopping(&mut self, sup: &Supervisor) {
        match self.intent {
            Some(id) if !self.stopping_recorded => {
                sup.platform.record(move |l| l.stopping(id)).await;
                self.stopping_recorded = true;
            }
            _ => {}
        }
    }

    /// Once the dyno's processes are gone: its last log lines, then Heroku's `Process exited`.
    async fn reap(&mut self, sup: &Supervisor, shim: Option<std::process::ExitStatus>) {
        unroute(sup);
        let code = self.exit_code(shim);
        self.drain_logs().await;
        // What the shim could not hand over (no reader was connected at the end).
        for line in unsent_lines(&self.state) {
            let (source, line) = relayed_line(&sup.def.app, &sup.name, line);
            sup.platform.log(source, &sup.name, line);
        }
        sup.log(format!("Process exited with status {code}"));
        sup.status.send_modify(|s| s.exit_code = Some(code));
    }

    /// SIGKILL to the dyno's PID 1: the kernel then kills every process in its pid namespace.
    fn kill(&self) {
        match launch::live_init_pid(&self.state) {
            Some(pid) => {
                let _ = sys::signal_pid(pid, Signal::KILL);
            }
            None => self.shim.signal(Signal::KILL),
        }
    }

    /// The status Heroku reports: the app's exit code, or 128 + the signal that killed it.
    fn exit_code(&self, shim: Option<std::process::ExitStatus>) -> i32 {
        match launch::exit_record(&self.state) {
            Some(ExitRecord::Exited(code)) => code,
            Some(ExitRecord::Signaled(signal)) => 128 + signal,
            Some(ExitRecord::SetupFailed(_)) => 126,
            None => shim.and_then(|s| s.code()).unwrap_or(1),
        }
    }

    async fn drain_logs(&mut self) {
        for mut pump in self.pumps.drain(..) {
            if tokio::time::timeout(Duration::from_secs(2), &mut pump)
                .await
                .is_err()
            {
                pump.abort();
            }
        }
    }

    async fn clean_up(mut self, sup: &Supervisor) {
        self.watch = None;
        self.record_stopping(sup).await;
        if let Some(ExitRecord::SetupFailed(reason)) = launch::exit_record(&self.state) {
            sup.log(format!("Error starting dyno: {reason}"));
        }
        let (platform, name) = (sup.platform.clone(), sup.name.clone());
        let (cgroup, netns, net_name, state) =
            (self.cgroup.take(), self.netns, self.net_name, self.state);
        in_setup_lane(move || {
            if let Some(cgroup) = &cgroup {
                // PID 1 is gone and its namespace with it; nothing should be left, but be sure.
                let _ = cgroup.kill_all();
                if let Err(e) = cgroup.remove() {
                    let message = format!("Error removing the dyno's cgroup: {e}");
                    platform.log(Source::Heroku, &name, message);
                }
            }
            destroy_leftover_sockets(&netns);
            if let Err(e) = platform.network().down(&net_name) {
                let message = format!("Error removing the dyno's network: {e}");
                platform.log(Source::Heroku, &name, message);
            }
            let _ = std::fs::remove_dir_all(&state.0);
        })
        .await;
        if let Some(id) = self.intent {
            sup.platform.record(move |l| l.end(id)).await;
        }
    }
}

/// A found incarnation that could not be adopted: stopped for good (SIGKILL to its shim and to
/// every process of its cgroup; PID 1's death takes its pid namespace) and removed, so that
/// the dyno can start afresh.
async fn discard(sup: &Supervisor, found: &Adoptee) {
    let (platform, name, taken) = (sup.platform.clone(), sup.name.clone(), found.clone());
    in_setup_lane(move || remove_found(&platform, &name, &taken)).await;
    let id = found.intent;
    sup.platform.record(move |l| l.stopping(id)).await;
    sup.platform.record(move |l| l.end(id)).await;
}

/// The blocking part of [`discard`].
fn remove_found(platform: &Platform, name: &str, found: &Adoptee) {
    // The caller checked the pid is our shim; the PID 1 is the one our shim recorded.
    let _ = sys::signal_pid(found.shim_pid as libc::pid_t, Signal::KILL);
    let state = StateDir(platform.state_root.join(&found.net_name));
    if let Some(pid) = launch::live_init_pid(&state) {
        let _ = sys::signal_pid(pid, Signal::KILL);
    }
    if let Some(cgroup) = platform
        .cgroups
        .as_ref()
        .and_then(|c| c.existing(&found.net_name).ok())
    {
        let _ = cgroup.kill_all();
        let _ = cgroup.remove();
    }
    let run_dir = platform.network().run_dir().clone();
    destroy_leftover_sockets_of(&run_dir, &found.net_name);
    if let Err(e) = platform.network().down(&found.net_name) {
        let message = format!("Error removing the dyno's network: {e}");
        platform.log(Source::Heroku, name, message);
    }
    let _ = std::fs::remove_dir_all(&state.0);
}

/// Runs a dyno's setup or teardown (netlink, nf_tables, namespaces, cgroup and state files) on
/// tokio's blocking pool, one at a time: the runtime's few workers also serve the router and
/// the API, the network's lock serialises most of it anyway, and a hundred setup threads at
/// once (a scale-up) would take the CPU from the router.
async fn in_setup_lane<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    static LANE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = LANE.acquire().await;
    off_runtime(work).await
}

/// Runs short blocking work on tokio's blocking pool, off the runtime's workers.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime shuts down, which drops this task too.
        Err(e) => panic!("blocking dyno work cancelled: {e}"),
    }
}

/// Ends the TCP sockets a dead dyno left in its namespace: orphans whose peers will never
/// answer once its route is gone hold the namespace and its host link for minutes otherwise.
/// Best effort (a kernel without sock_diag destroy leaves them to its timers).
pub fn destroy_leftover_sockets(netns: &dyno_net::ns::Netns) {
    let destroyed = SockDiag::open_in(netns).and_then(|mut diag| diag.destroy_tcp_sockets());
    if let Err(e) = destroyed {
        tracing::debug!(error = %e, "destroy the dyno's leftover sockets");
    }
}

/// [`destroy_leftover_sockets`] for the dyno network `net_name` of `run_dir`, if it is bound.
pub fn destroy_leftover_sockets_of(run_dir: &dyno_net::dyno::RunDir, net_name: &str) {
    let Ok(name) = dyno_net::names::DynoName::new(net_name) else {
        return;
    };
    if let Ok(netns) = dyno_net::ns::Netns::open(run_dir.netns_path(&name)) {
        destroy_leftover_sockets(&netns);
    }
}

/// Takes a web dyno that is about to stop (or has) out of the router: no new request goes to
/// it, and the router closes its idle connections to it while the dyno's network still
/// routes. (Closed after the route is gone, the dyno's ends of those connections would wait
/// for an answer that cannot come, and hold its namespace and link for a minute.) The state
/// stays as it is until the dyno is down.
fn unroute(sup: &Supervisor) {
    sup.status.send_if_modified(|s| s.ip.take().is_some());
}

/// The lines of a dead dyno's `unsent.log` (see `dyno_sandbox::output`).
pub fn unsent_lines(state: &StateDir) -> Vec<String> {
    std::fs::read(state.unsent())
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A line from a dyno's shim as a log line: the app's output (`app[web.1]`), or a notice of
/// the shim's own (`heroku[web.1]`, such as a denied system call), which also goes into the
/// daemon's log so that the operator learns what an app was refused.
pub fn relayed_line(app: &str, dyno: &str, line: String) -> (Source, String) {
    match line.strip_prefix(dyno_sandbox::output::NOTICE_MARK) {
        Some(notice) => {
            tracing::warn!(app, dyno, "{notice}");
            (Source::Heroku, notice.to_string())
        }
        None => (Source::App, line),
    }
}

/// The dyno's output from its shim's log socket, line by line, as `app[web.1]` log lines (and
/// the shim's notices as `heroku[web.1]`). The shim makes the socket as it starts: connect
/// again until it is there.
fn relay_pump(
    socket: PathBuf,
    platform: Arc<Platform>,
    app: String,
    dyno: String,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(1);
        let stream = loop {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(stream) => break stream,
                Err(_) => {
                    // Aborted by `drain_logs` if the shim ends without ever listening.
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(50));
                }
            }
        };
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let (source, line) = relayed_line(&app, &dyno, line);
            platform.log(source, &dyno, line);
        }
    })
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
