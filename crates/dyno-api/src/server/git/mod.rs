//! Git's smart HTTP on the API's listeners, as Heroku serves `https://git.heroku.com/APP.git`:
//! `/APP.git/info/refs?service=git-receive-pack|git-upload-pack`, `/APP.git/git-receive-pack`
//! and `/APP.git/git-upload-pack`, bridged to git's own CGI, `git http-backend`.
//!
//! On TCP the credential is HTTP Basic with the API token as the password (any user name), as
//! Heroku's, or the bearer token; without one the answer is `401` with `WWW-Authenticate:
//! Basic`, so git asks its credential helper (`heroku git:credentials`). On the unix socket
//! there is none: its file mode is the authentication. Failures are `text/plain` in Heroku's
//! words, which git prints as `remote: …` lines.
//!
//! Nothing is buffered whole ([`cgi`]): the request body streams into the CGI's stdin while its
//! stdout streams back (chunked), so a pack of any size up to [`MAX_GIT_BODY`] passes through a
//! few buffers, and a push's hook output (the build's lines, on git's sideband) reaches the
//! pusher as it is written.

mod cgi;

use std::path::PathBuf;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CACHE_CONTROL};
use hyper::{Method, Request, Response, StatusCode};

use super::routes::Resp;
use super::Platform;
use crate::types::{App, AppName};
pub use cgi::CgiError;

/// Largest request body (a pushed pack) passed to the CGI; the CGI is killed past it.
pub const MAX_GIT_BODY: u64 = 1 << 30;
/// Where an app's repository is, as the platform gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepository {
    /// `GIT_PROJECT_ROOT`: the directory holding the repositories.
    pub project_root: PathBuf,
    /// The repository's directory under the root (`<app uuid>.git`).
    pub repo: String,
    /// More environment for the CGI and so for its hooks (`core.hooksPath` and what the
    /// hook needs to reach the platform).
    pub env: Vec<(String, String)>,
}

/// What a path under `/APP.git/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GitAction {
    /// `info/refs` (with `?service=…`): the refs, and which service.
    InfoRefs,
    /// `git-receive-pack`: a push.
    ReceivePack,
    /// `git-upload-pack`: a fetch or clone.
    UploadPack,
    /// Anything else under `/APP.git/` (git's dumb protocol, a typo).
    Other,
}

impl GitAction {
    pub(super) fn path(self) -> &'static str {
        match self {
            GitAction::InfoRefs => "info/refs",
            GitAction::ReceivePack => "git-receive-pack",
            GitAction::UploadPack => "git-upload-pack",
            GitAction::Other => "",
        }
    }
}

/// `/APP.git/REST` → (`APP`, what `REST` asks for); `None` for a path that is not a git one.
pub(super) fn parse_path(path: &str) -> Option<(&str, GitAction)> {
    let (repo, rest) = path.strip_prefix('/')?.split_once('/')?;
    let app = repo.strip_suffix(".git").filter(|a| !a.is_empty())?;
    let action = match rest {
        "info/refs" => GitAction::InfoRefs,
        "git-receive-pack" => GitAction::ReceivePack,
        "git-upload-pack" => GitAction::UploadPack,
        _ => GitAction::Other,
    };
    Some((app, action))
}

/// A request's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Credential {
    /// `Basic`: a user name (anything) and the password (the API token).
    Basic { user: String, password: Vec<u8> },
    /// `Bearer`: the API token.
    Bearer(Vec<u8>),
}

impl Credential {
    /// What is compared with the API token.
    fn secret(&self) -> &[u8] {
        match self {
            Credential::Basic { password, .. } => password,
            Credential::Bearer(token) => token,
        }
    }
}

/// The request's `Authorization`; `None` when there is none or it is malformed.
pub(super) fn credential(headers: &HeaderMap) -> Option<Credential> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    let rest = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(Credential::Bearer(rest.to_vec()));
    }
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(Credential::Basic {
        user: String::from_utf8_lossy(&decoded[..colon]).into_owned(),
        password: decoded[colon + 1..].to_vec(),
    })
}

/// The CGI's `REMOTE_USER` (git names the pusher after it): a `Basic` user name when it is
/// a plain one, else `dyno`.
pub(super) fn user_of(headers: &HeaderMap) -> String {
    match credential(headers) {
        Some(Credential::Basic { user, .. })
            if !user.is_empty()
                && user.len() <= 64
                && user.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            user
        }
        _ => "dyno".to_string(),
    }
}

/// The base of the git URLs answers name (`https://HOST:PORT`): the request's own on TCP, the
/// public URL the unix server was given on the socket (none without a TCP listener: git cannot
/// reach a unix socket).
pub(super) fn git_base(req: &Request<Incoming>) -> Option<String> {
    match req.extensions().get::<super::Connection>() {
        Some(conn) if conn.peer.is_none() => conn.public_url.as_deref().map(str::to_owned),
        _ => Some(super::builds::request_base(req)),
    }
}

/// The app with its `git_url` (`BASE/APP.git`), unless the platform named one.
pub(super) fn with_git_url(mut app: App, base: Option<&str>) -> App {
    if app.git_url.is_none() {
        app.git_url = base.map(|base| format!("{base}/{}.git", app.name));
    }
    app
}

/// Serves one git request. `token`: the API token on TCP, `None` on the unix socket.
pub(super) async fn route<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    token: Option<&[u8]>,
    app: &str,
    action: GitAction,
) -> Resp {
    if let Some(token) = token {
        let ok = credential(req.headers())
            .is_some_and(|c| super::routes::constant_time_eq(c.secret(), token));
        if !ok {
            return unauthorized();
        }
    }
    let Ok(name) = AppName::new(app) else {
        return no_such_app(app);
    };
    let method = req.method().clone();
    match (action, &method) {
        (GitAction::InfoRefs, &Method::GET) => {
            let service = req.uri().query().and_then(service_of);
            if service.is_none() {
                return text(
                    StatusCode::FORBIDDEN,
                    &[
                        "Please upgrade your git client.",
                        "dyno serves git's smart HTTP protocol only (git 1.6.6 or later).",
                    ],
                );
            }
        }
        (GitAction::ReceivePack | GitAction::UploadPack, &Method::POST) => {}
        (GitAction::InfoRefs, _) => return not_allowed("GET"),
        (GitAction::ReceivePack | GitAction::UploadPack, _) => return not_allowed("POST"),
        (GitAction::Other, _) => {
            return text(
                StatusCode::NOT_FOUND,
                &[
                    "Invalid path.",
                    &format!("Syntax is: https://HOST/{name}.git where {name} is your app's name."),
                ],
            )
        }
    }
    let repo = match platform.git_repository(name.clone()).await {
        Ok(repo) => repo,
        Err(e) if e.status == 404 => return no_such_app(name.as_str()),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return text(status, &[&e.message]);
        }
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_GIT_BODY) {
        return too_large();
    }
    match cgi::run(req, &repo, action, name.as_str()).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(app = %name, "git: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, &[&e.to_string()])
        }
    }
}

/// `service=git-upload-pack` or `service=git-receive-pack` in a query string.
fn service_of(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|p| p.strip_prefix("service="))
        .find(|s| matches!(*s, "git-upload-pack" | "git-receive-pack"))
}

/// A `text/plain` answer, each line after Heroku's `!` and a tab (git prints them as
/// `remote: …`).
fn text(status: StatusCode, lines: &[&str]) -> Resp {
    let mut body = String::new();
    for line in lines {
        body.push_str("!\t");
        body.push_str(line);
        body.push('\n');
    }
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Heroku's answer to a push or fetch with no or the wrong credential; `WWW-Authenticate`
/// makes git ask its credential helper first.
fn unauthorized() -> Resp {
    let mut resp = text(
        StatusCode::UNAUTHORIZED,
        &[
            "WARNING:",
            "Do not authenticate with username and password using git.",
            "Run `heroku login` to update your credentials, then retry the git command.",
            "Use the daemon's API token (--api-token-file) as the password: `heroku git:remote \
             -a APP` sets up `heroku git:credentials` to send it.",
        ],
    );
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"dyno\""),
    );
    resp
}

/// Heroku's answer for an app that does not exist (git then says the repository was not
/// found).
fn no_such_app(app: &str) -> Resp {
    text(StatusCode::NOT_FOUND, &[&format!("No such app as {app}.")])
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        &[&format!("Method not allowed here: use {allow}.")],
    );
    resp.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn too_large() -> Resp {
    let mut resp = text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &[&format!(
            "Push rejected: the pack is larger than {} MB.",
            MAX_GIT_BODY >> 20
        )],
    );
    resp.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests;
