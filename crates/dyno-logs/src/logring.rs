//! The log hub (Logplex): per app a ring of the last 1,500 lines, `--tail` subscribers and drains.
//!
//! [`LogHub::append`] never waits and never grows anything without bound: the ring keeps its
//! last [`HubOptions::ring_lines`] lines, each `--tail` subscriber and each drain has its own
//! bounded [`LineQueue`], and a line that does not fit a full queue is dropped *for that
//! consumer only* and counted. A tail learns how many it missed from a [`TailEvent::Dropped`]
//! in its stream; a drain reports it as Logplex does, with an `L10` line (see
//! [`crate::drains`]). Messages longer than [`HubOptions::max_line_bytes`] are split into lines.
//!
//! ```no_run
//! # async fn demo() {
//! use dyno_logs::logring::{Filter, LogHub};
//! use dyno_logs::logs::{LogLine, Source};
//! let hub = LogHub::new();
//! hub.append("myapp", LogLine::now(Source::App, "web.1", "hello"));
//! // `dyno logs -a myapp -n 100 --ps web --tail`
//! let filter = Filter::ps("web");
//! let (recent, mut tail) = hub.tail("myapp", filter, 100);
//! for line in recent { println!("{line}"); }
//! while let Some(event) = tail.next().await { println!("{event}"); }
//! # }
//! ```

use crate::lock;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::drains::{self, DrainError, DrainInfo, DrainOptions};
use crate::logqueue::{Item, LineQueue};
use crate::logs::{rfc3339_seconds, LogLine, Source};

/// Lines Logplex keeps per app.
pub const RING_LINES: usize = 1500;
/// `heroku logs` prints this many lines unless `-n` says otherwise …
pub const DEFAULT_LINES: usize = 100;
/// … and never more than this.
pub const MAX_LINES: usize = RING_LINES;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Lines kept per app for `dyno logs` (Logplex: 1,500).
    pub ring_lines: usize,
    /// Lines queued for one `--tail` subscriber before lines are dropped for it.
    pub tail_lines: usize,
    /// A longer message is cut at this many bytes (at a character boundary).
    pub max_line_bytes: usize,
}

impl Default for HubOptions {
    fn default() -> HubOptions {
        HubOptions {
            ring_lines: RING_LINES,
            tail_lines: 10_000,
            max_line_bytes: 10_000,
        }
    }
}

/// Which lines `dyno logs` shows: `--ps` and `--source`. The default shows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `web.1` matches that dyno only; a process type without a dot (`web`) matches every dyno
    /// of that type (`web.1`, `web.2`, …) as Heroku's `--ps web` does; `router` the router.
    pub ps: Option<String>,
    /// `app` or `heroku` as on Heroku (`heroku` includes `heroku[router]`). `router` matches the
    /// router's lines: those of [`Source::Router`] and `heroku[router]`.
    pub source: Option<Source>,
}

impl Filter {
    pub fn all() -> Filter {
        Filter::default()
    }

    pub fn ps(ps: impl Into<String>) -> Filter {
        Filter {
            ps: Some(ps.into()),
            source: None,
        }
    }

    pub fn source(source: Source) -> Filter {
        Filter {
            ps: None,
            source: Some(source),
        }
    }

    pub fn matches(&self, line: &LogLine) -> bool {
        let source = match self.source {
            None => true,
            Some(Source::Router) => {
                line.source == Source::Router
                    || (line.source == Source::Heroku && line.dyno == "router")
            }
            Some(s) => line.source == s,
        };
        source
            && match &self.ps {
                None => true,
                Some(ps) if ps.contains('.') => line.dyno == *ps,
                Some(ps) => {
                    line.dyno == *ps
                        || line
                            .dyno
                            .strip_prefix(ps.as_str())
                            .is_some_and(|rest| rest.starts_with('.'))
                }
            }
    }
}

/// What a `--tail` subscriber receives.
pub type TailEvent = Item;

/// `2026-…+00:00 app[web.1]: hello`, or for a gap Heroku's L11 line:
/// `2026-…+00:00 heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session
/// dropped 12 messages since 2026-11-25T10:00:00+00:00`.
impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Line(line) => line.fmt(f),
            Item::Dropped { count, since } => write!(
                f,
                "{} heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session \
                 dropped {count} messages since {}",
                crate::logs::rfc3339_micros(std::time::SystemTime::now()),
                rfc3339_seconds(*since)
            ),
        }
    }
}

/// A `--tail` stream: the app's new lines that match its filter, in order. Dropping it ends
/// the subscription; it ends by itself (`None`) when the app is removed.
#[derive(Debug)]
pub struct Tail {
    queue: Arc<LineQueue>,
}

impl Tail {
    /// The next line or gap; waits for one.
    pub async fn next(&mut self) -> Option<TailEvent> {
        self.queue.pop().await
    }

    /// The next line or gap, if one is queued.
    pub fn try_next(&mut self) -> Option<TailEvent> {
        self.queue.try_pop()
    }

    /// Lines waiting for this subscriber (never more than [`HubOptions::tail_lines`]).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The log hub; cheap to clone (all clones are the same hub).
#[derive(Clone, Default)]
pub struct LogHub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    apps: Mutex<HashMap<String, Arc<Mutex<AppLog>>>>,
    options: HubOptions,
}

struct AppLog {
    ring: VecDeque<Arc<LogLine>>,
    tails: Vec<(Filter, Arc<LineQueue>)>,
    drains: Vec<drains::DrainSlot>,
}

impl Drop for AppLog {
    fn drop(&mut self) {
        for (_, q) in &self.tails {
            q.close();
        }
    }
}

impl fmt::Debug for LogHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHub")
            .field("options", &self.inner.options)
            .field("apps", &lock(&self.inner.apps).len())
            .finish()
    }
}

impl LogHub {
    pub fn new() -> LogHub {
        LogHub::with_options(HubOptions::default())
    }

    pub fn with_options(options: HubOptions) -> LogHub {
        LogHub {
            inner: Arc::new(HubInner {
                apps: Mutex::new(HashMap::new()),
                options,
            }),
        }
    }

    pub fn options(&self) -> &HubOptions {
        &self.inner.options
    }

    /// The app's log, created on first use.
    fn app(&self, app: &str) -> Arc<Mutex<AppLog>> {
        let mut apps = lock(&self.inner.apps);
        if let Some(log) = apps.get(app) {
            return log.clone();
        }
        let log = Arc::new(Mutex::new(AppLog {
            ring: VecDeque::with_capacity(self.inner.options.ring_lines.min(4096)),
            tails: Vec::new(),
            drains: Vec::new(),
        }));
        apps.insert(app.to_owned(), log.clone());
        log
    }

    fn existing(&self, app: &str) -> Option<Arc<Mutex<AppLog>>> {
        lock(&self.inner.apps).get(app).cloned()
    }

    /// Add a line to the app's log: the ring, every matching tail, every drain. Never waits.
    pub fn append(&self, app: &str, line: LogLine) {
        self.append_except(app, line, None);
    }

    /// [`append`](Self::append), but not into the drain with token `skip` (which sends the line
    /// itself: its own `L10`).
    pub(crate) fn append_except(&self, app: &str, line: LogLine, skip: Option<&str>) {
        let log = self.app(app);
        let mut log = lock(&log);
        for piece in split(line, self.inner.options.max_line_bytes) {
            self.append_one(&mut log, Arc::new(piece), skip);
        }
    }

    fn append_one(&self, log: &mut AppLog, line: Arc<LogLine>, skip: Option<&str>) {
        let ring_lines = self.inner.options.ring_lines;
        while log.ring.len() >= ring_lines.max(1) {
            log.ring.pop_front();
        }
        if ring_lines > 0 {
            log.ring.push_back(line.clone());
        }
        log.tails.retain(|(_, q)| !q.is_closed());
        for (filter, queue) in &log.tails {
            if filter.matches(&line) {
                queue.push(line.clone());
            }
        }
        for drain in &log.drains {
            if skip != Some(drain.info.token.as_str()) {
                drain.queue.push(line.clone());
            }
        }
    }

    /// The last `n` lines of the app matching `filter`, oldest first (`dyno logs -n N`).
    pub fn recent(&self, app: &str, filter: &Filter, n: usize) -> Vec<LogLine> {
        match self.existing(app) {
            Some(log) => recent_in(&lock(&log), filter, n),
            None => Vec::new(),
        }
    }

    /// New lines of the app matching `filter`, from now on (`--tail`).
    pub fn subscribe(&self, app: &str, filter: Filter) -> Tail {
        self.tail(app, filter, 0).1
    }

    /// [`subscribe`](Self::subscribe) with room for `lines` queued lines: for a reader on this
    /// host that keeps up but may fall behind a burst (`dyno up` printing to its stdout).
    pub fn subscribe_with_room(&self, app: &str, filter: Filter, lines: usize) -> Tail {
        let queue = Arc::new(LineQueue::new(lines));
        let log = self.app(app);
        lock(&log).tails.push((filter, queue.clone()));
        Tail { queue }
    }

    /// The last `n` matching lines and a [`Tail`] that continues exactly after them: no line is
    /// missed or shown twice between the two (`dyno logs -n N --tail`).
    pub fn tail(&self, app: &str, filter: Filter, n: usize) -> (Vec<LogLine>, Tail) {
        let queue = Arc::new(LineQueue::new(self.inner.options.tail_lines));
        let log = self.app(app);
        let mut log = lock(&log);
        let recent = recent_in(&log, &filter, n);
        log.tails.push((filter, queue.clone()));
        (recent, Tail { queue })
    }

    /// Forget the app's lines and end its tails and drains (app destroyed).
    pub fn remove_app(&self, app: &str) {
        let removed = lock(&self.inner.apps).remove(app);
        if let Some(log) = removed {
            let mut log = lock(&log);
            log.ring.clear();
            for (_, q) in log.tails.drain(..) {
                q.close();
            }
            log.drains.clear();
        }
    }

    /// The app's log under its new name (`apps:rename`): its lines and its tails follow. Its
    /// drains stop (each names the app in its own notices) and are returned, for the caller
    /// to start again under the new name; lines still queued for them are not sent.
    pub fn rename_app(&self, from: &str, to: &str) -> Vec<DrainInfo> {
        let mut apps = lock(&self.inner.apps);
        let Some(log) = apps.remove(from) else {
            return Vec::new();
        };
        // A log left under the new name (an app of that name destroyed while its dynos
        // still wrote) is replaced; dropping it ends its tails.
        apps.insert(to.to_owned(), log.clone());
        drop(apps);
        let mut log = lock(&log);
        log.drains.drain(..).map(|d| d.info.clone()).collect()
    }

    /// Apps with a log.
    pub fn apps(&self) -> Vec<String> {
        lock(&self.inner.apps).keys().cloned().collect()
    }

    /// Start a drain for the app (`drains:add`): `syslog://host:port`, `syslog+tls://host:port`,
    /// `https://[user:pass@]host[:port]/path` (or `http://`). Must be called inside a tokio
    /// runtime: the drain's writer is a task on it.
    pub fn add_drain(
        &self,
        app: &str,
        url: &str,
        options: DrainOptions,
    ) -> Result<DrainInfo, DrainError> {
        self.add_drain_with_token(app, url, &drains::new_token(), options)
    }

    /// [`add_drain`](Self::add_drain) with a known token (a drain restored from the state).
    pub fn add_drain_with_token(
        &self,
        app: &str,
        url: &str,
        token: &str,
        options: DrainOptions,
    ) -> Result<DrainInfo, DrainError> {
        let log = self.app(app);
        let mut log = lock(&log);
        if log.drains.iter().any(|d| d.info.url == url) {
            return Err(DrainError::Exists {
                url: drains::redact(url),
            });
        }
        // Weak: the hub owns its drains, not the other way round.
        let hub = Arc::downgrade(&self.inner);
        let notices: drains::NoticeSink = Arc::new(move |app, line, skip| {
            if let Some(inner) = hub.upgrade() {
                LogHub { inner }.append_except(app, line, Some(skip));
            }
        });
        let slot = drains::start(notices, app, url, token, options)?;
        let info = slot.info.clone();
        log.drains.push(slot);
        Ok(info)
    }

    /// Stop and forget the app's drain with this URL or token (`drains:remove`). Lines still
    /// queued for it are not sent.
    pub fn remove_drain(&self, app: &str, url_or_token: &str) -> bool {
        let Some(log) = self.existing(app) else {
            return false;
        };
        let mut log = lock(&log);
        let before = log.drains.len();
        log.drains
            .retain(|d| d.info.url != url_or_token && d.info.token != url_or_token);
        log.drains.len() != before
    }

    /// The app's drains (`dyno drains`).
    pub fn drains(&self, app: &str) -> Vec<DrainInfo> {
        match self.existing(app) {
            Some(log) => lock(&log).drains.iter().map(|d| d.info.clone()).collect(),
            None => Vec::new(),
        }
    }
}

fn recent_in(log: &AppLog, filter: &Filter, n: usize) -> Vec<LogLine> {
    let mut out: Vec<LogLine> = log
        .ring
        .iter()
        .rev()
        .filter(|l| filter.matches(l))
        .take(n)
        .map(|l| LogLine::clone(l))
        .collect();
    out.reverse();
    out
}

/// The line as lines of at most `max` bytes each (cut at character boundaries), as Heroku
/// splits a long line rather than cutting it off.
fn split(line: LogLine, max: usize) -> Vec<LogLine> {
    if line.message.len() <= max || max == 0 {
        return vec![line];
    }
    let mut pieces = Vec::new();
    let mut rest = line.message.as_str();
    while !rest.is_empty() {
        let mut end = max.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // `max` is shorter than one character: take the whole character.
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        pieces.push(LogLine {
            message: rest[..end].to_owned(),
            ..line.clone()
        });
        rest = &rest[end..];
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(source: Source, dyno: &str, message: &str) -> LogLine {
        LogLine::now(source, dyno, message)
    }

    #[test]
    fn ps_filter_is_exact_with_a_dot_and_a_type_without() {
        let web1 = line(Source::App, "web.1", "a");
        let web12 = line(Source::App, "web.12", "b");
        let webhook = line(Source::App, "webhook.1", "c");
        let router = line(Source::Heroku, "router", "d");
        let f = Filter::ps("web");
        assert!(f.matches(&web1) && f.matches(&web12));
        assert!(!f.matches(&webhook) && !f.matches(&router));
        let f = Filter::ps("web.1");
        assert!(f.matches(&web1) && !f.matches(&web12));
        assert!(Filter::ps("router").matches(&router));
    }

    #[test]
    fn source_filter() {
        let app = line(Source::App, "web.1", "a");
        let heroku = line(Source::Heroku, "web.1", "b");
        let router = line(Source::Heroku, "router", "c");
        let router2 = line(Source::Router, "router", "d");
        let f = Filter::source(Source::App);
        assert!(f.matches(&app) && !f.matches(&heroku) && !f.matches(&router));
        let f = Filter::source(Source::Heroku);
        assert!(!f.matches(&app) && f.matches(&heroku) && f.matches(&router));
        let f = Filter::source(Source::Router);
        assert!(!f.matches(&app) && !f.matches(&heroku));
        assert!(f.matches(&router) && f.matches(&router2));
        let both = Filter {
            ps: Some("web".into()),
            source: Some(Source::Heroku),
        };
        assert!(both.matches(&heroku) && !both.matches(&app) && !both.matches(&router));
    }

    #[test]
    fn a_gap_in_a_tail_reads_as_herokus_l11() {
        let gap = Item::Dropped {
            count: 3,
            since: std::time::UNIX_EPOCH,
        }
        .to_string();
        assert!(
            gap.ends_with(
                " heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session dropped 3 \
                 messages since 1970-01-01T00:00:00+00:00"
            ),
            "{gap}"
        );
    }

    #[test]
    fn long_messages_are_split_at_character_boundaries() {
        let hub = LogHub::with_options(HubOptions {
            max_line_bytes: 5,
            ..HubOptions::default()
        });
        hub.append("a", line(Source::App, "web.1", "abcdéfghij"));
        let pieces: Vec<String> = hub
            .recent("a", &Filter::all(), 10)
            .into_iter()
            .map(|l| l.message)
            .collect();
        assert_eq!(pieces, ["abcd", "éfgh", "ij"]);
        assert_eq!(pieces.concat(), "abcdéfghij");
        let one = split(line(Source::App, "web.1", "é"), 1);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn removing_an_app_forgets_it_and_ends_its_tails() {
        let hub = LogHub::new();
        let mut tail = hub.subscribe("a", Filter::all());
        hub.append("a", line(Source::App, "web.1", "x"));
        hub.remove_app("a");
        assert!(hub.recent("a", &Filter::all(), 10).is_empty());
        assert!(hub.apps().is_empty());
        assert!(matches!(tail.try_next(), Some(Item::Line(_))));
        assert!(tail.try_next().is_none());
    }

    #[test]
    fn a_dropped_tail_is_forgotten() {
        let hub = LogHub::new();
        let tail = hub.subscribe("a", Filter::all());
        drop(tail);
        hub.append("a", line(Source::App, "web.1", "x"));
        let log = hub.existing("a").unwrap();
        assert!(lock(&log).tails.is_empty());
    }
}
