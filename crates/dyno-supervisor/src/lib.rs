//! `dyno-supervisor`: one dyno's life. A task per dyno runs Heroku's lifecycle, `starting → up
//! → crashed/down`, with the log lines Heroku writes at each step ([`heroku`]'s codes, the
//! [`lifecycle`]'s numbers, [`memory`]'s R14/R15), over a [`DynoHost`] that makes what an
//! incarnation needs: [`LinuxHost`] (network, cgroup, sandboxed shim) or [`fake::FakeHost`]
//! for unit tests. [`netwatch`] notices a network changed under a running dyno.
//!
//! Below it: `dyno-net`, `dyno-sandbox`, `dyno-logs`. Above it: the platform daemon
//! (`dyno-manager`), which decides which dynos should run.
//!
//! Each start is a fresh incarnation: a new network (a new monotonic name, never reused), a new
//! sandbox. A web dyno is `up` once something LISTENs on `$PORT` inside its network namespace
//! (inet_diag: no connect probes), else R10 at the boot timeout. A dyno that exits (with any
//! status: 0 too, it is not meant to end) crashes, and is restarted per the cool-off schedule.
//! Stopping is SIGTERM to every process of the dyno, the grace period, then SIGKILL and R12.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dyno_net::ipam::LeaseStore;
use dyno_net::network::Network;
use dyno_sandbox::cgroup::DynoSize;
use dyno_sandbox::launch;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use dyno_logs::logs::{LogLine, Source};
pub use dyno_state::ids::uuid_v4;
use dyno_state::ids::{base36, random_unit};
use heroku::RuntimeError;
use lifecycle::Lifecycle;
use memory::{Logger, MemoryVerdict, MemoryWatch};
use netwatch::{NetWatch, Problem, Registration};

pub mod fake;
mod fine_timer;
pub mod heroku;
pub mod host;
mod incarnation;
pub mod lifecycle;
mod linux;
pub mod memory;
pub mod netwatch;
#[cfg(test)]
mod tests;

pub use host::{DynoHost, HostedRun, ListenProbe, NewRun};
use incarnation::{discard, Incarnation};
pub use linux::{destroy_leftover_sockets, destroy_leftover_sockets_of, unsent_lines, LinuxHost};

/// Takes a std mutex, poisoned or not. Every critical section here is a few map operations,
/// or a network transaction that `Network` keeps consistent by itself.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    /// A found incarnation ended before it could be taken over, its start given up (see
    /// [`HostedRun::abandoned`](host::HostedRun::abandoned)): not a failure, it starts afresh.
    #[error("its start was given up before the app ran")]
    Abandoned,
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
    /// Where its dynos run: the Linux host, or a fake in unit tests.
    pub host: Arc<dyn DynoHost>,
    pub lifecycle: Lifecycle,
    pub logs: mpsc::UnboundedSender<LogLine>,
    /// Records of incarnations; `None` for a manager that keeps nothing across restarts.
    pub ledger: Option<Arc<dyn Ledger>>,
    /// Notices dynos whose network was changed under them; `None`: nobody looks.
    pub netwatch: Option<Arc<NetWatch>>,
}

impl Platform {
    pub fn new(
        host: Arc<dyn DynoHost>,
        lifecycle: Lifecycle,
        logs: mpsc::UnboundedSender<LogLine>,
    ) -> Platform {
        Platform {
            host,
            lifecycle,
            logs,
            ledger: None,
            netwatch: None,
        }
    }

    pub fn with_netwatch(mut self, netwatch: Option<Arc<NetWatch>>) -> Platform {
        self.netwatch = netwatch;
        self
    }

    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Platform {
        self.ledger = Some(ledger);
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
    /// An attached one-off's standard streams (`heroku run`); `None`: its output goes to the
    /// app's log.
    pub attachment: Option<Attachment>,
    /// Host directories bound into the dyno (a build's; see [`dyno_sandbox::spec::Bind`]).
    pub binds: Vec<dyno_sandbox::spec::Bind>,
}

/// The dyno's ends of an attached one-off's streams (see [`dyno_sandbox::terminal`]), shared by
/// every copy of its [`DynoDef`]. Its incarnation's shim gets copies; once the shim runs, the
/// supervisor lets go of them here, so that the client's end sees the end of the output when the
/// dyno's last process is gone.
#[derive(Clone)]
pub struct Attachment(Arc<Mutex<Option<dyno_sandbox::terminal::DynoEnds>>>);

impl Attachment {
    pub fn new(ends: dyno_sandbox::terminal::DynoEnds) -> Attachment {
        Attachment(Arc::new(Mutex::new(Some(ends))))
    }

    /// Copies of the ends for a shim; `None` once they were let go of.
    pub fn copies(&self) -> std::io::Result<Option<dyno_sandbox::terminal::DynoEnds>> {
        let ends = lock(&self.0);
        let Some(ends) = ends.as_ref() else {
            return Ok(None);
        };
        Ok(Some(dyno_sandbox::terminal::DynoEnds {
            stdin: ends.stdin.try_clone()?,
            stdout: ends.stdout.try_clone()?,
            stderr: ends.stderr.try_clone()?,
            terminal: ends.terminal,
        }))
    }

    /// Lets go of the ends (the shim holds its own copies now).
    pub fn release(&self) {
        lock(&self.0).take();
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let terminal = lock(&self.0).as_ref().map(|e| e.terminal);
        f.debug_struct("Attachment")
            .field("terminal", &terminal)
            .finish()
    }
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
    /// When the dyno came into its state (Heroku's `ps`: `up 2026/12/06 10:00:00 +0000`).
    pub since: std::time::SystemTime,
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
        since: std::time::SystemTime::now(),
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
    /// Its start was given up before the app ran (by a daemon that died); it starts afresh,
    /// as if it had never been found.
    Abandoned,
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
    /// Since when the dyno is `up` (`None` while it is not).
    up_since: Option<Instant>,
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
        if to != State::Up {
            self.up_since = None;
        } else if self.state != State::Up {
            self.up_since = Some(Instant::now());
        }
        self.state = to;
        let net_name = ip.and(self.net_name.clone());
        let (exit_code, since) = {
            let now = self.status.borrow();
            let since = if now.state == to {
                now.since
            } else {
                std::time::SystemTime::now()
            };
            (now.exit_code, since)
        };
        self.status.send_replace(Status {
            state: to,
            ip,
            net_name,
            restarts: self.restarts,
            exit_code,
            since,
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
        up_since: None,
    };
    let mut crashes: u32 = 0;
    loop {
        let incarnation = match found.take() {
            Some(found) => {
                let adopted = Incarnation::adopt(&sup, &found).await;
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
            Err(StartError::Abandoned) => Ended::Abandoned,
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
            // A one-off never starts again: not when it exits, nor at its daily cycle (Heroku
            // stops one-offs after a day).
            Ended::Cycled | Ended::Exited | Ended::Abandoned if !sup.def.restart => {
                sup.change(State::Down, None);
                return;
            }
            Ended::Cycled | Ended::Abandoned => {
                sup.change(State::Starting, None);
                continue;
            }
            Ended::Exited => {
                // Heroku's policy: at once after the first crash, then a cool-off of 20, 40,
                // 60, 180, 320 minutes (then 320 again), until the dyno starts correctly (up
                // for `stable_after`).
                let started_correctly = sup
                    .up_since
                    .is_some_and(|t| t.elapsed() >= sup.platform.lifecycle.stable_after);
                sup.change(State::Crashed, None);
                if started_correctly {
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

/// Runs a dyno's setup or teardown (netlink, nf_tables, namespaces, cgroup and state files) on
/// tokio's blocking pool, one at a time: the runtime's few workers also serve the router and
/// the API, the network's lock serialises most of it anyway, and a hundred setup threads at
/// once (a scale-up) would take the CPU from the router.
async fn in_setup_lane<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    static LANE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = LANE.acquire().await;
    off_runtime(work).await
}

/// How many teardowns run at once.
const TEARDOWNS_AT_ONCE: usize = 8;

/// Runs a dyno's teardown (cgroup removal, leftover sockets, network, state files) on tokio's
/// blocking pool, [`TEARDOWNS_AT_ONCE`] at a time and apart from setups: a scale-down's
/// teardowns overlap where they do not wait for the network's lock (a v1 cgroup's removal
/// waits for the kernel), and no setup waits behind a thousand of them.
async fn in_teardown_lane<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    static LANE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(TEARDOWNS_AT_ONCE);
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

/// Takes a web dyno that is about to stop (or has) out of the router: no new request goes to
/// it, and the router closes its idle connections to it while the dyno's network still
/// routes. (Closed after the route is gone, the dyno's ends of those connections would wait
/// for an answer that cannot come, and hold its namespace and link for a minute.) The state
/// stays as it is until the dyno is down.
fn unroute(sup: &Supervisor) {
    sup.status.send_if_modified(|s| s.ip.take().is_some());
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
/// The relay's read buffer (see [`relay_pump`]).
const RELAY_BUFFER: usize = 1024;

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
        // A small buffer: the reader lives as long as the dyno, and tokio zeroes (so touches)
        // all of it up front, 8 KiB by default: 8 MB of the daemon's memory per 1,000 dynos.
        // Longer lines are still read whole, in more reads.
        let mut lines = BufReader::with_capacity(RELAY_BUFFER, stream).lines();
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
