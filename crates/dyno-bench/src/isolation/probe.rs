//! The anchor of `dyno bench isolation` and of `dyno bench router`'s scale storm: how late a
//! thread that no dyno touches wakes up.
//!
//! A thread of the bench, pinned to the first CPU of its own set (the CPU the daemon keeps for
//! the router and light dynos, `--cpu-reserve`), sleeps 1 ms at a time and records how much
//! later than asked it ran again. It shares nothing with the abuser but the machine: no
//! cgroup, no namespace, no socket. When its lateness grows under an abuse as much as the
//! victim's latency does, the growth comes from below the platform (the kernel's shared state,
//! the hypervisor taking the vCPU), which no cgroup, cpuset or scheduler setting of the
//! daemon reaches. Its cost: about a thousand short wake-ups a second on that CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_millis(1);

/// The running probe; stopped (and joined) on drop.
pub(crate) struct WakeupProbe {
    lateness: Arc<Mutex<Vec<Duration>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The CPU it is pinned to, if pinning worked.
    pub(crate) cpu: Option<usize>,
}

impl WakeupProbe {
    pub(crate) fn start() -> Result<WakeupProbe, String> {
        let lateness = Arc::new(Mutex::new(Vec::with_capacity(32_000)));
        let stop = Arc::new(AtomicBool::new(false));
        let cpu = first_cpu();
        let (record, stopped) = (lateness.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("wakeup-probe".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    let mut only = rustix::thread::CpuSet::new();
                    only.set(cpu);
                    // Unpinned, the probe still measures; `cpu` below says where it ran.
                    let _ = rustix::thread::sched_setaffinity(None, &only);
                }
                while !stopped.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    std::thread::sleep(PERIOD);
                    let late = asked.elapsed().saturating_sub(PERIOD);
                    lock(&record).push(late);
                }
            })
            .map_err(|e| format!("start the wake-up probe: {e}"))?;
        Ok(WakeupProbe {
            lateness,
            stop,
            thread: Some(thread),
            cpu,
        })
    }

    /// Forgets what was recorded so far (the time between measurements).
    pub(crate) fn reset(&self) {
        lock(&self.lateness).clear();
    }

    /// What was recorded since the last `reset` or `take`.
    pub(crate) fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *lock(&self.lateness))
    }
}

impl Drop for WakeupProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The first CPU this process may run on: the one `--cpu-reserve` keeps free of busy dynos.
fn first_cpu() -> Option<usize> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    (0..rustix::thread::CpuSet::MAX_CPU).find(|&cpu| set.is_set(cpu))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
