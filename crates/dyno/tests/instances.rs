//! Several instances on one host (privileged: run as root): a `dyno serve`, then a `dyno up`,
//! then a second `dyno serve` with a data dir of its own, all in one lab host with the same
//! run dir, address pool and firewall table. Each instance keeps its own store, so the host
//! route (claimed before anything else of a dyno exists) is what keeps their addresses apart.
//!
//! Every app of each answers 200 through its own router throughout: while the others start,
//! and after each of the others stops. Once all have stopped, nothing is left.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dyno_net::lab::Lab;
use dyno_net::ns;
use support::*;

const SERVE_ARGS: [&str; 4] = ["--boot-timeout", "20s", "--stop-grace", "2s"];

/// One instance: its process, its scratch dir, where its router listens and the app it serves.
struct Instance {
    child: Option<Child>,
    scratch: PathBuf,
    router_port: u16,
    app: String,
}

impl Instance {
    fn start(lab: &Lab, scratch: PathBuf, router_port: u16, app: &str, args: &[String]) -> Self {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        let log = std::fs::File::create(scratch.join("output.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dyno"));
        command
            .args(args)
            .arg("--run-dir")
            .arg(&lab.run_dir.0)
            .arg("--no-lxcfs")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        ns::command_in(&mut command, lab.host.netns(), None).unwrap();
        Instance {
            child: Some(command.spawn().unwrap()),
            scratch,
            router_port,
            app: app.to_string(),
        }
    }

    /// `dyno serve` with a data dir, state root, API socket and uids of its own.
    fn serve(lab: &Lab, scratch: PathBuf, router_port: u16, app: &str, uids: &str) -> Self {
        let args: Vec<String> = [
            "serve",
            "--data-dir",
            &scratch.join("data").to_string_lossy(),
            "--socket",
            &scratch.join("api.sock").to_string_lossy(),
            "--state-root",
            &scratch.join("state").to_string_lossy(),
            "--router-listen",
            &format!("127.0.0.1:{router_port}"),
            "--uid-range",
            uids,
        ]
        .into_iter()
        .chain(SERVE_ARGS)
        .map(String::from)
        .collect();
        let instance = Instance::start(lab, scratch, router_port, app, &args);
        instance.wait_api();
        instance.cli(&["apps:create", app]);
        let hello = repo().join("examples/hello");
        instance.cli(&["deploy", &hello.to_string_lossy(), "-a", app]);
        instance
    }

    /// `dyno up examples/hello` (its app is `hello`).
    fn up(lab: &Lab, scratch: PathBuf, router_port: u16, uids: &str) -> Self {
        let args: Vec<String> = [
            "up",
            &repo().join("examples/hello").to_string_lossy(),
            "--state-dir",
            &scratch.join("state").to_string_lossy(),
            "--listen",
            &format!("127.0.0.1:{router_port}"),
            "--uid-range",
            uids,
            "--boot-timeout",
            "20s",
            "--stop-grace",
            "2s",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        Instance::start(lab, scratch, router_port, "hello", &args)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.scratch.join("output.log")).unwrap_or_default()
    }

    fn wait_api(&self) {
        let socket = self.scratch.join("api.sock");
        poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
            std::os::unix::net::UnixStream::connect(&socket)
                .map(|_| ())
                .map_err(|e| format!("API socket: {e}\n{}", self.output()))
        });
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
            .args(args)
            .env("DYNO_SOCKET", self.scratch.join("api.sock"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dyno {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.output()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGINT (Ctrl-C), and waits until it has stopped everything and exited.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = dyno_sandbox::sys::signal_pid(child.id() as i32, rustix::process::Signal::INT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within 60 s:\n{}", self.app, self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = dyno_sandbox::sys::signal_pid(child.id() as i32, rustix::process::Signal::INT);
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

/// `GET /` for `<app>.localhost` through the router on `port` of the lab host: the status line,
/// or what went wrong.
fn get(lab: &Lab, port: u16, app: &str) -> Result<String, String> {
    get_in(lab.host.netns(), port, app)
}

fn get_in(host: &ns::Netns, port: u16, app: &str) -> Result<String, String> {
    let socket = host
        .run(|| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None))
        .unwrap()
        .map_err(|e| e.to_string())?;
    let router = SocketAddrV4::new([127, 0, 0, 1].into(), port);
    socket
        .connect_timeout(&router.into(), Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {app}.localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let status = answer.lines().next().unwrap_or("").to_string();
    if status.starts_with("HTTP/1.1 200") {
        Ok(status)
    } else {
        Err(answer)
    }
}

fn wait_serving(lab: &Lab, instance: &Instance) {
    poll_until(Duration::from_secs(40), Duration::from_millis(100), || {
        get(lab, instance.router_port, &instance.app)
            .map_err(|e| format!("{}: {e}\n{}", instance.app, instance.output()))
    });
}

/// Asks every watched router for its app, every 50 ms, and keeps what failed.
struct Watcher {
    watched: Arc<Mutex<Vec<(u16, String)>>>,
    failures: Arc<Mutex<Vec<String>>>,
    asked: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(lab: &Lab) -> Watcher {
        let watched: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let asked: Arc<Mutex<usize>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let host = lab.host.netns().try_clone().unwrap();
        let (w, f, a, s) = (
            watched.clone(),
            failures.clone(),
            asked.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // Held for the whole round: `unwatch` waits for it, so no request reaches an
                // instance after the test stopped watching it (and began to stop it).
                let targets = w.lock().unwrap();
                for (port, app) in targets.iter().cloned() {
                    *a.lock().unwrap() += 1;
                    if let Err(e) = get_in(&host, port, &app) {
                        f.lock().unwrap().push(format!("{app} on :{port}: {e}"));
                    }
                }
                drop(targets);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watcher {
            watched,
            failures,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn watch(&self, instance: &Instance) {
        let target = (instance.router_port, instance.app.clone());
        self.watched.lock().unwrap().push(target);
    }

    fn unwatch(&self, instance: &Instance) {
        self.watched
            .lock()
            .unwrap()
            .retain(|(port, _)| *port != instance.router_port);
    }

    /// Watches one more second; then: no failure so far, and at least `min` requests asked
    /// since the last check.
    fn assert_all_answered(&self, during: &str, min: usize) {
        std::thread::sleep(Duration::from_secs(1));
        let asked = std::mem::take(&mut *self.asked.lock().unwrap());
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        assert!(
            failures.is_empty(),
            "{during}: {} of {asked} requests failed, the first: {}",
            failures.len(),
            failures[0]
        );
        assert!(asked >= min, "{during}: only {asked} requests asked");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    Path::new("/tmp").join(format!("dyno-test-instances-{}-{name}", std::process::id()))
}

#[test]
fn a_daemon_a_dyno_up_and_a_second_daemon_share_one_host() {
    require_root();
    let mut lab = Lab::new("instances").unwrap();
    let watcher = Watcher::start(&lab);

    let mut first = Instance::serve(&lab, scratch("first"), 8080, "alpha", "7100000-7100009");
    wait_serving(&lab, &first);
    watcher.watch(&first);

    let mut up = Instance::up(&lab, scratch("up"), 8081, "7100010-7100019");
    wait_serving(&lab, &up);
    watcher.watch(&up);
    watcher.assert_all_answered("while dyno up started", 10);

    let mut second = Instance::serve(&lab, scratch("second"), 8082, "beta", "7100020-7100029");
    second.cli(&["ps:scale", "web=2", "-a", "beta"]);
    wait_serving(&lab, &second);
    watcher.watch(&second);
    watcher.assert_all_answered("while the second daemon started", 10);

    // Every dyno of every instance has an address of its own (the kernel keeps one route per
    // address, so a shared one would show as fewer routes than dynos).
    let routes = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let routes = dyno_routes(&lab);
        // alpha: web.1; hello (dyno up runs every process type): web.1, worker.1; beta: 2 webs.
        (routes.len() == 5)
            .then_some(routes.clone())
            .ok_or(format!("{} dyno routes: {routes:#?}", routes.len()))
    });
    let mut addresses: Vec<&str> = routes
        .iter()
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 5, "{routes:#?}");

    watcher.assert_all_answered("all three running", 20);

    watcher.unwatch(&up);
    up.stop();
    watcher.assert_all_answered("after dyno up stopped", 20);
    assert_eq!(dyno_routes(&lab).len(), 3, "dyno up's dynos are gone");

    watcher.unwatch(&second);
    second.stop();
    watcher.assert_all_answered("after the second daemon stopped", 10);
    assert!(get(&lab, first.router_port, "alpha").is_ok());

    watcher.unwatch(&first);
    first.stop();
    drop(watcher);
    // The last one out removed the firewall; nothing of any instance is left.
    let names: Vec<_> = std::fs::read_dir(&lab.run_dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(names.is_empty(), "namespaces left: {names:?}");
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let links = lab.host.links_with_prefix("dy").unwrap();
        links
            .is_empty()
            .then_some(())
            .ok_or(format!("links left: {links:?}"))
    });
    let mut nft = Command::new("nft");
    nft.args(["list", "tables"]);
    ns::command_in(&mut nft, lab.host.netns(), None).unwrap();
    let tables = String::from_utf8_lossy(&nft.output().unwrap().stdout).into_owned();
    assert!(!tables.contains("dyno"), "firewall left: {tables}");
}
