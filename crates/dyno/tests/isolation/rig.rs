//! The rig of the isolation tests: a real `dyno serve` in its own lab running two apps, each
//! with a web and a worker dyno. The **victim** (`victim.py`) has things worth stealing or
//! disturbing; the **attacker** (`agent.py`) runs whatever Python snippet the test sends it,
//! inside its dyno, as the dyno's user: through the router for its web dyno, through its own
//! network namespace (entered by the test, as root) for its worker.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dyno_net::lab::{Lab, INTERNET_SERVER};
use dyno_net::ns::{self, Netns};
use dyno_sandbox::spec::{SandboxSpec, StateDir};

use crate::support::*;

const AGENT_PY: &str = include_str!("agent.py");
const VICTIM_PY: &str = include_str!("victim.py");
const PRELUDE_PY: &str = include_str!("prelude.py");

/// What the victim keeps: a config var and a file in its slug.
pub const SECRET_VAR: &str = "VICTIM_SECRET";
pub const SECRET_VALUE: &str = "s3cret-config-value-0b1d";
pub const SECRET_FILE_TEXT: &str = "s3cret-slug-file-7e4a";
/// The victim's listeners besides `$PORT` (see victim.py).
pub const VICTIM_TCP: u16 = 6001;
pub const VICTIM_UDP: u16 = 6002;
pub const VICTIM_TCP6: u16 = 6003;
pub const VICTIM_UDP6: u16 = 6004;
pub const MULTICAST_GROUP: &str = "239.1.1.1";
/// `$PORT` of every web dyno.
pub const WEB_PORT: u16 = 5000;
/// Where the attacker's worker agent listens, inside its own network namespace.
const WORKER_AGENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7777);
/// Fake-internet listeners: the victim's long-lived connection, and a sink for floods (its
/// accept queue holds the connections: nothing needs to accept them).
pub const OUTBOUND_PORT: u16 = 7000;
pub const SINK_PORT: u16 = 7001;
pub const SINK_BACKLOG: i32 = 65_535;

/// One dyno of the rig, as its state dir describes it.
#[derive(Debug, Clone)]
pub struct DynoInfo {
    pub app: String,
    /// `web.1`
    pub name: String,
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
    pub state: StateDir,
    /// The app's slug on the host (shown as `/app` inside).
    pub app_dir: PathBuf,
}

pub struct Rig {
    // Field order is drop order: the daemon (and with it every dyno) goes first, then the app
    // dirs, then the fake-internet listeners; the lab goes with `up`.
    pub up: Up,
    _victim: TempApp,
    _attacker: TempApp,
    /// The fake internet's listeners: [`OUTBOUND_PORT`], [`SINK_PORT`].
    pub listeners: Vec<socket2::Socket>,
    pub dynos: Vec<DynoInfo>,
    /// When the rig started (before the daemon): a dyno is younger than this.
    pub started: Instant,
}

/// What a snippet did: the agent's JSON.
#[derive(Debug)]
pub struct Run {
    pub exit: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Run {
    /// The value the snippet gave `done(...)` (its last stdout line).
    pub fn value(&self) -> serde_json::Value {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("the snippet gave no value: {self:?}"))
    }

    /// The snippet ran to its end (not killed, not timed out).
    pub fn finished(&self) -> bool {
        self.exit == Some(0) && !self.timed_out
    }
}

impl Rig {
    /// A daemon with the victim and the attacker up; `proc_view`: with an LXCFS of its own
    /// (in the test's scratch dir, stopped with the daemon), else without.
    pub fn start(tag: &str, proc_view: bool) -> Rig {
        let started = Instant::now();
        let lxcfs = Up::lxcfs_dir_of(tag).to_string_lossy().into_owned();
        let mut args = vec!["--boot-timeout", "30s", "--stop-grace", "2s"];
        if proc_view {
            args.extend(["--lxcfs-dir", &lxcfs]);
        }
        let up = Up::serve(tag, &args);
        up.wait_api();
        let listeners = internet_listeners(&up.lab);
        let victim = app_dir(
            &format!("{tag}-v"),
            "web: python3 victim.py\nworker: python3 victim.py\n",
        );
        std::fs::write(victim.join("victim.py"), VICTIM_PY).unwrap();
        std::fs::write(victim.join("secret.txt"), SECRET_FILE_TEXT).unwrap();
        let attacker = app_dir(
            &format!("{tag}-a"),
            "web: python3 agent.py web\nworker: python3 agent.py worker\n",
        );
        std::fs::write(attacker.join("agent.py"), AGENT_PY).unwrap();
        for app in ["victim", "attacker"] {
            up.cli_succeeds(&["apps:create", app]);
        }
        let secret = format!("{SECRET_VAR}={SECRET_VALUE}");
        up.cli_succeeds(&["config:set", &secret, "-a", "victim"]);
        for (app, dir) in [("victim", &victim), ("attacker", &attacker)] {
            up.cli_succeeds(&["deploy", &dir.to_string_lossy(), "-a", app]);
            up.cli_succeeds(&["ps:scale", "web=1", "worker=1", "-a", app]);
        }
        let mut rig = Rig {
            up,
            _victim: victim,
            _attacker: attacker,
            listeners,
            dynos: Vec::new(),
            started,
        };
        rig.wait_ready();
        rig
    }

    fn wait_ready(&mut self) {
        for app in ["victim", "attacker"] {
            poll_until(Duration::from_secs(60), Duration::from_millis(100), || {
                let json = self.up.cli_succeeds(&["ps", "-a", app, "--json"]).0;
                let list: serde_json::Value = serde_json::from_str(&json).unwrap();
                let up: Vec<&str> = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["state"] == "up")
                    .filter_map(|d| d["name"].as_str())
                    .collect();
                (up.contains(&"web.1") && up.contains(&"worker.1"))
                    .then_some(())
                    .ok_or(format!("{app} not up yet: {json}\n{}", self.up.notes()))
            });
        }
        self.dynos = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let dynos = self.read_dynos();
            (dynos.len() == 4)
                .then(|| dynos.clone())
                .ok_or(format!("dynos found: {dynos:?}"))
        });
        poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let answer = self.get("attacker.localhost", "/");
            answer
                .as_ref()
                .is_ok_and(|(status, body)| *status == 200 && body == "agent web.1")
                .then_some(())
                .ok_or(format!("the web agent does not answer: {answer:?}"))
        });
        poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let worker = self.dyno("attacker", "worker.1").netns.clone();
            connect_in(&worker, WORKER_AGENT)
                .map(drop)
                .map_err(|e| format!("the worker agent does not answer: {e}"))
        });
        // Something to see: both victim dynos hold their connection to the fake internet.
        poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let logs = self.app_logs("victim");
            let connected = |dyno: &str| {
                logs.iter()
                    .any(|l| l.contains(&format!("app[{dyno}]: victim-outbound connected")))
            };
            (connected("web.1") && connected("worker.1"))
                .then_some(())
                .ok_or(format!("the victim has no outbound connection: {logs:?}"))
        });
    }

    /// The rig's dynos, from the daemon's state dirs (the spec names the dyno and its network).
    fn read_dynos(&self) -> Vec<DynoInfo> {
        let apps = [
            ("victim", self.up.app_uid("victim")),
            ("attacker", self.up.app_uid("attacker")),
        ];
        let Ok(entries) = std::fs::read_dir(self.up.scratch.join("state")) else {
            return Vec::new();
        };
        let mut dynos: Vec<DynoInfo> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let state = StateDir(e.path());
                let spec: SandboxSpec =
                    serde_json::from_slice(&std::fs::read(state.spec()).ok()?).ok()?;
                let (app, _) = apps.iter().find(|(_, uid)| *uid == spec.uid)?;
                dyno_sandbox::launch::live_init_pid(&state)?;
                Some(DynoInfo {
                    app: app.to_string(),
                    name: spec.name,
                    ip: spec.ip,
                    netns: spec.netns,
                    app_dir: spec.app_dir,
                    state,
                })
            })
            .collect();
        dynos.sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
        dynos
    }

    pub fn dyno(&self, app: &str, name: &str) -> &DynoInfo {
        self.dynos
            .iter()
            .find(|d| d.app == app && d.name == name)
            .unwrap_or_else(|| panic!("no {app} {name} in {:?}", self.dynos))
    }

    /// Every dyno address in use, but `except`'s own.
    pub fn other_addresses(&self, except: &DynoInfo) -> Vec<Ipv4Addr> {
        self.dynos
            .iter()
            .filter(|d| d.ip != except.ip)
            .map(|d| d.ip)
            .collect()
    }

    /// Runs `snippet` (after the prelude's helpers) in the attacker's web dyno, through the
    /// router. The router's own timeout (30 s) bounds it: keep `timeout` below.
    pub fn run_web(&self, snippet: &str, timeout: Duration) -> Run {
        let stream = self.up.connect_router();
        self.run_on(stream, "attacker.localhost", snippet, timeout)
    }

    /// Runs `snippet` in the attacker's worker dyno (its agent, reached in its namespace).
    pub fn run_worker(&self, snippet: &str, timeout: Duration) -> Run {
        let netns = self.dyno("attacker", "worker.1").netns.clone();
        let stream = connect_in(&netns, WORKER_AGENT)
            .unwrap_or_else(|e| panic!("connect to the worker agent: {e}"));
        self.run_on(stream, "worker", snippet, timeout)
    }

    /// [`Rig::run_worker`] for attacks that may take the agent down with them (the OOM
    /// killer, a full pids cgroup): why there is no answer instead of a panic.
    pub fn try_run_worker(&self, snippet: &str, timeout: Duration) -> Result<Run, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run_worker(snippet, timeout)
        }))
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    }

    /// Runs `snippet` in both attacker dynos: (web, worker).
    pub fn run_both(&self, snippet: &str, timeout: Duration) -> (Run, Run) {
        (
            self.run_web(snippet, timeout),
            self.run_worker(snippet, timeout),
        )
    }

    fn run_on(
        &self,
        mut stream: std::net::TcpStream,
        host: &str,
        snippet: &str,
        timeout: Duration,
    ) -> Run {
        let code = format!("{PRELUDE_PY}\n{snippet}\n");
        let head = format!(
            "POST /run HTTP/1.1\r\nHost: {host}\r\nX-Timeout: {}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            timeout.as_secs_f64(),
            code.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(code.as_bytes()).unwrap();
        let raw = read_until_closed(&mut stream, timeout + Duration::from_secs(15));
        let reply = parse_reply(&raw).unwrap_or_else(|| {
            panic!(
                "no answer from the agent ({host}): {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
        assert_eq!(reply.status, 200, "the agent ({host}): {}", reply.text());
        let json: serde_json::Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("the agent's answer is not JSON ({e}): {}", reply.text()));
        Run {
            exit: json["exit"].as_i64(),
            stdout: json["stdout"].as_str().unwrap_or_default().to_string(),
            stderr: json["stderr"].as_str().unwrap_or_default().to_string(),
            timed_out: json["timed_out"].as_bool().unwrap_or(false),
        }
    }

    /// `GET path` through the router for `host`: (status, body), or why there was none.
    pub fn get(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        let socket = self
            .up
            .lab
            .host
            .netns()
            .run(|| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        socket
            .connect_timeout(&ROUTER.into(), Duration::from_secs(2))
            .map_err(|e| format!("connect to the router: {e}"))?;
        let mut stream: std::net::TcpStream = socket.into();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let raw = read_until_closed(&mut stream, Duration::from_secs(10));
        let reply = parse_reply(&raw).ok_or_else(|| {
            format!(
                "no HTTP answer for {host}{path}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        })?;
        Ok((reply.status, reply.text()))
    }

    /// The victim's web dyno answers `n` requests through the router, each 200 within 10 s.
    pub fn victim_answers(&self, n: usize) -> Result<String, String> {
        let started = Instant::now();
        for i in 0..n {
            match self.get("victim.localhost", "/") {
                Ok((200, body)) if body == "victim web.1" => {}
                other => return Err(format!("victim request {i} of {n}: {other:?}")),
            }
        }
        Ok(format!(
            "victim answered {n}/{n} in {:.1}s",
            started.elapsed().as_secs_f64()
        ))
    }

    /// The daemon's API answers (`dyno ps`) and knows the victim's web dyno is up.
    pub fn host_healthy(&self) -> Result<(), String> {
        let (ok, stdout, stderr) = self.up.cli_result(&["ps", "-a", "victim"]);
        (ok && stdout.contains("web.1: up"))
            .then_some(())
            .ok_or(format!("dyno ps: {stdout}{stderr}"))
    }

    /// The app's log lines (`dyno logs -n 1500`).
    pub fn app_logs(&self, app: &str) -> Vec<String> {
        let (ok, stdout, _) = self.up.cli_result(&["logs", "-a", app, "-n", "1500"]);
        if !ok {
            return Vec::new();
        }
        stdout.lines().map(String::from).collect()
    }

    /// Contacts the victim logged on its listeners besides `$PORT` (there must be none).
    pub fn victim_hits(&self) -> Vec<String> {
        self.app_logs("victim")
            .into_iter()
            .filter(|l| l.contains("victim-hit "))
            .collect()
    }

    /// Waits up to `timeout` for a line of the attacker's log containing `needle`, or until
    /// `give_up()`.
    pub fn wait_attacker_log(
        &self,
        needle: &str,
        timeout: Duration,
        give_up: impl Fn() -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .app_logs("attacker")
                .into_iter()
                .find(|l| l.contains(needle))
            {
                return Some(line);
            }
            if Instant::now() >= deadline || give_up() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `name` in the `/tmp` of the attacker's dyno (through its PID 1's root, as root):
    /// how the test tells a holding snippet to let go. A dyno that is gone (killed by its own
    /// attack) has nothing to let go.
    pub fn signal_attacker(&self, dyno: &str, name: &str) {
        let state = &self.dyno("attacker", dyno).state;
        if let Some(init) = dyno_sandbox::launch::live_init_pid(state) {
            let _ = std::fs::write(format!("/proc/{init}/root/tmp/{name}"), b"stop");
        }
    }
}

/// A TCP connection to `to`, from inside the namespace at `netns` (the socket is made there).
pub fn connect_in(
    netns: &std::path::Path,
    to: SocketAddrV4,
) -> std::io::Result<std::net::TcpStream> {
    let netns = Netns::open(netns).map_err(std::io::Error::other)?;
    let socket = netns
        .run(|| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None))
        .map_err(std::io::Error::other)??;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// The fake internet's listeners (see [`OUTBOUND_PORT`], [`SINK_PORT`]).
fn internet_listeners(lab: &Lab) -> Vec<socket2::Socket> {
    lab.internet
        .run(|| -> std::io::Result<Vec<socket2::Socket>> {
            // Lets the sink's accept queue hold a flood (per namespace: this is the lab's).
            ns::write_sysctl("net/core/somaxconn", &SINK_BACKLOG.to_string())
                .map_err(std::io::Error::other)?;
            let mut out = Vec::new();
            for (port, backlog) in [(OUTBOUND_PORT, 128), (SINK_PORT, SINK_BACKLOG)] {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                socket.bind(&SocketAddrV4::new(INTERNET_SERVER, port).into())?;
                socket.listen(backlog)?;
                out.push(socket);
            }
            Ok(out)
        })
        .unwrap()
        .unwrap()
}
