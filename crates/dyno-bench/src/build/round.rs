//! One timed round: a command that deploys (`git push`, `dyno deploy`), from its start until
//! the router answers with the round's greeting. Three observers run beside it, each taking
//! its own timestamps on the bench's clock:
//!
//! - the command itself (its exit);
//! - the build, seen through the API: `GET /apps/{app}/builds` every [`LIST_EVERY`] until a
//!   build that was not there before is listed, then its `output_stream_url` followed to its
//!   end, each chunk of lines stamped as it arrives (first line, `-----> Launching...`, last
//!   line). The first chunk may hold lines written before the bench joined; the join comes
//!   within [`LIST_EVERY`] of the build's creation, and the build's first line (its dyno's
//!   driver) comes later than that, after the workspace and the build dyno are set up;
//! - the router: a GET for the app's Host every [`POLL_EVERY`] (one keep-alive connection,
//!   a new one after an error) until the answer starts with the greeting.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dyno_api::ApiClient;

use crate::load::Target;
use crate::router::procs::with_log;

/// How often the router is asked while a round runs.
pub(super) const POLL_EVERY: Duration = Duration::from_millis(10);
/// How often the builds are listed until the round's build shows up.
pub(super) const LIST_EVERY: Duration = Duration::from_millis(5);
/// The longest a round may take before the bench gives up.
const LONGEST: Duration = Duration::from_secs(300);

/// When each step of a round happened, from the command's start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeline {
    /// The build was listed by the API (the source is uploaded and the build created).
    pub(super) listed: Duration,
    /// The build's first output line arrived.
    pub(super) first_line: Duration,
    /// `-----> Launching...`: compiled, the slug measured; the release comes next.
    pub(super) launching: Duration,
    /// The build's last line arrived: released, the formation converged.
    pub(super) last_line: Duration,
    /// The command exited.
    pub(super) exited: Duration,
    /// The router answered with the round's greeting.
    pub(super) serving: Duration,
}

impl Timeline {
    /// The build's own time: first output line to last.
    pub(super) fn build(&self) -> Duration {
        self.last_line.saturating_sub(self.first_line)
    }
}

/// Runs `command` (its output to `log`) and times it until `target` answers with a body that
/// starts with `greeting`. The round's build is the first of `app` that was not listed before
/// the command started; it must succeed. On an error the command is stopped (SIGTERM).
pub(super) fn timed(
    runtime: &tokio::runtime::Runtime,
    api: &ApiClient,
    target: &Target,
    app: &str,
    mut command: Command,
    log: &Path,
    greeting: &str,
) -> Result<Timeline, String> {
    let before: HashSet<String> = runtime
        .block_on(api.builds(app))
        .map_err(|e| format!("list builds: {e}"))?
        .into_iter()
        .map(|b| b.id)
        .collect();
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    let start = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("start: {e}"))?;
    // Signalled through a pidfd: opened before anyone can reap the child, it never names a
    // later process that got the same number.
    let pidfd = match rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("pidfd: {e}"));
        }
    };
    let exited: OnceLock<(Duration, bool)> = OnceLock::new();
    let stop = AtomicBool::new(false);
    let (build, serving) = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let status = child.wait();
            let _ = exited.set((start.elapsed(), status.is_ok_and(|s| s.success())));
            // A failed command deploys nothing: the router is not asked any longer.
            if !exited.get().is_some_and(|e| e.1) {
                stop.store(true, Ordering::Relaxed);
            }
        });
        let poller = scope.spawn(|| poll_router(target, greeting, start, &stop));
        let build = runtime.block_on(follow_build(api, app, &before, start, &exited));
        if build.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let serving = poller
            .join()
            .unwrap_or(Err("the router poll panicked".into()));
        if (build.is_err() || serving.is_err()) && exited.get().is_none() {
            // The bench gives up on the round: the command must not keep it waiting.
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::TERM);
        }
        let _ = waiter.join();
        (build, serving)
    });
    let with_log = |e: String| with_log(e, log);
    let (exited, ok) = *exited.get().ok_or("the command was not waited for")?;
    if !ok {
        return Err(with_log("the command failed".into()));
    }
    let build = build.map_err(with_log)?;
    let serving = serving.map_err(with_log)?;
    Ok(Timeline {
        listed: build.listed,
        first_line: build.first_line,
        launching: build.launching,
        last_line: build.last_line,
        exited,
        serving,
    })
}

/// The build's side of a round.
struct BuildSeen {
    listed: Duration,
    first_line: Duration,
    launching: Duration,
    last_line: Duration,
}

/// Waits for a build of `app` not in `before`, then follows its output to the end; it must
/// have succeeded.
async fn follow_build(
    api: &ApiClient,
    app: &str,
    before: &HashSet<String>,
    start: Instant,
    exited: &OnceLock<(Duration, bool)>,
) -> Result<BuildSeen, String> {
    let build = loop {
        // Whether the command had ended before this look: if it had and no build is listed,
        // none is coming.
        let ended = exited.get().is_some();
        let list = api.builds(app).await.map_err(|e| format!("builds: {e}"))?;
        if let Some(build) = list.into_iter().find(|b| !before.contains(&b.id)) {
            break build;
        }
        if ended || start.elapsed() > LONGEST {
            return Err("no build was started".into());
        }
        tokio::time::sleep(LIST_EVERY).await;
    };
    let listed = start.elapsed();
    let (mut first, mut launching, mut last) = (None, None, None);
    api.stream_build_output(&build.output_stream_url, |lines| {
        let now = start.elapsed();
        first.get_or_insert(now);
        last = Some(now);
        if lines.iter().any(|l| l.starts_with("-----> Launching")) {
            launching.get_or_insert(now);
        }
    })
    .await
    .map_err(|e| format!("build output: {e}"))?;
    let done = api
        .build(app, &build.id)
        .await
        .map_err(|e| format!("build: {e}"))?;
    if done.status != "succeeded" {
        return Err(format!("build {} {}", build.id, done.status));
    }
    let first_line = first.ok_or("the build printed nothing")?;
    let last_line = last.unwrap_or(first_line);
    Ok(BuildSeen {
        listed,
        first_line,
        launching: launching.unwrap_or(last_line),
        last_line,
    })
}

/// GETs through the router until the answer starts with `greeting`; when that came.
fn poll_router(
    target: &Target,
    greeting: &str,
    start: Instant,
    stop: &AtomicBool,
) -> Result<Duration, String> {
    let mut stream = None;
    let mut last_answer = String::new();
    while !stop.load(Ordering::Relaxed) {
        if start.elapsed() > LONGEST {
            return Err(format!(
                "the router did not answer {greeting:?} within {LONGEST:?} (last: {last_answer})"
            ));
        }
        let connection = match stream.as_mut() {
            Some(s) => Ok(s),
            None => target.connect().map(|s| stream.insert(s)),
        };
        let answer = connection.and_then(|s| target.get(s));
        match answer {
            Ok(body) if body.starts_with(greeting.as_bytes()) => return Ok(start.elapsed()),
            Ok(body) => {
                last_answer = String::from_utf8_lossy(&body)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .into()
            }
            Err(e) => {
                last_answer = e;
                stream = None;
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
    Err(format!("the router still answered: {last_answer}"))
}

/// Runs `command` (output to `log`) to its end; how long it took.
pub(super) fn timed_command(mut command: Command, log: &Path) -> Result<Duration, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    let start = Instant::now();
    let status = command.status().map_err(|e| format!("start: {e}"))?;
    let took = start.elapsed();
    if !status.success() {
        return Err(with_log(status.to_string(), log));
    }
    Ok(took)
}
