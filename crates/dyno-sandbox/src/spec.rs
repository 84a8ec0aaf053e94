//! What a sandbox is made of, written by the launcher into the dyno's state dir and read by the
//! shim: the shim is a separate process, and the spec file is how it learns its job.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxSpec {
    /// The dyno's process name, `web.1` (used in messages).
    pub name: String,
    /// The dyno's hostname: its uuid, as on Heroku.
    pub hostname: String,
    /// The dyno's network namespace, bound by `dyno-net`.
    pub netns: PathBuf,
    /// The dyno's own address (for `/etc/hosts`).
    pub ip: Ipv4Addr,
    /// The app: shown read-only under `/app`, with a writable ephemeral layer on top.
    pub app_dir: PathBuf,
    /// Host directories shown read-only as the "stack" (`/usr`, `/bin`, `/lib`, `/etc`, ...);
    /// symlinks among them (merged-/usr systems) are recreated as symlinks.
    pub stack: Vec<PathBuf>,
    /// The unprivileged identity the app runs as.
    pub uid: u32,
    pub gid: u32,
    /// The app's whole environment: config vars, `PORT`, `DYNO`, `HOME`, `PATH`.
    pub env: Vec<(String, String)>,
    /// The Procfile command, run by `bash -c`.
    pub command: String,
    /// Name servers for `/etc/resolv.conf`.
    pub nameservers: Vec<Ipv4Addr>,
    /// The dyno's cgroup (memory, pids, cpu), joined before anything of the dyno runs.
    #[serde(default)]
    pub cgroup: Option<crate::cgroup::DynoCgroup>,
    /// Where the app's stdout and stderr go.
    #[serde(default)]
    pub output: OutputMode,
    /// An LXCFS mount whose files are bound over the dyno's `/proc` (see [`crate::lxcfs`]);
    /// `None`: the kernel's figures, which are the host's.
    #[serde(default)]
    pub proc_view: Option<PathBuf>,
    /// The dyno's system-call filter (see [`crate::seccomp`]); the default profile unless said.
    #[serde(default)]
    pub seccomp: SeccompSpec,
    /// The shim's stdin is a terminal (an attached one-off, see [`crate::terminal`]): the app
    /// gets it as its controlling terminal.
    #[serde(default)]
    pub terminal: bool,
    /// Host directories shown at top-level paths of the dyno (a build's `/app`, `/cache`,
    /// `/env`, `/buildpacks`). A bind at `/app` replaces the overlay: the build writes the
    /// slug itself.
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// The mount namespace the dyno's is copied from (see [`crate::template`]); `None`, or a
    /// dyno with binds: the shim's own (the host's).
    #[serde(default)]
    pub mount_template: Option<PathBuf>,
    /// The shim's stdin is the dyno's gate: a pipe on which its caller writes one byte once the
    /// dyno's cgroup exists and its network is complete (both made while the sandbox is
    /// built). PID 1 reads it when the sandbox is built but for the pivot into it, then joins
    /// the cgroup; at end of file instead, the start was given up and the dyno ends without
    /// running the app ([`ExitRecord::Abandoned`]). The app's stdin is `/dev/null`. Not with
    /// `terminal`, whose stdin is the client's.
    #[serde(default)]
    pub network_gate: bool,
}

/// One host directory bound into the dyno.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    /// A top-level name inside the dyno: `app`, `cache` (no slashes).
    pub target: String,
    pub writable: bool,
}

impl Bind {
    pub fn new(source: impl Into<PathBuf>, target: &str, writable: bool) -> Bind {
        Bind {
            source: source.into(),
            target: target.to_owned(),
            writable,
        }
    }
}

/// The system-call filter of one dyno.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeccompSpec {
    /// No filter at all: only for benchmarks, which measure the filter's cost against it.
    #[serde(default)]
    pub off: bool,
    /// Calls allowed on top of the default profile (the operator's additions for this app).
    #[serde(default)]
    pub allow: Vec<String>,
}

/// Where a dyno's output goes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum OutputMode {
    /// The shim's own stdout and stderr (a caller that lives as long as the dyno).
    #[default]
    Inherit,
    /// Through the shim to the state dir's log socket (see [`crate::output`]): the caller may
    /// come and go, a daemon that restarts connects again.
    Relay,
}

impl SandboxSpec {
    /// What `bash -c` runs: the Procfile's command, after the slug's `.profile.d/*.sh` and
    /// `.profile` are sourced when it has them (Heroku does so at every dyno start: buildpacks
    /// put `PATH` and the like there). A build (its `/app` a bind) runs its command alone.
    /// `app` is where the slug is seen now (`/app` inside the sandbox's root).
    pub fn startup_command(&self, app: &Path) -> String {
        let build = self.binds.iter().any(|b| b.target == "app");
        let has_profile = app.join(".profile.d").is_dir() || app.join(".profile").is_file();
        if build || !has_profile {
            return self.command.clone();
        }
        format!(
            "for f in /app/.profile.d/*.sh; do [ -r \"$f\" ] && . \"$f\"; done; unset f; \
             [ -r /app/.profile ] && . /app/.profile; {}",
            self.command
        )
    }

    /// The stack Debian 12 needs to run what the host runs.
    pub fn default_stack() -> Vec<PathBuf> {
        [
            "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
        ]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
    }
}

/// The files of one sandbox on the host. Nothing in it is visible from inside the dyno.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn spec(&self) -> PathBuf {
        self.0.join("spec.json")
    }
    /// Where the new root is assembled (a tmpfs, inside the sandbox's mount namespace only).
    pub fn root(&self) -> PathBuf {
        self.0.join("root")
    }
    /// The tmpfs holding the writable layer of `/app`.
    pub fn ephemeral(&self) -> PathBuf {
        self.0.join("ephemeral")
    }
    pub fn etc_file(&self, name: &str) -> PathBuf {
        self.0.join("etc").join(name)
    }
    /// The host pid of the sandbox's PID 1 (written by the shim).
    pub fn init_pid(&self) -> PathBuf {
        self.0.join("init.pid")
    }
    /// How the dyno ended (written by the shim).
    pub fn exit(&self) -> PathBuf {
        self.0.join("exit.json")
    }
    /// The shim's log socket ([`OutputMode::Relay`]).
    pub fn log_socket(&self) -> PathBuf {
        self.0.join("log.sock")
    }
    /// Output no reader took before the dyno ended (written by the shim).
    pub fn unsent(&self) -> PathBuf {
        self.0.join("unsent.log")
    }
}

impl AsRef<Path> for StateDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// How a dyno ended, as the shim saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ExitRecord {
    /// The app's main process exited with this status.
    Exited(i32),
    /// The app's main process was killed by this signal.
    Signaled(i32),
    /// The sandbox could not be built; the app never ran.
    SetupFailed(String),
    /// Its start was given up before the app ran: the network gate closed unopened (the
    /// daemon failed to complete the network, or died first). Nothing ran; a daemon that finds
    /// it starts the dyno afresh, as it would one it found gone.
    Abandoned,
}
