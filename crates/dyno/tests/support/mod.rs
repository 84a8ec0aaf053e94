//! The harness of the `dyno up` tests: a `dyno up` run inside its own lab, its logs, and
//! checks that nothing is left behind.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dyno_net::lab::Lab;
use dyno_net::ns;

pub mod heroku;

pub const ROUTER_MARK: u32 = 0x6479;

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (it runs dyno up): run the suite as root"
    );
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `dyno up` in its own lab.
pub struct Up {
    pub lab: Lab,
    pub child: Option<Child>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub scratch: PathBuf,
}

impl Up {
    pub fn start(tag: &str, app: &Path, extra: &[&str]) -> Up {
        Up::spawn(tag, |command, lab, scratch| {
            command
                .arg("up")
                .arg(app)
                .arg("--run-dir")
                .arg(&lab.run_dir.0)
                .arg("--state-dir")
                .arg(scratch.join("state"))
                .args(lxcfs_default(extra))
                .args(extra);
        })
    }

    /// `dyno serve` in its own lab: data dir, API socket (`api_socket`) and dyno state in the
    /// test's scratch space.
    pub fn serve(tag: &str, extra: &[&str]) -> Up {
        require_root();
        Up::serve_with_lab(Lab::new(tag).unwrap(), tag, extra)
    }

    fn serve_with_lab(lab: Lab, tag: &str, extra: &[&str]) -> Up {
        Up::spawn_in(lab, tag, |command, lab, scratch| {
            command
                .arg("serve")
                .arg("--data-dir")
                .arg(scratch.join("data"))
                .arg("--socket")
                .arg(scratch.join("api.sock"))
                .arg("--state-root")
                .arg(scratch.join("state"))
                .arg("--run-dir")
                .arg(&lab.run_dir.0)
                .arg("--uid-range")
                .arg(uid_range_of(scratch).to_string())
                .args(lxcfs_default(extra))
                .args(extra);
        })
    }

    /// The uid `dyno serve` runs `app` as: each test's daemon has uids of its own, so that
    /// tests running apps of the same name never count each other's processes.
    pub fn app_uid(&self, app: &str) -> u32 {
        dyno_manager::daemon::uids::app_uid_in(app, *uid_range_of(&self.scratch))
    }

    /// SIGKILL the daemon (no cleanup of its own), then start a new `dyno serve` on the same
    /// lab, data dir and socket.
    pub fn kill_and_restart_serve(&mut self, extra: &[&str]) {
        self.kill_and_restart_serve_later();
        self.restart_serve(extra);
    }

    /// SIGKILL the daemon; [`Up::restart_serve`] starts the next one.
    pub fn kill_and_restart_serve_later(&mut self) {
        let mut old = self.child.take().unwrap();
        let _ = old.kill();
        let _ = old.wait();
    }

    /// A new `dyno serve` on the same lab, data dir and socket as the killed one.
    pub fn restart_serve(&mut self, extra: &[&str]) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dyno"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.scratch.join("data"))
            .arg("--socket")
            .arg(self.scratch.join("api.sock"))
            .arg("--state-root")
            .arg(self.scratch.join("state"))
            .arg("--run-dir")
            .arg(&self.lab.run_dir.0)
            .arg("--uid-range")
            .arg(uid_range_of(&self.scratch).to_string())
            .args(lxcfs_default(extra))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ns::command_in(&mut command, self.lab.host.netns(), None).unwrap();
        let mut child = command.spawn().unwrap();
        self.stdout = collect(child.stdout.take().unwrap());
        self.stderr = collect(child.stderr.take().unwrap());
        self.child = Some(child);
    }

    /// `dyno ARGS…` against this `dyno serve`'s API socket.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_dyno"))
            .args(args)
            .env("DYNO_SOCKET", self.api_socket())
            .output()
            .unwrap()
    }

    /// `dyno ARGS…` against this `dyno serve`: (success, stdout, stderr).
    pub fn cli_result(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cli(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// (stdout, stderr) of `dyno ARGS…`, which must succeed (else the test fails with the
    /// daemon's notes).
    pub fn cli_succeeds(&self, args: &[&str]) -> (String, String) {
        let (ok, stdout, stderr) = self.cli_result(args);
        assert!(
            ok,
            "dyno {args:?} failed:\n{stdout}{stderr}\n--- daemon:\n{}",
            self.notes()
        );
        (stdout, stderr)
    }

    /// `GET /metrics` on this `dyno serve`'s API.
    pub fn metrics(&self) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let api = dyno_api::ApiClient::unix(self.api_socket());
        let resp = runtime
            .block_on(api.request(hyper::Method::GET, "/metrics", None, Default::default()))
            .unwrap();
        assert_eq!(resp.status, 200);
        String::from_utf8(resp.body.to_vec()).unwrap()
    }

    /// Waits until this `dyno serve` answers on its API socket.
    pub fn wait_api(&self) {
        poll_until(Duration::from_secs(60), Duration::from_millis(20), || {
            let out = self.cli(&["apps"]);
            out.status.success().then_some(()).ok_or(format!(
                "the API does not answer: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.notes()
            ))
        });
    }

    /// The API socket of a `dyno serve` started by [`Up::serve`].
    pub fn api_socket(&self) -> PathBuf {
        self.scratch.join("api.sock")
    }

    /// The scratch dir of the test `tag`.
    pub fn scratch_of(tag: &str) -> PathBuf {
        PathBuf::from(format!("/run/dyno-up-test-{}-{tag}", std::process::id()))
    }

    /// Where a test gives its daemon LXCFS (`--lxcfs-dir`): in its scratch dir, so that the
    /// harness stops that LXCFS when the test ends.
    pub fn lxcfs_dir_of(tag: &str) -> PathBuf {
        Up::scratch_of(tag).join("lxcfs")
    }

    fn spawn(tag: &str, args: impl FnOnce(&mut Command, &Lab, &Path)) -> Up {
        require_root();
        Up::spawn_in(Lab::new(tag).unwrap(), tag, args)
    }

    /// [`Up::serve`] on a lab host whose only addresses are `lo`'s ([`Lab::lo_only`]).
    pub fn serve_lo_only(tag: &str, extra: &[&str]) -> Up {
        require_root();
        Up::serve_with_lab(Lab::lo_only(tag).unwrap(), tag, extra)
    }

    fn spawn_in(lab: Lab, tag: &str, args: impl FnOnce(&mut Command, &Lab, &Path)) -> Up {
        let scratch = Up::scratch_of(tag);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dyno"));
        args(&mut command, &lab, &scratch);
        command
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

    pub fn logs(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn notes(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until a log line (without its timestamp) ends with `suffix`; returns how many such
    /// lines there are.
    pub fn wait_for_log(&self, suffix: &str, count: usize, timeout: Duration) {
        poll_until(timeout, Duration::from_millis(50), || {
            let n = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.ends_with(suffix))
                .count();
            (n >= count).then_some(()).ok_or_else(|| {
                format!(
                    "no {count}× {suffix:?} within {timeout:?}:\n{}\n--- stderr:\n{}",
                    self.logs(),
                    self.notes()
                )
            })
        })
    }

    /// Waits until `dyno` (`web.1`) is up for the first time.
    pub fn wait_up(&self, dyno: &str, timeout: Duration) {
        self.wait_for_log(
            &format!("heroku[{dyno}]: State changed from starting to up"),
            1,
            timeout,
        );
    }

    /// The address `dyno up` announced for a web dyno.
    pub fn address_of(&self, dyno: &str) -> Ipv4Addr {
        let prefix = format!("dyno up: {dyno} is up at ");
        poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let found = self.stderr.lock().unwrap().iter().rev().find_map(|l| {
                l.strip_prefix(&prefix)
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|ip| ip.parse().ok())
            });
            found.ok_or_else(|| format!("no address for {dyno}:\n{}", self.notes()))
        })
    }

    /// An HTTP GET through the router's way in: a marked socket in the lab host.
    pub fn get(&self, ip: Ipv4Addr, port: u16, path: &str) -> String {
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

    /// An HTTP GET through `dyno up`'s router (127.0.0.1:8080 in the lab host), for `host`.
    pub fn get_via_router(&self, host: &str, path: &str) -> String {
        self.get_via_router_from(None, host, path)
    }

    /// [`Up::get_via_router`] from `source` (see [`Up::connect_router_from`]).
    pub fn get_via_router_from(&self, source: Option<Ipv4Addr>, host: &str, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let mut stream = self.connect_router_from(source);
        let mut exchange = || -> std::io::Result<String> {
            stream.set_read_timeout(Some(Duration::from_secs(15)))?;
            stream.write_all(request.as_bytes())?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        };
        exchange().unwrap_or_else(|e| panic!("GET http://{host}:8080{path} via the router: {e}"))
    }

    /// Ctrl-C, and the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        self.interrupt_within(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("dyno up did not stop:\n{}", self.notes()))
    }

    /// Ctrl-C, and the exit status if `dyno up` ends within `timeout` (else it keeps running,
    /// and a later call can wait again).
    pub fn interrupt_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("dyno up was started");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing of the run is left: namespaces, links, firewall, state, processes of the app.
    pub fn assert_nothing_left(&mut self, app_uid: u32) {
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
        // A daemon that died (or never started) leaves its dynos running, by design: end
        // them, so that a failed test leaves nothing behind either.
        kill_shims_under(&self.scratch.join("state"));
        // A daemon killed by the test left its mount namespace template bound.
        dyno_sandbox::template::remove_orphans(&self.scratch.join("state"));
        // An LXCFS the test's daemon started outlives it, by design: it goes last, once no
        // dyno binds its files any more.
        if let Err(e) = dyno_sandbox::lxcfs::stop(&self.scratch.join("lxcfs")) {
            eprintln!("stop the test's lxcfs: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Tests run without LXCFS unless they give `--lxcfs-dir` (see [`Up::lxcfs_dir_of`]): the
/// default would start one at the host's `/var/lib/lxcfs` and leave it running.
fn lxcfs_default(extra: &[&str]) -> &'static [&'static str] {
    if extra
        .iter()
        .any(|a| a.starts_with("--lxcfs-dir") || *a == "--no-lxcfs")
    {
        &[]
    } else {
        &["--no-lxcfs"]
    }
}

/// SIGKILLs every `__shim <dir>` process whose dir is in `state_root`, and the dyno PID 1 each
/// recorded (its pid namespace dies with it).
fn kill_shims_under(state_root: &Path) {
    for (name, pid) in dyno_manager::daemon::reconcile::shims_under(state_root) {
        let state = dyno_sandbox::spec::StateDir(state_root.join(name));
        // SAFETY: kill with pids of processes this test's daemon started.
        unsafe {
            if let Some(init) = dyno_sandbox::launch::live_init_pid(&state) {
                libc::kill(init, libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

pub fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// 1,000 uids for the daemon of the test whose scratch dir this is (above `dyno up`'s default
/// range).
fn uid_range_of(scratch: &Path) -> UidRangeArg {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    scratch.hash(&mut hasher);
    let first = 1_000_000 + (hasher.finish() % 3000) as u32 * 1000;
    UidRangeArg(dyno_manager::daemon::uids::UidRange { first, count: 1000 })
}

struct UidRangeArg(dyno_manager::daemon::uids::UidRange);

impl std::fmt::Display for UidRangeArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0.first, self.0.first + self.0.count - 1)
    }
}

impl std::ops::Deref for UidRangeArg {
    type Target = dyno_manager::daemon::uids::UidRange;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Host pids of processes running as `uid`.
pub fn processes_of(uid: u32) -> Vec<u32> {
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
pub struct TempApp(PathBuf);

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

pub fn app_dir(tag: &str, procfile: &str) -> TempApp {
    let dir = PathBuf::from(format!("/run/dyno-up-app-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Procfile"), procfile).unwrap();
    TempApp(dir)
}

/// The message of a log line: `heroku[web.1]: State changed from starting to up`.
pub fn messages(logs: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
        .collect()
}

/// The router's address inside the lab host.
pub const ROUTER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);

/// An HTTP/1.1 response as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when the response was chunked.
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one response (`HTTP/1.1 200 OK\r\n…\r\n\r\nbody`); `None` if there is no whole head.
/// An interim `100 Continue` before it is skipped.
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    if status == 100 {
        return parse_reply(rest);
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}

impl Up {
    /// A fresh client connection to the router (127.0.0.1:8080 in the lab host): the socket is
    /// made in the lab host (on the namespace thread), connected from the calling thread.
    pub fn connect_router(&self) -> TcpStream {
        self.connect_router_from(None)
    }

    /// [`Up::connect_router`] from `source` (another address of the lab host's `lo`, such as
    /// 127.0.0.2: another client as far as the router's per-client bounds go).
    pub fn connect_router_from(&self, source: Option<Ipv4Addr>) -> TcpStream {
        let socket = self
            .lab
            .host
            .netns()
            .run(move || -> std::io::Result<socket2::Socket> {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                if let Some(source) = source {
                    socket.bind(&SocketAddrV4::new(source, 0).into())?;
                }
                Ok(socket)
            })
            .unwrap()
            .unwrap();
        socket
            .connect_timeout(&ROUTER.into(), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to the router: {e}\n{}", self.notes()));
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// A fresh client connection to the router, for tokio (call inside a runtime).
    pub fn connect_router_async(&self) -> tokio::net::TcpStream {
        let stream = self.connect_router();
        stream.set_nonblocking(true).unwrap();
        tokio::net::TcpStream::from_std(stream).unwrap()
    }

    /// Sends `request` as is and reads until the router closes the connection (at most
    /// `timeout`): everything that came back.
    pub fn exchange(&self, request: &[u8], timeout: Duration) -> Vec<u8> {
        let mut stream = self.connect_router();
        stream.write_all(request).unwrap();
        read_until_closed(&mut stream, timeout)
    }

    /// One request (send `Connection: close` in it) and its response.
    pub fn request(&self, request: &[u8]) -> Reply {
        let raw = self.exchange(request, Duration::from_secs(15));
        parse_reply(&raw).unwrap_or_else(|| {
            panic!(
                "no HTTP response to {:?}: got {:?}\n{}",
                String::from_utf8_lossy(&request[..request.len().min(200)]),
                String::from_utf8_lossy(&raw),
                self.logs()
            )
        })
    }

    /// `GET path` for `host` with `extra` header lines (each ending in `\r\n`).
    pub fn get_with(&self, host: &str, path: &str, extra: &str) -> Reply {
        self.request(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    }

    /// The `dyno up` process's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("dyno up is running").id();
        rss_kib_of(pid)
    }

    /// The router's log lines so far, without timestamp and `heroku[router]: `.
    pub fn router_lines(&self) -> Vec<String> {
        messages(&self.logs())
            .into_iter()
            .filter_map(|l| l.strip_prefix("heroku[router]: ").map(String::from))
            .collect()
    }

    /// Waits for a router line that satisfies `matches`; returns it.
    pub fn wait_router_line(&self, matches: impl Fn(&str) -> bool, timeout: Duration) -> String {
        poll_until(timeout, Duration::from_millis(20), || {
            let found = self.router_lines().into_iter().find(|l| matches(l));
            found.ok_or_else(|| format!("no such router line within {timeout:?}:\n{}", self.logs()))
        })
    }

    /// The router's line for the request with this `request_id`.
    pub fn router_line_for(&self, request_id: &str) -> String {
        let needle = format!(" request_id={request_id} ");
        self.wait_router_line(|l| l.contains(&needle), Duration::from_secs(10))
    }

    /// The app's own output lines of `dyno` (`web.1`), without `app[web.1]: `.
    pub fn app_lines(&self, dyno: &str) -> Vec<String> {
        let prefix = format!("app[{dyno}]: ");
        messages(&self.logs())
            .into_iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
            .collect()
    }
}

/// Calls `check` every `every` until it gives a value; panics with its last message once
/// `timeout` has passed.
pub fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(every);
    }
}

/// Reads until EOF, an error (a reset counts as the end) or `timeout`.
pub fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Resident memory of a process, in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// Replaces the values of `keys` in a log line with `*`, so that it can be compared whole.
pub fn shape(line: &str, keys: &[&str]) -> String {
    let mut out = line.to_owned();
    for key in keys {
        let pattern = format!(" {key}=");
        if let Some(i) = out.find(&pattern) {
            let start = i + pattern.len();
            let end = out[start..].find(' ').map_or(out.len(), |j| start + j);
            out.replace_range(start..end, "*");
        }
    }
    out
}

/// The value of `key` in a log line.
pub fn value<'a>(line: &'a str, key: &str) -> &'a str {
    let pattern = format!(" {key}=");
    let start = line
        .find(&pattern)
        .map(|i| i + pattern.len())
        .unwrap_or_else(|| panic!("no {key}= in {line}"));
    let rest = &line[start..];
    &rest[..rest.find(' ').unwrap_or(rest.len())]
}

/// The `/32` routes of the lab host that go out of a dyno's link: one per dyno of any instance.
pub fn dyno_routes(lab: &Lab) -> Vec<String> {
    let mut ip = Command::new("ip");
    ip.args(["-4", "route", "show", "proto", "static"]);
    ns::command_in(&mut ip, lab.host.netns(), None).unwrap();
    let out = ip.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" dev dy"))
        .map(str::to_owned)
        .collect()
}
