//! A one-shot timer with microsecond precision: a `timerfd` under tokio's reactor. tokio's own
//! timers tick in whole milliseconds and round up, so a check "in 250 µs" would come 1–2 ms
//! later; the first readiness checks of a booting dyno need finer steps (see
//! [`crate::lifecycle::READINESS_FAST_INTERVAL`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

pub struct FineTimer {
    fd: AsyncFd<OwnedFd>,
}

impl FineTimer {
    pub fn new() -> io::Result<FineTimer> {
        // SAFETY: timerfd_create with constant flags; the fd is ours from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and unchanged
        // for as long as it lives.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(FineTimer { fd })
    }

    /// Fires once, `after` from now (replacing an earlier arming). Zero fires at once.
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a valid itimerspec; no old value wanted.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Until the timer fires (cancel-safe: a firing missed by a dropped call is seen by the
    /// next one).
    pub async fn fired(&self) {
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                // The reactor is gone (the runtime is shutting down): never fires.
                return std::future::pending().await;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: a valid fd and an 8-byte buffer, as timerfd reads want.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
            if n == 8 {
                return;
            }
            ready.clear_ready();
        }
    }
}
