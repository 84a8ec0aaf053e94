//! What one incarnation of a dyno needs from the machine it runs on, as two traits: the
//! [`DynoHost`] makes, adopts and discards incarnations, and a [`HostedRun`] is one of them
//! while it lives. The supervisor speaks only to these, so its lifecycle (boot, R10, crash and
//! restart, stop, R14/R15) runs the same on the Linux host ([`super::linux::LinuxHost`]) as on
//! [`super::fake::FakeHost`], which unit tests drive without root.
//!
//! Every call but [`HostedRun::wait`] may block (netlink, nf_tables, namespaces, cgroup files):
//! the supervisor makes them off the async workers.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::Pin;

use dyno_sandbox::cgroup::MemoryUsage;

use super::{Adoptee, DynoDef, StartError};

/// A future a [`HostedRun`] hands out.
pub type RunFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A new incarnation to be made.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    pub def: &'a DynoDef,
    /// `web.1`
    pub dyno: &'a str,
    /// Its network name, never used before (names its namespace, link, cgroup, state dir).
    pub net_name: &'a str,
    /// The address the store leased it; `None`: the host picks one.
    pub ip: Option<Ipv4Addr>,
}

/// Makes, adopts and discards incarnations on one machine.
pub trait DynoHost: Send + Sync {
    /// Network, state dir, cgroup, sandbox, shim: everything, or (on error) nothing left.
    fn make(&self, new: NewRun<'_>) -> Result<Box<dyn HostedRun>, StartError>;
    /// Takes over the running incarnation a restarted daemon found.
    fn adopt(&self, def: &DynoDef, found: &Adoptee) -> Result<Box<dyn HostedRun>, StartError>;
    /// Stops a found incarnation that could not be adopted, for good, and removes it. Returns
    /// what could not be removed, for the app's log.
    fn discard(&self, found: &Adoptee) -> Vec<String>;
}

/// One incarnation as its host holds it, from `make` or `adopt` to `tear_down`.
pub trait HostedRun: Send {
    fn ip(&self) -> Ipv4Addr;
    /// The host end of its link, to notice it gone; `None`: unknown (adopted).
    fn host_ifindex(&self) -> Option<u32>;
    /// Where its shim serves the app's output; `None`: nowhere to read it from.
    fn log_socket(&self) -> Option<PathBuf>;
    /// Until its processes are gone. Cancel-safe.
    fn wait(&mut self) -> RunFuture<'_, ()>;
    /// SIGTERM to every process (the shim forwards it to PID 1, which sends it to all).
    fn terminate(&self);
    /// SIGKILL to every process.
    fn kill(&self);
    /// After [`HostedRun::wait`]: Heroku's exit status (the app's code, 128 + a signal, 126
    /// when the sandbox could not be set up).
    fn exit_code(&self) -> i32;
    /// Why the sandbox could not start the app, if that is how it ended.
    fn setup_failure(&self) -> Option<String>;
    /// Whether it ended because its start was given up before the app ran (its network gate
    /// closed unopened: the daemon that started it died first). Nothing of the app ran.
    fn abandoned(&self) -> bool {
        false
    }
    /// Output the shim could not hand over before the end.
    fn unsent_lines(&self) -> Vec<String>;
    /// Opens a probe for a listener on a port inside its network: the opener blocks, so it
    /// is handed out to be run off the async workers.
    fn listen_probe(&self) -> ProbeOpener;
    /// Its memory against its quota; `None`: not measured (no cgroup).
    fn memory(&self) -> Option<MemoryUsage>;
    /// Removes everything of it (its processes are gone). Returns what could not be removed.
    fn tear_down(self: Box<Self>) -> Vec<String>;
}

/// Opens a [`ListenProbe`] (see [`HostedRun::listen_probe`]).
pub type ProbeOpener = Box<dyn FnOnce() -> Result<Box<dyn ListenProbe>, String> + Send>;

/// Whether something listens on a port (for a web dyno: on `$PORT`).
pub trait ListenProbe: Send {
    fn is_listening(&mut self, port: u16) -> bool;
}
