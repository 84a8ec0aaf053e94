//! The dyno lifecycle on the fake host: boot, R10, crash and restart, stop and R12, R14/R15,
//! a failed setup. No root, no processes; each test takes milliseconds.

use super::fake::FakeHost;
use super::*;

const APP: &str = "hello";
const PORT: u16 = 5000;

/// A lifecycle in milliseconds.
fn quick() -> Lifecycle {
    Lifecycle {
        boot_timeout: Duration::from_millis(300),
        stop_grace: Duration::from_millis(50),
        restart_cooloffs: vec![Duration::ZERO, Duration::from_millis(20)],
        stable_after: Duration::from_secs(600),
        cycling: None,
        readiness_poll: Duration::from_millis(5),
        memory_poll: Duration::from_millis(5),
        memory_warning_every: Duration::from_secs(600),
        release_timeout: Duration::from_secs(5),
    }
}

fn def(process: &str, restart: bool) -> DynoDef {
    DynoDef {
        app: APP.into(),
        process: process.into(),
        index: 1,
        command: "./server".into(),
        env: Vec::new(),
        app_dir: PathBuf::from("/nonexistent"),
        release: 1,
        uid: 10_000,
        port: PORT,
        restart,
        size: DynoSize::STANDARD_1X,
        attachment: None,
        binds: Vec::new(),
    }
}

/// A platform on a fake host, and the log lines its dynos write.
struct Bench {
    fake: FakeHost,
    platform: Arc<Platform>,
    logs: mpsc::UnboundedReceiver<LogLine>,
    seen: Vec<String>,
}

impl Bench {
    fn new(lifecycle: Lifecycle) -> Bench {
        let fake = FakeHost::new();
        let (tx, logs) = mpsc::unbounded_channel();
        let platform = Arc::new(Platform::new(Arc::new(fake.clone()), lifecycle, tx));
        Bench {
            fake,
            platform,
            logs,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 5 s) until a log line contains `text`; every line so far is kept.
    async fn line(&mut self, text: &str) -> String {
        if let Some(found) = self.seen.iter().find(|l| l.contains(text)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let next = tokio::time::timeout_at(deadline, self.logs.recv()).await;
            let Ok(Some(line)) = next else {
                panic!("no line with {text:?}; lines: {:#?}", self.seen);
            };
            let line = line.message.clone();
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }
}

/// Waits (at most 5 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    waited.await.unwrap_or_else(|_| panic!("never {what}"));
}

async fn state_becomes(handle: &DynoHandle, state: State) -> Status {
    let mut status = handle.status.clone();
    let waited = tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.state == state),
    );
    let reached = match waited.await {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("never {state:?}; now {:?}", handle.status.borrow()),
    };
    reached
}

#[tokio::test]
async fn a_web_dyno_is_up_only_once_it_listens_and_then_is_routed_by_its_address() {
    let mut bench = Bench::new(Lifecycle {
        boot_timeout: Duration::from_secs(60),
        ..quick()
    });
    bench.fake.boot_slowly(APP);
    let handle = start(bench.platform.clone(), def("web", true));
    bench.line("Starting process with command `./server`").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(handle.status.borrow().state, State::Starting);
    assert_eq!(handle.status.borrow().ip, None, "not routed while booting");
    bench.fake.listen(APP, "web.1");
    let up = state_becomes(&handle, State::Up).await;
    assert!(up.ip.is_some() && up.net_name.is_some(), "{up:?}");
    bench.line("State changed from starting to up").await;
    handle.stop().await;
    assert!(bench.fake.standing(APP).is_empty());
}

#[tokio::test]
async fn a_web_dyno_that_never_listens_gets_r10_is_killed_and_starts_again() {
    let mut bench = Bench::new(quick());
    bench.fake.boot_slowly(APP);
    let handle = start(bench.platform.clone(), def("web", true));
    bench.line("Error R10 (Boot timeout)").await;
    bench.line("Stopping process with SIGKILL").await;
    bench.line("Process exited with status 137").await;
    bench.line("State changed from starting to crashed").await;
    bench.line("State changed from crashed to starting").await;
    until("a new incarnation after the crash", || {
        bench.fake.made(APP) == 2
    })
    .await;
    assert_eq!(handle.status.borrow().restarts, 1);
    let events = bench.fake.events();
    let first_teardown = events.iter().position(|e| e == "tear_down hello web.1");
    let second_make = events.iter().rposition(|e| e == "make hello web.1");
    assert!(
        first_teardown < second_make,
        "the old incarnation is gone before the new one is made: {events:?}"
    );
    handle.stop().await;
    assert!(bench.fake.standing(APP).is_empty());
}

#[tokio::test]
async fn a_crashed_dyno_restarts_after_its_cooloff_and_a_one_off_does_not() {
    let mut bench = Bench::new(quick());
    let worker = start(bench.platform.clone(), def("worker", true));
    state_becomes(&worker, State::Up).await;
    bench.fake.exit(APP, "worker.1", 3);
    bench.line("Process exited with status 3").await;
    bench.line("State changed from up to crashed").await;
    // The first restart comes at once, the second after the next cool-off.
    state_becomes(&worker, State::Up).await;
    bench.fake.exit(APP, "worker.1", 3);
    let crashed = state_becomes(&worker, State::Crashed).await;
    assert_eq!(crashed.exit_code, Some(3));
    let again = state_becomes(&worker, State::Up).await;
    assert_eq!(again.restarts, 2);
    assert_eq!(bench.fake.made(APP), 3);
    worker.stop().await;

    let one_off = start(bench.platform.clone(), def("run", false));
    state_becomes(&one_off, State::Up).await;
    bench.fake.exit(APP, "run.1", 0);
    let down = state_becomes(&one_off, State::Down).await;
    assert_eq!(down.exit_code, Some(0));
    until("the one-off's supervisor ended", || one_off.is_finished()).await;
    assert_eq!(bench.fake.made(APP), 4, "never started again");
    assert!(bench.fake.standing(APP).is_empty());
}

/// Heroku's crash restart policy: at once after the first crash, then a cool-off (here a
/// minute: it never ends within the test) until the dyno starts correctly, which starts the
/// count over.
#[tokio::test]
async fn a_crash_restarts_at_once_the_next_waits_its_cooloff_until_the_dyno_started_correctly() {
    let lifecycle = Lifecycle {
        restart_cooloffs: vec![Duration::ZERO, Duration::from_secs(60)],
        stable_after: Duration::from_millis(100),
        ..quick()
    };
    let mut bench = Bench::new(lifecycle);
    let worker = start(bench.platform.clone(), def("worker", true));
    state_becomes(&worker, State::Up).await;
    // Crashes right after its start: the first restart comes at once.
    bench.fake.exit(APP, "worker.1", 1);
    until("restarted at once", || {
        let s = worker.status.borrow();
        s.restarts == 1 && s.state == State::Up
    })
    .await;
    // Up for longer than `stable_after`: it started correctly, so its next crash is a first
    // crash again, restarted at once.
    tokio::time::sleep(Duration::from_millis(150)).await;
    bench.fake.exit(APP, "worker.1", 1);
    until("restarted at once after the reset", || {
        let s = worker.status.borrow();
        s.restarts == 2 && s.state == State::Up
    })
    .await;
    // A crash soon after that one is a second crash: it waits out its cool-off, crashed.
    bench.fake.exit(APP, "worker.1", 1);
    state_becomes(&worker, State::Crashed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(worker.status.borrow().state, State::Crashed);
    assert_eq!(
        bench.fake.made(APP),
        3,
        "not started again during the cool-off"
    );
    // A stop ends the cool-off: the dyno is down, never started again.
    let status = worker.status.clone();
    worker.stop().await;
    assert_eq!(status.borrow().state, State::Down);
    bench.line("State changed from crashed to down").await;
    assert_eq!(bench.fake.made(APP), 3);
}

#[tokio::test]
async fn daily_cycling_restarts_a_formation_dyno_and_ends_a_one_off() {
    let mut bench = Bench::new(Lifecycle {
        cycling: Some(crate::lifecycle::Cycling {
            period: Duration::from_millis(100),
            jitter: Duration::ZERO,
        }),
        ..quick()
    });
    let worker = start(bench.platform.clone(), def("worker", true));
    let one_off = start(bench.platform.clone(), def("run", false));
    bench.line("Cycling").await;
    until("the one-off's supervisor ended", || one_off.is_finished()).await;
    assert_eq!(one_off.status.borrow().state, State::Down);
    until("the worker started again", || bench.fake.made(APP) >= 3).await;
    state_becomes(&worker, State::Up).await;
    assert!(!bench
        .fake
        .standing(APP)
        .iter()
        .any(|d| d.starts_with("run.")));
    worker.stop().await;
}

#[tokio::test]
async fn stop_is_sigterm_then_after_the_grace_sigkill_and_r12() {
    let mut bench = Bench::new(quick());
    let polite = start(bench.platform.clone(), def("worker", true));
    state_becomes(&polite, State::Up).await;
    polite.stop().await;
    bench.line("Stopping all processes with SIGTERM").await;
    bench.line("Process exited with status 143").await;
    assert!(
        !bench.seen.iter().any(|l| l.contains("R12")),
        "{:?}",
        bench.seen
    );

    bench.fake.ignore_sigterm(APP);
    let stubborn = start(bench.platform.clone(), def("web", true));
    state_becomes(&stubborn, State::Up).await;
    stubborn.stop().await;
    bench.line("Error R12 (Exit timeout)").await;
    bench
        .line("Stopping remaining processes with SIGKILL")
        .await;
    bench.line("Process exited with status 137").await;
    let events = bench.fake.events();
    let tail: Vec<&str> = events
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "terminate hello web.1",
            "kill hello web.1",
            "tear_down hello web.1"
        ]
    );
    assert!(bench.fake.standing(APP).is_empty());
}

fn usage(used_mb: u64, oom_kills: u64) -> dyno_sandbox::cgroup::MemoryUsage {
    let mb = 1024 * 1024;
    dyno_sandbox::cgroup::MemoryUsage {
        used_bytes: used_mb * mb,
        quota_bytes: 512 * mb,
        limit_bytes: 1024 * mb,
        oom_kills,
        rss_bytes: used_mb * mb,
        cache_bytes: 0,
        swap_bytes: 0,
        pgpgin_pages: None,
        pgpgout_pages: None,
    }
}

#[tokio::test]
async fn over_quota_is_r14_and_at_twice_the_quota_r15_kills_the_dyno() {
    let mut bench = Bench::new(quick());
    let handle = start(bench.platform.clone(), def("worker", true));
    state_becomes(&handle, State::Up).await;
    bench.fake.use_memory(APP, "worker.1", usage(600, 0));
    bench.line("Process running mem=600M(117.2%)").await;
    bench.line("Error R14 (Memory quota exceeded)").await;
    assert_eq!(handle.status.borrow().state, State::Up, "R14 only warns");
    bench.fake.use_memory(APP, "worker.1", usage(1024, 0));
    bench.line("Error R15 (Memory quota vastly exceeded)").await;
    bench.line("Process exited with status 137").await;
    bench.line("State changed from up to crashed").await;
    handle.stop().await;
}

#[tokio::test]
async fn a_failed_setup_is_logged_and_the_dyno_tries_again() {
    let mut bench = Bench::new(quick());
    bench.fake.fail_next_make("no room on this host");
    let handle = start(bench.platform.clone(), def("worker", true));
    bench
        .line("Error starting dyno: start the shim: no room on this host")
        .await;
    let up = state_becomes(&handle, State::Up).await;
    assert_eq!(up.restarts, 1);
    assert_eq!(bench.fake.standing(APP), ["worker.1"]);
    handle.stop().await;
    assert!(bench.fake.standing(APP).is_empty());
}

#[tokio::test]
async fn an_adopted_dyno_is_supervised_like_a_started_one() {
    let mut bench = Bench::new(quick());
    let found = Adoptee {
        intent: 7,
        net_name: "0adopted00001".into(),
        ip: Ipv4Addr::new(10, 213, 0, 77),
        shim_pid: 4242,
    };
    let handle = adopt(bench.platform.clone(), def("web", true), found);
    let up = state_becomes(&handle, State::Up).await;
    assert_eq!(up.ip, Some(Ipv4Addr::new(10, 213, 0, 77)));
    assert!(
        !bench.seen.iter().any(|l| l.contains("Starting process")),
        "an adopted dyno is not started again"
    );
    bench.fake.exit(APP, "web.1", 1);
    bench.line("Process exited with status 1").await;
    until("restarted", || handle.status.borrow().restarts == 1).await;
    state_becomes(&handle, State::Up).await;
    assert_eq!(bench.fake.events()[0], "adopt hello web.1");
    assert_eq!(bench.fake.events()[1], "tear_down hello web.1");
    handle.stop().await;
}
