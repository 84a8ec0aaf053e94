//! The Linux host of dynos ([`LinuxHost`]): each incarnation gets its own network (namespace,
//! link, route, firewall elements), state dir, cgroup and sandboxed shim.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use dyno_net::diag::SockDiag;
use dyno_sandbox::cgroup::{Cgroups, DynoCgroup, MemoryUsage};
use dyno_sandbox::spec::{ExitRecord, SandboxSpec, SeccompSpec, StateDir};
use dyno_sandbox::{launch, sys};
use rustix::process::Signal;

use super::host::{DynoHost, HostedRun, ListenProbe, NewRun, ProbeOpener, RunFuture};
use super::{uuid_v4, Adoptee, DynoDef, SharedNetwork, StartError};

/// Dynos on this machine, sharing one network (and its lock).
#[derive(Clone)]
pub struct LinuxHost {
    pub network: SharedNetwork,
    /// The binary dynos' shims run (`dyno-shim` or `dyno`).
    pub exe: PathBuf,
    /// Where dynos' sandbox state dirs go.
    pub state_root: PathBuf,
    /// Per-dyno cgroups (memory, pids, cpu); `None` where the host has none for us.
    pub cgroups: Option<Cgroups>,
    /// The system-call filter of the dynos: the default profile plus the operator's additions
    /// for their app.
    pub seccomp: SeccompSpec,
    /// The LXCFS mount for the dynos' private `/proc` view; `None`: the kernel's figures.
    pub proc_view: Option<PathBuf>,
    /// The mount namespace dynos' are copied from (`dyno_sandbox::template`); `None`: the
    /// host's.
    pub mount_template: Option<PathBuf>,
}

impl LinuxHost {
    pub fn new(
        network: SharedNetwork,
        exe: PathBuf,
        state_root: PathBuf,
        cgroups: Option<Cgroups>,
    ) -> LinuxHost {
        LinuxHost {
            network,
            exe,
            state_root,
            cgroups,
            seccomp: SeccompSpec::default(),
            proc_view: None,
            mount_template: None,
        }
    }

    pub fn with_seccomp(mut self, seccomp: SeccompSpec) -> LinuxHost {
        self.seccomp = seccomp;
        self
    }

    pub fn with_proc_view(mut self, lxcfs_dir: Option<PathBuf>) -> LinuxHost {
        self.proc_view = lxcfs_dir;
        self
    }

    pub fn with_mount_template(mut self, template: Option<PathBuf>) -> LinuxHost {
        self.mount_template = template;
        self
    }

    fn state_dir(&self, net_name: &str) -> StateDir {
        StateDir(self.state_root.join(net_name))
    }

    /// The environment of a dyno: the platform's variables, then its config vars over them.
    fn env(def: &DynoDef, dyno: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/app".into()),
            ("DYNO".into(), dyno.to_owned()),
        ];
        if def.is_web() {
            env.push(("PORT".into(), def.port.to_string()));
        }
        for (k, v) in &def.env {
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

impl DynoHost for LinuxHost {
    /// Each step is undone again if a later one fails.
    fn make(&self, new: NewRun<'_>) -> Result<Box<dyn HostedRun>, StartError> {
        let (def, net_name) = (new.def, new.net_name);
        // The sandbox is built while the network is completed, unless the shim's stdin is an
        // attached client's (then the network comes first): PID 1 waits at the gate.
        let gated = def.attachment.is_none();
        let pending = {
            let mut network = crate::lock(&self.network);
            let port = def.is_web().then_some(def.port);
            network.begin(net_name, new.ip, port)?
        };
        let network_down = || {
            let _ = crate::lock(&self.network).down(net_name);
        };
        let state = self.state_dir(net_name);
        // The state dir names the dyno before its cgroup exists: a daemon restarted after a
        // crash knows by it which dyno cgroups are its own (see `daemon::reconcile`).
        if let Err(e) = std::fs::create_dir_all(&state.0) {
            network_down();
            return Err(StartError::StateDir {
                path: state.0.clone(),
                source: e,
            });
        }
        // A gated dyno's cgroup is made while its sandbox is built (the shim joins it at the
        // gate); the shim's spec names it beforehand.
        let made_now = |cgroups: &Cgroups| match gated {
            true => cgroups.planned(net_name, &def.size),
            false => cgroups.create_new(net_name, &def.size),
        };
        let cgroup = match self.cgroups.as_ref().map(made_now).transpose() {
            Ok(cgroup) => cgroup,
            Err(e) => {
                network_down();
                return Err(e.into());
            }
        };
        let mut cgroup_made = !gated;
        // Whatever of the start exists when a later step fails (the network's own failures
        // roll the network back).
        let undo = |network: bool, cgroup_made: bool| {
            if network {
                network_down();
            }
            let _ = std::fs::remove_dir_all(&state.0);
            if let Some(cgroup) = cgroup.as_ref().filter(|_| cgroup_made) {
                let _ = cgroup.remove();
            }
        };
        // An attached one-off's streams are the shim's own (copies; the originals are let go of
        // once it runs), its output goes to the client instead of the log.
        let attached = match def.attachment.as_ref().map(|a| a.copies()).transpose() {
            Ok(attached) => attached.flatten(),
            Err(e) => {
                undo(true, cgroup_made);
                return Err(StartError::Spawn(e));
            }
        };
        if def.attachment.is_some() && attached.is_none() {
            undo(true, cgroup_made);
            return Err(StartError::Spawn(std::io::Error::other(
                "the client's terminal is gone",
            )));
        }
        let output = if attached.is_some() {
            dyno_sandbox::spec::OutputMode::Inherit
        } else {
            dyno_sandbox::spec::OutputMode::Relay
        };
        let spec = SandboxSpec {
            name: new.dyno.to_owned(),
            hostname: uuid_v4(),
            netns: pending.netns_path().to_path_buf(),
            ip: pending.ip(),
            app_dir: def.app_dir.clone(),
            stack: SandboxSpec::default_stack(),
            uid: def.uid,
            gid: def.uid,
            env: LinuxHost::env(def, new.dyno),
            command: def.command.clone(),
            nameservers: Vec::new(),
            cgroup: cgroup.clone(),
            output,
            seccomp: self.seccomp.clone(),
            proc_view: self.proc_view.clone(),
            terminal: attached.as_ref().is_some_and(|a| a.terminal),
            binds: def.binds.clone(),
            mount_template: self.mount_template.clone(),
            network_gate: gated,
        };
        let (mut pending, mut early_net) = (Some(pending), None);
        if !gated {
            let completed = crate::lock(&self.network).complete(pending.take().expect("begun"));
            match completed {
                Ok(net) => early_net = Some(net),
                Err(e) => {
                    undo(false, cgroup_made);
                    return Err(e.into());
                }
            }
        }
        let (gate_out, gate_in) = match gated.then(sys::pipe).transpose() {
            Ok(gate) => gate.unzip(),
            Err(e) => {
                undo(true, cgroup_made);
                return Err(StartError::Spawn(e));
            }
        };
        let started = launch::prepare(&state, &spec)
            .map_err(StartError::from)
            .and_then(|()| {
                let mut command =
                    tokio::process::Command::from(launch::shim_command(&self.exe, &state));
                match attached {
                    Some(ends) => {
                        command
                            .stdin(Stdio::from(ends.stdin))
                            .stdout(Stdio::from(ends.stdout))
                            .stderr(Stdio::from(ends.stderr));
                    }
                    // The app's output comes through the shim's log socket: nothing of the
                    // dyno writes into a pipe of ours, which would break when we die before it.
                    None => {
                        command.stdout(Stdio::null()).stderr(Stdio::null());
                    }
                }
                if let Some(gate) = gate_out {
                    command.stdin(Stdio::from(gate));
                }
                command.spawn().map_err(StartError::Spawn)
            });
        let mut shim = match started {
            Ok(shim) => shim,
            Err(e) => {
                undo(true, cgroup_made);
                return Err(e);
            }
        };
        let net = match (early_net, pending) {
            (Some(net), _) => net,
            (None, pending) => {
                let made = match &self.cgroups {
                    Some(cgroups) => cgroups.create_new(net_name, &def.size).map(|_| ()),
                    None => Ok(()),
                };
                cgroup_made = made.is_ok();
                let completed = made.map_err(StartError::from).and_then(|()| {
                    let pending = pending.expect("begun");
                    let completed = crate::lock(&self.network).complete(pending);
                    completed.map_err(StartError::from)
                });
                match completed {
                    Ok(net) => {
                        // PID 1 reads it once it is ready for the app; a shim that died
                        // meanwhile (EPIPE) is seen ending like any other.
                        if let Some(gate) = gate_in {
                            let _ = rustix::io::write(&gate, b"1");
                        }
                        net
                    }
                    Err(e) => {
                        // The gate closes unopened: the dyno ends without running the app.
                        drop(gate_in);
                        let _ = shim.start_kill();
                        // The network rolled itself back unless the cgroup came first.
                        undo(!cgroup_made, cgroup_made);
                        return Err(e);
                    }
                }
            }
        };
        if let Some(attachment) = &def.attachment {
            attachment.release();
        }
        Ok(Box::new(LinuxRun {
            network: self.network.clone(),
            relayed: output == dyno_sandbox::spec::OutputMode::Relay,
            net_name: net_name.to_owned(),
            ip: net.ip,
            host_ifindex: Some(net.host_ifindex),
            netns: net.netns,
            state,
            shim: Shim::started(shim),
            shim_status: None,
            cgroup,
        }))
    }

    fn adopt(&self, def: &DynoDef, found: &Adoptee) -> Result<Box<dyn HostedRun>, StartError> {
        let state = self.state_dir(&found.net_name);
        // An attached one-off's streams were the daemon's that is gone: its client is gone
        // with them, and Heroku ends a one-off whose client left.
        let attached = launch::read_spec(&state)
            .is_some_and(|spec| spec.output == dyno_sandbox::spec::OutputMode::Inherit);
        if attached {
            return Err(StartError::Spawn(std::io::Error::other(
                "an attached one-off is not taken over: its client left with the daemon that \
                 served it",
            )));
        }
        let name = dyno_net::names::DynoName::new(&found.net_name)?;
        let netns_path = crate::lock(&self.network).run_dir().netns_path(&name);
        let netns = dyno_net::ns::Netns::open(&netns_path)?;
        let pid = found.shim_pid;
        let watch_error = |source: std::io::Error| StartError::WatchShim { pid, source };
        let pidfd = match sys::pidfd_open(found.shim_pid as libc::pid_t) {
            Ok(pidfd) => pidfd,
            // It ended since it was found, its start given up: as if it had been found gone.
            Err(e)
                if e.raw_os_error() == Some(libc::ESRCH)
                    && launch::exit_record(&state) == Some(ExitRecord::Abandoned) =>
            {
                return Err(StartError::Abandoned);
            }
            Err(e) => return Err(watch_error(e)),
        };
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and unchanged
        // for as long as it lives.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| watch_error(e.into()))?;
        // `create` on the existing cgroup writes the same limits again and hands back a
        // handle that knows the quota (R14/R15 are measured against it).
        let cgroup = match &self.cgroups {
            Some(cgroups) => Some(cgroups.create(&found.net_name, &def.size)?),
            None => None,
        };
        Ok(Box::new(LinuxRun {
            network: self.network.clone(),
            relayed: true,
            net_name: found.net_name.clone(),
            ip: found.ip,
            host_ifindex: None,
            netns,
            state,
            shim: Shim::Adopted { exited: pidfd },
            shim_status: None,
            cgroup,
        }))
    }

    /// SIGKILL to its shim and to every process of its cgroup (PID 1's death takes its pid
    /// namespace), then its network and state dir go.
    fn discard(&self, found: &Adoptee) -> Vec<String> {
        // The caller checked the pid is our shim; the PID 1 is the one our shim recorded.
        let _ = sys::signal_pid(found.shim_pid as libc::pid_t, Signal::KILL);
        let state = self.state_dir(&found.net_name);
        if let Some(pid) = launch::live_init_pid(&state) {
            let _ = sys::signal_pid(pid, Signal::KILL);
        }
        if let Some(cgroup) = self
            .cgroups
            .as_ref()
            .and_then(|c| c.existing(&found.net_name).ok())
        {
            let _ = cgroup.kill_all();
            let _ = cgroup.remove();
        }
        let run_dir = crate::lock(&self.network).run_dir().clone();
        destroy_leftover_sockets_of(&run_dir, &found.net_name);
        let mut errors = Vec::new();
        if let Err(e) = crate::lock(&self.network).down(&found.net_name) {
            errors.push(format!("Error removing the dyno's network: {e}"));
        }
        let _ = std::fs::remove_dir_all(&state.0);
        errors
    }
}

/// One incarnation on the Linux host.
struct LinuxRun {
    network: SharedNetwork,
    /// Its output comes through the shim's log socket (not an attached one-off's).
    relayed: bool,
    net_name: String,
    ip: Ipv4Addr,
    host_ifindex: Option<u32>,
    netns: dyno_net::ns::Netns,
    state: StateDir,
    shim: Shim,
    /// The shim's own exit status, once it was waited for (unknown for an adopted one).
    shim_status: Option<std::process::ExitStatus>,
    cgroup: Option<DynoCgroup>,
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
            .and_then(|pid| sys::pidfd_open(pid as libc::pid_t).ok());
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

impl HostedRun for LinuxRun {
    fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn host_ifindex(&self) -> Option<u32> {
        self.host_ifindex
    }

    fn log_socket(&self) -> Option<PathBuf> {
        self.relayed.then(|| self.state.log_socket())
    }

    fn wait(&mut self) -> RunFuture<'_, ()> {
        Box::pin(async move {
            let status = self.shim.wait().await;
            self.shim_status = status;
        })
    }

    fn terminate(&self) {
        self.shim.signal(Signal::TERM);
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

    fn exit_code(&self) -> i32 {
        match launch::exit_record(&self.state) {
            Some(ExitRecord::Exited(code)) => code,
            Some(ExitRecord::Signaled(signal)) => 128 + signal,
            Some(ExitRecord::SetupFailed(_) | ExitRecord::Abandoned) => 126,
            None => self.shim_status.and_then(|s| s.code()).unwrap_or(1),
        }
    }

    fn setup_failure(&self) -> Option<String> {
        match launch::exit_record(&self.state) {
            Some(ExitRecord::SetupFailed(reason)) => Some(reason),
            _ => None,
        }
    }

    fn abandoned(&self) -> bool {
        launch::exit_record(&self.state) == Some(ExitRecord::Abandoned)
    }

    fn unsent_lines(&self) -> Vec<String> {
        unsent_lines(&self.state)
    }

    /// Opened inside the dyno's namespace, by the namespace thread.
    fn listen_probe(&self) -> ProbeOpener {
        let netns = self.netns.try_clone();
        Box::new(move || {
            let netns = netns.map_err(|e| e.to_string())?;
            let diag = SockDiag::open_in(&netns).map_err(|e| e.to_string())?;
            Ok(Box::new(diag) as Box<dyn ListenProbe>)
        })
    }

    fn memory(&self) -> Option<MemoryUsage> {
        self.cgroup.as_ref().and_then(|c| c.memory_usage().ok())
    }

    fn tear_down(self: Box<Self>) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(cgroup) = &self.cgroup {
            // PID 1 is gone and its namespace with it; nothing should be left, but be sure.
            let _ = cgroup.kill_all();
            if let Err(e) = cgroup.remove() {
                errors.push(format!("Error removing the dyno's cgroup: {e}"));
            }
        }
        destroy_leftover_sockets(&self.netns);
        if let Err(e) = crate::lock(&self.network).down(&self.net_name) {
            errors.push(format!("Error removing the dyno's network: {e}"));
        }
        let _ = std::fs::remove_dir_all(&self.state.0);
        errors
    }
}

impl ListenProbe for SockDiag {
    fn is_listening(&mut self, port: u16) -> bool {
        SockDiag::is_listening(self, port).unwrap_or(false)
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
