//! One run of a dyno ([`Incarnation`]): its network, state dir, cgroup, sandbox and shim, made
//! (or adopted after a restart), watched until it ends, and removed again.

use super::*;

/// One run of a dyno: its network, sandbox and shim.
pub(super) struct Incarnation {
    pub(super) net_name: String,
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
    pub(super) async fn start(sup: &Supervisor) -> Result<Incarnation, StartError> {
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
    pub(super) fn adopt(
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

    pub(super) async fn supervise(
        &mut self,
        sup: &mut Supervisor,
        stop: &mut mpsc::Receiver<()>,
    ) -> Ended {
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

    pub(super) async fn clean_up(mut self, sup: &Supervisor) {
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
pub(super) async fn discard(sup: &Supervisor, found: &Adoptee) {
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
