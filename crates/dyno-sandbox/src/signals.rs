//! Signals for the shim and PID 1: both block the signals they handle and take them one by one
//! with `sigwaitinfo`, so no work happens in a signal handler.
//!
//! The handler we install does nothing, but it must exist: the kernel drops a signal sent to a
//! pid namespace's init (even from the host) when its disposition is the default, blocked or not.

use std::io;

/// What a dyno's processes are told about: stop, reload, and the user signals apps use.
pub const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

extern "C" fn ignore(_: libc::c_int) {}

/// A set of signals taken synchronously.
pub struct Waiter {
    set: libc::sigset_t,
}

impl Waiter {
    /// Installs the no-op handler for, and blocks, `FORWARDED` and `SIGCHLD`.
    pub fn install() -> io::Result<Waiter> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it; sigaction gets
        // a valid, zeroed-then-filled struct whose handler is an extern "C" fn that does
        // nothing (async-signal-safe); pthread_sigmask gets valid pointers.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
                libc::sigaddset(&mut set, *signal);
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = ignore as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                action.sa_flags = libc::SA_RESTART;
                if libc::sigaction(*signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Waiter { set })
        }
    }

    /// The next signal.
    pub fn next(&self) -> libc::c_int {
        loop {
            // SAFETY: `set` was initialised in `install`; a null siginfo pointer is allowed.
            let signal = unsafe { libc::sigwaitinfo(&self.set, std::ptr::null_mut()) };
            if signal > 0 {
                return signal;
            }
            // EINTR (a signal outside the set, e.g. SIGSTOP/SIGCONT): wait again.
        }
    }
}

impl Waiter {
    /// A descriptor that becomes readable when one of the waited-for signals is pending, for a
    /// caller that also waits for other things (`poll`). Read it with [`read_signal`].
    pub fn signalfd(&self) -> io::Result<std::os::fd::OwnedFd> {
        // SAFETY: `set` was initialised in `install`; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &self.set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nothing else.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }
}

/// The next pending signal of a [`Waiter::signalfd`], if any.
pub fn read_signal(fd: std::os::fd::BorrowedFd<'_>) -> Option<libc::c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: signalfd_siginfo is plain data; read gets a buffer of exactly its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        );
        (n == size as isize).then_some(info.ssi_signo as libc::c_int)
    }
}

/// Unblocks every signal. For a child between fork and exec: a blocked mask is inherited across
/// exec (std's `Command` keeps it), and the app must start with nothing blocked.
pub fn unblock_all() -> io::Result<()> {
    // SAFETY: sigemptyset and pthread_sigmask are async-signal-safe and get valid pointers.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Sends `signal` to `pid` (`-1`: every process we may signal; from a namespace's init, that
/// is every other process of the namespace). A process that is already gone is not an error.
pub fn send(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Status of a reaped child: `Ok(code)` for an exit, `Err(signal)` for a kill.
pub fn decode(status: libc::c_int) -> Result<i32, i32> {
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(libc::WTERMSIG(status))
    }
}

/// Reaps one exited child, if any: `(pid, status)`.
pub fn reap_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: status is a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}
