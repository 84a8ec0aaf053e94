//! Heroku's runtime error codes, each defined once with its text (Dev Center, "Heroku Error
//! Codes"). The router's H codes come with the router.

use std::fmt;
use std::time::Duration;

/// A dyno runtime error, as logged by `heroku[web.1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeError {
    /// R10: a web process did not bind `$PORT` in time.
    BootTimeout { within: Duration },
    /// R12: processes were still running after SIGTERM and the grace period.
    ExitTimeout { within: Duration },
    /// R14: memory over the dyno's quota.
    MemoryQuotaExceeded,
    /// R15: memory far over the quota; the dyno is killed.
    MemoryQuotaVastlyExceeded,
}

impl RuntimeError {
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::BootTimeout { .. } => "R10",
            RuntimeError::ExitTimeout { .. } => "R12",
            RuntimeError::MemoryQuotaExceeded => "R14",
            RuntimeError::MemoryQuotaVastlyExceeded => "R15",
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            RuntimeError::BootTimeout { .. } => "Boot timeout",
            RuntimeError::ExitTimeout { .. } => "Exit timeout",
            RuntimeError::MemoryQuotaExceeded => "Memory quota exceeded",
            RuntimeError::MemoryQuotaVastlyExceeded => "Memory quota vastly exceeded",
        }
    }
}

/// `Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 60 seconds of launch`
impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error {} ({})", self.code(), self.title())?;
        match self {
            RuntimeError::BootTimeout { within } => write!(
                f,
                " -> Web process failed to bind to $PORT within {} of launch",
                seconds(*within)
            ),
            RuntimeError::ExitTimeout { within } => write!(
                f,
                " -> At least one process failed to exit within {} of SIGTERM",
                seconds(*within)
            ),
            RuntimeError::MemoryQuotaExceeded | RuntimeError::MemoryQuotaVastlyExceeded => Ok(()),
        }
    }
}

/// `60 seconds`, `1 second`, `0.5 seconds`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s == 1.0 {
        "1 second".into()
    } else if s.fract() == 0.0 {
        format!("{} seconds", s as u64)
    } else {
        format!("{s} seconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_herokus() {
        assert_eq!(
            RuntimeError::BootTimeout { within: Duration::from_secs(60) }.to_string(),
            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 60 seconds of launch"
        );
        assert_eq!(
            RuntimeError::ExitTimeout { within: Duration::from_secs(30) }.to_string(),
            "Error R12 (Exit timeout) -> At least one process failed to exit within 30 seconds of SIGTERM"
        );
        assert_eq!(
            RuntimeError::MemoryQuotaExceeded.to_string(),
            "Error R14 (Memory quota exceeded)"
        );
        assert_eq!(
            RuntimeError::MemoryQuotaVastlyExceeded.to_string(),
            "Error R15 (Memory quota vastly exceeded)"
        );
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 seconds");
    }
}
