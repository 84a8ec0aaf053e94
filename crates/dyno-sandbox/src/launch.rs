//! The caller's side: prepare a dyno's state dir, start its shim, read how it ended.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::spec::{ExitRecord, SandboxSpec, StateDir};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("prepare sandbox state {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the app directory {0} does not exist or is not a directory")]
    NoAppDir(String),
    #[error("a dyno with a terminal has no network gate: its stdin is the client's")]
    GateWithTerminal,
    #[error("the app's uid and gid must not be 0 (got {uid}:{gid})")]
    Privileged { uid: u32, gid: u32 },
    #[error("start the shim {exe}: {source}")]
    Spawn {
        exe: String,
        #[source]
        source: std::io::Error,
    },
}

/// The name of the app's user inside every dyno.
pub const APP_USER: &str = "dyno";

/// The host's file (if readable) with `line` appended, minus any entry already named like ours.
fn with_line(host_file: &str, line: &str) -> String {
    let host = std::fs::read_to_string(host_file).unwrap_or_default();
    let mut text: String = host
        .lines()
        .filter(|l| !l.starts_with(&format!("{APP_USER}:")))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(line);
    text.push('\n');
    text
}

/// Writes the spec and the dyno's own `/etc` files into `state`.
pub fn prepare(state: &StateDir, spec: &SandboxSpec) -> Result<(), LaunchError> {
    if !spec.app_dir.is_dir() {
        return Err(LaunchError::NoAppDir(spec.app_dir.display().to_string()));
    }
    if spec.terminal && spec.network_gate {
        return Err(LaunchError::GateWithTerminal);
    }
    if spec.uid == 0 || spec.gid == 0 {
        return Err(LaunchError::Privileged {
            uid: spec.uid,
            gid: spec.gid,
        });
    }
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| LaunchError::State { path, source }
    };
    let etc = state.0.join("etc");
    std::fs::create_dir_all(&etc).map_err(err(&etc))?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
        spec.ip, spec.hostname
    );
    let resolv: String = spec
        .nameservers
        .iter()
        .map(|ns| format!("nameserver {ns}\n"))
        .collect();
    // The app's user has a name (`dyno`), so `whoami`, `getpwuid` and shells find it instead
    // of failing through every name service.
    let passwd = with_line(
        "/etc/passwd",
        &format!("{APP_USER}:x:{}:{}:dyno:/app:/bin/bash", spec.uid, spec.gid),
    );
    let group = with_line("/etc/group", &format!("{APP_USER}:x:{}:", spec.gid));
    for (name, content) in [
        ("hostname", format!("{}\n", spec.hostname)),
        ("hosts", hosts),
        ("resolv.conf", resolv),
        ("passwd", passwd),
        ("group", group),
    ] {
        let path = state.etc_file(name);
        std::fs::write(&path, content).map_err(err(&path))?;
    }
    let json = serde_json::to_vec_pretty(spec).expect("specs serialise");
    std::fs::write(state.spec(), json).map_err(err(&state.spec()))?;
    Ok(())
}

/// The command that starts a dyno's shim: `exe __shim STATE` (exe: the `dyno` binary), with an
/// empty environment and no stdin. The caller chooses stdout and stderr (the dyno's output) and
/// how to spawn it (std or tokio).
pub fn shim_command(exe: &Path, state: &StateDir) -> Command {
    let mut command = Command::new(exe);
    command
        .arg("__shim")
        .arg(&state.0)
        .stdin(Stdio::null())
        .env_clear();
    // No `pre_exec`: without one the spawn is a vfork-style `posix_spawn` (see
    // `limits::shim_env`).
    if let Some((name, value)) = crate::limits::shim_env() {
        command.env(name, value);
    }
    command
}

/// Starts the shim with the given stdout and stderr.
pub fn spawn_shim(
    exe: &Path,
    state: &StateDir,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Child, LaunchError> {
    shim_command(exe, state)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            exe: exe.display().to_string(),
            source,
        })
}

/// The pid in `state/init.pid` if that process is still a dyno's PID 1 (`… __init …`): a pid
/// reused by something else since is never returned, so never signalled.
pub fn live_init_pid(state: &StateDir) -> Option<libc::pid_t> {
    let pid: libc::pid_t = std::fs::read_to_string(state.init_pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == b"__init")
        .then_some(pid)
}

/// The spec a dyno was started with, if its state dir still holds a readable one.
pub fn read_spec(state: &StateDir) -> Option<SandboxSpec> {
    let bytes = std::fs::read(state.spec()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How the dyno ended, once its shim has recorded it.
pub fn exit_record(state: &StateDir) -> Option<ExitRecord> {
    let bytes = std::fs::read(state.exit()).ok()?;
    serde_json::from_slice(&bytes).ok()
}
