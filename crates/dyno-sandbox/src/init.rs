//! PID 1 of a dyno (`dyno __init`): drops to the app's identity, installs the system-call
//! filter, starts the Procfile command, reaps every orphan, forwards signals to every process of
//! the dyno, and exits with the app's status when the app's main process ends (taking whatever
//! it left behind with it).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::identity;
use crate::seccomp;
use crate::signals::{self, Waiter};
use crate::spec::SeccompSpec;

/// What PID 1 is told by the shim that forked it.
#[derive(Debug)]
pub struct InitArgs {
    pub uid: u32,
    pub gid: u32,
    pub seccomp: SeccompSpec,
    /// Where the filter's listener goes (a socket to the shim).
    pub report: Option<OwnedFd>,
    /// stdin is a terminal the app takes as its controlling one.
    pub terminal: bool,
    /// stdin is the gate (see [`crate::spec::SandboxSpec::network_gate`]): the app gets
    /// `/dev/null` instead.
    pub stdin_from_null: bool,
    /// The app's whole environment.
    pub env: Vec<(String, String)>,
    pub command: String,
}

/// What PID 1's command line reads (`ps` in the dyno shows it): the shim's, which the fork
/// gave it, names the dyno's state dir on the host.
pub const CMDLINE: &[u8] = b"dyno\0__init\0";

/// Rewrites this process's command line to [`CMDLINE`] in the memory that holds it, the rest of
/// it zeroed, and ends it there where the kernel allows (`PR_SET_MM_ARG_END` needs
/// `CAP_SYS_RESOURCE`, which a daemon in a container may lack: then the command line reads
/// [`CMDLINE`] followed by NUL bytes, still nothing of the host's).
pub fn set_cmdline() -> std::io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || std::io::Error::other("unreadable /proc/self/stat");
    // Fields 48 and 49 (arg_start, arg_end); field 3 is the first after the command's ")".
    let fields: Vec<&str> = stat[stat.rfind(')').ok_or_else(bad)? + 2..]
        .split(' ')
        .collect();
    let field = |n: usize| -> std::io::Result<usize> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(bad)
    };
    let (start, end) = (field(48)?, field(49)?);
    if end < start + CMDLINE.len() {
        return Err(std::io::Error::other("the command line has no room"));
    }
    // SAFETY: [start, end) is this process's argument area (the top of its stack), which the
    // kernel gave it at exec and no Rust object owns: std copied the arguments it parsed.
    unsafe {
        let area = start as *mut u8;
        std::ptr::copy_nonoverlapping(CMDLINE.as_ptr(), area, CMDLINE.len());
        std::ptr::write_bytes(area.add(CMDLINE.len()), 0, end - start - CMDLINE.len());
        let (end, none): (libc::c_ulong, libc::c_ulong) = ((start + CMDLINE.len()) as _, 0);
        libc::prctl(libc::PR_SET_MM, libc::PR_SET_MM_ARG_END, end, none, none);
    }
    Ok(())
}

/// Runs the app; returns the exit status to exit with (128 + signal when the app was killed,
/// as shells report it).
pub fn run(args: InitArgs) -> i32 {
    let report = args.report;
    let waiter = match Waiter::install() {
        Ok(w) => w,
        Err(e) => return fail(&format!("signals: {e}")),
    };
    if let Err(e) = identity::become_app_user(args.uid, args.gid) {
        return fail(&e.to_string());
    }
    // The app runs as our uid: without this it could ptrace PID 1 on a host whose
    // fs.suid_dumpable is not 0 (the kernel clears it on the uid change only by that setting).
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return fail(&format!(
            "make PID 1 undumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    // After no_new_privs (set above) and before anything of the app runs: every process of
    // the dyno is filtered, and a filter that cannot be installed stops the dyno.
    if !args.seccomp.off {
        let listener = match seccomp::compile(&args.seccomp.allow).and_then(|f| f.install()) {
            Ok(listener) => listener,
            Err(e) => return fail(&e.to_string()),
        };
        if let Some(report) = &report {
            if let Err(e) = send_fd(report, &listener) {
                return fail(&format!("hand the seccomp listener to the shim: {e}"));
            }
        }
    }
    // The app must not hold the shim's socket.
    drop(report);
    if args.stdin_from_null {
        if let Err(e) = stdin_from_null() {
            return fail(&format!("stdin from /dev/null: {e}"));
        }
    }
    // Handlers reset to the default on exec; the mask must be emptied by hand (it is inherited,
    // and std does not clear it).
    let mut app = app_command(&args.command, &args.env);
    app.current_dir("/app");
    let terminal = args.terminal;
    // SAFETY: the closure only calls pthread_sigmask, setsid and ioctl, which are
    // async-signal-safe.
    unsafe {
        app.pre_exec(move || {
            signals::unblock_all()?;
            // The app, not PID 1, owns the terminal: the line discipline's SIGINT reaches the
            // app's foreground group once, and PID 1 is never part of it.
            if terminal {
                crate::terminal::take_controlling_terminal()?;
            }
            Ok(())
        });
    }
    let app = app.spawn();
    let app = match app {
        Ok(app) => app.id() as libc::pid_t,
        Err(e) => return fail(&format!("start {:?}: {e}", args.command)),
    };
    loop {
        let signal = waiter.next();
        if signal != libc::SIGCHLD {
            // Every process of the dyno, daemonized grandchildren included.
            signals::send(-1, signal);
            continue;
        }
        while let Some((pid, status)) = signals::reap_any() {
            if pid == app {
                // The dyno ends with its main process: nothing it left may outlive it. PID 1's
                // exit does that: the kernel kills every other process of its pid namespace and
                // reaps them before the shim sees PID 1 end (a kill(-1) here would walk every
                // process of the host, thousands on a busy one, to find them).
                return match signals::decode(status) {
                    Ok(code) => code,
                    Err(signal) => 128 + signal,
                };
            }
        }
    }
}

/// Room for one fd in a message's control data (CMSG_SPACE, in u64s for alignment).
fn fd_control() -> Vec<u64> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    vec![0u64; space.div_ceil(8)]
}

/// A message of the one byte in `iov` with `control` as its control data.
fn fd_message(iov: &mut libc::iovec, control: &mut [u64]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zeroed is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    msg
}

/// Sends `fd` over the unix socket `socket` (SCM_RIGHTS).
fn send_fd(socket: &OwnedFd, fd: &OwnedFd) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = fd_control();
    let msg = fd_message(&mut iov, &mut control);
    // SAFETY: `msg` points into `iov`, `byte` and `control`, which outlive the call;
    // CMSG_FIRSTHDR/CMSG_DATA point inside `control`, which has room for one fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
        if libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one fd sent by [`send_fd`] (the shim's side).
pub fn receive_fd(socket: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = fd_control();
    let mut msg = fd_message(&mut iov, &mut control);
    // SAFETY: as in `send_fd`; the kernel fills `control`, and CMSG_FIRSTHDR returns null or a
    // header inside it.
    unsafe {
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n == 0 || cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// The dyno's `/dev/null` as stdin (opened in the dyno's root, so that the app sees the path
/// it knows).
fn stdin_from_null() -> std::io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 onto stdin of an fd we own; the copy is not close-on-exec.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn fail(message: &str) -> i32 {
    eprintln!("dyno init: {message}");
    127
}

/// How the app's command runs: `bash -c COMMAND`, as on Heroku. A command that is only `exec`
/// and plain words, the first naming a file by its path (`exec bin/server --port 5000`), is
/// exec'd by PID 1 itself: bash would exec the very same argv, and starting bash (its loader,
/// its startup files' lookups) costs about a millisecond of every start. The environment gets
/// what bash's exec would have added (`PWD`, and `SHLVL` when unset).
fn app_command(command: &str, env: &[(String, String)]) -> Command {
    let env = env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let Some(words) = plain_exec(command) else {
        let mut app = Command::new("/bin/bash");
        app.arg("-c").arg(command).env_clear().envs(env);
        return app;
    };
    let mut app = Command::new(words[0]);
    app.args(&words[1..]).env_clear().envs(env.clone());
    app.env("PWD", "/app");
    if !env.clone().any(|(k, _)| k == "SHLVL") {
        app.env("SHLVL", "0");
    }
    app
}

/// The words after `exec` when nothing in `command` is the shell's to interpret (no
/// expansion, quoting, globbing, redirection or list) and the program is a path.
fn plain_exec(command: &str) -> Option<Vec<&str>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    let mut words = command.split(' ');
    if words.next()? != "exec" {
        return None;
    }
    let words: Vec<&str> = words.collect();
    let program = words.first()?;
    let all_plain = words.iter().all(|w| !w.is_empty() && w.chars().all(plain));
    (all_plain && program.contains('/') && !program.contains('=')).then_some(words)
}

#[cfg(test)]
mod command_tests {
    use super::plain_exec;

    #[test]
    fn only_plain_exec_lines_skip_bash() {
        assert_eq!(
            plain_exec("exec /usr/bin/printf x"),
            Some(vec!["/usr/bin/printf", "x"])
        );
        assert_eq!(
            plain_exec("exec bin/server --port=5000 -v"),
            Some(vec!["bin/server", "--port=5000", "-v"])
        );
        for shell in [
            "exec gunicorn app:app",      // a PATH lookup: bash's
            "exec bin/server -p $PORT",   // expansion
            "exec bin/server 'a b'",      // quoting
            "exec bin/server *.rb",       // globbing
            "exec bin/server > log",      // redirection
            "exec bin/server; echo done", // a list
            "exec bin/server  x",         // an empty word: bash's splitting
            "exec FOO=1/x bin/server",    // an assignment
            "bin/server",                 // no exec: bash stays the parent
            "exec",
            "exec ~/server",
            "exec bin/server\tx",
        ] {
            assert_eq!(plain_exec(shell), None, "{shell}");
        }
    }
}
