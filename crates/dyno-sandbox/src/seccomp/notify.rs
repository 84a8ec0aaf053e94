//! The shim's side of denied calls: it holds the filter's listener, answers every denied call
//! with `EPERM` (the app goes on) and says which calls were denied, so that the operator can
//! find out what an app needs.
//!
//! A hostile dyno could make denied calls in a loop to burn the shim's CPU, which its cgroup
//! does not count: the shim answers at most [`ANSWERS_PER_SECOND`] per second and lets the rest
//! wait (the calling thread blocks meanwhile — it only slows itself). Reports are bounded too:
//! the first denial of each call at once, then a count at most once per [`REPEAT_EVERY`].

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub const ANSWERS_PER_SECOND: u32 = 1000;
pub const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// The audit architecture of native calls; anything else is a foreign (32-bit) call.
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(not(target_arch = "x86_64"))]
const NATIVE_ARCH: u32 = 0;

#[derive(Debug, Default)]
struct Seen {
    /// Denials since the last report.
    unreported: u64,
    last_report: Option<Instant>,
}

/// Denied calls of one dyno.
#[derive(Debug)]
pub struct Denials {
    listener: OwnedFd,
    /// The kernel's size of `struct seccomp_notif` (it may grow in later kernels).
    notif_size: usize,
    seen: HashMap<(u32, i32), Seen>,
    window_start: Instant,
    answered_in_window: u32,
}

/// What the shim says about denied calls: one line each.
pub type Report = String;

impl Denials {
    pub fn new(listener: OwnedFd) -> Denials {
        Denials {
            listener,
            notif_size: notif_size(),
            seen: HashMap::new(),
            window_start: Instant::now(),
            answered_in_window: 0,
        }
    }

    /// The fd to poll for denied calls, or -1 while this second's answers are used up.
    pub fn poll_fd(&self, now: Instant) -> i32 {
        if self.budget_left(now) {
            self.listener.as_raw_fd()
        } else {
            -1
        }
    }

    /// How long the shim may sleep before [`Denials::tick`] has work: the end of a spent
    /// second, or the next report of repeated denials.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let mut next = None::<Duration>;
        let mut at = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
        if !self.budget_left(now) {
            at((self.window_start + Duration::from_secs(1)).saturating_duration_since(now));
        }
        for seen in self.seen.values().filter(|s| s.unreported > 0) {
            let last = seen.last_report.unwrap_or(now);
            at((last + REPEAT_EVERY).saturating_duration_since(now));
        }
        next
    }

    fn budget_left(&self, now: Instant) -> bool {
        now.duration_since(self.window_start) >= Duration::from_secs(1)
            || self.answered_in_window < ANSWERS_PER_SECOND
    }

    /// The listener is readable: answer one denied call. `Err` when the listener failed (it is
    /// done: drop it).
    pub fn answer(&mut self, now: Instant, reports: &mut Vec<Report>) -> std::io::Result<()> {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.answered_in_window = 0;
        }
        // u64s: `struct seccomp_notif` is 8-byte aligned.
        let mut buf = vec![0u64; self.notif_size.div_ceil(8)];
        // SAFETY: the buffer is zeroed (the kernel insists) and at least as large as the
        // kernel's struct seccomp_notif.
        let rc = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // The caller died meanwhile, or a signal: nothing to answer.
                Some(libc::ENOENT) | Some(libc::EINTR) => Ok(()),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel filled at least libc's struct seccomp_notif, which is a prefix of
        // its own; the buffer is aligned for it.
        let notif: libc::seccomp_notif =
            unsafe { std::ptr::read(buf.as_ptr().cast::<libc::seccomp_notif>()) };
        let response = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: -libc::EPERM,
            flags: 0,
        };
        // SAFETY: a valid response struct for this listener.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &response as *const libc::seccomp_notif_resp,
            );
        }
        self.answered_in_window += 1;
        let key = (notif.data.arch, notif.data.nr);
        let seen = self.seen.entry(key).or_default();
        seen.unreported += 1;
        if seen.last_report.is_none() {
            seen.last_report = Some(now);
            seen.unreported = 0;
            reports.push(format!(
                "Denied system call {} (EPERM): it is not in the dyno's seccomp profile",
                call_name(key)
            ));
        }
        Ok(())
    }

    /// Reports of denials repeated since the last report, where one is due.
    pub fn tick(&mut self, now: Instant, reports: &mut Vec<Report>) {
        for (key, seen) in &mut self.seen {
            let due = seen
                .last_report
                .is_some_and(|last| now.duration_since(last) >= REPEAT_EVERY);
            if seen.unreported > 0 && due {
                reports.push(format!(
                    "Denied system call {} {} more times (EPERM)",
                    call_name(*key),
                    seen.unreported
                ));
                seen.unreported = 0;
                seen.last_report = Some(now);
            }
        }
    }
}

fn call_name((arch, nr): (u32, i32)) -> String {
    if arch != NATIVE_ARCH {
        return format!("#{nr} of a foreign architecture (audit arch {arch:#x})");
    }
    match super::name(i64::from(nr)) {
        Some(name) => name.to_string(),
        None => format!("#{nr}"),
    }
}

/// The kernel's `sizeof(struct seccomp_notif)`, never less than libc's.
fn notif_size() -> usize {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES fills the struct we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    let ours = std::mem::size_of::<libc::seccomp_notif>();
    if rc < 0 {
        return ours;
    }
    usize::from(sizes.seccomp_notif).max(ours)
}
