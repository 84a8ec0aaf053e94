//! Log drains (`drains:add`): a copy of every line of an app, sent to a syslog server over TCP
//! (`syslog://`), over TLS (`syslog+tls://`), or POSTed in batches to an HTTPS endpoint
//! (`https://`, also `http://`), in Logplex's formats ([`frame`]).
//!
//! Each drain has a bounded queue ([`DrainOptions::queue_lines`], default 10,000 like a Logplex
//! drain buffer) fed by the hub, and one writer task. A drain that is slow or down never slows
//! the hub: when its queue is full new lines are dropped and counted, and once the writer gets
//! to that place it sends, and appends to the app's log, Logplex's
//! `heroku[logplex]: Error L10 (output buffer overflow): 123 messages dropped since 2026-11-25T10:00:00+00:00.`
//! Connections are retried with a doubling backoff; an unsent batch is kept and sent again, so
//! lines are lost only through the queue (counted) — or when the peer took a write and then
//! closed, as with any TCP syslog sender.

pub mod frame;
mod http;
mod syslog;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::task::AbortHandle;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::logqueue::{Item, LineQueue};
use crate::logs::{rfc3339_seconds, LogLine, Source};

/// Lines a drain may have queued before lines are dropped for it.
pub const DEFAULT_QUEUE_LINES: usize = 10_000;

/// `Error L10 (output buffer overflow): 123 messages dropped since 2026-11-25T10:00:00+00:00.`
/// — Logplex's code for a drain that could not keep up, logged as `heroku[logplex]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub dropped: u64,
    /// When the first dropped line was produced.
    pub since: SystemTime,
}

impl Overflow {
    pub const CODE: &'static str = "L10";
    pub const TITLE: &'static str = "output buffer overflow";

    /// `heroku[logplex]: Error L10 …`, stamped now.
    pub fn log_line(&self) -> LogLine {
        LogLine::now(Source::Heroku, "logplex", self.to_string())
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Error {} ({}): {} messages dropped since {}.",
            Self::CODE,
            Self::TITLE,
            self.dropped,
            rfc3339_seconds(self.since)
        )
    }
}

/// How a drain sends. The defaults suit production; tests shorten the times.
#[derive(Clone)]
pub struct DrainOptions {
    /// Lines queued for the drain before new ones are dropped (and counted for `L10`).
    pub queue_lines: usize,
    /// Most lines per HTTPS POST or per syslog write.
    pub batch_lines: usize,
    /// An HTTPS batch is sent when full or this long after its first line.
    pub batch_interval: Duration,
    pub connect_timeout: Duration,
    /// A write (syslog) or request (HTTPS) taking longer fails, and the connection is remade.
    pub write_timeout: Duration,
    /// First wait after a failure; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Roots and settings for `syslog+tls://` and `https://` (see [`tls_config`]); required
    /// for those: there is no built-in root store.
    pub tls: Option<Arc<ClientConfig>>,
    /// Write RFC 5424's STRUCTURED-DATA `-`, which Heroku leaves out (see [`frame`]).
    pub structured_data: bool,
}

impl Default for DrainOptions {
    fn default() -> DrainOptions {
        DrainOptions {
            queue_lines: DEFAULT_QUEUE_LINES,
            batch_lines: 500,
            batch_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            tls: None,
            structured_data: false,
        }
    }
}

impl fmt::Debug for DrainOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainOptions")
            .field("queue_lines", &self.queue_lines)
            .field("batch_lines", &self.batch_lines)
            .field("batch_interval", &self.batch_interval)
            .field("connect_timeout", &self.connect_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("tls", &self.tls.is_some())
            .field("structured_data", &self.structured_data)
            .finish()
    }
}

/// A drain as `dyno drains` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainInfo {
    /// As given to `drains:add`.
    pub url: String,
    /// `d.<uuid>`: in syslog messages' HOSTNAME and the HTTPS `Logplex-Drain-Token` header.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("drain {url}: {reason}; give syslog://host:port, syslog+tls://host:port or https://host/path")]
    BadUrl { url: String, reason: String },
    #[error(
        "drain {url}: TLS needs trusted root certificates; configure a CA bundle (PEM) for drains"
    )]
    NoTlsRoots { url: String },
    #[error("drain {url} is already attached to this app")]
    Exists { url: String },
    #[error("drain {url}: the log hub runs outside the daemon's async runtime")]
    NoRuntime { url: String },
    #[error("CA bundle {path}: {reason}; give PEM certificates (-----BEGIN CERTIFICATE-----)")]
    Roots { path: String, reason: String },
}

/// A fresh drain token, `d.<uuid>` like Heroku's.
pub fn new_token() -> String {
    format!("d.{}", uuid::Uuid::new_v4())
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    match Target::parse(url) {
        Ok(t) if t.userinfo.as_deref().is_some_and(|u| u.contains(':')) => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let at = rest.find('@').unwrap_or(0);
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// A client configuration trusting `roots` (rustls, ring provider).
pub fn tls_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        // The ring provider supports the default versions; keep a usable config regardless.
        .unwrap_or_else(|_| {
            ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        });
    Arc::new(config)
}

/// Roots from PEM text (a CA bundle such as `/etc/ssl/certs/ca-certificates.crt`).
pub fn roots_from_pem(pem: &[u8], path: &str) -> Result<RootCertStore, DrainError> {
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| DrainError::Roots {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| DrainError::Roots {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(DrainError::Roots {
            path: path.to_owned(),
            reason: "no certificate found".into(),
        });
    }
    Ok(roots)
}

/// [`roots_from_pem`] from a file.
pub fn roots_from_pem_file(path: &Path) -> Result<RootCertStore, DrainError> {
    let pem = std::fs::read(path).map_err(|e| DrainError::Roots {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    roots_from_pem(&pem, &path.display().to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Syslog,
    SyslogTls,
    Http,
    Https,
}

/// A parsed drain URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub scheme: Scheme,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `/path?query`, `/` when empty (HTTP only).
    pub path: String,
    /// `user:password` as written (percent-encoded).
    pub userinfo: Option<String>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, DrainError> {
        let bad = |reason: &str| DrainError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "syslog" => (Scheme::Syslog, 514),
            "syslog+tls" => (Scheme::SyslogTls, 6514),
            "http" => (Scheme::Http, 80),
            "https" => (Scheme::Https, 443),
            _ => return Err(bad("unknown scheme")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = path.split('#').next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                ),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None | Some("") => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
        };
        let is_http = matches!(scheme, Scheme::Http | Scheme::Https);
        if !is_http && (userinfo.is_some() || !path.trim_start_matches('/').is_empty()) {
            return Err(bad("a syslog drain is host:port only"));
        }
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Target {
            scheme,
            host: host.to_owned(),
            port,
            path,
            userinfo,
        })
    }

    pub fn tls(&self) -> bool {
        matches!(self.scheme, Scheme::SyslogTls | Scheme::Https)
    }
}

/// A running drain inside the hub. Dropping it stops the writer.
pub(crate) struct DrainSlot {
    pub info: DrainInfo,
    pub queue: Arc<LineQueue>,
    task: AbortHandle,
}

impl Drop for DrainSlot {
    fn drop(&mut self) {
        self.queue.close();
        self.task.abort();
    }
}

/// Where a drain's own notices go (the overflow line `L10`): the app's log, to every reader
/// and drain but the drain named by the token. The hub hands one in; a drain knows nothing
/// else of the hub.
pub(crate) type NoticeSink = Arc<dyn Fn(&str, LogLine, &str) + Send + Sync>;

pub(crate) fn start(
    notices: NoticeSink,
    app: &str,
    url: &str,
    token: &str,
    options: DrainOptions,
) -> Result<DrainSlot, DrainError> {
    let target = Target::parse(url)?;
    if target.tls() && options.tls.is_none() {
        return Err(DrainError::NoTlsRoots { url: redact(url) });
    }
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| DrainError::NoRuntime { url: redact(url) })?;
    let queue = Arc::new(LineQueue::new(options.queue_lines));
    let writer = Writer {
        notices,
        app: app.to_owned(),
        token: token.to_owned(),
        url: redact(url),
        queue: queue.clone(),
        options,
    };
    let task = match target.scheme {
        Scheme::Syslog | Scheme::SyslogTls => runtime.spawn(syslog::run(writer, target)),
        Scheme::Http | Scheme::Https => runtime.spawn(http::run(writer, target)),
    };
    Ok(DrainSlot {
        info: DrainInfo {
            url: url.to_owned(),
            token: token.to_owned(),
        },
        queue,
        task: task.abort_handle(),
    })
}

/// What a writer task shares with its transport.
pub(crate) struct Writer {
    notices: NoticeSink,
    app: String,
    pub token: String,
    /// Redacted, for tracing.
    pub url: String,
    queue: Arc<LineQueue>,
    pub options: DrainOptions,
}

impl Writer {
    /// The next batch of lines to send: waits for the first, then takes up to
    /// `batch_lines`, waiting up to `linger` after the first for more. A gap in the queue
    /// becomes an `L10` line, in place, also appended to the app's log (not to this drain's
    /// queue: it is in this batch). `None` when the drain is stopped and its queue empty.
    pub async fn next_batch(&self, linger: Duration) -> Option<Vec<Arc<LogLine>>> {
        let first = self.queue.pop().await?;
        let deadline = tokio::time::Instant::now() + linger;
        let max = self.options.batch_lines.max(1);
        let mut batch = Vec::with_capacity(max.min(1024));
        self.take(first, &mut batch);
        let mut items = Vec::new();
        while batch.len() < max {
            // Taken under the queue's lock, handled outside it (an L10 notice goes through
            // the hub, whose appends take this queue's lock).
            self.queue.try_pop_many(max - batch.len(), &mut items);
            if !items.is_empty() {
                for item in items.drain(..) {
                    self.take(item, &mut batch);
                }
                continue;
            }
            if linger.is_zero() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.queue.pop()).await {
                Ok(Some(item)) => self.take(item, &mut batch),
                Ok(None) | Err(_) => break,
            }
        }
        Some(batch)
    }

    fn take(&self, item: Item, batch: &mut Vec<Arc<LogLine>>) {
        match item {
            Item::Line(line) => batch.push(line),
            Item::Dropped { count, since } => {
                let line = Overflow {
                    dropped: count,
                    since,
                }
                .log_line();
                tracing::warn!(drain = %self.url, app = %self.app, dropped = count, "log drain too slow: lines dropped");
                (self.notices)(&self.app, line.clone(), &self.token);
                batch.push(Arc::new(line));
            }
        }
    }
}

/// Doubling waits between attempts.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(options: &DrainOptions) -> Backoff {
        Backoff {
            next: options.backoff_min,
            min: options.backoff_min,
            max: options.backoff_max.max(options.backoff_min),
        }
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// `connecting` within the drain's connect timeout; on failure the reason is traced, the
    /// backoff waited out, and `None` returned (the caller tries again).
    pub async fn connect<C, E: std::fmt::Display>(
        &mut self,
        writer: &Writer,
        connecting: impl std::future::Future<Output = Result<C, E>>,
    ) -> Option<C> {
        match tokio::time::timeout(writer.options.connect_timeout, connecting).await {
            Ok(Ok(c)) => return Some(c),
            Ok(Err(e)) => tracing::debug!(drain = %writer.url, "log drain: connect: {e}"),
            Err(_) => tracing::debug!(drain = %writer.url, "log drain: connect timed out"),
        }
        self.wait().await;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logring::LogHub;

    #[test]
    fn parses_drain_urls() {
        let t = Target::parse("syslog+tls://logs.example.com:12345").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::SyslogTls, "logs.example.com", 12345)
        );
        assert_eq!(Target::parse("syslog://h").unwrap().port, 514);
        let t = Target::parse("https://u:p%40ss@[::1]:8443/logs?x=1#frag").unwrap();
        assert_eq!(
            (
                t.scheme,
                t.host.as_str(),
                t.port,
                t.path.as_str(),
                t.userinfo.as_deref()
            ),
            (Scheme::Https, "::1", 8443, "/logs?x=1", Some("u:p%40ss"))
        );
        assert_eq!(Target::parse("https://h").unwrap().path, "/");
        assert_eq!(Target::parse("http://h?q").unwrap().path, "/?q");
        for bad in [
            "logs.example.com:514",
            "ftp://h",
            "syslog://:514",
            "syslog://h:0",
            "syslog://h:99999",
            "syslog://h:514/path",
            "https://[::1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("https://user:secret@example.com/logs"),
            "https://user:***@example.com/logs"
        );
        assert_eq!(redact("syslog://h:1"), "syslog://h:1");
    }

    #[test]
    fn l10_text() {
        let o = Overflow {
            dropped: 123,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_800),
        };
        assert_eq!(
            o.to_string(),
            "Error L10 (output buffer overflow): 123 messages dropped since 2026-11-25T10:00:00+00:00."
        );
        let line = o.log_line();
        assert_eq!(
            (line.source, line.dyno.as_str()),
            (Source::Heroku, "logplex")
        );
    }

    #[tokio::test]
    async fn tls_urls_need_roots_and_urls_are_unique() {
        let hub = LogHub::new();
        assert!(matches!(
            hub.add_drain("a", "syslog+tls://127.0.0.1:1", DrainOptions::default()),
            Err(DrainError::NoTlsRoots { .. })
        ));
        let info = hub
            .add_drain("a", "syslog://127.0.0.1:1", DrainOptions::default())
            .unwrap();
        assert!(info.token.starts_with("d.") && info.token.len() == 38);
        assert!(matches!(
            hub.add_drain("a", "syslog://127.0.0.1:1", DrainOptions::default()),
            Err(DrainError::Exists { .. })
        ));
        assert_eq!(hub.drains("a"), std::slice::from_ref(&info));
        assert!(hub.remove_drain("a", &info.token));
        assert!(hub.drains("a").is_empty());
    }

    #[test]
    fn adding_a_drain_outside_a_runtime_is_an_error() {
        let hub = LogHub::new();
        assert!(matches!(
            hub.add_drain("a", "syslog://127.0.0.1:1", DrainOptions::default()),
            Err(DrainError::NoRuntime { .. })
        ));
    }
}
