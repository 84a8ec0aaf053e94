//! `dyno up` end to end (privileged: run as root). The binary runs inside a lab host namespace
//! (so its "host" network is the lab's), with its run dir and state dir in the test's scratch
//! space; the tests read its stdout (Heroku-format log lines) and stderr (progress notes).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dyno_net::lab::Lab;
use dyno_net::ns;

const ROUTER_MARK: u32 = 0x6479;

fn require_root() {
    // SAFETY: geteuid cannot fail.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (it runs dyno up): run the suite as root"
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `dyno up` in its own lab.
struct Up {
    lab: Lab,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    scratch: PathBuf,
}

impl Up {
    fn start(tag: &str, app: &Path, extra: &[&str]) -> Up {
        require_root();
        let lab = Lab::new(tag).unwrap();
        let scratch = PathBuf::from(format!("/run/dyno-up-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dyno"));
        command
            .arg("up")
            .arg(app)
            .arg("--run-dir")
            .arg(&lab.run_dir.0)
            .arg("--state-dir")
            .arg(scratch.join("state"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ns::command_in(&mut command, lab.host.netns(), None).unwrap();
        let mut child = command.spawn().unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Up {
            lab,
            child: Some(child),
            stdout,
            stderr,
            scratch,
        }
    }

    fn logs(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    fn notes(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until a log line (without its timestamp) ends with `suffix`; returns how many such
    /// lines there are.
    fn wait_for_log(&self, suffix: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.ends_with(suffix))
                .count();
            if n >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {count}× {suffix:?} within {timeout:?}:\n{}\n--- stderr:\n{}",
                self.logs(),
                self.notes()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `dyno` (`web.1`) is up for the first time.
    fn wait_up(&self, dyno: &str, timeout: Duration) {
        self.wait_for_log(
            &format!("heroku[{dyno}]: State changed from starting to up"),
            1,
            timeout,
        );
    }

    /// The address `dyno up` announced for a web dyno.
    fn address_of(&self, dyno: &str) -> Ipv4Addr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let prefix = format!("dyno up: {dyno} is up at ");
            let found = self.stderr.lock().unwrap().iter().rev().find_map(|l| {
                l.strip_prefix(&prefix)
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|ip| ip.parse().ok())
            });
            if let Some(ip) = found {
                return ip;
            }
            assert!(
                Instant::now() < deadline,
                "no address for {dyno}:\n{}",
                self.notes()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An HTTP GET through the router's way in: a marked socket in the lab host.
    fn get(&self, ip: Ipv4Addr, port: u16, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.0\r\nHost: app\r\n\r\n");
        // Only the socket is made in the lab host (on the namespace thread); the exchange runs
        // here, so that several requests can wait at once.
        let socket = self
            .lab
            .host
            .netns()
            .run(|| -> std::io::Result<socket2::Socket> {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                socket.set_mark(ROUTER_MARK)?;
                Ok(socket)
            })
            .unwrap()
            .unwrap();
        let exchange = || -> std::io::Result<String> {
            socket.connect_timeout(&SocketAddrV4::new(ip, port).into(), Duration::from_secs(2))?;
            let mut stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(Duration::from_secs(15)))?;
            stream.write_all(request.as_bytes())?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        };
        exchange().unwrap_or_else(|e| panic!("GET http://{ip}:{port}{path}: {e}"))
    }

    /// Ctrl-C, and the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "dyno up did not stop:\n{}",
                self.notes()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing of the run is left: namespaces, links, firewall, state, processes of the app.
    fn assert_nothing_left(&mut self, app_uid: u32) {
        let names: Vec<_> = std::fs::read_dir(&self.lab.run_dir.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(names.is_empty(), "namespaces left: {names:?}");
        assert!(!self.scratch.join("state").exists(), "state dir left");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let links = self.lab.host.links_with_prefix("dy").unwrap();
            let procs = processes_of(app_uid);
            if links.is_empty() && procs.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: links {links:?}, processes {procs:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let tables = {
            let mut nft = Command::new("nft");
            nft.args(["list", "tables"]);
            ns::command_in(&mut nft, self.lab.host.netns(), None).unwrap();
            String::from_utf8_lossy(&nft.output().unwrap().stdout).into_owned()
        };
        assert!(!tables.contains("dyno"), "firewall left: {tables}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Host pids of processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .map(|l| l.split_whitespace().nth(1) == Some(&uid.to_string()))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A throwaway app dir, removed on drop (also when the test fails).
struct TempApp(PathBuf);

impl std::ops::Deref for TempApp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn app_dir(tag: &str, procfile: &str) -> TempApp {
    let dir = PathBuf::from(format!("/run/dyno-up-app-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Procfile"), procfile).unwrap();
    TempApp(dir)
}

/// The message of a log line: `heroku[web.1]: State changed from starting to up`.
fn messages(logs: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
        .collect()
}

#[test]
fn hello_runs_serves_through_its_dyno_address_and_leaves_nothing() {
    let app = repo().join("examples/hello");
    let mut up = Up::start(
        "hello",
        &app,
        &["--boot-timeout", "20s", "--stop-grace", "5s"],
    );
    up.wait_up("web.1", Duration::from_secs(30));
    up.wait_up("worker.1", Duration::from_secs(30));
    let ip = up.address_of("web.1");
    let answer = up.get(ip, 5000, "/");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("Hello from web.1"), "{answer}");
    up.wait_for_log("worker heartbeat n=1", 1, Duration::from_secs(15));
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    let logs = messages(&up.logs());
    for expected in [
        "heroku[web.1]: Starting process with command `python3 web.py`",
        "heroku[web.1]: State changed from starting to up",
        "heroku[web.1]: Stopping all processes with SIGTERM",
        "heroku[web.1]: State changed from up to down",
        "heroku[worker.1]: State changed from up to down",
    ] {
        assert!(
            logs.iter().any(|l| l == expected),
            "no {expected:?} in:\n{}",
            up.logs()
        );
    }
    // Log lines carry Heroku's timestamp format.
    let first = up.logs().lines().next().unwrap().to_string();
    assert!(
        first.len() > 33 && &first[4..5] == "-" && &first[26..32] == "+00:00",
        "{first}"
    );
    up.assert_nothing_left(dyno_manager::up::app_uid("hello"));
}

#[test]
fn r10_when_a_web_dyno_does_not_bind_its_port() {
    let app = app_dir("r10", "web: sleep 1000\n");
    let mut up = Up::start(
        "r10",
        &app,
        &[
            "--app",
            "r10app",
            "--boot-timeout",
            "1s",
            "--restart-cooloffs",
            "0s,60s",
        ],
    );
    up.wait_for_log(
        "heroku[web.1]: State changed from crashed to starting",
        1,
        Duration::from_secs(20),
    );
    up.wait_for_log(
        "heroku[web.1]: State changed from starting to crashed",
        2,
        Duration::from_secs(20),
    );
    up.interrupt();
    let logs = messages(&up.logs());
    let r10 = "heroku[web.1]: Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 1 second of launch";
    let position = logs
        .iter()
        .position(|l| l == r10)
        .unwrap_or_else(|| panic!("{}", up.logs()));
    assert_eq!(
        logs[position + 1],
        "heroku[web.1]: Stopping process with SIGKILL"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[web.1]: Process exited with status 137"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[web.1]: State changed from starting to crashed"
    );
    up.assert_nothing_left(dyno_manager::up::app_uid("r10app"));
}

#[test]
fn a_crash_restarts_at_once_then_after_the_cooloff_and_exit_0_is_a_crash() {
    let app = app_dir("crash", "worker: echo working; exit 0\n");
    let mut up = Up::start(
        "crash",
        &app,
        &["--app", "crashapp", "--restart-cooloffs", "0s,2s"],
    );
    up.wait_for_log(
        "heroku[worker.1]: Process exited with status 0",
        3,
        Duration::from_secs(20),
    );
    up.interrupt();
    let lines: Vec<String> = up.logs().lines().map(String::from).collect();
    let restarts: Vec<&String> = lines
        .iter()
        .filter(|l| l.ends_with("heroku[worker.1]: State changed from crashed to starting"))
        .collect();
    assert!(restarts.len() >= 2, "{}", up.logs());
    // First restart at once, the second after the 2 s cool-off.
    let times: Vec<f64> = lines
        .iter()
        .filter(|l| {
            l.ends_with("heroku[worker.1]: State changed from up to crashed")
                || l.ends_with("heroku[worker.1]: State changed from crashed to starting")
        })
        .map(|l| seconds_of(l))
        .collect();
    assert!(times.len() >= 4, "{}", up.logs());
    assert!(
        times[1] - times[0] < 1.0,
        "first restart not at once: {times:?}"
    );
    assert!(
        times[3] - times[2] >= 1.9,
        "second restart before the cool-off: {times:?}"
    );
    up.assert_nothing_left(dyno_manager::up::app_uid("crashapp"));
}

/// Seconds within the day of a log line's timestamp.
fn seconds_of(line: &str) -> f64 {
    let time = &line[11..26]; // HH:MM:SS.ffffff
    let h: f64 = time[0..2].parse().unwrap();
    let m: f64 = time[3..5].parse().unwrap();
    let s: f64 = time[6..].parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn r12_when_processes_ignore_sigterm_and_a_daemonized_grandchild_goes_too() {
    let app = app_dir(
        "r12",
        "worker: trap '' TERM; setsid bash -c \"trap '' TERM; exec -a dyno-grandchild sleep 1000\" & echo started; while true; do sleep 1; done\n",
    );
    let mut up = Up::start("r12", &app, &["--app", "r12app", "--stop-grace", "1s"]);
    up.wait_for_log("app[worker.1]: started", 1, Duration::from_secs(20));
    up.interrupt();
    let logs = messages(&up.logs());
    let r12 = "heroku[worker.1]: Error R12 (Exit timeout) -> At least one process failed to exit within 1 second of SIGTERM";
    let position = logs
        .iter()
        .position(|l| l == r12)
        .unwrap_or_else(|| panic!("{}", up.logs()));
    assert_eq!(
        logs[position - 1],
        "heroku[worker.1]: Stopping all processes with SIGTERM"
    );
    assert_eq!(
        logs[position + 1],
        "heroku[worker.1]: Stopping remaining processes with SIGKILL"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[worker.1]: Process exited with status 137"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[worker.1]: State changed from up to down"
    );
    up.assert_nothing_left(dyno_manager::up::app_uid("r12app"));
}

#[test]
fn bad_apps_are_refused_with_errors_naming_the_file() {
    require_root();
    let run = |dir: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
            .arg("up")
            .arg(dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = run(Path::new("/nonexistent/app"));
    assert!(
        missing.contains("app directory /nonexistent/app: no such directory"),
        "{missing}"
    );
    let bad = app_dir("badline", "web: python3 web.py\nnonsense\n");
    let e = run(&bad);
    assert!(e.contains("Procfile:2: expected `type: command`"), "{e}");
    let nocmd = app_dir("nocmd", "web: no-such-program-here --port $PORT\n");
    let e = run(&nocmd);
    assert!(
        e.contains("Procfile:1: command `no-such-program-here` not found"),
        "{e}"
    );
}

#[test]
fn java_lists_eth0_as_index_2_while_the_host_end_is_above_65535() {
    let app = repo().join("examples/java-interfaces");
    let mut up = Up::start(
        "java",
        &app,
        &["--boot-timeout", "90s", "--stop-grace", "5s"],
    );
    up.wait_up("web.1", Duration::from_secs(120));
    let host_ends = up.lab.host.links_with_prefix("dy").unwrap();
    assert_eq!(host_ends.len(), 1, "{host_ends:?}");
    assert!(host_ends[0].0 > 65_535, "host end index {}", host_ends[0].0);
    let ip = up.address_of("web.1");
    let answer = up.get(ip, 5000, "/");
    assert!(answer.contains("interfaces: lo eth0"), "{answer}");
    assert!(answer.contains("eth0 index=2 up"), "{answer}");
    assert!(answer.contains(&format!("{ip}/32")), "{answer}");
    up.interrupt();
    up.assert_nothing_left(dyno_manager::up::app_uid("java-interfaces"));
}

#[test]
fn ruby_raindrops_reports_queued_connections_inside_the_dyno() {
    let app = repo().join("examples/ruby-raindrops");
    let mut up = Up::start(
        "ruby",
        &app,
        &["--boot-timeout", "30s", "--stop-grace", "5s"],
    );
    up.wait_up("web.1", Duration::from_secs(40));
    let ip = up.address_of("web.1");
    // Six at once to a server that takes a second each: the later ones wait in the accept
    // queue, and each answer reports the queue as it was when it was served.
    let answers: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| up.get(ip, 5000, "/stats")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let queued: Vec<u32> = answers
        .iter()
        .filter_map(|a| a.split("queued=").nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(queued.len(), 6, "{answers:?}");
    assert!(
        queued.iter().any(|q| *q > 0),
        "no queued connection seen: {queued:?}"
    );
    up.interrupt();
    up.assert_nothing_left(dyno_manager::up::app_uid("ruby-raindrops"));
}

/// The memory cgroup directory (relative to the memory hierarchy) of a running process.
fn memory_cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
            .then(|| path.to_string())
    })
}

fn memory_app(tag: &str, megabytes: u32) -> TempApp {
    app_dir(
        tag,
        &format!(
            "worker: python3 -c \"import time; x = bytearray({megabytes} * 1024 * 1024); print('holding {megabytes} MB', flush=True); time.sleep(1000)\"\n"
        ),
    )
}

#[test]
fn r14_when_over_the_memory_quota() {
    let app = memory_app("r14", 90);
    let mut up = Up::start(
        "r14",
        &app,
        &["--app", "r14app", "--memory-mb", "64", "--stop-grace", "2s"],
    );
    up.wait_for_log(
        "heroku[worker.1]: Error R14 (Memory quota exceeded)",
        1,
        Duration::from_secs(30),
    );
    let logs = messages(&up.logs());
    let position = logs
        .iter()
        .position(|l| l == "heroku[worker.1]: Error R14 (Memory quota exceeded)")
        .unwrap();
    let running = &logs[position - 1];
    assert!(
        running.starts_with("heroku[worker.1]: Process running mem=") && running.ends_with("%)"),
        "{running}"
    );
    // Still running: R14 is a warning.
    assert!(!logs.iter().any(|l| l.contains("R15")), "{}", up.logs());
    // The dyno's processes are in a cgroup of their own, which goes with the dyno.
    let pid = processes_of(dyno_manager::up::app_uid("r14app"))[0];
    let cgroup = memory_cgroup_of(pid).unwrap();
    assert!(cgroup.contains("/dyno/"), "{cgroup}");
    up.interrupt();
    up.assert_nothing_left(dyno_manager::up::app_uid("r14app"));
    let memory_root = Path::new("/sys/fs/cgroup/memory");
    if memory_root.exists() {
        assert!(
            !memory_root.join(cgroup.trim_start_matches('/')).exists(),
            "cgroup {cgroup} left"
        );
    }
}

#[test]
fn r15_and_a_kill_at_twice_the_memory_quota() {
    let app = memory_app("r15", 200);
    let mut up = Up::start(
        "r15",
        &app,
        &[
            "--app",
            "r15app",
            "--memory-mb",
            "64",
            "--restart-cooloffs",
            "0s,60s",
        ],
    );
    up.wait_for_log(
        "heroku[worker.1]: Error R15 (Memory quota vastly exceeded)",
        1,
        Duration::from_secs(30),
    );
    up.wait_for_log(
        "heroku[worker.1]: State changed from up to crashed",
        1,
        Duration::from_secs(30),
    );
    up.interrupt();
    let logs = messages(&up.logs());
    let position = logs
        .iter()
        .position(|l| l == "heroku[worker.1]: Error R15 (Memory quota vastly exceeded)")
        .unwrap();
    assert!(
        logs[position - 1].starts_with("heroku[worker.1]: Process running mem="),
        "{}",
        up.logs()
    );
    assert_eq!(
        logs[position + 1],
        "heroku[worker.1]: Stopping process with SIGKILL"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[worker.1]: Process exited with status 137"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[worker.1]: State changed from up to crashed"
    );
    up.assert_nothing_left(dyno_manager::up::app_uid("r15app"));
}

#[test]
fn a_fork_bomb_is_held_by_the_pids_limit_while_a_neighbour_keeps_serving() {
    let app = app_dir(
        "forkbomb",
        "web: python3 -m http.server $PORT\n\
         worker: python3 -c \"exec('import os, time\\nwhile True:\\n try: os.fork()\\n except OSError: time.sleep(0.05)')\"\n",
    );
    let mut up = Up::start(
        "forkbomb",
        &app,
        &["--app", "bombapp", "--stop-grace", "2s"],
    );
    up.wait_up("web.1", Duration::from_secs(30));
    up.wait_up("worker.1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let uid = dyno_manager::up::app_uid("bombapp");
    let processes = processes_of(uid).len();
    // Standard-1X: 256 processes for the bomb's dyno, a few for the web dyno.
    assert!((200..=270).contains(&processes), "{processes} processes");
    let ip = up.address_of("web.1");
    let answer = up.get(ip, 5000, "/");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    up.interrupt();
    up.assert_nothing_left(uid);
}

#[test]
fn cycling_restarts_a_dyno_gracefully_on_schedule() {
    let app = app_dir("cycle", "worker: echo started; exec sleep 1000\n");
    let mut up = Up::start(
        "cycle",
        &app,
        &[
            "--app",
            "cycleapp",
            "--cycle",
            "1s",
            "--cycle-jitter",
            "0s",
            "--stop-grace",
            "2s",
        ],
    );
    up.wait_for_log("heroku[worker.1]: Cycling", 2, Duration::from_secs(20));
    up.interrupt();
    let logs = messages(&up.logs());
    let position = logs
        .iter()
        .position(|l| l == "heroku[worker.1]: Cycling")
        .unwrap();
    assert_eq!(
        logs[position + 1],
        "heroku[worker.1]: Stopping all processes with SIGTERM"
    );
    assert_eq!(
        logs[position + 2],
        "heroku[worker.1]: Process exited with status 143"
    );
    assert_eq!(
        logs[position + 3],
        "heroku[worker.1]: State changed from up to starting"
    );
    assert_eq!(
        logs[position + 4],
        "heroku[worker.1]: Starting process with command `echo started; exec sleep 1000`"
    );
    up.assert_nothing_left(dyno_manager::up::app_uid("cycleapp"));
}
