//! Log lines in Heroku's format: `2026-11-25T10:00:00.000000+00:00 app[web.1]: message`.

use std::fmt;
use std::time::SystemTime;

use dyno_api::Utc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The app's own output.
    App,
    /// The platform about a dyno (`State changed …`, error codes).
    Heroku,
    /// The router's access and error lines.
    Router,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::App => "app",
            Source::Heroku => "heroku",
            Source::Router => "router",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: SystemTime,
    pub source: Source,
    /// `web.1`, or `router`.
    pub dyno: String,
    pub message: String,
}

impl LogLine {
    pub fn now(source: Source, dyno: impl Into<String>, message: impl Into<String>) -> LogLine {
        LogLine {
            time: SystemTime::now(),
            source,
            dyno: dyno.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}[{}]: {}",
            rfc3339_micros(self.time),
            self.source.as_str(),
            self.dyno,
            self.message
        )
    }
}

/// `2026-11-25T10:00:00.000000+00:00` (UTC, microseconds), without a date crate.
pub fn rfc3339_micros(time: SystemTime) -> String {
    let t = Utc::of(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros
    )
}

/// `2026-11-25T10:00:00+00:00` (UTC, whole seconds), as Logplex writes times in its own lines.
pub fn rfc3339_seconds(time: SystemTime) -> String {
    let mut s = rfc3339_micros(time);
    // Drop the `.uuuuuu` fraction before the offset.
    s.replace_range(19..26, "");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_heroku() {
        // 2026-11-25T10:00:00.000123Z
        let t = SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_795_600_800)
            + Duration::from_micros(123);
        let line = LogLine {
            time: t,
            source: Source::App,
            dyno: "web.1".into(),
            message: "hello".into(),
        };
        assert_eq!(
            line.to_string(),
            "2026-11-25T10:00:00.000123+00:00 app[web.1]: hello"
        );
    }

    #[test]
    fn seconds_without_fraction() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_600_800_999);
        assert_eq!(rfc3339_seconds(t), "2026-11-25T10:00:00+00:00");
    }
}
