//! R14 and R15: a dyno's memory against its quota, read from its cgroup.

use std::time::Instant;

use dyno_sandbox::cgroup::MemoryUsage;

use crate::heroku::RuntimeError;
use crate::lifecycle::Lifecycle;

/// Where the log lines go (the supervisor).
pub trait Logger {
    fn log(&self, message: String);
}

pub enum MemoryVerdict {
    Fine,
    /// At its size's R15 point (twice the quota, 1.2 times for the largest sizes): the dyno
    /// must go.
    Kill,
}

/// R14 (over quota, logged at most every `memory_warning_every`) and R15 (at the hard limit the
/// kernel holds the dyno to, its size's R15 point, or killed by the kernel there).
pub struct MemoryWatch {
    oom_kills: u64,
    last_warning: Option<Instant>,
    last_reading: Option<MemoryUsage>,
}

impl MemoryWatch {
    /// Starts from the dyno's first reading (`None`: not measured).
    pub fn new(reading: Option<MemoryUsage>) -> MemoryWatch {
        MemoryWatch {
            oom_kills: reading.as_ref().map(|r| r.oom_kills).unwrap_or(0),
            last_warning: None,
            last_reading: reading,
        }
    }

    pub fn oom_killed(&mut self, reading: Option<MemoryUsage>) -> bool {
        let Some(reading) = reading else {
            return false;
        };
        let killed = reading.oom_kills > self.oom_kills;
        self.oom_kills = reading.oom_kills;
        if killed {
            // The kill freed the memory: report what it was just before.
            self.last_reading = Some(at_limit(&reading));
        }
        killed
    }

    pub fn check(
        &mut self,
        sup: &impl Logger,
        reading: Option<MemoryUsage>,
        lifecycle: &Lifecycle,
    ) -> MemoryVerdict {
        let Some(reading) = reading else {
            return MemoryVerdict::Fine;
        };
        let oom = reading.oom_kills > self.oom_kills;
        self.oom_kills = reading.oom_kills;
        self.last_reading = Some(reading);
        if oom || reading.at_limit() {
            if oom {
                self.last_reading = Some(at_limit(&reading));
            }
            self.r15(sup);
            return MemoryVerdict::Kill;
        }
        if reading.over_quota() {
            let due = self
                .last_warning
                .is_none_or(|t| t.elapsed() >= lifecycle.memory_warning_every);
            if due {
                self.last_warning = Some(Instant::now());
                sup.log(running_mem(&reading));
                sup.log(RuntimeError::MemoryQuotaExceeded.to_string());
            }
        }
        MemoryVerdict::Fine
    }

    pub fn r15(&self, sup: &impl Logger) {
        if let Some(reading) = &self.last_reading {
            sup.log(running_mem(reading));
        }
        sup.log(RuntimeError::MemoryQuotaVastlyExceeded.to_string());
        sup.log("Stopping process with SIGKILL".into());
    }
}

/// A reading as it was when the kernel hit the hard limit (the usage is gone after the kill).
fn at_limit(reading: &MemoryUsage) -> MemoryUsage {
    let mut at = *reading;
    at.used_bytes = at.used_bytes.max(at.limit_bytes);
    at
}

/// `Process running mem=600M(117.2%)`, as Heroku logs it with R14/R15.
fn running_mem(reading: &MemoryUsage) -> String {
    let mb = reading.used_bytes / (1024 * 1024);
    let percent = if reading.quota_bytes > 0 {
        reading.used_bytes as f64 * 100.0 / reading.quota_bytes as f64
    } else {
        0.0
    };
    format!("Process running mem={mb}M({percent:.1}%)")
}
