//! A throwaway rootful podman (4.x, CNI backend) for tests and benches: everything it writes
//! lives under one root directory `/tmp/<prefix>-<pid>-<n>/`, every podman process runs inside a
//! given network namespace (a [`Lab`](dyno_net::lab::Lab)'s host, never the real host's) and a
//! private mount namespace (`sandbox.rs`), and dropping the world removes its containers, images,
//! mounts, cgroups and the root.
//!
//! Used by `dyno-cni`'s podman test (`podman run --network dyno`) and by the CNI bench, which
//! times `podman run --rm IMAGE true` on a `dyno-cni` network against a `ptp` + `host-local` one
//! ([`time_dyno_against_ptp`], or [`PodmanWorld::time_runs`] per network).
//!
//! What the configuration (`containers.conf`, `storage.conf`) has to say on a Debian 12 host
//! with cgroup v1 + v2 hybrid, and why:
//! - `runtime = "runc"`: crun fails on the hybrid hierarchy;
//! - `cgroup_manager = "cgroupfs"`, `events_logger = "file"`: no systemd or journald needed;
//! - `default_ulimits` below the hard limits: podman's defaults ask for more than a test's
//!   limits allow;
//! - `lock_type = "file"`: the default shm locks live in the host's `/dev/shm/libpod_lock`;
//! - `tmp_dir`, `volume_path`, `events_logfile_path`, `image_copy_tmp_dir`, storage's
//!   `graphroot` and `runroot`: podman's state, moved under the root;
//! - `static_dir` is left unset on purpose: the `podman container cleanup` that conmon starts is
//!   given `--root` and derives `static_dir` from it (`<graphroot>/libpod`); a different
//!   configured one splits the state in two databases, and `podman run` then waits 20 s for an
//!   exit the cleanup recorded in the other one.
//! - each container gets `--cgroup-parent` with the world's own name (podman's default
//!   `libpod_parent` would be shared with other users and stay behind).

mod measure;
mod sandbox;

pub use measure::{time_dyno_against_ptp, RunTimings};
pub use sandbox::{cgroup_dirs, mounts_in};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dyno_net::ns::{self, Netns, NsError};
use serde_json::{json, Value};

use sandbox::MountSandbox;

/// Debian's CNI plugins (`containernetworking-plugins`), linked into each world's plugin dir.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";
/// busybox-static's binary: the one file of [`PodmanWorld::import_busybox`]'s image.
pub const BUSYBOX: &str = "/bin/busybox";
/// The applets the image links to busybox.
pub const APPLETS: [&str; 16] = [
    "sh", "nc", "ip", "cat", "sleep", "ifconfig", "route", "httpd", "true", "false", "echo", "ls",
    "wget", "ps", "netstat", "timeout",
];

/// The longest a podman command may take (the slowest seen here is a second).
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(120);

static WORLDS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("{program} not found: apt-get install podman runc busybox-static containernetworking-plugins")]
    Missing { program: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Netns {
        context: String,
        #[source]
        source: NsError,
    },
    #[error("podman {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("cleaning up the podman world: {}", .0.join("; "))]
    Cleanup(Vec<String>),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodmanError {
    let context = context.into();
    move |source| PodmanError::Io { context, source }
}

/// One podman installation of our own; see the module documentation.
pub struct PodmanWorld {
    root: PathBuf,
    /// `--cgroup-parent` of every container: the root's file name, so it is recognisable.
    cgroup_parent: String,
    netns: Netns,
    sandbox: MountSandbox,
    cleaned: bool,
}

impl PodmanWorld {
    /// A new world under `/tmp/<prefix>-<pid>-<n>`, whose podman runs in `netns`. Needs root.
    pub fn new(netns: &Netns, prefix: &str) -> Result<PodmanWorld, PodmanError> {
        for program in ["/usr/bin/podman", "/usr/sbin/runc", BUSYBOX] {
            if !Path::new(program).exists() {
                return Err(PodmanError::Missing {
                    program: program.into(),
                });
            }
        }
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            WORLDS.fetch_add(1, Ordering::Relaxed)
        );
        // /tmp, not /run: podman's mount namespace has its own /run (see `sandbox`).
        let root = PathBuf::from("/tmp").join(&name);
        // create_dir (not _all): a leftover with our pid is an error, not something to reuse.
        std::fs::create_dir(&root).map_err(io_err(format!("create {}", root.display())))?;
        let netns = match netns.try_clone() {
            Ok(netns) => netns,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(PodmanError::Netns {
                    context: "clone the network namespace".into(),
                    source,
                });
            }
        };
        let sandbox = match MountSandbox::new() {
            Ok(sandbox) => sandbox,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(io_err("make the private mount namespace")(e));
            }
        };
        // From here on Drop cleans up whatever fails.
        let world = PodmanWorld {
            cgroup_parent: format!("/{name}"),
            root,
            netns,
            sandbox,
            cleaned: false,
        };
        world.write_configuration()?;
        Ok(world)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where network configuration lists (`<name>.conflist`) go.
    pub fn network_config_dir(&self) -> PathBuf {
        self.root.join("cni/net.d")
    }

    /// The one directory podman looks for CNI plugins in.
    pub fn plugin_dir(&self) -> PathBuf {
        self.root.join("cni/bin")
    }

    fn write_configuration(&self) -> Result<(), PodmanError> {
        let root = &self.root;
        for dir in [
            "cni/net.d",
            "cni/bin",
            "graph",
            "runroot",
            "libpod-tmp",
            "volumes",
            "tmp",
        ] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        let path = |sub: &str| root.join(sub).to_string_lossy().into_owned();
        let containers = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:20000", "nproc=4096:4096"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
network_config_dir = {net_d:?}
cni_plugin_dirs = [{bin:?}]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events:?}
lock_type = "file"
tmp_dir = {tmp_dir:?}
volume_path = {volumes:?}
image_copy_tmp_dir = {tmp:?}

[engine.runtimes]
runc = ["/usr/sbin/runc", "/usr/bin/runc"]
"#,
            net_d = path("cni/net.d"),
            bin = path("cni/bin"),
            events = path("libpod-tmp/events.log"),
            tmp_dir = path("libpod-tmp"),
            volumes = path("volumes"),
            tmp = path("tmp"),
        );
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = {:?}\nrunroot = {:?}\n",
            path("graph"),
            path("runroot"),
        );
        write(&root.join("containers.conf"), &containers)?;
        write(&root.join("storage.conf"), &storage)?;
        // No registry is used; an empty list keeps /etc/containers/registries.conf out of it.
        write(
            &root.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )?;
        // podman calls `loopback` for every container's lo; ptp and host-local for the anchor.
        if let Ok(entries) = std::fs::read_dir(DEBIAN_CNI_DIR) {
            for entry in entries.filter_map(Result::ok) {
                self.add_plugin(&entry.file_name().to_string_lossy(), &entry.path())?;
            }
        }
        Ok(())
    }

    /// Links the plugin binary at `binary` into the plugin dir as `name` (a conflist's `type`).
    pub fn add_plugin(&self, name: &str, binary: &Path) -> Result<(), PodmanError> {
        let link = self.plugin_dir().join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(binary, &link).map_err(io_err(format!(
            "link {} to {}",
            link.display(),
            binary.display()
        )))
    }

    /// Writes network `name` as a configuration list (CNI 1.0.0, what podman 4.3's libcni
    /// speaks at most) of `plugins`.
    pub fn write_network(&self, name: &str, plugins: &[Value]) -> Result<PathBuf, PodmanError> {
        let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        let path = self.network_config_dir().join(format!("{name}.conflist"));
        write(
            &path,
            &serde_json::to_string_pretty(&list).unwrap_or_default(),
        )?;
        Ok(path)
    }

    /// A `dyno-cni` network (its plugin linked with [`add_plugin`](Self::add_plugin) as
    /// `dyno-cni`): addresses from `subnet`, leases under the root's `dyno-cni-<name>`, `$PORT`
    /// from `-p` (portMappings) or else `port`.
    pub fn write_dyno_network(
        &self,
        name: &str,
        subnet: &str,
        port: Option<u16>,
    ) -> Result<PathBuf, PodmanError> {
        let mut plugin = json!({
            "type": "dyno-cni",
            "subnet": subnet,
            "dataDir": self.dyno_data_dir(name),
            "capabilities": {"portMappings": true},
        });
        if let Some(port) = port {
            plugin["port"] = json!(port);
        }
        self.write_network(name, &[plugin])
    }

    /// Where a [`write_dyno_network`](Self::write_dyno_network) network keeps its leases.
    pub fn dyno_data_dir(&self, network: &str) -> PathBuf {
        self.root.join(format!("dyno-cni-{network}"))
    }

    /// The anchor network: Debian's `ptp` with `host-local` addresses from `subnet` (state
    /// under the root, not `/var/lib/cni/networks`), configured as `dyno bench net`'s ptp
    /// anchor is (no masquerade: that would time iptables, which dyno does not use).
    pub fn write_ptp_network(&self, name: &str, subnet: &str) -> Result<PathBuf, PodmanError> {
        let plugin = json!({
            "type": "ptp",
            "ipMasq": false,
            "mtu": 1500,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.root.join(format!("host-local-{name}")),
            },
        });
        self.write_network(name, &[plugin])
    }

    /// A podman command of this world: its configuration, the network namespace and the mount
    /// namespace. Paths in arguments must be absolute (see `sandbox.rs`).
    pub fn command<I, S>(&self, args: I) -> Result<Command, PodmanError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new("/usr/bin/podman");
        command
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            // Nothing of root's own ~/.config/containers is read.
            .env("HOME", &self.root)
            .env("CONTAINERS_CONF", self.root.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.root.join("storage.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.root.join("registries.conf"),
            )
            .env("TMPDIR", self.root.join("tmp"))
            .current_dir("/")
            .stdin(Stdio::null());
        ns::command_in(&mut command, &self.netns, None).map_err(|source| PodmanError::Netns {
            context: "podman in the network namespace".into(),
            source,
        })?;
        self.sandbox
            .enter(&mut command)
            .map_err(io_err("podman in the mount namespace"))?;
        Ok(command)
    }

    /// Runs podman with `args` to its end; any exit status is returned. A podman still running
    /// after [`PODMAN_TIMEOUT`] is killed (a hung test fails and cleans up instead of hanging).
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<Output, PodmanError> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let context = format!("run podman {}", args.join(" "));
        let child = self
            .command(&args)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(context.clone()))?;
        // A pidfd names this very process even after it is reaped: the watchdog can never
        // signal a stranger that reused the pid.
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_child(&child),
            rustix::process::PidfdFlags::empty(),
        )
        .map_err(|e| io_err(context.clone())(e.into()))?;
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if finished.recv_timeout(PODMAN_TIMEOUT)
                == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                return true;
            }
            false
        });
        let output = child.wait_with_output();
        let _ = done.send(());
        let killed = watchdog.join().unwrap_or(false);
        let output = output.map_err(io_err(context.clone()))?;
        if killed {
            return Err(io_err(context)(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "killed after {PODMAN_TIMEOUT:?}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            )));
        }
        Ok(output)
    }

    /// Runs podman with `args`; its stdout if it succeeded.
    pub fn run_ok<S: AsRef<str>>(&self, args: &[S]) -> Result<String, PodmanError> {
        let output = self.run(args)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(failed(args, &output))
        }
    }

    /// `podman run` with `args` (options, image, command), in the world's cgroup parent.
    pub fn run_container<S: AsRef<str>>(&self, args: &[S]) -> Result<Output, PodmanError> {
        let mut full = vec!["run", "--cgroup-parent", &self.cgroup_parent];
        full.extend(args.iter().map(AsRef::as_ref));
        self.run(&full)
    }

    /// [`run_container`](Self::run_container) that must succeed; its stdout.
    pub fn run_container_ok<S: AsRef<str>>(&self, args: &[S]) -> Result<String, PodmanError> {
        let output = self.run_container(args)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(failed(args, &output))
        }
    }

    /// Imports an image `localhost/<name>:latest` holding only busybox and its applets
    /// ([`APPLETS`]), from a tarball made under the root (no registry needed). Its reference.
    pub fn import_busybox(&self, name: &str) -> Result<String, PodmanError> {
        let tree = self.root.join("image-tree");
        let bin = tree.join("bin");
        std::fs::create_dir_all(&bin).map_err(io_err(format!("create {}", bin.display())))?;
        for dir in ["proc", "sys", "dev", "etc", "tmp"] {
            let dir = tree.join(dir);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        std::fs::copy(BUSYBOX, bin.join("busybox")).map_err(io_err(format!("copy {BUSYBOX}")))?;
        for applet in APPLETS {
            let link = bin.join(applet);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(io_err(format!("link {}", link.display())))?;
        }
        let tarball = self.root.join(format!("{name}.tar"));
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()
            .map_err(io_err("run tar"))?;
        if !tar.status.success() {
            return Err(io_err("tar of the image tree")(std::io::Error::other(
                String::from_utf8_lossy(&tar.stderr).into_owned(),
            )));
        }
        let reference = format!("localhost/{name}:latest");
        let tarball = tarball.to_string_lossy().into_owned();
        self.run_ok(&["import", "--quiet", &tarball, &reference])?;
        Ok(reference)
    }

    /// `rounds` times `podman run --rm --network <network> <image> true`, each timed from spawn
    /// to exit (what a user of `podman run` waits for: network setup and teardown included).
    pub fn time_runs(
        &self,
        network: &str,
        image: &str,
        rounds: usize,
    ) -> Result<Vec<Duration>, PodmanError> {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let args = ["--rm", "--network", network, image, "true"];
            let start = Instant::now();
            let output = self.run_container(&args)?;
            let elapsed = start.elapsed();
            if !output.status.success() {
                return Err(failed(&args, &output));
            }
            times.push(elapsed);
        }
        Ok(times)
    }

    /// Mounts at or below the root, in the host's mount table and in the private one, deepest
    /// first: what cleanup unmounts (and what must be empty afterwards).
    pub fn mounts(&self) -> Vec<PathBuf> {
        let mut found = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|table| sandbox::mounts_in(&table, &self.root))
            .unwrap_or_default();
        found.extend(self.sandbox.mounts_under(&self.root).unwrap_or_default());
        found
    }

    /// The world's cgroup directories left in any hierarchy (empty after cleanup).
    pub fn cgroups(&self) -> Vec<PathBuf> {
        sandbox::cgroup_dirs(&self.cgroup_parent)
    }

    /// Removes every container (their networks: CNI DEL) and image, unmounts what podman left
    /// mounted under the root, stops the mount namespace, removes the world's cgroups and the
    /// root. Idempotent; runs on drop too. Every step is tried; the problems are returned.
    pub fn cleanup(&mut self) -> Result<(), PodmanError> {
        if self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        let mut problems = Vec::new();
        for args in [
            &["rm", "--all", "--force", "--time", "0"][..],
            &["rmi", "--all", "--force"],
        ] {
            match self.run(args) {
                Ok(out) if out.status.success() => {}
                Ok(out) => problems.push(failed(args, &out).to_string()),
                Err(e) => problems.push(e.to_string()),
            }
        }
        for point in self.sandbox.mounts_under(&self.root).unwrap_or_default() {
            if let Err(e) = self.unmount_inside(&point) {
                problems.push(format!("unmount {} in the namespace: {e}", point.display()));
            }
        }
        if let Err(e) = self.sandbox.stop() {
            problems.push(format!("stop the mount namespace holder: {e}"));
        }
        let host_table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in sandbox::mounts_in(&host_table, &self.root) {
            if let Err(e) = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH) {
                problems.push(format!("unmount {}: {e}", point.display()));
            }
        }
        for dir in self.cgroups() {
            if let Err(e) = std::fs::remove_dir(&dir) {
                problems.push(format!("remove cgroup {}: {e}", dir.display()));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("remove {}: {e}", self.root.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PodmanError::Cleanup(problems))
        }
    }

    /// `umount -l` run inside the mount namespace (a mount there is not ours to reach from a
    /// thread: entering a mount namespace needs a single-threaded process).
    fn unmount_inside(&self, point: &Path) -> Result<(), String> {
        let mut command = Command::new("/bin/umount");
        command.arg("-l").arg(point).stdin(Stdio::null());
        self.sandbox
            .enter(&mut command)
            .map_err(|e| e.to_string())?;
        let out = command.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for PodmanWorld {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("{e}");
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), PodmanError> {
    std::fs::write(path, text).map_err(io_err(format!("write {}", path.display())))
}

fn failed<S: AsRef<str>>(args: &[S], output: &Output) -> PodmanError {
    PodmanError::Failed {
        args: args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" "),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}
