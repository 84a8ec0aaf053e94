//! The processes of a run: the nginx backend and proxies, HAProxy, the embedded router, temp dirs.

use super::*;

pub(super) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// One GET with the bench Host until a `200` comes back (5 s).
pub(super) fn wait_http(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while Instant::now() < deadline {
        match probe(addr) {
            Ok(status) if status.starts_with("HTTP/1.1 200") => return Ok(()),
            Ok(status) => last = status,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} on {addr} not answering 200: {last}"))
}

pub(super) fn probe(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// `listen`: `127.0.0.1:PORT`, or a bare port (all addresses: inside a dyno).
pub(super) fn nginx_conf(
    dir: &Path,
    name: &str,
    listen: &str,
    location: &str,
    http_extra: &str,
) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 90s;\n  \
         client_body_temp_path {d}/{name}-body;\n  proxy_temp_path {d}/{name}-proxy;\n  \
         {http_extra}\n  server {{ listen {listen}; {location} }}\n}}\n"
    )
}

pub(super) fn start_nginx(
    tools: &Tools,
    nginx: &Path,
    conf: &Path,
    dir: &Path,
    cpu: usize,
    name: &str,
) -> Result<Proc, String> {
    let mut cmd = Command::new(&tools.taskset);
    cmd.arg("-c")
        .arg(cpu.to_string())
        .arg(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join(format!("{name}-error.log")))
        .arg("-c")
        .arg(conf);
    let out = dir.join(format!("{name}.out"));
    let proc = Proc::spawn(&format!("nginx ({name})"), cmd, &out)?;
    Ok(proc)
}

pub(crate) fn with_log(e: String, log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(t) if !t.trim().is_empty() => format!("{e}\n{}", t.trim_end()),
        _ => e,
    }
}

/// A child process, stopped by PID on drop (SIGTERM, then SIGKILL after 3 s).
pub(crate) struct Proc {
    pub(super) name: String,
    pub(super) child: Child,
    pub(super) done: bool,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command, out: &Path) -> Result<Proc, String> {
        let f = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        // taskset execs the tool, so the PID is the tool's.
        let mut p = Proc {
            name: name.to_owned(),
            child,
            done: false,
        };
        std::thread::sleep(Duration::from_millis(50));
        if p.try_exited() {
            let log = std::fs::read_to_string(out).unwrap_or_default();
            return Err(format!("{name} exited at start:\n{}", log.trim_end()));
        }
        Ok(p)
    }

    pub(crate) fn try_exited(&mut self) -> bool {
        if !self.done {
            self.done = matches!(self.child.try_wait(), Ok(Some(_)) | Err(_));
        }
        self.done
    }

    /// Wait up to `limit` for a natural exit; then stop it.
    pub(super) fn wait(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.done = true;
                return st.to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        "timed out".into()
    }

    pub(crate) fn stop(&mut self) {
        if self.try_exited() {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's PID (not yet reaped, so not reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.try_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} (pid {pid}) ignored SIGTERM; SIGKILL", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The dyno router on its own OS thread: a current-thread tokio runtime (one worker) pinned to
/// `PROXY_CPU`. Stopped and joined on drop.
pub(super) struct EmbeddedRouter {
    pub(super) addr: SocketAddr,
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl EmbeddedRouter {
    /// In front of `backend` on the host's loopback: unmarked (`mark: None`), as the host
    /// backend and the other proxies need nothing else.
    pub(super) fn start(backend: SocketAddr) -> Result<EmbeddedRouter, String> {
        let config = RouterConfig {
            mark: None,
            ..RouterConfig::default()
        };
        EmbeddedRouter::start_in(backend, config, None)
    }

    /// With `netns`, the router's thread lives in that namespace (a lab host, where dynos
    /// are), so its connections to the backend leave from there; its listener is bound here
    /// first, so `wrk` reaches it on this loopback as it reaches every other target.
    pub(super) fn start_in(
        backend: SocketAddr,
        config: RouterConfig,
        netns: Option<&Netns>,
    ) -> Result<EmbeddedRouter, String> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("router listen: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("router listen: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("router listen: {e}"))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let body = move || -> Result<(), String> {
            pin_current_thread(PROXY_CPU)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("router runtime: {e}"))?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| format!("router listen: {e}"))?;
                let routes = RouteTable::new();
                routes.set_app("bench", &[]);
                routes.set_dynos("bench", vec![Backend::new("web.1", backend)]);
                let router = Router::new(config, routes, NullSink);
                tokio::select! {
                    r = router.serve(listener) => r.map_err(|e| format!("router: {e}")),
                    _ = stop_rx => Ok(()),
                }
            })
        };
        let spawn = move || {
            (std::thread::Builder::new().name("bench-router".into()))
                .spawn(body)
                .map_err(|e| format!("router thread: {e}"))
        };
        let thread = match netns {
            // A thread starts in the namespace of the thread that makes it: made by a job on
            // the namespace thread (`Netns::run`), it is born inside `netns` and stays there,
            // while the namespace thread goes home as always. Nothing here switches namespaces.
            Some(netns) => netns.run(spawn).map_err(|e| e.to_string())??,
            None => spawn()?,
        };
        Ok(EmbeddedRouter {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for EmbeddedRouter {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => eprintln!("{e}"),
                Err(_) => eprintln!("router thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

pub(super) fn pin_current_thread(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity(0, …) only
    // touch that set and the calling thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity(CPU {cpu}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// A private temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> Result<TempDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("dyno-bench-router-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    pub(super) fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let p = self.0.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
