//! A private containerd 1.6 in a lab host, and what the containerd tests need around it.
//!
//! Everything started here stays off the real host: containerd and ctr run inside a lab
//! namespace that stands in for the host's network, and in mount namespaces of their own where
//! `/run`, `/opt`, `/var/lib` and `/etc/cni/net.d` are covered by the scratch dir (containerd
//! 1.6's shims put sockets in `/run/containerd/s` whatever its `state` says, and libcni caches
//! results in `/var/lib/cni`).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dyno_net::lab::Lab;
use dyno_net::ns::{self, Netns};
use serde_json::{json, Value};

static SCRATCH: AtomicU32 = AtomicU32::new(0);

/// The pool of this test's network (plugin.rs uses 10.215/16; other runtimes' tests their own).
pub const SUBNET: &str = "10.219.0.0/24";
pub const NETWORK: &str = "dynoctr";
pub const PORT: u16 = 5000;
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// ctr's default containerd namespace, which prefixes `CNI_CONTAINERID`.
pub const CTR_NAMESPACE: &str = "default";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "dyno-cni's containerd tests need root (network and mount namespaces, nf_tables, runc)"
    );
}

/// A private containerd serving from a scratch dir, inside a lab host, with one CNI network
/// (`dyno-cni`) that `ctr run --cni` finds. Dropping it stops and removes everything.
pub struct Containerd {
    pub dir: PathBuf,
    daemon: Option<Child>,
    /// Foreground `ctr run --cni --rm` processes by container id: they call DEL when the task
    /// ends, so they must live as long as their container.
    runs: Vec<(String, Child)>,
    pub lab: Lab,
}

impl Containerd {
    pub fn start(tag: &str) -> Containerd {
        require_root();
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        // In /tmp, not /run: the processes started here get a tmpfs over /run.
        let dir = PathBuf::from(format!("/tmp/dynocni-ctr-{}-{n}", std::process::id()));
        let mut containerd = Containerd {
            dir,
            daemon: None,
            runs: Vec::new(),
            lab: Lab::new(tag).expect("lab"),
        };
        containerd.prepare();
        let log = File::create(containerd.dir.join("containerd.log")).expect("containerd log");
        let mut daemon = containerd.command("containerd");
        daemon
            .arg("--config")
            .arg(containerd.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        containerd.daemon = Some(
            daemon
                .spawn()
                .expect("spawn containerd (Debian: containerd, runc)"),
        );
        let socket = containerd.socket();
        containerd.wait_for("containerd's socket", Duration::from_secs(20), |c| {
            c.daemon_died();
            socket.exists()
        });
        containerd
    }

    /// Scratch dir: the rootfs, the CNI config and plugin dirs, containerd's config and state.
    fn prepare(&self) {
        let dir = &self.dir;
        for sub in ["rootfs/bin", "net.d", "opt/cni/bin", "var-lib", "data"] {
            std::fs::create_dir_all(dir.join(sub)).expect("scratch dir");
        }
        // A static busybox is the whole image: `ctr run --rootfs` needs no image store.
        std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox"))
            .expect("copy /bin/busybox (Debian: busybox-static)");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_dyno-cni"),
            dir.join("opt/cni/bin/dyno-cni"),
        )
        .expect("plugin link");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [{
                "type": "dyno-cni",
                "subnet": SUBNET,
                "dataDir": dir.join("data").to_string_lossy(),
                "port": PORT,
            }],
        });
        std::fs::write(
            dir.join(format!("net.d/10-{NETWORK}.conflist")),
            conflist.to_string(),
        )
        .expect("conflist");
        // No CRI (it would read /etc/cni and serve on its own), no /opt/containerd, no
        // snapshotters that probe the host's filesystems.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]

[grpc]
  address = "{d}/containerd.sock"
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("containerd config");
    }

    /// The test's cgroup in every hierarchy: the scratch dir's name.
    fn cgroup_parent(&self) -> String {
        let name = self.dir.file_name().expect("scratch dir name");
        name.to_string_lossy().into_owned()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `program` in the lab host's network namespace and in a mount namespace where this test's
    /// dirs cover the host's: the CNI config and plugin dirs ctr reads, and the dirs containerd,
    /// its shims and libcni write to outside their configured state.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        ns::command_in(&mut cmd, self.lab.host.netns(), None).expect("command_in");
        let covers = [
            (None, Path::new("/run")),
            (Some(self.dir.join("opt")), Path::new("/opt")),
            (Some(self.dir.join("var-lib")), Path::new("/var/lib")),
            (Some(self.dir.join("net.d")), Path::new("/etc/cni/net.d")),
        ];
        with_private_mounts(&mut cmd, &covers);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = self.command("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null());
        cmd.output().expect("run ctr (Debian: containerd)")
    }

    /// `ctr run --cni --rm` of `/bin/busybox ARGS` as container `id`, in the background; returns
    /// the task's pid once the plugin's ADD has given it an address.
    pub fn run(&mut self, id: &str, args: &[&str]) -> u32 {
        let child = self
            .ctr_run(id, &["--rm"], args)
            .spawn()
            .expect("spawn ctr (Debian: containerd)");
        self.runs.push((id.to_owned(), child));
        self.task_with_address(id)
    }

    /// `ctr run --cni --detach`: ctr returns once the task has started (after ADD).
    pub fn run_detached(&mut self, id: &str, args: &[&str]) -> u32 {
        let status = self.ctr_run(id, &["--detach"], args).status();
        assert!(
            status.as_ref().is_ok_and(ExitStatus::success),
            "ctr run --detach {id}: {status:?}\n{}",
            self.logs(id)
        );
        self.task_with_address(id)
    }

    fn ctr_run(&self, id: &str, mode: &[&str], args: &[&str]) -> Command {
        let log = File::create(self.dir.join(format!("{id}.ctr.log"))).expect("ctr log");
        let mut cmd = self.command("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["run", "--cni", "--rootfs"])
            .args(mode)
            .arg("--runc-root")
            .arg(self.dir.join("runc"))
            // Below a cgroup of the test's own in every hierarchy (ctr's default is
            // `/default/<id>`, which would stay behind), removed by `shut_down`.
            .arg("--cgroup")
            .arg(format!("/{}/{id}", self.cgroup_parent()))
            .arg("--pid-file")
            .arg(self.dir.join(format!("{id}.pid")))
            // The container's output goes to a file (no FIFOs in /run/containerd/fifo).
            .arg("--log-uri")
            .arg(format!("file://{}/{id}.out", self.dir.display()))
            .arg(self.dir.join("rootfs"))
            .arg(id)
            .arg("/bin/busybox")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        cmd
    }

    /// Waits for `id`'s task and its address: ctr writes the pid file after creating the task,
    /// then calls ADD, then starts it.
    fn task_with_address(&mut self, id: &str) -> u32 {
        let pid_file = self.dir.join(format!("{id}.pid"));
        let mut pid = 0;
        self.wait_for(&format!("{id}'s task"), Duration::from_secs(30), |c| {
            c.run_died(id);
            pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            pid != 0
        });
        self.wait_for(&format!("{id}'s eth0"), Duration::from_secs(30), |c| {
            c.run_died(id);
            eth0_of(pid).is_some_and(|i| !i.addresses.is_empty())
        });
        pid
    }

    /// `dyno-cni` called directly, as ctr would for container `id`, in the lab host.
    pub fn plugin(&self, command: &str, id: &str) -> Output {
        let config = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "dyno-cni",
            "subnet": SUBNET,
            "dataDir": self.dir.join("data").to_string_lossy(),
            "port": PORT,
        });
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dyno-cni"));
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("{CTR_NAMESPACE}-{id}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ns::command_in(&mut cmd, self.lab.host.netns(), None).expect("command_in");
        let mut child = cmd.spawn().expect("spawn dyno-cni");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(config.to_string().as_bytes())
            .expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("dyno-cni output")
    }

    /// Kills container `id`'s task and waits for its `ctr run` to end (after its DEL).
    pub fn stop(&mut self, id: &str) -> ExitStatus {
        let out = self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        assert!(out.status.success(), "ctr task kill {id}: {out:?}");
        let at = self.runs.iter().position(|(i, _)| i == id).expect("a run");
        let (_, mut child) = self.runs.remove(at);
        let status = wait_child(&mut child, Duration::from_secs(30));
        status.unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ctr run {id} did not end: {}", self.logs(id));
        })
    }

    fn logs(&self, id: &str) -> String {
        let read = |name: String| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "ctr run: {}\ncontainer: {}\ncontainerd: {}",
            read(format!("{id}.ctr.log")),
            read(format!("{id}.out")),
            read("containerd.log".into())
        )
    }

    fn run_died(&mut self, id: &str) {
        let Some((_, child)) = self.runs.iter_mut().find(|(i, _)| i == id) else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ctr run {id} ended early ({status}): {}", self.logs(id));
        }
    }

    fn daemon_died(&mut self) {
        if let Some(Ok(Some(status))) = self.daemon.as_mut().map(Child::try_wait) {
            panic!("containerd ended ({status}): {}", self.logs(""));
        }
    }

    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn leases(&self) -> Vec<(String, String)> {
        let raw = std::fs::read(self.dir.join("data/leases.json")).unwrap_or_default();
        let value: Value = serde_json::from_slice(&raw).unwrap_or(json!({}));
        value["leases"].as_object().map_or(Vec::new(), |m| {
            m.iter()
                .map(|(ip, owner)| (ip.clone(), owner.as_str().unwrap_or("").to_owned()))
                .collect()
        })
    }

    pub fn exposed(&self) -> Vec<(Ipv4Addr, u16)> {
        crate::common::exposed(&self.lab)
    }

    pub fn dy_links(&mut self) -> Vec<String> {
        crate::common::dy_links(&mut self.lab)
    }

    /// Stops everything this test started: tasks, `ctr run`s, containerd, then any shim or
    /// container process still tied to the scratch dir; unmounts and removes the dir. Returns
    /// what it had to force or could not do (empty when everything ended by itself).
    pub fn shut_down(&mut self) -> Vec<String> {
        let mut forced = Vec::new();
        let tasks = |c: &Self| -> Vec<String> {
            let out = c.ctr(&["task", "list", "--quiet"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        };
        if self.daemon.is_some() {
            for id in tasks(self) {
                let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", &id]);
            }
        }
        // A foreground `ctr run` deletes its task and container (and calls DEL) by itself.
        for (id, mut child) in std::mem::take(&mut self.runs) {
            if wait_child(&mut child, Duration::from_secs(20)).is_none() {
                forced.push(format!("ctr run {id} killed"));
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.daemon.is_some() {
            // What is left is detached: no `ctr run` deletes it.
            for id in tasks(self) {
                let _ = self.ctr(&["task", "delete", "--force", &id]);
            }
            let out = self.ctr(&["container", "list", "--quiet"]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["container", "delete", id]);
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            // SIGTERM: containerd's orderly exit; its shims outlive it only with live tasks.
            let pid = i32::try_from(daemon.id()).expect("pid");
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if wait_child(&mut daemon, Duration::from_secs(20)).is_none() {
                forced.push("containerd killed".into());
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        for pid in processes_tied_to(&self.socket(), &self.dir.join("rootfs")) {
            forced.push(format!("process {pid} killed"));
            // SAFETY: as above; the process is a shim of our containerd or in our rootfs.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for dir in dyno_bench::podman::cgroup_dirs(&self.cgroup_parent()) {
            if let Err(e) = std::fs::remove_dir(&dir) {
                forced.push(format!("remove cgroup {}: {e}", dir.display()));
            }
        }
        for mount in mounts_under(&self.dir) {
            forced.push(format!("{} unmounted", mount.display()));
            let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                forced.push(format!("remove {}: {e}", self.dir.display()));
            }
        }
        forced
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for problem in self.shut_down() {
            eprintln!("containerd test cleanup: {problem}");
        }
        // The lab (a field) goes after this: its namespace takes links, routes and tables.
    }
}

/// Makes `cmd` start in a mount namespace of its own, with `covers` mounted over the host's
/// dirs (a bind mount of a dir, or an empty tmpfs for `None`); nothing propagates back.
fn with_private_mounts(cmd: &mut Command, covers: &[(Option<PathBuf>, &Path)]) {
    let cstring = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("path");
    let covers: Vec<(Option<CString>, CString)> = covers
        .iter()
        .map(|(source, target)| (source.as_deref().map(cstring), cstring(target)))
        .collect();
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls (unshare,
    // mount) on strings made before the fork: no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            let null = std::ptr::null();
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    null.cast(),
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for (source, target) in &covers {
                let done = match source {
                    Some(source) => libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        null,
                        libc::MS_BIND,
                        null.cast(),
                    ),
                    None => libc::mount(
                        c"tmpfs".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        c"mode=0755".as_ptr().cast(),
                    ),
                };
                if done != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => return None,
        }
    }
}

/// Processes of this containerd left behind: shims (their command line names its socket) and
/// container processes (their root is the rootfs).
fn processes_tied_to(socket: &Path, rootfs: &Path) -> Vec<i32> {
    let needle = socket.as_os_str().as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle) || root.starts_with(rootfs)
        })
        .collect()
}

/// Mount points at or under `dir` in this process's namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    dyno_bench::podman::mounts_in(&info, dir)
}

pub fn eth0_of(pid: u32) -> Option<dyno_net::inspect::Interface> {
    let netns = Netns::open(format!("/proc/{pid}/ns/net")).ok()?;
    dyno_net::inspect::interface(&netns, "eth0").ok()?
}

/// Whether a TCP connection from `netns` (with socket mark `mark`) to `to` is accepted within
/// a second.
pub fn connects(netns: &Netns, to: SocketAddrV4, mark: Option<u32>) -> bool {
    dyno_net::probe::connect(netns, None, to, mark, Duration::from_secs(1)).is_ok()
}
