//! The daemon's convergence on the supervisor's fake host: per-app turns, preboot, destroy
//! during a boot, scale and restart. A real store in a scratch dir; no root, no dyno.

use super::*;
use dyno_supervisor::fake::FakeHost;
use dyno_supervisor::DynoHost;

/// The fake host as a whole machine: one host for every app, nothing shared to remove.
struct FakeMachine(FakeHost);

impl Machine for FakeMachine {
    fn host_for(&self, _app: &str, _options: &DaemonOptions) -> Arc<dyn DynoHost> {
        Arc::new(self.0.clone())
    }

    fn cgroups(&self) -> Option<&Cgroups> {
        None
    }

    fn netwatch(&self) -> Option<Arc<NetWatch>> {
        None
    }

    fn shut_down(&self) {}
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dyno-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon on a fake host, an app dir to deploy, and the scratch dir they live in.
struct Lab {
    fake: FakeHost,
    daemon: Arc<Daemon>,
    app_dir: PathBuf,
    _scratch: Scratch,
}

impl Lab {
    async fn new() -> Lab {
        let scratch = Scratch::new("daemon-test");
        let app_dir = scratch.0.join("app");
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::write(app_dir.join("Procfile"), "web: ./server\nworker: ./work\n").unwrap();
        let fake = FakeHost::new();
        let options = DaemonOptions {
            data_dir: scratch.0.join("data"),
            state_root: scratch.0.join("dynos"),
            network: NetworkConfig::default(),
            exe: PathBuf::from("/nonexistent/dyno"),
            lifecycle: Lifecycle {
                // Long: a slow boot ends only when the test says so, never by R10.
                boot_timeout: Duration::from_secs(120),
                stop_grace: Duration::from_millis(50),
                readiness_poll: Duration::from_millis(5),
                memory_poll: Duration::from_secs(60),
                ..Lifecycle::default()
            },
            uids: UidRange::default(),
            port: 5000,
            router_port: 8080,
            web_up: None,
            memory_mb: None,
            runtime_metrics_interval: Duration::from_secs(3600),
            seccomp: seccomp::SeccompAdditions::default(),
            lxcfs_dir: None,
            cpu_reserve: 0,
            build: Default::default(),
            api_socket: None,
        };
        let machine = Arc::new(FakeMachine(fake.clone()));
        let daemon = Daemon::open_on(options, machine).await.unwrap();
        Lab {
            fake,
            daemon,
            app_dir,
            _scratch: scratch,
        }
    }

    async fn app(&self, name: &str) {
        self.daemon.create_app(name).await.unwrap();
    }

    /// Deploys in a task of its own: it returns once the new web dynos are up.
    fn deploy(&self, app: &str) -> tokio::task::JoinHandle<Result<Release, DaemonError>> {
        let (daemon, app, dir) = (self.daemon.clone(), app.to_owned(), self.app_dir.clone());
        tokio::spawn(async move { daemon.deploy(&app, &dir).await })
    }

    /// `web.1 up, web.2 starting`, as `dyno ps` has it.
    async fn ps(&self, app: &str) -> Vec<String> {
        let dynos = self.daemon.ps(app).await.unwrap();
        dynos
            .iter()
            .map(|d| format!("{} {}", d.name, d.state))
            .collect()
    }
}

fn web(quantity: u32) -> Vec<ScaleChange> {
    of_type("web", quantity)
}

fn of_type(process_type: &str, quantity: u32) -> Vec<ScaleChange> {
    vec![ScaleChange {
        process_type: ProcessType::parse(process_type).unwrap(),
        quantity: Some(dyno_state::Quantity::new(quantity, 100).unwrap()),
        size: None,
    }]
}

/// Waits (at most 5 s) until `done` holds.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn while_one_app_boots_slowly_another_scales_changes_config_restarts_and_is_destroyed() {
    let lab = Lab::new().await;
    lab.app("slow").await;
    lab.app("quick").await;
    lab.fake.boot_slowly("slow");
    let slow_deploy = lab.deploy("slow");
    until("slow's web.1 made", async || {
        lab.fake.standing("slow") == ["web.1"]
    })
    .await;

    lab.deploy("quick").await.unwrap().unwrap();
    assert_eq!(lab.ps("quick").await, ["web.1 up"]);

    lab.daemon.scale("quick", web(3)).await.unwrap();
    assert_eq!(lab.ps("quick").await, ["web.1 up", "web.2 up", "web.3 up"]);

    let made = lab.fake.made("quick");
    let config = vec![("GREETING".to_string(), "hi".to_string())];
    lab.daemon.config_set("quick", config).await.unwrap();
    assert_eq!(
        lab.fake.made("quick"),
        made + 3,
        "a new release: three new dynos"
    );
    until("the old dynos gone", async || {
        lab.fake.standing("quick").len() == 3
    })
    .await;
    let release = lab.daemon.current_release("quick").await.unwrap();
    let ps = lab.daemon.ps("quick").await.unwrap();
    assert!(
        ps.iter().all(|d| d.release.version == release.version),
        "{ps:?}"
    );

    let made = lab.fake.made("quick");
    lab.daemon.restart("quick", Some("web.2")).await.unwrap();
    assert_eq!(lab.fake.made("quick"), made + 1);
    assert_eq!(lab.ps("quick").await, ["web.1 up", "web.2 up", "web.3 up"]);

    lab.daemon.destroy_app("quick").await.unwrap();
    assert!(lab.fake.standing("quick").is_empty());
    assert!(lab.daemon.app("quick").await.is_err());

    // All of that while slow's deploy still waits for its web dyno.
    assert!(!slow_deploy.is_finished());
    assert_eq!(lab.ps("slow").await, ["web.1 starting"]);
    lab.fake.listen("slow", "web.1");
    slow_deploy.await.unwrap().unwrap();
    assert_eq!(lab.ps("slow").await, ["web.1 up"]);
    lab.daemon.stop().await;
    assert!(lab.fake.standing("slow").is_empty());
}

#[tokio::test]
async fn destroy_wins_over_a_deploy_waiting_for_its_web_dyno() {
    let lab = Lab::new().await;
    lab.app("slow").await;
    lab.fake.boot_slowly("slow");
    let deploy = lab.deploy("slow");
    until("web.1 made", async || {
        lab.fake.standing("slow") == ["web.1"]
    })
    .await;
    lab.daemon.destroy_app("slow").await.unwrap();
    assert!(lab.fake.standing("slow").is_empty());
    // The deploy's wait ended with the app; what it answers does not matter, that it does.
    let _ = tokio::time::timeout(Duration::from_secs(5), deploy)
        .await
        .expect("the deploy returns once its app is gone");
    assert!(lab.daemon.app("slow").await.is_err());
}

#[tokio::test]
async fn with_preboot_a_new_release_rolls_over_only_once_its_web_dynos_are_up() {
    let lab = Lab::new().await;
    lab.app("hello").await;
    lab.daemon.set_preboot("hello", true).await.unwrap();
    lab.deploy("hello").await.unwrap().unwrap();
    lab.daemon.scale("hello", web(2)).await.unwrap();
    assert_eq!(lab.ps("hello").await, ["web.1 up", "web.2 up"]);

    lab.fake.boot_slowly("hello");
    let deploy = lab.deploy("hello");
    until("the new web dynos made", async || {
        lab.fake.standing("hello").len() == 4
    })
    .await;
    // Preboot: the old dynos still serve, both old and new are standing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!deploy.is_finished());
    let route = lab.daemon.routes.lookup("hello.localhost").unwrap();
    assert_eq!(route.backends.len(), 2, "the old web dynos serve meanwhile");
    lab.fake.listen("hello", "web.1");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !deploy.is_finished(),
        "web.2 of the new release is not up yet"
    );
    lab.fake.listen("hello", "web.2");
    let release = deploy.await.unwrap().unwrap();
    until("the old web dynos gone", async || {
        lab.fake.standing("hello").len() == 2
    })
    .await;
    let ps = lab.daemon.ps("hello").await.unwrap();
    assert!(
        ps.iter()
            .all(|d| d.release.version == release.version && d.state == "up"),
        "{ps:?}"
    );
    let events = lab.fake.events();
    let stopped_old = events
        .iter()
        .filter(|e| e.starts_with("terminate hello web."))
        .count();
    assert_eq!(stopped_old, 2, "{events:?}");
    lab.daemon.stop().await;
}

#[tokio::test]
async fn without_preboot_a_new_release_restarts_the_dynos_in_place() {
    let lab = Lab::new().await;
    lab.app("hello").await;
    assert!(
        !lab.daemon.app("hello").await.unwrap().preboot,
        "off by default"
    );
    lab.deploy("hello").await.unwrap().unwrap();
    lab.daemon.scale("hello", web(2)).await.unwrap();
    assert_eq!(lab.ps("hello").await, ["web.1 up", "web.2 up"]);
    let before = lab.fake.events().len();

    let config = vec![("GREETING".to_string(), "hi".to_string())];
    let release = lab.daemon.config_set("hello", config).await.unwrap();
    let events = lab.fake.events()[before..].to_vec();
    let at = |what: &str| {
        events
            .iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what}: {events:?}"))
    };
    // The old web dynos stopped before the new ones were made.
    for old in ["hello web.1", "hello web.2"] {
        for new in ["hello web.1", "hello web.2"] {
            assert!(
                at(&format!("terminate {old}")) < at(&format!("make {new}")),
                "{events:?}"
            );
        }
    }
    let ps = lab.daemon.ps("hello").await.unwrap();
    assert!(
        ps.iter()
            .all(|d| d.release.version == release.version && d.state == "up"),
        "{ps:?}"
    );
    assert_eq!(lab.fake.standing("hello"), ["web.1", "web.2"]);

    // A scale that replaces nothing stops nothing.
    let before = lab.fake.events().len();
    lab.daemon.scale("hello", web(3)).await.unwrap();
    let events = lab.fake.events()[before..].to_vec();
    assert!(
        !events.iter().any(|e| e.starts_with("terminate")),
        "{events:?}"
    );
    lab.daemon.stop().await;
}

/// Heroku resets a crashed dyno's cool-off "when you push a new release to your app, or when
/// you restart your app, or when you scale your dynos to 0 and then scale them back up".
#[tokio::test]
async fn a_release_a_restart_and_a_scale_to_zero_and_back_end_a_cooloff() {
    let lab = Lab::new().await;
    lab.app("hello").await;
    lab.deploy("hello").await.unwrap().unwrap();
    lab.daemon
        .scale("hello", of_type("worker", 1))
        .await
        .unwrap();
    let worker_is = |state: &'static str| {
        let lab = &lab;
        async move || lab.ps("hello").await.contains(&format!("worker.1 {state}"))
    };
    until("worker.1 up", worker_is("up")).await;
    let resets: [(&str, Box<dyn Fn() -> _>); 3] = [
        (
            "a new release",
            Box::new(|| {
                let daemon = lab.daemon.clone();
                tokio::spawn(async move {
                    let config = vec![("K".to_string(), "v".to_string())];
                    daemon.config_set("hello", config).await.map(|_| ())
                })
            }),
        ),
        (
            "a restart",
            Box::new(|| {
                let daemon = lab.daemon.clone();
                tokio::spawn(async move { daemon.restart("hello", Some("worker")).await })
            }),
        ),
        (
            "a scale to 0 and back",
            Box::new(|| {
                let daemon = lab.daemon.clone();
                tokio::spawn(async move {
                    daemon.scale("hello", of_type("worker", 0)).await?;
                    daemon
                        .scale("hello", of_type("worker", 1))
                        .await
                        .map(|_| ())
                })
            }),
        ),
    ];
    for (reset, run) in resets {
        // A first crash restarts at once; the second waits out its cool-off (20 minutes).
        let made = lab.fake.made("hello");
        lab.fake.exit("hello", "worker.1", 1);
        until("restarted at once", async || {
            lab.fake.made("hello") == made + 1
        })
        .await;
        until("worker.1 up again", worker_is("up")).await;
        lab.fake.exit("hello", "worker.1", 1);
        until("worker.1 crashed", worker_is("crashed")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(lab.fake.made("hello"), made + 1, "in its cool-off");
        run().await.unwrap().unwrap();
        until(reset, async || {
            lab.fake.made("hello") > made + 1
                && lab.ps("hello").await.contains(&"worker.1 up".to_string())
        })
        .await;
    }
    lab.daemon.stop().await;
}

#[tokio::test]
async fn scaling_down_stops_the_highest_numbered_dynos_and_zero_stops_all() {
    let lab = Lab::new().await;
    lab.app("hello").await;
    lab.deploy("hello").await.unwrap().unwrap();
    lab.daemon.scale("hello", web(3)).await.unwrap();
    lab.daemon.scale("hello", web(1)).await.unwrap();
    assert_eq!(lab.ps("hello").await, ["web.1 up"]);
    assert_eq!(lab.fake.standing("hello"), ["web.1"]);
    lab.daemon.scale("hello", web(0)).await.unwrap();
    assert!(lab.ps("hello").await.is_empty());
    assert!(lab.fake.standing("hello").is_empty());
    lab.daemon.stop().await;
}
