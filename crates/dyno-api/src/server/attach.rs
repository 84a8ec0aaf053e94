//! Attaching a client to a one-off dyno (`heroku run`, `dyno run`). A one-off created with
//! `"attach": true` has a secret (the last segment of its `attach_url`); a client claims it once,
//! on one of two roads, and from then on the connection carries raw bytes both ways:
//!
//! - **rendezvous** (Heroku's, see [`crate::rendezvous`]): TLS to the daemon's rendezvous
//!   listener, the secret on the first line;
//! - **upgrade** (dyno's CLI, also over the unix socket): `GET /attach/{secret}` with
//!   `Connection: Upgrade` and `Upgrade: tcp`, answered `101 Switching Protocols`.
//!
//! The bytes are the client's stdin and the dyno's stdout and stderr: with a terminal, raw keys
//! (`\x03` is the terminal's Ctrl-C); without, `\x04` ends the dyno's stdin, as Heroku's CLI
//! sends it. The connection ends when the dyno's output does; a client that hangs up ends the
//! dyno. With `?exit-status=1` (the upgrade road) the stream's last line is Heroku's
//! `\u{FFFF} heroku-command-exit-status: N`, which is how `dyno run` exits with the dyno's status.

use std::future::Future;
use std::pin::Pin;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::routes::{plain, response, Failure, Resp};
use super::Platform;
use crate::error::ApiError;

/// The client's end of an attachment: a TLS connection or an upgraded API connection.
pub trait AttachIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AttachIo for T {}

/// What the client asked of the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// End with Heroku's exit-status line (see the module doc).
    pub exit_status: bool,
}

/// The line that carries a one-off's exit status, as Heroku's CLI reads it (its `--exit-code`
/// makes the dyno's shell print it).
pub fn exit_status_line(code: i32) -> String {
    format!("\u{FFFF} heroku-command-exit-status: {code}\n")
}

/// A claimed one-off's relay, to run on the client's connection until either side is done.
pub type AttachRelay = Box<
    dyn FnOnce(Box<dyn AttachIo>, AttachOptions) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send,
>;

/// `GET /attach/{secret}` with `Upgrade: tcp`: claims the one-off, answers 101, and runs its
/// relay on the upgraded connection.
pub(super) async fn upgrade<P: Platform>(
    mut req: Request<Incoming>,
    platform: &P,
    secret: &str,
) -> Result<Resp, Failure> {
    if !matches!(*req.method(), Method::GET | Method::POST) {
        let e = ApiError::method_not_allowed(req.method().as_str(), req.uri().path(), "GET");
        return Err((e, Some("GET")));
    }
    let wants_tcp = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !wants_tcp {
        return Err(plain(ApiError::new(
            400,
            crate::error::ids::BAD_REQUEST,
            "Attaching needs `Connection: Upgrade` and `Upgrade: tcp`; or use the rendezvous \
             URL (`attach_url`) as Heroku's CLI does.",
        )));
    }
    let options = AttachOptions {
        exit_status: req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "exit-status=1")),
    };
    let relay = platform.attach(secret.to_string()).await.map_err(plain)?;
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => relay(Box::new(TokioIo::new(io)), options).await,
            Err(e) => tracing::debug!("attach: upgrade failed: {e}"),
        }
    });
    let mut resp = response(StatusCode::SWITCHING_PROTOCOLS, Vec::new());
    let headers = resp.headers_mut();
    headers.remove(hyper::header::CONTENT_TYPE);
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("tcp"));
    Ok(resp)
}
