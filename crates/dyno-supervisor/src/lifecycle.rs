//! The numbers of Heroku's dyno lifecycle, as data: every duration can be changed, so tests run
//! the whole schedule in seconds.

use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    /// A web dyno must listen on `$PORT` within this time of its start, or R10.
    pub boot_timeout: Duration,
    /// Between SIGTERM and SIGKILL (R12) when a dyno stops.
    pub stop_grace: Duration,
    /// Waits before restarting a crashed dyno: the first entry after the first crash, and so
    /// on; the last entry repeats. Dev Center, "Dyno crash restart policy": restarted at once
    /// the first time, then after a cool-off of up to 20, 40, 60, 180 and 320 minutes, then
    /// every 320 minutes. "Up to": a cool-off ends early when it is reset (see
    /// `stable_after`), never by chance, so a crash loop costs what the schedule says.
    pub restart_cooloffs: Vec<Duration>,
    /// A dyno has started correctly once it has been `up` this long: its crash count (and so
    /// its cool-off) starts over, as Heroku resets the cool-off "when the dyno starts
    /// correctly". (A new release, a restart and a scale to 0 and back start new dynos, whose
    /// count starts at 0.)
    pub stable_after: Duration,
    /// Daily restart: every `period` plus a random part of `jitter`; `None`: never.
    pub cycling: Option<Cycling>,
    /// How often, at most, a booting web dyno is checked for a listener on `$PORT` (inet_diag:
    /// no connect); the first checks come sooner (see [`Lifecycle::next_readiness_delay`]).
    pub readiness_poll: Duration,
    /// How often memory is read for R14/R15.
    pub memory_poll: Duration,
    /// R14 is logged at most this often while over quota.
    pub memory_warning_every: Duration,
    /// The release phase (`release:` in the Procfile) must end within this; Heroku: 1 hour.
    pub release_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cycling {
    pub period: Duration,
    pub jitter: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            boot_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(30),
            restart_cooloffs: vec![
                Duration::ZERO,
                20 * MINUTE,
                40 * MINUTE,
                60 * MINUTE,
                180 * MINUTE,
                320 * MINUTE,
            ],
            stable_after: 10 * MINUTE,
            cycling: Some(Cycling {
                period: 24 * 60 * MINUTE,
                jitter: 216 * MINUTE,
            }),
            readiness_poll: Duration::from_millis(50),
            memory_poll: Duration::from_secs(1),
            memory_warning_every: Duration::from_secs(20),
            release_timeout: Duration::from_secs(3600),
        }
    }
}

/// For this long after its launch, a booting web dyno is checked for its listener every
/// [`READINESS_FAST_INTERVAL`], and every [`READINESS_INTERVAL`] after that until
/// [`READINESS_QUICK_PHASE`]: most apps listen within it, and each is `up` within a fraction of
/// a millisecond of its listen. A check is one inet_diag dump on a socket kept in the dyno's
/// namespace (tens of microseconds), so even an app that takes both phases costs the host a
/// few milliseconds of CPU.
pub const READINESS_FAST_PHASE: Duration = Duration::from_millis(50);
pub const READINESS_FAST_INTERVAL: Duration = Duration::from_micros(250);
pub const READINESS_QUICK_PHASE: Duration = Duration::from_millis(250);
pub const READINESS_INTERVAL: Duration = Duration::from_millis(1);

impl Lifecycle {
    /// The wait before the next readiness check, `since_launch` after the dyno's launch, the
    /// last wait having been `last`: every 250 µs during [`READINESS_FAST_PHASE`], every
    /// millisecond until [`READINESS_QUICK_PHASE`], then doubling (from 2 ms) up to
    /// `readiness_poll` for the apps that take seconds (Java).
    pub fn next_readiness_delay(&self, since_launch: Duration, last: Duration) -> Duration {
        let delay = if since_launch < READINESS_FAST_PHASE {
            READINESS_FAST_INTERVAL
        } else if since_launch < READINESS_QUICK_PHASE {
            READINESS_INTERVAL
        } else {
            (last * 2).max(READINESS_INTERVAL * 2)
        };
        delay.min(self.readiness_poll)
    }

    /// The wait before the restart after crash number `crashes` (1 for the first).
    pub fn cooloff(&self, crashes: u32) -> Duration {
        let i = (crashes.max(1) - 1) as usize;
        self.restart_cooloffs
            .get(i)
            .or(self.restart_cooloffs.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// When the next daily restart is due, counted from a dyno's start; `random` in 0..1.
    pub fn next_cycle(&self, random: f64) -> Option<Duration> {
        self.cycling
            .map(|c| c.period + c.jitter.mul_f64(random.clamp(0.0, 1.0)))
    }
}

/// Why a duration option could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration like 30s, 500ms, 5m or 2h")]
    NotANumber(String),
    #[error("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?} is not a duration")]
    OutOfRange(String),
}

/// Parses `90`, `90s`, `500ms`, `5m`, `2h` (for command-line options).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::NotANumber(text.into()))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.into(),
                unit: unit.into(),
            })
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(DurationError::OutOfRange(text.into()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_checks_every_250_us_then_every_millisecond_then_back_off() {
        let l = Lifecycle::default();
        let (ms, us) = (Duration::from_millis, Duration::from_micros);
        assert_eq!(
            l.next_readiness_delay(Duration::ZERO, Duration::ZERO),
            us(250)
        );
        assert_eq!(l.next_readiness_delay(ms(49), us(250)), us(250));
        assert_eq!(l.next_readiness_delay(ms(50), us(250)), ms(1));
        assert_eq!(l.next_readiness_delay(ms(249), ms(1)), ms(1));
        // After the quick phase: 2, 4, … up to readiness_poll.
        let mut delay = ms(1);
        let mut waits = Vec::new();
        for _ in 0..7 {
            delay = l.next_readiness_delay(ms(300), delay);
            waits.push(delay.as_millis());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 50, 50]);
        // A poll below the fast interval is the poll.
        let quick = Lifecycle {
            readiness_poll: us(100),
            ..Lifecycle::default()
        };
        assert_eq!(
            quick.next_readiness_delay(Duration::ZERO, Duration::ZERO),
            us(100)
        );
    }

    #[test]
    fn herokus_schedule_is_the_default() {
        let l = Lifecycle::default();
        // At once, then 20, 40, 60, 180 and 320 minutes, then every 320 minutes.
        let waits: Vec<Duration> = (1..=8).map(|n| l.cooloff(n)).collect();
        let minutes = [0, 20, 40, 60, 180, 320, 320, 320].map(|m| m * MINUTE);
        assert_eq!(waits, minutes);
        assert_eq!(l.cooloff(60), 320 * MINUTE);
        assert_eq!(l.next_cycle(0.0), Some(24 * 60 * MINUTE));
        assert_eq!(l.next_cycle(1.0), Some(24 * 60 * MINUTE + 216 * MINUTE));
        let off = Lifecycle { cycling: None, ..l };
        assert_eq!(off.next_cycle(0.5), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
