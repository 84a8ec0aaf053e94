//! The API's client, used by the CLI: one HTTP/1.1 connection per request, over the unix socket
//! or over TCP with a bearer token.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, RANGE};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::error::ApiError;

mod builds;
mod resources;

/// The daemon's default API socket.
pub const DEFAULT_SOCKET: &str = "/run/dyno/api.sock";

/// Why a request did not get an answer it could use. The `Display` text says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// No connection to the daemon.
    #[error("cannot reach the dyno daemon at {target}: {reason}; {hint}")]
    Connect {
        target: String,
        reason: String,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    /// The connection broke during the request.
    #[error(
        "the dyno daemon at {target} broke off the request: {reason}; check the daemon's log and \
         retry"
    )]
    Transport { target: String, reason: String },
    /// The daemon answered something this client cannot read.
    #[error(
        "unexpected answer from the dyno daemon at {target} (HTTP {status}): {reason}; is this \
         CLI the same version as the daemon?"
    )]
    Protocol {
        target: String,
        status: u16,
        reason: String,
    },
}

impl ClientError {
    /// The server's error, if it sent one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// A response as received, for callers that want the status and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Tcp { addr: SocketAddr, token: String },
}

/// A client of the API. Cheap to clone; holds no connection between requests.
#[derive(Debug, Clone)]
pub struct ApiClient {
    target: Target,
}

impl ApiClient {
    /// Talk to the daemon over its unix socket (e.g. [`DEFAULT_SOCKET`]).
    pub fn unix(path: impl Into<PathBuf>) -> ApiClient {
        ApiClient {
            target: Target::Unix(path.into()),
        }
    }

    /// Talk to the daemon's TCP listener, sending `Authorization: Bearer <token>` (no header when
    /// `token` is empty).
    pub fn tcp(addr: SocketAddr, token: impl Into<String>) -> ApiClient {
        ApiClient {
            target: Target::Tcp {
                addr,
                token: token.into(),
            },
        }
    }

    /// `GET path` → `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.request(Method::GET, path, None, Bytes::new()).await?;
        self.decode(resp)
    }

    /// `POST path` with `body` as JSON → `T`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_json(Method::POST, path, body).await
    }

    /// `PATCH path` with `body` as JSON → `T`.
    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_json(Method::PATCH, path, body).await
    }

    pub(super) async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol {
            target: self.target_name(),
            status: 0,
            reason: format!("could not encode the request: {e}"),
        })?;
        let resp = self
            .request(method, path, Some("application/json"), body.into())
            .await?;
        self.decode(resp)
    }

    /// `GET path` of a list, every page of it: the first as `range` asks (`None`: the
    /// server's order), then each `Next-Range` the server answers with.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        range: Option<&str>,
    ) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        let mut range = range.map(str::to_owned);
        loop {
            let resp = self
                .request_ranged(Method::GET, path, None, range.as_deref(), Bytes::new())
                .await?;
            let next = resp
                .headers
                .get("next-range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let page: Vec<T> = self.decode(resp)?;
            let empty = page.is_empty();
            all.extend(page);
            match next {
                Some(next) if !empty && range.as_deref() != Some(next.as_str()) => {
                    range = Some(next)
                }
                _ => return Ok(all),
            }
        }
    }

    /// `DELETE path` → `T`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .request(Method::DELETE, path, None, Bytes::new())
            .await?;
        self.decode(resp)
    }

    /// One request with any method, content type and body; the answer as received (any status).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<RawResponse, ClientError> {
        self.request_ranged(method, path, content_type, None, body)
            .await
    }

    /// [`ApiClient::request`] with a `Range` header (Heroku's pagination of lists).
    async fn request_ranged(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        range: Option<&str>,
        body: Bytes,
    ) -> Result<RawResponse, ClientError> {
        let (resp, _driver) = self
            .open(method, path, content_type, range, false, body)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(e))?;
        Ok(RawResponse {
            status,
            headers,
            body: body.to_bytes(),
        })
    }

    /// `GET path` answered by a stream of text lines (a log session): `on_lines` gets the
    /// complete lines of each chunk as it comes (a reader may write them in one go), until the
    /// server ends the stream or the connection breaks.
    pub async fn stream_lines(
        &self,
        path: &str,
        mut on_lines: impl FnMut(&[String]),
    ) -> Result<(), ClientError> {
        let (resp, _driver) = self
            .open(Method::GET, path, None, None, false, Bytes::new())
            .await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let bytes = body
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            return Err(self
                .decode::<serde_json::Value>(RawResponse {
                    status,
                    headers: Default::default(),
                    body: bytes,
                })
                .err()
                .unwrap_or_else(|| self.protocol(status, "an error without a body")));
        }
        let mut pending = Vec::new();
        let mut lines = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.transport(e))?;
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                let mut start = 0;
                while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
                    let end = start + i;
                    lines.push(String::from_utf8_lossy(&pending[start..end]).into_owned());
                    start = end + 1;
                }
                pending.drain(..start);
                if !lines.is_empty() {
                    on_lines(&lines);
                    lines.clear();
                }
            }
        }
        Ok(())
    }

    /// Attaches to a one-off (`GET /attach/{secret}`, upgraded to a raw byte stream: see
    /// [`crate::server::attach`]); with `exit_status`, the stream ends with the one-off's
    /// [`crate::exit_status_line`].
    pub async fn attach(
        &self,
        secret: &str,
        exit_status: bool,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let query = if exit_status { "?exit-status=1" } else { "" };
        let path = format!("/attach/{secret}{query}");
        let (resp, _driver) = self
            .open(Method::GET, &path, None, None, true, Bytes::new())
            .await?;
        let status = resp.status().as_u16();
        if status != 101 {
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            let raw = RawResponse {
                status,
                headers: Default::default(),
                body,
            };
            return Err(self
                .decode::<serde_json::Value>(raw)
                .err()
                .unwrap_or_else(|| self.protocol(status, "no upgrade")));
        }
        let io = hyper::upgrade::on(resp)
            .await
            .map_err(|e| self.transport(e))?;
        Ok(TokioIo::new(io))
    }

    fn transport(&self, e: hyper::Error) -> ClientError {
        ClientError::Transport {
            target: self.target_name(),
            reason: e.to_string(),
        }
    }

    /// Connects, sends the request, and returns the answer's head with its body still to read
    /// (and the connection's driver, aborted when dropped).
    async fn open(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        range: Option<&str>,
        upgrade: bool,
        body: Bytes,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, AbortOnDrop), ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "dyno")
            .header(ACCEPT, "application/vnd.heroku+json; version=3");
        if upgrade {
            req = req
                .header(hyper::header::CONNECTION, "Upgrade")
                .header(hyper::header::UPGRADE, "tcp");
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(range) = range {
            let value = HeaderValue::from_str(range)
                .map_err(|_| self.protocol(0, "a Range header with characters not allowed"))?;
            req = req.header(RANGE, value);
        }
        if let Some(token) = self.token() {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                self.protocol(
                    0,
                    "the API token contains characters not allowed in a header",
                )
            })?;
            req = req.header(AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| self.protocol(0, &format!("invalid request: {e}")))?;
        match &self.target {
            Target::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                self.send(stream, req).await
            }
            Target::Tcp { addr, .. } => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                let _ = stream.set_nodelay(true);
                self.send(stream, req).await
            }
        }
    }

    async fn send<S>(
        &self,
        stream: S,
        req: Request<Full<Bytes>>,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, AbortOnDrop), ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(e))?;
        let driver = AbortOnDrop(tokio::spawn(conn.with_upgrades()));
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.transport(e))?;
        Ok((resp, driver))
    }

    fn decode<T: DeserializeOwned>(&self, resp: RawResponse) -> Result<T, ClientError> {
        if (200..300).contains(&resp.status) {
            serde_json::from_slice(&resp.body)
                .map_err(|e| self.protocol(resp.status, &format!("invalid JSON body: {e}")))
        } else {
            match ApiError::from_json(resp.status, &resp.body) {
                Some(e) => Err(ClientError::Api(e)),
                None => Err(self.protocol(
                    resp.status,
                    &format!("not an API error body: {}", snippet(&resp.body)),
                )),
            }
        }
    }

    /// The bearer token to send: TCP only, and none when it is empty.
    fn token(&self) -> Option<&str> {
        match &self.target {
            Target::Tcp { token, .. } if !token.is_empty() => Some(token),
            _ => None,
        }
    }

    fn target_name(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp { addr, .. } => addr.to_string(),
        }
    }

    pub(crate) fn protocol(&self, status: u16, reason: &str) -> ClientError {
        ClientError::Protocol {
            target: self.target_name(),
            status,
            reason: reason.to_owned(),
        }
    }

    fn connect_error(&self, source: io::Error) -> ClientError {
        let unix = matches!(self.target, Target::Unix(_));
        let hint = match source.kind() {
            io::ErrorKind::PermissionDenied => {
                "the socket is open to its owner only (mode 0600): run this command as root"
            }
            io::ErrorKind::ConnectionRefused if unix => {
                "nothing listens there (a stale socket); start it with `dyno serve`"
            }
            _ if unix => "start it with `dyno serve`",
            _ => "check the address, and start the daemon with its TCP listener (`dyno serve`)",
        };
        ClientError::Connect {
            target: self.target_name(),
            reason: io_reason(&source),
            hint,
            source,
        }
    }
}

/// `No such file or directory`, without the ` (os error 2)` suffix.
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        format!("{text:?}")
    }
}

/// The connection's driver task, stopped when the answer is done with.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
