//! The shim (`dyno __shim STATE_DIR`): the parent of a dyno's PID 1, like conmon. It lives in
//! its own session (a Ctrl-C at the daemon's terminal does not reach the dyno), forwards the
//! signals it gets to PID 1, and records how the dyno ended in the state dir, so that the exit is
//! never lost even when the daemon is gone.
//!
//! It must be single-threaded until it forks: the child unshares its mount namespace, which the
//! kernel refuses to a thread that shares its filesystem state with others.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::rootfs;
use crate::signals::{self, Waiter};
use crate::spec::{ExitRecord, SandboxSpec, StateDir};
use crate::sys::{check, cstr, io_context, SysError, SysResult};

/// Runs the shim; returns the process exit status (the app's).
pub fn run(state_dir: &Path) -> i32 {
    let state = StateDir(state_dir.to_path_buf());
    match start(&state) {
        Ok(code) => code,
        Err(e) => {
            let message = e.to_string();
            eprintln!("dyno shim: {message}");
            record(&state, &ExitRecord::SetupFailed(message));
            126
        }
    }
}

fn start(state: &StateDir) -> SysResult<i32> {
    let spec: SandboxSpec = {
        let bytes = io_context(
            || format!("read {}", state.spec().display()),
            std::fs::read(state.spec()),
        )?;
        serde_json::from_slice(&bytes).map_err(|e| SysError {
            what: format!("parse {}", state.spec().display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?
    };
    // SAFETY: setsid has no preconditions; failing (already a group leader) is harmless.
    unsafe {
        libc::setsid();
    }
    let netns = io_context(
        || format!("open network namespace {}", spec.netns.display()),
        File::open(&spec.netns),
    )?;
    // The binary is run again as PID 1 after the host's tree is gone: keep a handle on it.
    let exe = open_path(Path::new("/proc/self/exe"))?;
    let waiter = io_context(|| "signals".into(), Waiter::install())?;
    // SAFETY: unshare with a flag constant; affects only the children we fork from now on.
    check(|| "unshare pid namespace".into(), unsafe {
        libc::unshare(libc::CLONE_NEWPID)
    })?;
    let (errors_in, errors_out) = pipe()?;
    // SAFETY: this process is single-threaded (no thread was started), so the child may
    // allocate and run ordinary Rust code until it execs.
    let pid = check(|| "fork".into(), unsafe { libc::fork() })?;
    if pid == 0 {
        drop(errors_in);
        let Err(e) = enter(&spec, state, &netns, &exe);
        let mut out = File::from(errors_out);
        let _ = out.write_all(e.to_string().as_bytes());
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(126) };
    }
    drop(errors_out);
    let _ = std::fs::write(state.init_pid(), pid.to_string());
    // Empty once PID 1 has exec'd (the pipe is close-on-exec): the sandbox is built.
    let mut failure = String::new();
    let _ = File::from(errors_in).read_to_string(&mut failure);
    if !failure.is_empty() {
        let mut status = 0;
        // SAFETY: valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(SysError {
            what: format!("build the sandbox of {}", spec.name),
            source: std::io::Error::other(failure),
        });
    }
    loop {
        let signal = waiter.next();
        if signal != libc::SIGCHLD {
            signals::send(pid, signal);
            continue;
        }
        let mut status = 0;
        // SAFETY: valid out pointer.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            let (record_, code) = match signals::decode(status) {
                Ok(code) => (ExitRecord::Exited(code), code),
                Err(signal) => (ExitRecord::Signaled(signal), 128 + signal),
            };
            record(state, &record_);
            return Ok(code);
        }
    }
}

/// In the child, as root: new mount, UTS and IPC namespaces, the dyno's network, the
/// filesystem view, the hostname — then exec `dyno __init` as the new pid namespace's PID 1.
fn enter(
    spec: &SandboxSpec,
    state: &StateDir,
    netns: &File,
    exe: &OwnedFd,
) -> SysResult<Infallible> {
    // Into the dyno's cgroup first, so that its cgroup namespace is rooted there and every
    // process of the dyno is counted. The shim stays outside: an OOM kill never hits it.
    let mut namespaces = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if let Some(cgroup) = &spec.cgroup {
        cgroup.join_self().map_err(|e| SysError {
            what: format!("join dyno cgroup {}", cgroup.id()),
            source: std::io::Error::other(e),
        })?;
        namespaces |= libc::CLONE_NEWCGROUP;
    }
    // SAFETY: plain syscalls on flags and an fd we own.
    unsafe {
        check(
            || "unshare mount, uts, ipc and cgroup namespaces".into(),
            libc::unshare(namespaces),
        )?;
        check(
            || format!("join network namespace {}", spec.netns.display()),
            libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET),
        )?;
    }
    rootfs::build(spec, state)?;
    io_context(
        || format!("set hostname {}", spec.hostname),
        rustix::system::sethostname(spec.hostname.as_bytes()).map_err(Into::into),
    )?;
    let argv: Vec<CString> = [
        "dyno".to_string(),
        "__init".into(),
        "--uid".into(),
        spec.uid.to_string(),
        "--gid".into(),
        spec.gid.to_string(),
        "--".into(),
        spec.command.clone(),
    ]
    .into_iter()
    .map(|a| CString::new(a).expect("no NUL in arguments"))
    .collect();
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")).expect("no NUL in the environment"))
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let empty = c"";
    // SAFETY: NUL-terminated arrays of pointers to NUL-terminated strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            empty.as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Err(SysError {
        what: "exec dyno __init".into(),
        source: std::io::Error::last_os_error(),
    })
}

fn open_path(path: &Path) -> SysResult<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: valid C string; the returned fd is owned by us from here on.
    let fd = check(|| format!("open {}", path.display()), unsafe {
        libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC)
    })?;
    // SAFETY: fd was just returned by open and is not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    check(|| "pipe".into(), unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
    })?;
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn record(state: &StateDir, exit: &ExitRecord) {
    let json = serde_json::to_vec(exit).expect("exit records serialise");
    if let Err(e) = std::fs::write(state.exit(), json) {
        eprintln!(
            "dyno shim: record the exit in {}: {e}",
            state.exit().display()
        );
    }
}
