//! The bridge to git's CGI, `git http-backend`: the request body streamed into its stdin, its
//! header block parsed, the rest of its stdout streamed back as the response body. The CGI runs
//! in a process group of its own (with `git receive-pack` and the hook under it), killed whole
//! when the client goes away or sends more than [`MAX_GIT_BODY`].

use std::net::SocketAddr;
use std::process::Stdio;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::super::log_sessions::ChannelBody;
use super::super::routes::Resp;
use super::{user_of, GitAction, GitRepository, MAX_GIT_BODY};

/// Largest CGI header block read before the body.
pub(super) const MAX_CGI_HEAD: usize = 64 * 1024;
/// Bytes read from the CGI at a time.
const READ_CHUNK: usize = 32 * 1024;

/// Why the CGI could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CgiError {
    #[error("cannot run `git http-backend` ({0}); install git on the daemon's host (apt-get install git)")]
    Spawn(#[source] std::io::Error),
    #[error("`git http-backend` ended without answering; see the daemon's log")]
    NoHead,
    #[error("`git http-backend` sent a header block over {MAX_CGI_HEAD} bytes")]
    HeadTooLarge,
    #[error("`git http-backend` sent a header line that is not `Name: value`: {0:?}")]
    BadLine(String),
    #[error("`git http-backend` sent an invalid status: {0:?}")]
    BadStatus(String),
    #[error("reading `git http-backend`: {0}")]
    Read(#[source] std::io::Error),
}

/// The CGI's header block: its status and other headers.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CgiHead {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
}

/// Headers of the CGI's answer that are the server's to set.
const SERVER_HEADERS: [&str; 4] = [
    "connection",
    "transfer-encoding",
    "content-length",
    "keep-alive",
];

/// Parses a CGI header block at the start of `buf`: `Ok(None)` while it is incomplete, else the
/// head and where the body starts. Lines end in `\n` or `\r\n`; an empty line ends the block.
pub(super) fn parse_cgi_head(buf: &[u8]) -> Result<Option<(CgiHead, usize)>, CgiError> {
    let mut head = CgiHead {
        status: StatusCode::OK,
        headers: Vec::new(),
    };
    let mut at = 0;
    loop {
        let Some(nl) = buf[at..].iter().position(|b| *b == b'\n') else {
            return if buf.len() > MAX_CGI_HEAD {
                Err(CgiError::HeadTooLarge)
            } else {
                Ok(None)
            };
        };
        let line = &buf[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += nl + 1;
        if at > MAX_CGI_HEAD {
            return Err(CgiError::HeadTooLarge);
        }
        if line.is_empty() {
            return Ok(Some((head, at)));
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(CgiError::BadLine(text.into_owned()));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or_default();
            head.status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| CgiError::BadStatus(value.to_string()))?;
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| CgiError::BadLine(text.to_string()))?;
        if SERVER_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| CgiError::BadLine(text.to_string()))?;
        head.headers.push((name, value));
    }
}

/// Runs `git http-backend` for the request: body in, head parsed, the rest streamed back.
pub(super) async fn run(
    req: Request<Incoming>,
    repo: &GitRepository,
    action: GitAction,
    app: &str,
) -> Result<Resp, CgiError> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let peer = parts
        .extensions
        .get::<super::super::Connection>()
        .and_then(|c| c.peer)
        .map_or_else(
            || "127.0.0.1".to_string(),
            |p: SocketAddr| p.ip().to_string(),
        );
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .current_dir(&repo.project_root)
        // Only what the CGI is given: not the daemon's HOME (its git config) nor its secrets.
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("GIT_PROJECT_ROOT", &repo.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{}/{}", repo.repo, action.path()))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("REMOTE_USER", user_of(&parts.headers))
        .env("REMOTE_ADDR", peer);
    for (var, name) in [
        ("CONTENT_TYPE", "content-type"),
        ("CONTENT_LENGTH", "content-length"),
        // git sends gzipped bodies; http-backend inflates them.
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
        // Protocol v2 for fetches.
        ("HTTP_GIT_PROTOCOL", "git-protocol"),
    ] {
        if let Some(value) = header(name) {
            cmd.env(var, value);
        }
    }
    cmd.envs(repo.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // receive-pack and the hook under it are killed with it.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(CgiError::Spawn)?;
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let (Some(stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(CgiError::Spawn(std::io::Error::other("no pipes")));
    };
    tokio::spawn(log_stderr(stderr, app.to_string()));
    let feeder = tokio::spawn(feed(body, stdin, group));
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let (head, body_at) = loop {
        if let Some(found) = parse_cgi_head(&buf)? {
            break found;
        }
        buf.reserve(READ_CHUNK);
        if stdout.read_buf(&mut buf).await.map_err(CgiError::Read)? == 0 {
            feeder.abort();
            kill_group(&mut child, group);
            return Err(CgiError::NoHead);
        }
    };
    let rest = buf.split_off(body_at).freeze();
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(relay(stdout, rest, tx, child, group, feeder));
    let mut resp = Response::new(ChannelBody(rx).boxed());
    *resp.status_mut() = head.status;
    for (name, value) in head.headers {
        resp.headers_mut().append(name, value);
    }
    Ok(resp)
}

/// The request body into the CGI's stdin, then EOF. Past [`MAX_GIT_BODY`], or when the
/// client breaks off, the CGI is killed: what it got so far is no pack.
async fn feed(
    mut body: Incoming,
    mut stdin: tokio::process::ChildStdin,
    group: Option<rustix::process::Pid>,
) {
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) => {
                tracing::debug!("git: the request body broke off: {e}");
                kill(group);
                return;
            }
        };
        total += data.len() as u64;
        if total > MAX_GIT_BODY {
            tracing::warn!("git: a request body over {MAX_GIT_BODY} bytes; stopped it");
            kill(group);
            return;
        }
        // The CGI stopped reading (it answered already, or failed): the rest is not needed.
        if stdin.write_all(&data).await.is_err() {
            return;
        }
    }
}

/// The CGI's stdout to the response body, as it comes; the CGI is reaped at its end, or killed
/// when the client goes away (the body is dropped).
async fn relay(
    mut stdout: tokio::process::ChildStdout,
    first: Bytes,
    tx: mpsc::Sender<Bytes>,
    mut child: tokio::process::Child,
    group: Option<rustix::process::Pid>,
    feeder: tokio::task::JoinHandle<()>,
) {
    let mut gone = !first.is_empty() && tx.send(first).await.is_err();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    while !gone {
        buf.reserve(READ_CHUNK);
        tokio::select! {
            read = stdout.read_buf(&mut buf) => match read {
                Ok(0) => break,
                Ok(_) => gone = tx.send(buf.split().freeze()).await.is_err(),
                Err(e) => {
                    tracing::warn!("git: reading `git http-backend`: {e}");
                    gone = true;
                }
            },
            () = tx.closed() => gone = true,
        }
    }
    // The feeder may hold the group's id: it ends before the child can be reaped.
    feeder.abort();
    let _ = feeder.await;
    if gone {
        kill_group(&mut child, group);
    }
    match child.wait().await {
        Ok(status) if !status.success() && !gone => {
            tracing::debug!("git: `git http-backend` ended with {status}")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("git: waiting for `git http-backend`: {e}"),
    }
}

/// Kills the CGI's process group, if the CGI is still there (not yet reaped: its id, which is
/// the group's, cannot have been reused).
fn kill_group(child: &mut tokio::process::Child, group: Option<rustix::process::Pid>) {
    if matches!(child.try_wait(), Ok(None)) {
        kill(group);
    }
}

fn kill(group: Option<rustix::process::Pid>) {
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

/// The CGI's own complaints (`fatal: …`) go to the daemon's log.
async fn log_stderr(stderr: impl AsyncRead + Unpin, app: String) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(%app, "git http-backend: {line}");
    }
}
