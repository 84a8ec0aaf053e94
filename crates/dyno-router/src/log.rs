//! Router log lines in Heroku's exact shape, and where they go.
//!
//! `RouterLog` renders without the `heroku[router]: ` prefix; the manager's log hub adds the
//! timestamp and source.

use std::fmt;

use crate::codes::HerokuCode;

/// One router log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterLog {
    /// `Some(code)` renders `at=error code=… desc="…"` (or `at=info code=…` for H80/H81).
    pub code: Option<HerokuCode>,
    pub method: String,
    pub path: String,
    pub host: String,
    pub request_id: String,
    pub fwd: String,
    /// Dyno name (`web.1`); empty when no dyno was chosen.
    pub dyno: Option<String>,
    pub connect_ms: Option<u64>,
    pub service_ms: Option<u64>,
    pub status: u16,
    pub bytes: Option<u64>,
    /// `http` or `https`.
    pub protocol: &'static str,
}

/// Write `"…"` with `"` and `\` escaped and control characters dropped.
fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for ch in s.chars() {
        match ch {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c if c.is_control() => {}
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// Write a bare value with spaces and control characters dropped.
fn bare(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for ch in s.chars().filter(|c| !c.is_whitespace() && !c.is_control()) {
        write!(f, "{ch}")?;
    }
    Ok(())
}

fn opt_ms(f: &mut fmt::Formatter<'_>, key: &str, v: Option<u64>) -> fmt::Result {
    match v {
        Some(v) => write!(f, " {key}={v}ms"),
        None => write!(f, " {key}="),
    }
}

impl fmt::Display for RouterLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) if c.is_error() => {
                write!(f, "at=error code={} desc=", c.code())?;
                quoted(f, c.desc())?;
                f.write_str(" ")?;
            }
            Some(c) => {
                write!(f, "at=info code={} desc=", c.code())?;
                quoted(f, c.desc())?;
                f.write_str(" ")?;
            }
            None => f.write_str("at=info ")?,
        }
        f.write_str("method=")?;
        bare(f, &self.method)?;
        f.write_str(" path=")?;
        quoted(f, &self.path)?;
        f.write_str(" host=")?;
        bare(f, &self.host)?;
        f.write_str(" request_id=")?;
        bare(f, &self.request_id)?;
        f.write_str(" fwd=")?;
        quoted(f, &self.fwd)?;
        f.write_str(" dyno=")?;
        bare(f, self.dyno.as_deref().unwrap_or(""))?;
        opt_ms(f, "connect", self.connect_ms)?;
        opt_ms(f, "service", self.service_ms)?;
        write!(f, " status={}", self.status)?;
        match self.bytes {
            Some(b) => write!(f, " bytes={b}")?,
            None => f.write_str(" bytes=")?,
        }
        write!(f, " protocol={}", self.protocol)
    }
}

/// Where the router sends its log lines, per app.
pub trait LogSink: Send + Sync + 'static {
    /// One line for `app`. Must not block (called on the request path).
    fn log(&self, app: &str, line: RouterLog);
}

/// A sink over an unbounded channel of `(app, line)`.
#[derive(Debug, Clone)]
pub struct ChannelSink(pub tokio::sync::mpsc::UnboundedSender<(String, RouterLog)>);

impl ChannelSink {
    /// A sink and the receiving end.
    pub fn new() -> (
        Self,
        tokio::sync::mpsc::UnboundedReceiver<(String, RouterLog)>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self(tx), rx)
    }
}

impl LogSink for ChannelSink {
    fn log(&self, app: &str, line: RouterLog) {
        // The receiver gone means nobody wants logs any more: dropping the line is right.
        let _ = self.0.send((app.to_owned(), line));
    }
}

/// A sink from a closure.
pub struct FnSink<F>(pub F);

impl<F: Fn(&str, RouterLog) + Send + Sync + 'static> LogSink for FnSink<F> {
    fn log(&self, app: &str, line: RouterLog) {
        (self.0)(app, line)
    }
}

/// A sink that drops every line.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl LogSink for NullSink {
    fn log(&self, _app: &str, _line: RouterLog) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RouterLog {
        RouterLog {
            code: None,
            method: "GET".into(),
            path: "/".into(),
            host: "myapp.localhost".into(),
            request_id: "8601b555-6a54-4d0c-b3d4-41bd5a5e8e4c".into(),
            fwd: "127.0.0.1".into(),
            dyno: Some("web.1".into()),
            connect_ms: Some(0),
            service_ms: Some(3),
            status: 200,
            bytes: Some(13),
            protocol: "http",
        }
    }

    #[test]
    fn info_line() {
        assert_eq!(
            base().to_string(),
            "at=info method=GET path=\"/\" host=myapp.localhost \
             request_id=8601b555-6a54-4d0c-b3d4-41bd5a5e8e4c fwd=\"127.0.0.1\" dyno=web.1 \
             connect=0ms service=3ms status=200 bytes=13 protocol=http"
        );
    }

    #[test]
    fn error_line() {
        let l = RouterLog {
            code: Some(HerokuCode::H12),
            connect_ms: Some(1),
            service_ms: Some(30000),
            status: 503,
            bytes: Some(0),
            ..base()
        };
        assert_eq!(
            l.to_string(),
            "at=error code=H12 desc=\"Request timeout\" method=GET path=\"/\" host=myapp.localhost \
             request_id=8601b555-6a54-4d0c-b3d4-41bd5a5e8e4c fwd=\"127.0.0.1\" dyno=web.1 \
             connect=1ms service=30000ms status=503 bytes=0 protocol=http"
        );
    }

    #[test]
    fn no_dyno_and_escaping() {
        let l = RouterLog {
            code: Some(HerokuCode::H14),
            path: "/a\"b\r\n".into(),
            dyno: None,
            connect_ms: None,
            service_ms: None,
            status: 503,
            bytes: None,
            ..base()
        };
        let s = l.to_string();
        assert!(s.contains("path=\"/a\\\"b\""), "{s}");
        assert!(
            s.contains(" dyno= connect= service= status=503 bytes= protocol=http"),
            "{s}"
        );
    }
}
