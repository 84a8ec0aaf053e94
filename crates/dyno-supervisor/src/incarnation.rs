//! One run of a dyno ([`Incarnation`]): made (or adopted after a restart) by the platform's
//! [`DynoHost`], watched until it ends, and torn down again.

use super::*;
use crate::fine_timer::FineTimer;

/// One run of a dyno: what its host holds of it, and what the supervisor keeps beside.
pub(super) struct Incarnation {
    pub(super) net_name: String,
    run: Box<dyn HostedRun>,
    pumps: Vec<JoinHandle<()>>,
    /// Its record in the platform's [`Ledger`].
    intent: Option<i64>,
    /// Whether the record says `stopping` already.
    stopping_recorded: bool,
    /// Its network on the platform's [`NetWatch`] while it runs.
    watch: Option<Registration>,
}

/// When the readiness timer fires; never without one.
async fn fired(timer: Option<&FineTimer>) {
    match timer {
        Some(timer) => timer.fired().await,
        None => std::future::pending().await,
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
    /// Around what its host holds: its output relay and its place on the network watch.
    fn around(
        sup: &Supervisor,
        net_name: String,
        run: Box<dyn HostedRun>,
        intent: Option<i64>,
    ) -> Incarnation {
        let platform = &sup.platform;
        let pumps = run
            .log_socket()
            .map(|socket| {
                relay_pump(
                    socket,
                    platform.clone(),
                    sup.def.app.clone(),
                    sup.name.clone(),
                )
            })
            .into_iter()
            .collect();
        let port = sup.def.is_web().then_some(sup.def.port);
        let watch =
            (platform.netwatch.as_ref()).map(|w| w.register(run.ip(), port, run.host_ifindex()));
        Incarnation {
            net_name,
            run,
            pumps,
            intent,
            stopping_recorded: false,
            watch,
        }
    }

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
            let (host, def, name) = (platform.host.clone(), sup.def.clone(), sup.name.clone());
            let net_name = net_name.clone();
            let made = in_setup_lane(move || {
                host.make(NewRun {
                    def: &def,
                    dyno: &name,
                    net_name: &net_name,
                    ip: intent.map(|(_, ip)| ip),
                })
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
        match made {
            Ok(run) => Ok(Incarnation::around(
                sup,
                net_name,
                run,
                intent.map(|(id, _)| id),
            )),
            Err(e) => {
                if let Some((id, _)) = intent {
                    // Whatever `make` created it removed again.
                    platform.record(move |l| l.stopping(id)).await;
                    platform.record(move |l| l.end(id)).await;
                }
                Err(e)
            }
        }
    }

    /// Takes over the running incarnation a restarted daemon found.
    pub(super) async fn adopt(
        sup: &Supervisor,
        found: &Adoptee,
    ) -> Result<Incarnation, StartError> {
        let (host, def, taken) = (sup.platform.host.clone(), sup.def.clone(), found.clone());
        let run = in_setup_lane(move || host.adopt(&def, &taken)).await?;
        Ok(Incarnation::around(
            sup,
            found.net_name.clone(),
            run,
            Some(found.intent),
        ))
    }

    pub(super) async fn supervise(
        &mut self,
        sup: &mut Supervisor,
        stop: &mut mpsc::Receiver<()>,
    ) -> Ended {
        let lifecycle = sup.platform.lifecycle.clone();
        let launched = Instant::now();
        let mut probe = if sup.def.is_web() {
            // Off the runtime, but not in the setup lane (a web dyno is not held up behind
            // other dynos' setups).
            match off_runtime(self.run.listen_probe()).await {
                Ok(probe) => Some(probe),
                Err(e) => {
                    sup.log(format!("Error watching $PORT: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let ip = self.run.ip();
        if probe.is_none() {
            sup.change(State::Up, Some(ip));
        }
        let cycle_at = lifecycle
            .next_cycle(random_unit())
            .map(|d| tokio::time::Instant::now() + d);
        // Check for the listener every 250 µs at first and then less often: most apps bind
        // within milliseconds, a few (Java) take seconds.
        let mut readiness_delay = lifecycle.next_readiness_delay(Duration::ZERO, Duration::ZERO);
        let readiness = match probe.as_ref().map(|_| FineTimer::new()).transpose() {
            Ok(timer) => timer,
            Err(e) => {
                sup.log(format!("Error watching $PORT: {e}"));
                probe = None;
                sup.change(State::Up, Some(ip));
                None
            }
        };
        if let Some(timer) = &readiness {
            let _ = timer.arm(readiness_delay);
        }
        let mut memory = tokio::time::interval(lifecycle.memory_poll);
        let mut memory_watch = MemoryWatch::new(self.run.memory());
        loop {
            tokio::select! {
                () = self.run.wait() => {
                    if self.run.abandoned() {
                        unroute(sup);
                        return Ended::Abandoned;
                    }
                    // Killed by the kernel at the hard limit (2× quota): that is R15.
                    if memory_watch.oom_killed(self.run.memory()) {
                        memory_watch.r15(sup);
                    }
                    self.reap(sup).await;
                    return Ended::Exited;
                }
                _ = memory.tick() => {
                    match memory_watch.check(sup, self.run.memory(), &lifecycle) {
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
                () = fired(readiness.as_ref()), if sup.state == State::Starting && probe.is_some() => {
                    readiness_delay =
                        lifecycle.next_readiness_delay(launched.elapsed(), readiness_delay);
                    if let Some(timer) = &readiness {
                        let _ = timer.arm(readiness_delay);
                    }
                    let listening = probe
                        .as_mut()
                        .is_some_and(|p| p.is_listening(sup.def.port));
                    if listening {
                        probe = None;
                        sup.change(State::Up, Some(ip));
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

    /// SIGTERM to every process of the dyno, the grace period, then SIGKILL (R12).
    async fn stop(&mut self, sup: &mut Supervisor, lifecycle: &Lifecycle) {
        // Off the watch before anything of it goes.
        self.watch = None;
        self.record_stopping(sup).await;
        unroute(sup);
        sup.log("Stopping all processes with SIGTERM");
        self.run.terminate();
        if tokio::time::timeout(lifecycle.stop_grace, self.run.wait())
            .await
            .is_err()
        {
            sup.log(
                RuntimeError::ExitTimeout {
                    within: lifecycle.stop_grace,
                }
                .to_string(),
            );
            sup.log("Stopping remaining processes with SIGKILL");
            self.run.kill();
            self.run.wait().await;
        }
        self.reap(sup).await;
    }

    /// SIGKILL, then [`Incarnation::reap`].
    async fn kill_and_reap(&mut self, sup: &Supervisor) {
        self.run.kill();
        self.run.wait().await;
        self.reap(sup).await;
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
    async fn reap(&mut self, sup: &Supervisor) {
        unroute(sup);
        let code = self.run.exit_code();
        self.drain_logs().await;
        // What the shim could not hand over (no reader was connected at the end).
        for line in self.run.unsent_lines() {
            let (source, line) = relayed_line(&sup.def.app, &sup.name, line);
            sup.platform.log(source, &sup.name, line);
        }
        sup.log(format!("Process exited with status {code}"));
        sup.status.send_modify(|s| s.exit_code = Some(code));
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
        if let Some(reason) = self.run.setup_failure() {
            sup.log(format!("Error starting dyno: {reason}"));
        }
        let run = self.run;
        for error in in_teardown_lane(move || run.tear_down()).await {
            sup.log(error);
        }
        if let Some(id) = self.intent {
            sup.platform.record(move |l| l.end(id)).await;
        }
    }
}

/// A found incarnation that could not be adopted: stopped for good and removed, so that the
/// dyno can start afresh.
pub(super) async fn discard(sup: &Supervisor, found: &Adoptee) {
    let (host, taken) = (sup.platform.host.clone(), found.clone());
    for error in in_teardown_lane(move || host.discard(&taken)).await {
        sup.log(error);
    }
    let id = found.intent;
    sup.platform.record(move |l| l.stopping(id)).await;
    sup.platform.record(move |l| l.end(id)).await;
}
