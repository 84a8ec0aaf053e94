//! Attached one-offs (`heroku run`, `dyno run`; see [`dyno_api::server::attach`]): the one-off
//! starts at once with a terminal (or pipes) whose other end waits here, under a secret, for its
//! client. The client has [`ATTACH_WINDOW`] to come; then Heroku's R13 and the one-off is
//! stopped. Until the client is there the dyno's output waits in the terminal's buffer (its
//! writes block when that is full), so nothing of it is lost.
//!
//! The relay copies the client's bytes to the dyno and the dyno's output to the client. It ends
//! when the output does (every process of the dyno closed it: they are gone) — then the client's
//! connection is closed, after the exit-status line if asked for — or when the client hangs up:
//! then the dyno is stopped (closing a terminal's master is also the kernel's SIGHUP to the
//! app), as on Heroku.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dyno_api::heroku::ReleaseRef;
use dyno_api::{ApiError, AppName, AttachIo, AttachOptions, AttachRelay, Dyno, DynoCreate};
use dyno_logs::logs::{LogLine, Source};
use dyno_sandbox::terminal::{self, ClientEnds};
use dyno_state::ids::release_uuid;
use dyno_supervisor::{State, Status};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::api::DaemonApi;
use super::api_shapes::invalid;
use super::converge::{stop_all, Running};
use super::Daemon;

/// How long a one-off waits for its client.
pub const ATTACH_WINDOW: Duration = Duration::from_secs(60);
/// How long, after its output ended, the relay waits for the one-off's exit status.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(30);
/// How long a client without a terminal has, once the dyno's output ended, to send its end of
/// input before the connection closes.
const INPUT_END_WAIT: Duration = Duration::from_secs(2);
/// Bytes moved per read, each way.
const CHUNK: usize = 64 * 1024;
/// Heroku's CLI ends a client's stdin with this byte when there is no terminal.
const END_OF_INPUT: u8 = 0x04;

/// What Heroku's CLI appends to the command for `heroku run --exit-code`, so that the dyno's
/// shell prints the status it then reads. dyno runs the command without it and writes that line
/// itself from the one-off's real status: it also comes when the command `exit`s or `exec`s.
const HEROKU_EXIT_CODE_SUFFIX: &str = "; echo \"\u{FFFF} heroku-command-exit-status: $?\"";

/// A one-off waiting for its client.
struct Waiting {
    app: String,
    dyno: String,
    ends: ClientEnds,
    status: watch::Receiver<Status>,
    /// The client asked for the exit-status line (Heroku's `--exit-code`).
    exit_status: bool,
}

/// Attached one-offs waiting for their client, by secret.
pub struct Attachments {
    waiting: Mutex<HashMap<String, Waiting>>,
    /// How long a one-off waits for its client ([`ATTACH_WINDOW`]; tests shrink it).
    window: Duration,
}

impl Default for Attachments {
    fn default() -> Self {
        Attachments::new(ATTACH_WINDOW)
    }
}

impl Attachments {
    pub fn new(window: Duration) -> Attachments {
        Attachments {
            waiting: Mutex::default(),
            window,
        }
    }

    /// Keeps `ends` for the client of `app`'s one-off `dyno` (its secret is returned); stops the
    /// one-off if nobody claims them within its window ([`ATTACH_WINDOW`]).
    pub(super) fn wait_for_client(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        app: &str,
        dyno: &str,
        ends: ClientEnds,
        status: watch::Receiver<Status>,
        exit_status: bool,
    ) -> String {
        let secret = dyno_api::server::log_sessions::new_secret();
        let waiting = Waiting {
            app: app.to_string(),
            dyno: dyno.to_string(),
            ends,
            status,
            exit_status,
        };
        crate::lock(&self.waiting).insert(secret.clone(), waiting);
        let (attachments, daemon, key) = (self.clone(), daemon.clone(), secret.clone());
        tokio::spawn(async move {
            tokio::time::sleep(attachments.window).await;
            let Some(left) = crate::lock(&attachments.waiting).remove(&key) else {
                return;
            };
            daemon.dyno_log(
                &left.app,
                &left.dyno,
                "Error R13 (Attach error) -> Failed to attach to process",
            );
            drop(left.ends);
            daemon.stop_dyno(&left.app, &left.dyno).await;
        });
        secret
    }

    /// The relay of the one-off behind `secret`; a secret works once.
    pub(super) fn claim(
        &self,
        daemon: &Arc<Daemon>,
        secret: &str,
    ) -> Result<AttachRelay, ApiError> {
        let waiting = crate::lock(&self.waiting).remove(secret).ok_or_else(|| {
            ApiError::not_found(format!(
                "No one-off dyno waits for this attach secret: it was used already, or its \
                 {} s passed and the one-off was stopped. Run the command again.",
                self.window.as_secs()
            ))
        })?;
        let daemon = daemon.clone();
        Ok(Box::new(
            move |io: Box<dyn AttachIo>, options: AttachOptions| {
                Box::pin(async move { run(daemon, waiting, io, options).await })
            },
        ))
    }
}

/// The dyno's side of the relay: where the client's bytes go, where its output comes from.
struct DynoSide {
    input: Option<AsyncFd<OwnedFd>>,
    output: AsyncFd<OwnedFd>,
    terminal: bool,
}

impl DynoSide {
    fn new(ends: ClientEnds) -> std::io::Result<DynoSide> {
        let (input, output, terminal) = match ends {
            ClientEnds::Terminal { master } => (master.try_clone()?, master, true),
            ClientEnds::Pipes { stdin, output } => (stdin, output, false),
        };
        for fd in [&input, &output] {
            let flags = rustix::fs::fcntl_getfl(fd)?;
            rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        }
        // SAFETY: each OwnedFd is moved into its AsyncFd, which keeps it open and unchanged
        // for as long as it lives.
        let (input, output) = unsafe { (AsyncFd::register(input)?, AsyncFd::register(output)?) };
        Ok(DynoSide {
            input: Some(input),
            output,
            terminal,
        })
    }
}

/// How a relay ended.
enum Ended {
    /// The dyno's output ended.
    Output,
    /// The client hung up (or its connection broke).
    Client,
}

async fn run(daemon: Arc<Daemon>, waiting: Waiting, io: Box<dyn AttachIo>, options: AttachOptions) {
    let Waiting {
        app,
        dyno,
        ends,
        mut status,
        exit_status,
    } = waiting;
    let mut side = match DynoSide::new(ends) {
        Ok(side) => side,
        Err(e) => {
            tracing::warn!(%app, %dyno, "attach: {e}");
            daemon.stop_dyno(&app, &dyno).await;
            return;
        }
    };
    let (mut client_in, mut client_out) = tokio::io::split(io);
    let to_client = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read(&side.output, &mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            client_out.write_all(&buf[..n]).await?;
        }
    };
    let terminal = side.terminal;
    let input = &mut side.input;
    let (input_ended, mut input_ended_seen) = watch::channel(false);
    let mut from_client = Box::pin(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = client_in.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let Some(fd) = input.as_ref() else {
                continue;
            };
            let (data, last) = match buf[..n].iter().position(|&b| b == END_OF_INPUT) {
                Some(at) if !terminal => (&buf[..at], true),
                _ => (&buf[..n], false),
            };
            // A dyno that stopped reading (or exited) gets nothing more; its output still goes.
            if write_all(fd, data).await.is_err() || last {
                *input = None;
            }
            if last {
                input_ended.send_replace(true);
            }
        }
    });
    let ended = tokio::select! {
        sent = to_client => if sent.is_ok() { Ended::Output } else { Ended::Client },
        () = &mut from_client => Ended::Client,
    };
    match ended {
        Ended::Output => {
            if !terminal {
                // Heroku's CLI sends its end of input even when the dyno is done already, and
                // fails if the connection was closed before it could.
                let sent = async {
                    tokio::select! {
                        _ = input_ended_seen.wait_for(|ended| *ended) => {}
                        () = &mut from_client => {}
                    }
                };
                let _ = tokio::time::timeout(INPUT_END_WAIT, sent).await;
            }
            if options.exit_status || exit_status {
                let code = exit_code(&mut status).await;
                let _ = client_out
                    .write_all(dyno_api::exit_status_line(code).as_bytes())
                    .await;
            }
            let _ = client_out.shutdown().await;
        }
        Ended::Client => {
            let message = if terminal {
                "Client connection closed. Sending SIGHUP to all processes"
            } else {
                "Client connection closed. Stopping all processes"
            };
            daemon.dyno_log(&app, &dyno, message);
            drop(from_client);
            drop(side);
            daemon.stop_dyno(&app, &dyno).await;
        }
    }
}

/// The one-off's exit status once its supervisor recorded it (1 if it never says).
async fn exit_code(status: &mut watch::Receiver<Status>) -> i32 {
    let ended = status.wait_for(|s| s.exit_code.is_some() || s.state == State::Down);
    match tokio::time::timeout(EXIT_STATUS_WAIT, ended).await {
        Ok(Ok(s)) => s.exit_code.unwrap_or(1),
        _ => 1,
    }
}

/// Reads what the dyno wrote; 0 at its end (a terminal whose other side is all closed says EIO).
async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| rustix::io::read(fd.get_ref(), &mut *buf).map_err(Into::into)) {
            Ok(Ok(n)) => return Ok(n),
            Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                return Ok(0)
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut ready = fd.writable().await?;
        match ready.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(Into::into)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

impl Daemon {
    /// A `heroku[DYNO]` line in the app's log.
    pub(super) fn dyno_log(&self, app: &str, dyno: &str, message: &str) {
        self.hub
            .append(app, LogLine::now(Source::Heroku, dyno, message.to_string()));
    }

    /// Stops one dyno (SIGTERM, grace, SIGKILL) without starting another in its place: for a
    /// one-off whose client left.
    pub(super) async fn stop_dyno(&self, app: &str, dyno: &str) {
        let stopping: Vec<Running> = {
            let mut apps = self.apps.lock().await;
            let Some(runtime) = apps.get_mut(app) else {
                return;
            };
            let (stop, keep) = std::mem::take(&mut runtime.dynos)
                .into_iter()
                .partition(|d| d.name == dyno && !d.handle.is_finished());
            runtime.dynos = keep;
            stop
        };
        stop_all(stopping).await;
    }
}

impl DaemonApi {
    /// `POST /apps/{app}/dynos`: a one-off, attached (`heroku run`) or not (`run:detached`).
    pub(super) async fn one_off(&self, name: AppName, dyno: DynoCreate) -> Result<Dyno, ApiError> {
        let (app, app_ref) = self.app_ref(&name).await?;
        let env = dyno.env.unwrap_or_default();
        for key in env.keys() {
            dyno_state::ConfigKey::parse(key).map_err(invalid)?;
        }
        // `heroku run --size`: any of Heroku's sizes (as typed, any case), Standard-1X else.
        let size = match dyno.size.as_deref() {
            Some(size) => dyno_state::SizeName::parse(size).map_err(invalid)?,
            None => dyno_state::SizeName::parse("Standard-1X").map_err(invalid)?,
        };
        let attached = dyno.attach == Some(true);
        // Only an attached one-off has a client to read the status line.
        let (command, exit_status) = match dyno
            .command
            .trim_end()
            .strip_suffix(HEROKU_EXIT_CODE_SUFFIX)
        {
            Some(command) if attached => (command.trim_end().to_string(), true),
            _ => (dyno.command.clone(), false),
        };
        let (client, attachment) = if attached {
            // A terminal when the client has one (Heroku's CLI then sends its size), unless
            // it asked for none (`--no-tty`).
            let size = terminal_size(&env);
            let terminal = size.is_some() && dyno.force_no_tty != Some(true);
            let (client, ends) = terminal::open(terminal, size)
                .map_err(|e| ApiError::internal(format!("open the one-off's terminal: {e}")))?;
            (Some(client), Some(dyno_supervisor::Attachment::new(ends)))
        } else {
            (None, None)
        };
        let (started, status) = self
            .daemon
            .run_one_off(name.as_str(), &command, env, size.as_str(), attachment)
            .await?;
        let attach_url = client.map(|ends| {
            let secret = self.attachments.wait_for_client(
                &self.daemon,
                name.as_str(),
                &started,
                ends,
                status,
                exit_status,
            );
            match self.rendezvous {
                Some(addr) => format!("rendezvous://{addr}/{secret}"),
                // No rendezvous listener: only the API's own upgrade road.
                None => format!("/attach/{secret}"),
            }
        });
        let version = app.current_release.max(1);
        let now = dyno_api::rfc3339(std::time::SystemTime::now());
        Ok(Dyno {
            name: started,
            process_type: "run".into(),
            state: "starting".into(),
            release: ReleaseRef {
                id: release_uuid(&app.uuid, version),
                version,
            },
            size: size.as_str().to_string(),
            command,
            id: String::new(),
            app: app_ref,
            updated_at: now.clone(),
            created_at: now,
            attach_url,
        })
    }
}

/// The client's terminal size, from the `COLUMNS` and `LINES` Heroku's CLI sends when its
/// stdout is a terminal (80×24 where it sent 0, as a terminal that never set its size does);
/// `None` when it sent none: it has no terminal.
fn terminal_size(env: &dyno_state::model::Config) -> Option<terminal::TermSize> {
    let number = |key: &str, default: u16| {
        env.get(key)
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    env.contains_key("COLUMNS").then(|| terminal::TermSize {
        cols: number("COLUMNS", 80),
        rows: number("LINES", 24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herokus_exit_code_suffix_is_the_clis() {
        // What heroku 11's `run --exit-code 'exit 3'` sends (lib/run/dyno.js).
        let sent = "exit 3 ; echo \"\u{FFFF} heroku-command-exit-status: $?\"";
        assert_eq!(
            sent.strip_suffix(HEROKU_EXIT_CODE_SUFFIX)
                .map(str::trim_end),
            Some("exit 3")
        );
    }
}
