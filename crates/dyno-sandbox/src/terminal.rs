//! The standard streams of an attached one-off dyno (`heroku run`, `dyno run`): a pseudo-terminal
//! when the client has a terminal, pipes otherwise. The caller keeps [`ClientEnds`] (it relays
//! them to the client) and starts the shim with [`DynoEnds`] as its stdin, stdout and stderr
//! ([`crate::spec::OutputMode::Inherit`]); with a terminal, PID 1 makes the app a session leader
//! with the terminal as its controlling one, so that the client's Ctrl-C (a raw `\x03` written to
//! the master) is the line discipline's SIGINT to the app's foreground process group, and the
//! master's close is a SIGHUP to it.

use std::os::fd::{FromRawFd, OwnedFd};

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// The caller's ends.
#[derive(Debug)]
pub enum ClientEnds {
    /// The terminal's master: the client's bytes are written to it, the app's output read.
    Terminal { master: OwnedFd },
    /// The write end of the app's stdin and the read end of its stdout and stderr (one pipe:
    /// the client sees both interleaved, as in a terminal).
    Pipes { stdin: OwnedFd, output: OwnedFd },
}

/// The dyno's ends: the shim's stdin, stdout and stderr, inherited by every process of the dyno.
#[derive(Debug)]
pub struct DynoEnds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Whether they are a terminal (the app then gets it as its controlling terminal).
    pub terminal: bool,
}

/// A new pseudo-terminal of `size` (80×24 when the client gave none), or a pair of pipes when
/// `terminal` is false. Every fd is close-on-exec; the shim's spawn dups the dyno's ends onto
/// 0, 1 and 2.
pub fn open(terminal: bool, size: Option<TermSize>) -> std::io::Result<(ClientEnds, DynoEnds)> {
    if terminal {
        let (master, slave) = open_pty(size.unwrap_or(TermSize { cols: 80, rows: 24 }))?;
        let dyno = DynoEnds {
            stdin: slave.try_clone()?,
            stdout: slave.try_clone()?,
            stderr: slave,
            terminal: true,
        };
        return Ok((ClientEnds::Terminal { master }, dyno));
    }
    let (stdin_read, stdin_write) = crate::sys::pipe()?;
    let (output_read, output_write) = crate::sys::pipe()?;
    let dyno = DynoEnds {
        stdin: stdin_read,
        stdout: output_write.try_clone()?,
        stderr: output_write,
        terminal: false,
    };
    Ok((
        ClientEnds::Pipes {
            stdin: stdin_write,
            output: output_read,
        },
        dyno,
    ))
}

fn open_pty(size: TermSize) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out pointers; a null name and termios (the defaults); the winsize outlives
    // the call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &winsize,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: both are new fds that nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        set_cloexec(fd)?;
    }
    Ok((master, slave))
}

fn set_cloexec(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an fd we own, with an integer flag.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// In the app's child before exec (PID 1's `pre_exec`): a new session whose controlling
/// terminal is stdin. Only async-signal-safe calls.
pub fn take_controlling_terminal() -> std::io::Result<()> {
    // SAFETY: setsid and ioctl(TIOCSCTTY) with integer arguments.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_terminal_has_the_clients_size_and_echoes() {
        let (client, dyno) = open(
            true,
            Some(TermSize {
                cols: 132,
                rows: 40,
            }),
        )
        .unwrap();
        assert!(dyno.terminal);
        // SAFETY: winsize is plain data; zeroed is a valid value.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills the winsize we pass.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&dyno.stdout),
                libc::TIOCGWINSZ,
                &mut size,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!((size.ws_col, size.ws_row), (132, 40));
        let ClientEnds::Terminal { master } = client else {
            panic!("a terminal was asked for");
        };
        let mut master = std::fs::File::from(master);
        master.write_all(b"hi\n").unwrap();
        let mut line = [0u8; 4];
        std::fs::File::from(dyno.stdin)
            .read_exact(&mut line[..3])
            .unwrap();
        assert_eq!(&line[..3], b"hi\n");
    }

    #[test]
    fn pipes_carry_stdin_and_merge_output() {
        let (client, dyno) = open(false, None).unwrap();
        assert!(!dyno.terminal);
        let ClientEnds::Pipes { stdin, output } = client else {
            panic!("pipes were asked for");
        };
        std::fs::File::from(stdin).write_all(b"in").unwrap();
        let mut got = [0u8; 2];
        std::fs::File::from(dyno.stdin)
            .read_exact(&mut got)
            .unwrap();
        assert_eq!(&got, b"in");
        std::fs::File::from(dyno.stdout).write_all(b"o").unwrap();
        std::fs::File::from(dyno.stderr).write_all(b"e").unwrap();
        let mut out = String::new();
        std::fs::File::from(output)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "oe");
    }
}
