//! A daemon's start: the store opened, what an earlier daemon left taken over (see
//! [`super::reconcile`]), the firewall installed, and what the store says should run started.
use super::*;
use dyno_sandbox::template;

/// The definition of a recorded dyno, from its release (for a daemon adopting it).
pub(super) fn adopted_def(
    store: &Store,
    options: &DaemonOptions,
    dyno: &dyno_state::model::Dyno,
) -> Result<DynoDef, DaemonError> {
    let app = app_name(&dyno.app)?;
    let release = store.release(&app, dyno.release_version)?;
    let slug = release.slug.clone().ok_or_else(|| {
        DaemonError::new(
            ErrorKind::Conflict,
            format!("{} v{} has no slug", dyno.app, release.version),
        )
    })?;
    let index = dyno
        .name
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| {
            DaemonError::new(ErrorKind::Conflict, format!("bad dyno name {}", dyno.name))
        })?;
    let size = options.size(&dyno.size);
    let slot = Slot {
        process: dyno.process_type.clone(),
        index,
        // A one-off's command is not in the release; it only shows in the start line, which
        // an adopted dyno does not log again.
        command: release
            .process_types
            .get(&dyno.process_type)
            .cloned()
            .unwrap_or_default(),
        restart: dyno.process_type != ONE_OFF,
        size,
    };
    Ok(options.dyno_def(&dyno.app, &release, &slug.path, slot))
}

/// Busy dynos stay off the first `reserve` CPUs; where that cannot be, the operator is told
/// once and dynos run on every CPU.
pub(super) fn reserve_cpus(mut cgroups: Cgroups, reserve: usize) -> Cgroups {
    if reserve == 0 {
        return cgroups;
    }
    match cgroups.reserve_cpus(reserve) {
        Ok(()) => {
            if let Some(p) = cgroups.cpu_placement() {
                tracing::info!(reserved = reserve, busy_cpus = %p.busy, "busy dynos stay off the reserved CPUs");
            }
        }
        Err(reason) => tracing::warn!(
            "busy dynos share every CPU with the router and quiet dynos: {reason} \
             (--cpu-reserve 0 says this is meant)"
        ),
    }
    cgroups
}

/// The store in the data dir, its address pool the network's.
fn open_store(options: &DaemonOptions) -> Result<Store, DaemonError> {
    let pool = &options.network.pool;
    let pool = ipnet::Ipv4Net::new(pool.network(), pool.prefix_len())
        .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("pool {pool}: {e}")))?;
    Ok(Store::open_with(
        &options.data_dir,
        StoreOptions {
            pool,
            ..StoreOptions::default()
        },
    )?)
}

impl Daemon {
    /// Opens the store, takes over what an earlier daemon left (see [`reconcile`]), installs
    /// the firewall and starts what the store says should run.
    pub async fn open(options: DaemonOptions) -> Result<Arc<Daemon>, DaemonError> {
        let store = open_store(&options)?;
        let host =
            Host::current().map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?;
        let cgroups = match Cgroups::detect().and_then(|c| c.vacate_own_cgroup().map(|()| c)) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroups: memory and process limits are off");
                None
            }
        };
        for (app, calls) in options.seccomp.iter() {
            tracing::warn!(
                app = %app,
                calls = %calls.join(","),
                "this app's dynos may make these system calls beyond the default seccomp profile"
            );
        }
        let proc_view = procview::open(options.lxcfs_dir.as_deref()).await;
        let cgroups = cgroups.map(|c| match proc_view {
            Some(_) => c.with_proc_view(),
            None => c,
        });
        let cgroups = cgroups.map(|c| reserve_cpus(c, options.cpu_reserve));
        let rows = store.all_dynos()?;
        let mut stock = reconcile::take_stock(&options, rows, cgroups.as_ref());
        let mut adoptees = Vec::new();
        for live in std::mem::take(&mut stock.live) {
            match adopted_def(&store, &options, &live.dyno) {
                Ok(def) => adoptees.push((live, def)),
                Err(e) => {
                    tracing::warn!(dyno = %live.dyno.net_name, error = %e, "not adopted");
                    stock
                        .ended
                        .push(reconcile::end_now(&options, live, cgroups.as_ref()));
                }
            }
        }
        let leases: Box<dyn LeaseStore + Send> = Box::new(MemoryStore);
        let mut network = Network::open(host, &options.network, leases)
            .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("network: {e}")))?;
        let adopted: Vec<&dyno_state::Dyno> = adoptees.iter().map(|(live, _)| &live.dyno).collect();
        reconcile::settle(&options, &stock, &adopted, &mut network, cgroups.as_ref())
            .map_err(|e| DaemonError::new(ErrorKind::Internal, format!("firewall: {e}")))?;
        let netwatch = match NetWatch::for_host(network.host().netns(), options.network.firewall())
        {
            Ok(watch) => Some(Arc::new(watch)),
            Err(e) => {
                tracing::warn!(error = %e, "dynos whose network breaks will not be noticed");
                None
            }
        };
        std::fs::create_dir_all(&options.state_root).map_err(|e| {
            DaemonError::new(
                ErrorKind::Internal,
                format!("state dir {}: {e}", options.state_root.display()),
            )
        })?;
        // After LXCFS is mounted: the template is a copy of the host's mounts as they are now.
        // Templates of daemons that are gone (killed) go first.
        template::remove_orphans(&options.state_root);
        let template = template::path_beside(&options.state_root, std::process::id());
        let mount_template = match template::create(&template, &network.run_dir().0) {
            Ok(()) => Some(template),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "no mount namespace template: every dyno start copies the host's mounts"
                );
                None
            }
        };
        let machine = LinuxMachine {
            network: Arc::new(Mutex::new(network)),
            cgroups,
            proc_view,
            netwatch,
            mount_template,
        };
        let daemon = Daemon::assemble(store, options, Arc::new(machine));
        if let Some(cgroups) = daemon.machine.cgroups() {
            *crate::lock(&daemon.cpu_placer) = CpuPlacer::start(cgroups.clone());
        }
        // How the ended dynos ended is not lost: it goes into their apps' logs.
        for ended in &stock.ended {
            for (source, line) in ended.log_lines() {
                daemon.hub.append(
                    &ended.dyno.app,
                    LogLine::now(source, &ended.dyno.name, line),
                );
            }
        }
        // Their rows go last (a full or read-only data dir keeps them for the next start: the
        // daemon still starts and adopts what runs).
        let ended_ids: Vec<i64> = stock.ended.iter().map(|e| e.dyno.id).collect();
        let forgotten = daemon
            .with_store(move |s| {
                for id in ended_ids {
                    let stopping = DynoUpdate {
                        state: Some(DynoState::Stopping),
                        ..DynoUpdate::default()
                    };
                    s.update_dyno(id, &stopping)?;
                    s.remove_dyno(id)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = forgotten {
            tracing::warn!(error = %e, "reconcile: forget the ended dynos");
        }
        if !adoptees.is_empty() || !stock.ended.is_empty() || !stock.orphans.is_empty() {
            eprintln!(
                "dyno serve: took over from an earlier daemon: {} dyno(s) adopted, {} ended \
                 (their exit statuses are in their apps' logs), {} orphan(s) removed",
                adoptees.len(),
                stock.ended.len(),
                stock.orphans.len()
            );
        }
        daemon.adopt_all(adoptees).await;
        daemon.start_apps().await?;
        Ok(daemon)
    }

    /// A daemon whose dynos run on `machine`, from a store with nothing to take over (unit
    /// tests run it on the supervisor's fake host).
    pub async fn open_on(
        options: DaemonOptions,
        machine: Arc<dyn Machine>,
    ) -> Result<Arc<Daemon>, DaemonError> {
        let store = open_store(&options)?;
        let daemon = Daemon::assemble(store, options, machine);
        daemon.start_apps().await?;
        Ok(daemon)
    }

    fn assemble(
        store: Store,
        mut options: DaemonOptions,
        machine: Arc<dyn Machine>,
    ) -> Arc<Daemon> {
        // The shipped buildpacks are written out at every start (a newer binary brings newer
        // ones); detection tries them after the operator's.
        let shipped = options.data_dir.join("buildpacks").join("shipped");
        match dyno_build::shipped::install(&shipped) {
            Ok(packs) => options.build.installed.extend(
                packs
                    .into_iter()
                    .map(|(name, dir)| builds::Installed { name, dir }),
            ),
            Err(e) => tracing::warn!("shipped buildpacks at {}: {e}", shipped.display()),
        }
        let routes = RouteTable::new();
        Arc::new(Daemon {
            store: Arc::new(Mutex::new(store)),
            hub: LogHub::new(),
            certs: dyno_router::SniCertificates::new(routes.clone(), None),
            routes,
            machine,
            options,
            apps: tokio::sync::Mutex::new(BTreeMap::new()),
            turns: Mutex::new(BTreeMap::new()),
            cpu_placer: Mutex::new(None),
            router_metrics: metrics::RouterMetrics::default(),
            builds: builds::Builds::default(),
        })
    }

    /// Every app of the store: in the router, its drains running, its dynos converged.
    async fn start_apps(self: &Arc<Daemon>) -> Result<(), DaemonError> {
        // A release phase cannot outlive the daemon that ran it (its dyno was stopped or is
        // not adopted): its release failed.
        // (A read-only store keeps them pending until it can be written.)
        match self.with_store(|s| s.fail_pending_releases()).await {
            Ok(failed) => {
                for release in failed {
                    tracing::warn!(
                        app = %release.app,
                        version = release.version,
                        "the daemon stopped during the release phase: release marked failed"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "pending releases not settled"),
        }
        self.settle_interrupted_builds().await;
        let apps = self.with_store(|s| s.list_apps()).await?;
        runtime_metrics::spawn(self);
        self.serve_all_certificates().await?;
        for app in apps {
            self.route(&app);
            for drain in self.drains(&app.name).await? {
                if let Err(e) = self.hub.add_drain_with_token(
                    &app.name,
                    drain.url.as_str(),
                    &drain.token,
                    self.drain_options(),
                ) {
                    tracing::warn!(app = %app.name, error = %e, "drain not restarted");
                }
            }
            self.converge(&app.name).await?;
        }
        Ok(())
    }

    /// Supervisors for the dynos found running.
    pub(super) async fn adopt_all(&self, adoptees: Vec<(reconcile::Live, DynoDef)>) {
        let mut apps = self.apps.lock().await;
        for (live, def) in adoptees {
            let Some(ip) = live.dyno.address else {
                continue;
            };
            let runtime = self.runtime_in(&mut apps, &def.app);
            if def.process == ONE_OFF {
                runtime.one_offs = runtime.one_offs.max(def.index);
            }
            let found = Adoptee {
                intent: live.dyno.id,
                net_name: live.dyno.net_name.clone(),
                ip,
                shim_pid: live.shim_pid,
            };
            runtime.track(
                supervisor::adopt(runtime.platform.clone(), def.clone(), found),
                &def,
            );
        }
    }
}
