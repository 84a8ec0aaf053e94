//! A pretend machine for unit tests ([`FakeHost`]): incarnations are a few fields in a map, so
//! the supervisor's lifecycle and the daemon's convergence run without root, in milliseconds.
//! The test decides what the "processes" do: listen on `$PORT` (at once, or when told), exit
//! with a status, ignore SIGTERM, use memory. Every call the supervisor makes is recorded.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dyno_sandbox::cgroup::MemoryUsage;
use tokio::sync::watch;

use super::host::{DynoHost, HostedRun, ListenProbe, NewRun, ProbeOpener, RunFuture};
use super::{Adoptee, DynoDef, StartError};

/// A machine of pretend dynos; clones share it.
#[derive(Clone, Default)]
pub struct FakeHost {
    shared: Arc<Mutex<Fake>>,
}

#[derive(Default)]
struct Fake {
    /// Every incarnation ever made or adopted, oldest first.
    runs: Vec<FakeRunState>,
    /// Apps whose web dynos do not listen until [`FakeHost::listen`].
    slow: Vec<String>,
    /// Apps whose processes ignore SIGTERM.
    stubborn: Vec<String>,
    /// Errors the next `make`s fail with, first first.
    failures: Vec<String>,
    events: Vec<String>,
}

struct FakeRunState {
    app: String,
    dyno: String,
    port: u16,
    listening: bool,
    ignores_term: bool,
    memory: Option<MemoryUsage>,
    /// `Some(status)` once its processes are gone.
    exit: watch::Sender<Option<i32>>,
    torn_down: bool,
}

impl Fake {
    fn event(&mut self, what: &str, app: &str, dyno: &str) {
        self.events.push(format!("{what} {app} {dyno}"));
    }

    /// The newest incarnation of `app`'s `dyno` still standing.
    fn newest(&mut self, app: &str, dyno: &str) -> &mut FakeRunState {
        self.runs
            .iter_mut()
            .rev()
            .find(|r| r.app == app && r.dyno == dyno && !r.torn_down)
            .unwrap_or_else(|| panic!("no {app} {dyno} on the fake host"))
    }

    /// Keeps `run`; its address is `ip`, or the next of 10.213.0.0/16 by count.
    fn add(
        &mut self,
        shared: &Arc<Mutex<Fake>>,
        run: FakeRunState,
        ip: Option<Ipv4Addr>,
    ) -> Box<FakeRun> {
        let counted = u32::from(Ipv4Addr::new(10, 213, 0, 1)) + self.runs.len() as u32;
        let exit = run.exit.subscribe();
        self.runs.push(run);
        Box::new(FakeRun {
            shared: shared.clone(),
            index: self.runs.len() - 1,
            ip: ip.unwrap_or(Ipv4Addr::from(counted)),
            exit,
        })
    }
}

impl FakeHost {
    pub fn new() -> FakeHost {
        FakeHost::default()
    }

    fn fake(&self) -> std::sync::MutexGuard<'_, Fake> {
        crate::lock(&self.shared)
    }

    /// `app`'s web dynos boot slowly: they listen only once told ([`FakeHost::listen`]).
    pub fn boot_slowly(&self, app: &str) {
        self.fake().slow.push(app.to_owned());
    }

    /// `app`'s processes ignore SIGTERM (they end only by SIGKILL, after the grace: R12).
    pub fn ignore_sigterm(&self, app: &str) {
        self.fake().stubborn.push(app.to_owned());
    }

    /// The next `make` fails with `message`.
    pub fn fail_next_make(&self, message: &str) {
        self.fake().failures.push(message.to_owned());
    }

    /// The newest incarnation of `app`'s `dyno` (`web.1`) now listens on its port.
    pub fn listen(&self, app: &str, dyno: &str) {
        self.fake().newest(app, dyno).listening = true;
    }

    /// The processes of the newest incarnation of `app`'s `dyno` exit with `status`.
    pub fn exit(&self, app: &str, dyno: &str, status: i32) {
        self.fake()
            .newest(app, dyno)
            .exit
            .send_replace(Some(status));
    }

    /// The newest incarnation of `app`'s `dyno` now uses this much memory.
    pub fn use_memory(&self, app: &str, dyno: &str, usage: MemoryUsage) {
        self.fake().newest(app, dyno).memory = Some(usage);
    }

    /// The dynos of `app` whose incarnation stands (made or adopted, not yet torn down),
    /// sorted, one entry per incarnation.
    pub fn standing(&self, app: &str) -> Vec<String> {
        let mut dynos: Vec<String> = (self.fake().runs.iter())
            .filter(|r| r.app == app && !r.torn_down)
            .map(|r| r.dyno.clone())
            .collect();
        dynos.sort();
        dynos
    }

    /// How many incarnations of `app` were ever made or adopted.
    pub fn made(&self, app: &str) -> usize {
        self.fake().runs.iter().filter(|r| r.app == app).count()
    }

    /// Every call made to the host, as `what app dyno` (`make hello web.1`, `terminate …`,
    /// `kill …`, `tear_down …`, `adopt …`, `discard …`).
    pub fn events(&self) -> Vec<String> {
        self.fake().events.clone()
    }
}

impl DynoHost for FakeHost {
    fn make(&self, new: NewRun<'_>) -> Result<Box<dyn HostedRun>, StartError> {
        let mut fake = self.fake();
        let (app, dyno) = (new.def.app.as_str(), new.dyno);
        fake.event("make", app, dyno);
        if !fake.failures.is_empty() {
            let message = fake.failures.remove(0);
            return Err(StartError::Spawn(std::io::Error::other(message)));
        }
        let listening = !fake.slow.iter().any(|a| a == app);
        let ignores_term = fake.stubborn.iter().any(|a| a == app);
        let run = FakeRunState {
            app: app.to_owned(),
            dyno: dyno.to_owned(),
            port: new.def.port,
            listening,
            ignores_term,
            memory: None,
            exit: watch::channel(None).0,
            torn_down: false,
        };
        Ok(fake.add(&self.shared, run, new.ip))
    }

    fn adopt(&self, def: &DynoDef, found: &Adoptee) -> Result<Box<dyn HostedRun>, StartError> {
        let mut fake = self.fake();
        fake.event("adopt", &def.app, &def.name());
        let run = FakeRunState {
            app: def.app.clone(),
            dyno: def.name(),
            port: def.port,
            listening: true,
            ignores_term: false,
            memory: None,
            exit: watch::channel(None).0,
            torn_down: false,
        };
        Ok(fake.add(&self.shared, run, Some(found.ip)))
    }

    fn discard(&self, found: &Adoptee) -> Vec<String> {
        self.fake()
            .events
            .push(format!("discard {}", found.net_name));
        Vec::new()
    }
}

/// One pretend incarnation.
struct FakeRun {
    shared: Arc<Mutex<Fake>>,
    index: usize,
    ip: Ipv4Addr,
    exit: watch::Receiver<Option<i32>>,
}

impl FakeRun {
    fn with<T>(&self, f: impl FnOnce(&mut Fake, usize) -> T) -> T {
        f(&mut crate::lock(&self.shared), self.index)
    }

    fn signal(&self, what: &str, status: i32, ignorable: bool) {
        self.with(|fake, i| {
            let (app, dyno) = (fake.runs[i].app.clone(), fake.runs[i].dyno.clone());
            fake.event(what, &app, &dyno);
            let run = &fake.runs[i];
            if !(ignorable && run.ignores_term) && run.exit.borrow().is_none() {
                run.exit.send_replace(Some(status));
            }
        });
    }
}

impl HostedRun for FakeRun {
    fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn host_ifindex(&self) -> Option<u32> {
        None
    }

    fn log_socket(&self) -> Option<PathBuf> {
        None
    }

    fn wait(&mut self) -> RunFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.exit.wait_for(Option::is_some).await;
        })
    }

    fn terminate(&self) {
        self.signal("terminate", 128 + 15, true);
    }

    fn kill(&self) {
        self.signal("kill", 128 + 9, false);
    }

    fn exit_code(&self) -> i32 {
        self.exit.borrow().unwrap_or(1)
    }

    fn setup_failure(&self) -> Option<String> {
        None
    }

    fn unsent_lines(&self) -> Vec<String> {
        Vec::new()
    }

    fn listen_probe(&self) -> ProbeOpener {
        let probe = FakeProbe {
            shared: self.shared.clone(),
            index: self.index,
        };
        Box::new(move || Ok(Box::new(probe) as Box<dyn ListenProbe>))
    }

    fn memory(&self) -> Option<MemoryUsage> {
        self.with(|fake, i| fake.runs[i].memory)
    }

    fn tear_down(self: Box<Self>) -> Vec<String> {
        self.with(|fake, i| {
            let (app, dyno) = (fake.runs[i].app.clone(), fake.runs[i].dyno.clone());
            fake.event("tear_down", &app, &dyno);
            fake.runs[i].torn_down = true;
        });
        Vec::new()
    }
}

struct FakeProbe {
    shared: Arc<Mutex<Fake>>,
    index: usize,
}

impl ListenProbe for FakeProbe {
    fn is_listening(&mut self, port: u16) -> bool {
        let fake = crate::lock(&self.shared);
        let run = &fake.runs[self.index];
        run.listening && run.port == port
    }
}
