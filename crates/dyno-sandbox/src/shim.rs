//! The shim (`dyno __shim STATE_DIR`): the parent of a dyno's PID 1, like conmon. It lives in
//! its own session (a Ctrl-C at the daemon's terminal does not reach the dyno), forwards the
//! signals it gets to PID 1, and records how the dyno ended in the state dir, so that the exit is
//! never lost even when the daemon is gone.
//!
//! It must be single-threaded until it forks: the child joins and unshares mount namespaces,
//! which the kernel refuses to a thread that shares its filesystem state with others, and then
//! goes on as PID 1 without an exec.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use std::time::Instant;

use crate::init::InitArgs;
use crate::output::Outbox;
use crate::seccomp::notify::Denials;

use crate::rootfs;
use crate::signals::{self, Waiter};
use crate::spec::{ExitRecord, OutputMode, SandboxSpec, StateDir};
use crate::sys::{check, io_context, SysError, SysResult};

/// Runs the shim; returns the process exit status (the app's).
pub fn run(state_dir: &Path) -> i32 {
    // The dyno keeps the open-file limit its daemon was started with, not the daemon's raised one.
    if let Err(e) = crate::limits::restore_open_files_from_env() {
        eprintln!("dyno shim: open-file limit: {e}");
    }
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
    let waiter = io_context(|| "signals".into(), Waiter::install())?;
    // The relay's pipe exists before the fork: the child's stdout and stderr are its write end.
    let mut relay = match spec.output {
        OutputMode::Inherit => None,
        OutputMode::Relay => Some(Relay::open(state)?),
    };
    // SAFETY: unshare with a flag constant; affects only the children we fork from now on.
    check(|| "unshare pid namespace".into(), unsafe {
        libc::unshare(libc::CLONE_NEWPID)
    })?;
    let (errors_in, errors_out) = io_context(|| "pipe".into(), crate::sys::pipe())?;
    // PID 1 sends the seccomp filter's listener back through this: the shim answers the calls
    // the filter denies (see `crate::seccomp::notify`).
    let (report_in, report_out) = socketpair()?;
    // SAFETY: this process is single-threaded (no thread was started), so the child may
    // allocate and run ordinary Rust code: it goes on as PID 1.
    let pid = check(|| "fork".into(), unsafe { libc::fork() })?;
    if pid == 0 {
        // The child keeps only what PID 1 needs: the relay's other ends and the shim's side of
        // the sockets are the shim's.
        drop(errors_in);
        drop(report_in);
        let output = relay.take().and_then(|mut r| r.child_end.take());
        let code = match enter(&spec, state, netns, output, report_out) {
            Ok(init) => {
                // Closing it tells the shim the sandbox is built.
                drop(errors_out);
                crate::init::run(init)
            }
            Err(e) => {
                let failure = match e.what == GATE_CLOSED {
                    true => GATE_CLOSED.to_owned(),
                    false => e.to_string(),
                };
                let _ = File::from(errors_out).write_all(failure.as_bytes());
                126
            }
        };
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(errors_out);
    drop(report_out);
    if let Some(relay) = &mut relay {
        relay.child_end = None;
    }
    let _ = std::fs::write(state.init_pid(), pid.to_string());
    // Empty once PID 1 has closed it: the sandbox is built.
    let mut failure = String::new();
    let _ = File::from(errors_in).read_to_string(&mut failure);
    if !failure.is_empty() {
        let mut status = 0;
        // SAFETY: valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if failure == GATE_CLOSED {
            record(state, &ExitRecord::Abandoned);
            return Ok(126);
        }
        return Err(SysError {
            what: format!("build the sandbox of {}", spec.name),
            source: std::io::Error::other(failure),
        });
    }
    let signals = io_context(|| "signalfd".into(), waiter.signalfd())?;
    let mut report = Some(report_in);
    let mut denials: Option<Denials> = None;
    loop {
        let now = Instant::now();
        let pollfd = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Fixed slots first: signals, PID 1's report socket, the filter's listener.
        let mut fds = vec![
            pollfd(signals.as_raw_fd()),
            pollfd(report.as_ref().map_or(-1, |r| r.as_raw_fd())),
            pollfd(denials.as_ref().map_or(-1, |d| d.poll_fd(now))),
        ];
        if let Some(relay) = &relay {
            relay.poll_fds(&mut fds);
        }
        let timeout = [
            denials.as_ref().and_then(|d| d.timeout(now)),
            relay.as_ref().and_then(Relay::timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(-1, |t| t.as_millis().min(60_000) as i32 + 1);
        // SAFETY: a valid array of `fds.len()` pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            continue; // EINTR
        }
        let now = Instant::now();
        if fds[1].revents != 0 {
            if let Some(socket) = report.take() {
                // One message: the listener; anything else (PID 1 ran without a filter or
                // failed) closes the socket.
                if let Ok(Some(listener)) = crate::init::receive_fd(&socket) {
                    denials = Some(Denials::new(listener));
                }
            }
        }
        let mut reports = Vec::new();
        if let Some(d) = &mut denials {
            if fds[2].revents & libc::POLLIN != 0 {
                if d.answer(now, &mut reports).is_err() {
                    denials = None;
                }
            } else if fds[2].revents != 0 {
                // POLLHUP: no process of the dyno is left to make calls.
                denials = None;
            }
        }
        if let Some(d) = &mut denials {
            d.tick(now, &mut reports);
        }
        for line in reports {
            match &mut relay {
                Some(relay) => relay.outbox.push_notice(&line),
                None => eprintln!("dyno shim: {}: {line}", spec.name),
            }
        }
        let mut ended = None;
        if fds[0].revents != 0 {
            while let Some(signal) = signals::read_signal(signals.as_fd()) {
                if signal != libc::SIGCHLD {
                    signals::send(pid, signal);
                    continue;
                }
                let mut status = 0;
                // SAFETY: valid out pointer.
                if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                    ended = Some(status);
                }
            }
        }
        if let Some(relay) = &mut relay {
            relay.handle(&fds[3..]);
        }
        if let Some(status) = ended {
            // The output the app wrote before it ended goes out (or into `unsent.log`) before
            // the exit is recorded: whoever reads the exit has the lines too.
            if let Some(relay) = relay.take() {
                relay.finish(state);
            }
            let (record_, code) = match signals::decode(status) {
                Ok(code) => (ExitRecord::Exited(code), code),
                Err(signal) => (ExitRecord::Signaled(signal), 128 + signal),
            };
            record(state, &record_);
            return Ok(code);
        }
    }
}

/// The shim's side of [`OutputMode::Relay`] (see [`crate::output`]).
struct Relay {
    /// The read end of the app's output; `None` once every writer is gone.
    pipe: Option<OwnedFd>,
    /// The write end, for the child until the fork.
    child_end: Option<OwnedFd>,
    listener: UnixListener,
    reader: Option<UnixStream>,
    outbox: Outbox,
    /// When the reader last took output: while it keeps taking, a full outbox waits for it
    /// (the app's writes block, as on any pipe) instead of dropping lines.
    last_progress: Instant,
}

/// How long a full outbox waits for a connected reader that takes nothing before the shim
/// reads on and drops the oldest lines (an L10 line says how many): a stuck daemon must not
/// stop the app.
const READER_STALL: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes read from the app's pipe at a time.
const PIPE_READ: usize = 64 * 1024;

impl Relay {
    fn open(state: &StateDir) -> SysResult<Relay> {
        let (pipe, child_end) = io_context(|| "pipe".into(), crate::sys::pipe())?;
        set_nonblocking(&pipe)?;
        let path = state.log_socket();
        let _ = std::fs::remove_file(&path);
        let listener = io_context(
            || format!("listen on {}", path.display()),
            UnixListener::bind(&path).and_then(|l| l.set_nonblocking(true).map(|()| l)),
        )?;
        // Only root (the daemon) reads a dyno's output.
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        Ok(Relay {
            pipe: Some(pipe),
            child_end: Some(child_end),
            listener,
            reader: None,
            outbox: Outbox::default(),
            last_progress: Instant::now(),
        })
    }

    /// Whether the pipe waits for the reader: it holds a full outbox and took some of it
    /// within [`READER_STALL`].
    fn waits_for_reader(&self) -> bool {
        self.reader.is_some()
            && !self.outbox.has_room(PIPE_READ)
            && self.last_progress.elapsed() < READER_STALL
    }

    /// How long `poll` may sleep before the relay must look again (the end of a wait for the
    /// reader); `None`: no limit.
    fn timeout(&self) -> Option<std::time::Duration> {
        self.waits_for_reader()
            .then(|| READER_STALL.saturating_sub(self.last_progress.elapsed()))
    }

    /// Appends the relay's fds in this order: the pipe, the listener, the reader (each if any).
    fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) {
        let fd = |fd: i32, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let pipe = match &self.pipe {
            Some(p) if !self.waits_for_reader() => p.as_raw_fd(),
            _ => -1,
        };
        fds.push(fd(pipe, libc::POLLIN));
        fds.push(fd(self.listener.as_raw_fd(), libc::POLLIN));
        let mut events = libc::POLLIN;
        if !self.outbox.is_empty() {
            events |= libc::POLLOUT;
        }
        fds.push(fd(
            self.reader.as_ref().map_or(-1, |r| r.as_raw_fd()),
            events,
        ));
    }

    fn handle(&mut self, revents: &[libc::pollfd]) {
        if revents[0].revents != 0 {
            self.read_pipe();
        }
        if revents[1].revents != 0 {
            if let Ok((reader, _)) = self.listener.accept() {
                // A new reader (a restarted daemon) replaces the old one.
                if reader.set_nonblocking(true).is_ok() {
                    self.reader = Some(reader);
                    self.outbox.reader_connected();
                    self.last_progress = Instant::now();
                }
            }
        }
        if let Some(reader) = &mut self.reader {
            let events = revents[2].revents;
            let mut gone = events & (libc::POLLHUP | libc::POLLERR) != 0;
            if events & libc::POLLIN != 0 {
                // Readers send nothing; a read of 0 is the reader closing.
                let mut sink = [0u8; 256];
                match reader.read(&mut sink) {
                    Ok(0) => gone = true,
                    Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => gone = true,
                    _ => {}
                }
            }
            if gone {
                self.reader = None;
            }
        }
        self.send();
    }

    /// Reads what the pipe has, without blocking; at the end of the output, closes it.
    fn read_pipe(&mut self) {
        let Some(pipe) = &self.pipe else {
            return;
        };
        let mut buf = [0u8; PIPE_READ];
        while !self.waits_for_reader() {
            // SAFETY: a valid fd and a writable buffer of `buf.len()` bytes.
            let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.outbox.push_bytes(&buf[..n as usize]);
                continue;
            }
            if n == 0 {
                self.pipe = None;
                self.outbox.finish();
            } else if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
    }

    fn send(&mut self) {
        if let Some(reader) = &self.reader {
            self.outbox
                .report_drops("because the dyno's reader was too slow");
            let before = self.outbox.held();
            if self.outbox.send_to(reader.as_fd()).is_err() {
                self.reader = None;
            } else if self.outbox.held() < before {
                self.last_progress = Instant::now();
            }
        }
    }

    /// PID 1 is gone, and with it every process of its pid namespace: the pipe closes as soon
    /// as the last of them has died. Read it to its end, hand the rest to the reader, and leave
    /// what no reader took in `unsent.log`.
    fn finish(mut self, state: &StateDir) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.pipe.is_some() && std::time::Instant::now() < deadline {
            if self.waits_for_reader() {
                wait_for(self.reader.as_ref(), libc::POLLOUT, 50);
            } else {
                wait_for(self.pipe.as_ref(), libc::POLLIN, 50);
            }
            self.read_pipe();
            self.send();
        }
        self.outbox.finish();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.reader.is_some()
            && !self.outbox.is_empty()
            && std::time::Instant::now() < deadline
        {
            wait_for(self.reader.as_ref(), libc::POLLOUT, 50);
            self.send();
        }
        if !self.outbox.is_empty() {
            let _ = std::fs::write(state.unsent(), self.outbox.take_all());
        }
        let _ = std::fs::remove_file(state.log_socket());
    }
}

/// Waits up to `ms` for `events` on `fd`.
fn wait_for(fd: Option<&impl AsRawFd>, events: libc::c_short, ms: i32) {
    let Some(fd) = fd else {
        return;
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

fn set_nonblocking(fd: &OwnedFd) -> SysResult<()> {
    // SAFETY: fcntl on a valid fd with integer flags.
    unsafe {
        let flags = check(
            || "fcntl".into(),
            libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
        )?;
        check(
            || "fcntl".into(),
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK),
        )?;
    }
    Ok(())
}

/// In the child, as root: new mount, UTS and IPC namespaces, the dyno's network, the
/// filesystem view, the hostname; then this process goes on as the new pid namespace's PID 1
/// (no exec: the shim's code is PID 1's too), with what it is to run.
fn enter(
    spec: &SandboxSpec,
    state: &StateDir,
    netns: File,
    output: Option<OwnedFd>,
    report: OwnedFd,
) -> SysResult<InitArgs> {
    // The daemon refuses NUL bytes in commands and config; a spec that has one anyway ends
    // this start with an error before anything is built (PID 1 could not run it).
    let nul = |what: String| {
        io_context(
            || format!("{what} has a NUL byte"),
            Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
        )
    };
    if spec.command.contains('\0') {
        return nul("the command".into());
    }
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return nul(format!("config var {k}"));
    }
    if let Some(output) = output {
        // SAFETY: dup2 onto the standard descriptors; the copies are not close-on-exec.
        unsafe {
            check(|| "dup2 stdout".into(), libc::dup2(output.as_raw_fd(), 1))?;
            check(|| "dup2 stderr".into(), libc::dup2(output.as_raw_fd(), 2))?;
        }
    }
    // Into the dyno's cgroup first, so that its cgroup namespace is rooted there and every
    // process of the dyno is counted. The shim stays outside: an OOM kill never hits it. A
    // gated dyno's cgroup is made while its sandbox is built: it joins at the gate.
    let mut namespaces = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if !spec.network_gate && spec.cgroup.is_some() {
        join_cgroup(spec)?;
        namespaces |= libc::CLONE_NEWCGROUP;
    }
    // A build's binds may be mounts made after the template: it copies the host's namespace.
    if let Some(template) = spec
        .mount_template
        .as_deref()
        .filter(|_| spec.binds.is_empty())
    {
        crate::template::join_if_there(template)?;
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
    drop(netns);
    rootfs::build(spec, state, || pass_the_gate(spec))?;
    io_context(
        || format!("set hostname {}", spec.hostname),
        rustix::system::sethostname(spec.hostname.as_bytes()).map_err(Into::into),
    )?;
    io_context(
        || "name PID 1's command line".into(),
        crate::init::set_cmdline(),
    )?;
    Ok(InitArgs {
        uid: spec.uid,
        gid: spec.gid,
        seccomp: spec.seccomp.clone(),
        report: Some(report),
        terminal: spec.terminal,
        stdin_from_null: spec.network_gate,
        env: spec.env.clone(),
        // After the pivot: the slug is at /app.
        command: spec.startup_command(Path::new("/app")),
    })
}

fn join_cgroup(spec: &SandboxSpec) -> SysResult<()> {
    let Some(cgroup) = &spec.cgroup else {
        return Ok(());
    };
    cgroup.join_self().map_err(|e| SysError {
        what: format!("join dyno cgroup {}", cgroup.id()),
        source: std::io::Error::other(e),
    })
}

/// What the shim records as [`ExitRecord::Abandoned`]: the network gate closed unopened.
const GATE_CLOSED: &str =
    "the dyno's network was never completed (its start was given up); the app did not run";

/// A gated dyno's last step in the host's tree, its sandbox built but for the pivot: waits for
/// the caller's byte on the gate (stdin; the dyno's cgroup is made and its network complete),
/// joins the cgroup and roots a cgroup namespace there (PID 1 gives the app the dyno's
/// `/dev/null` as stdin instead of the gate). What ran before is charged to the daemon's cgroup: the sandbox's
/// own mounts, a fixed set, nothing of the app's.
fn pass_the_gate(spec: &SandboxSpec) -> SysResult<()> {
    if !spec.network_gate {
        return Ok(());
    }
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: reads at most one byte into a buffer of one.
        match unsafe { libc::read(0, byte.as_mut_ptr().cast(), 1) } {
            1 => break,
            0 => {
                return Err(SysError {
                    what: GATE_CLOSED.into(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return io_context(|| "wait at the network gate".into(), Err(e));
                }
            }
        }
    }
    if spec.cgroup.is_some() {
        join_cgroup(spec)?;
        // SAFETY: unshare with a flag constant.
        check(|| "unshare cgroup namespace".into(), unsafe {
            libc::unshare(libc::CLONE_NEWCGROUP)
        })?;
    }
    Ok(())
}

fn socketpair() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    check(|| "socketpair".into(), unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
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
