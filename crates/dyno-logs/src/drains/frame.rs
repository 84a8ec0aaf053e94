//! RFC 5424 messages as Logplex sends them, framed by octet counting (RFC 6587 §3.4.1).
//!
//! `<190>1 2026-11-25T10:00:00.000000+00:00 host app web.1 - hello`:
//!
//! | field | value |
//! |---|---|
//! | PRI | app lines `<190>` (local7.info); router lines (`heroku[router]`, [`Source::Router`]) `<158>` (local3.info); other platform lines `<134>` (local0.info) — the Dev Center says Heroku uses local0, local3 and local7; Logplex's own `L10` `<172>` (local5.warning, as Logplex's `overflow_msg`) |
//! | VERSION | `1` |
//! | TIMESTAMP | the line's time, UTC, microseconds |
//! | HOSTNAME | syslog drains: the drain token (`d.…`, as Logplex writes it); HTTPS drains: `host` (the token is in the `Logplex-Drain-Token` header) |
//! | APP-NAME | the source: `app`, `heroku` (`router` for [`Source::Router`]) |
//! | PROCID | the dyno: `web.1`, `router`, `logplex` |
//! | MSGID | `-` |
//! | STRUCTURED-DATA | left out, as Heroku does (`… web.1 - hello`); [`Rfc5424::structured_data`] writes the `-` strict RFC 5424 parsers want (`… web.1 - - hello`) |
//! | MSG | the message, UTF-8, no BOM, no trailing newline |
//!
//! Header fields are printable US-ASCII without spaces: other bytes become `_`, and each field
//! is cut to its RFC length (HOSTNAME 255, APP-NAME 48, PROCID 128).

use crate::logs::{LogLine, Source};

/// PRI = facility × 8 + severity.
pub fn pri(line: &LogLine) -> u8 {
    const INFO: u8 = 6;
    const WARNING: u8 = 4;
    const LOCAL0: u8 = 16;
    const LOCAL3: u8 = 19;
    const LOCAL5: u8 = 21;
    const LOCAL7: u8 = 23;
    match line.source {
        Source::App => LOCAL7 * 8 + INFO,
        Source::Router => LOCAL3 * 8 + INFO,
        Source::Heroku if line.dyno == "router" => LOCAL3 * 8 + INFO,
        Source::Heroku if line.dyno == "logplex" => LOCAL5 * 8 + WARNING,
        Source::Heroku => LOCAL0 * 8 + INFO,
    }
}

/// How messages are written for one drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc5424 {
    /// HOSTNAME.
    pub hostname: String,
    /// Write the STRUCTURED-DATA `-` (strict RFC 5424) instead of leaving it out (Heroku).
    pub structured_data: bool,
}

impl Rfc5424 {
    /// The message without its length.
    pub fn message(&self, line: &LogLine) -> String {
        let mut out = String::with_capacity(64 + line.message.len());
        self.write_message(&mut out, line);
        out
    }

    fn write_message(&self, out: &mut String, line: &LogLine) {
        use std::fmt::Write;
        let _ = write!(out, "<{}>1 ", pri(line));
        write_rfc3339_micros(out, line.time);
        out.push(' ');
        header_field(out, &self.hostname, 255);
        out.push(' ');
        header_field(out, line.source.as_str(), 48);
        out.push(' ');
        header_field(out, &line.dyno, 128);
        out.push_str(if self.structured_data { " - - " } else { " - " });
        out.push_str(&line.message);
    }

    /// Append `<len> <message>` to `buf`, the message made in `scratch` (kept by the caller:
    /// a drain frames hundreds of thousands of lines a second, without an allocation each).
    pub fn push_frame_with(&self, buf: &mut Vec<u8>, scratch: &mut String, line: &LogLine) {
        scratch.clear();
        self.write_message(scratch, line);
        octet_frame(buf, scratch.as_bytes());
    }

    /// Append `<len> <message>` to `buf`.
    pub fn push_frame(&self, buf: &mut Vec<u8>, line: &LogLine) {
        self.push_frame_with(buf, &mut String::new(), line);
    }
}

/// Append `<len> <message>` (RFC 6587 octet counting) to `buf`.
pub fn octet_frame(buf: &mut Vec<u8>, message: &[u8]) {
    use std::io::Write;
    let _ = write!(buf, "{} ", message.len());
    buf.extend_from_slice(message);
}

/// [`crate::logs::rfc3339_micros`], written into `out`.
fn write_rfc3339_micros(out: &mut String, time: std::time::SystemTime) {
    use std::fmt::Write;
    let t = dyno_api::Utc::of(time);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros
    );
}

fn header_field(out: &mut String, value: &str, max: usize) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    for c in value.chars().take(max) {
        out.push(if c.is_ascii_graphic() { c } else { '_' });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn at(source: Source, dyno: &str, message: &str) -> LogLine {
        LogLine {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_800),
            source,
            dyno: dyno.into(),
            message: message.into(),
        }
    }

    #[test]
    fn heroku_style_message_and_frame() {
        let f = Rfc5424 {
            hostname: "host".into(),
            structured_data: false,
        };
        let line = at(Source::App, "web.1", "héllo");
        let msg = "<190>1 2026-11-25T10:00:00.000000+00:00 host app web.1 - héllo";
        assert_eq!(f.message(&line), msg);
        let mut buf = Vec::new();
        f.push_frame(&mut buf, &line);
        assert_eq!(buf, format!("{} {msg}", msg.len()).into_bytes());
        assert_eq!((msg.len(), msg.chars().count()), (63, 62));
        assert!(buf.starts_with(b"63 <190>1 "), "octets, not characters");
    }

    #[test]
    fn pri_per_source_and_strict_structured_data() {
        let f = Rfc5424 {
            hostname: "d.1".into(),
            structured_data: true,
        };
        assert_eq!(
            f.message(&at(Source::Heroku, "router", "at=info")),
            "<158>1 2026-11-25T10:00:00.000000+00:00 d.1 heroku router - - at=info"
        );
        assert_eq!(pri(&at(Source::Heroku, "web.1", "x")), 134);
        assert_eq!(pri(&at(Source::Heroku, "logplex", "x")), 172);
        assert_eq!(pri(&at(Source::Router, "router", "x")), 158);
    }

    #[test]
    fn header_fields_are_printable_ascii() {
        let f = Rfc5424 {
            hostname: String::new(),
            structured_data: false,
        };
        let m = f.message(&at(Source::App, "we b.é", "x"));
        assert!(m.ends_with(" - app we_b._ - x"), "{m}");
    }
}
