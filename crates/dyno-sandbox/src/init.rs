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

/// What the shim tells PID 1 on its command line:
/// `--uid U --gid G [--no-seccomp] [--seccomp-allow CALL,…] [--report-fd FD] [--tty] --
/// COMMAND…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    pub uid: u32,
    pub gid: u32,
    pub seccomp: SeccompSpec,
    /// Where the filter's listener goes (a socket to the shim, inherited across exec).
    pub report_fd: Option<RawFd>,
    /// stdin is a terminal the app takes as its controlling one (`--tty`).
    pub terminal: bool,
    pub command: String,
}

impl InitArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--uid".to_string(),
            self.uid.to_string(),
            "--gid".into(),
            self.gid.to_string(),
        ];
        if self.seccomp.off {
            args.push("--no-seccomp".into());
        }
        if !self.seccomp.allow.is_empty() {
            args.push("--seccomp-allow".into());
            args.push(self.seccomp.allow.join(","));
        }
        if let Some(fd) = self.report_fd {
            args.push("--report-fd".into());
            args.push(fd.to_string());
        }
        if self.terminal {
            args.push("--tty".into());
        }
        args.push("--".into());
        args.push(self.command.clone());
        args
    }

    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<InitArgs, InitUsage> {
        let mut uid = None;
        let mut gid = None;
        let mut seccomp = SeccompSpec::default();
        let mut report_fd = None;
        let mut terminal = false;
        let mut rest = args.iter().map(AsRef::as_ref);
        let number = |flag: &'static str, value: Option<&str>| -> Result<i64, InitUsage> {
            value
                .and_then(|v| v.parse().ok())
                .ok_or(InitUsage::NotANumber(flag))
        };
        loop {
            match rest.next() {
                Some("--uid") => uid = Some(number("--uid", rest.next())? as u32),
                Some("--gid") => gid = Some(number("--gid", rest.next())? as u32),
                Some("--no-seccomp") => seccomp.off = true,
                Some("--seccomp-allow") => {
                    let calls = rest.next().ok_or(InitUsage::Usage)?;
                    seccomp.allow = calls.split(',').map(str::to_string).collect();
                }
                Some("--report-fd") => {
                    report_fd = Some(number("--report-fd", rest.next())? as RawFd)
                }
                Some("--tty") => terminal = true,
                Some("--") => break,
                _ => return Err(InitUsage::Usage),
            }
        }
        let command: Vec<&str> = rest.collect();
        match (uid, gid, command.is_empty()) {
            (Some(uid), Some(gid), false) => Ok(InitArgs {
                uid,
                gid,
                seccomp,
                report_fd,
                terminal,
                command: command.join(" "),
            }),
            _ => Err(InitUsage::Usage),
        }
    }
}

const INIT_USAGE: &str = "usage: __init --uid UID --gid GID [--no-seccomp] \
                          [--seccomp-allow CALL,…] [--report-fd FD] [--tty] -- COMMAND";

/// A command line PID 1 cannot run with (the shim writes it; only a bug gets here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitUsage {
    #[error("{0} needs a number; {INIT_USAGE}")]
    NotANumber(&'static str),
    #[error("{INIT_USAGE}")]
    Usage,
}

/// Runs the app; returns the exit status to exit with (128 + signal when the app was killed,
/// as shells report it).
pub fn run(args: &InitArgs) -> i32 {
    // SAFETY: the shim handed us this fd on our command line; nothing else owns it.
    let report = args.report_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
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
    // Handlers reset to the default on exec; the mask must be emptied by hand (it is inherited,
    // and std does not clear it).
    let mut app = app_command(&args.command);
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
                // The dyno ends with its main process: nothing it left may outlive it.
                signals::send(-1, libc::SIGKILL);
                while signals::reap_any().is_some() {}
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

fn fail(message: &str) -> i32 {
    eprintln!("dyno init: {message}");
    127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_args_round_trip() {
        let args = InitArgs {
            uid: 800001,
            gid: 800001,
            seccomp: SeccompSpec {
                off: false,
                allow: vec!["io_uring_setup".into(), "io_uring_enter".into()],
            },
            report_fd: Some(5),
            terminal: true,
            command: "python3 -m http.server -- x".into(),
        };
        assert_eq!(InitArgs::parse(&args.to_args()), Ok(args.clone()));
        let bare = InitArgs {
            seccomp: SeccompSpec::default(),
            report_fd: None,
            terminal: false,
            ..args
        };
        assert_eq!(InitArgs::parse(&bare.to_args()), Ok(bare));
        assert!(InitArgs::parse(&["--uid", "1", "--", "x"]).is_err());
        assert!(InitArgs::parse(&["--uid", "1", "--gid", "1", "--"]).is_err());
        assert!(InitArgs::parse(&["--uid", "x", "--gid", "1", "--", "y"]).is_err());
    }
}

/// How the app's command runs: `bash -c COMMAND`, as on Heroku. A command that is only `exec`
/// and plain words, the first naming a file by its path (`exec bin/server --port 5000`), is
/// exec'd by PID 1 itself: bash would exec the very same argv, and starting bash (its loader,
/// its startup files' lookups) costs about a millisecond of every start. The environment gets
/// what bash's exec would have added (`PWD`, and `SHLVL` when unset).
fn app_command(command: &str) -> Command {
    match plain_exec(command) {
        Some(words) => {
            let mut app = Command::new(words[0]);
            app.args(&words[1..]).env("PWD", "/app");
            if std::env::var_os("SHLVL").is_none() {
                app.env("SHLVL", "0");
            }
            app
        }
        None => {
            let mut app = Command::new("/bin/bash");
            app.arg("-c").arg(command);
            app
        }
    }
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
