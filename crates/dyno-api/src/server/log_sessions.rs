//! Heroku's log sessions: `POST /apps/{app}/log-sessions` answers a `logplex_url`, and a `GET`
//! of that URL streams the app's log as Server-Sent Events (`data: <line>`), which is what
//! Heroku's CLI reads (`heroku logs [--tail]`).
//!
//! The URL carries its own secret (the CLI sends no token there), so `GET /log-sessions/{id}`
//! is the one path served without the bearer token. Without `tail` the stream ends after the
//! recent lines; with it, new lines follow until the client goes away, with a comment every
//! [`KEEPALIVE`] so that idle proxies keep the connection. A client that comes back with
//! `Last-Event-ID` (the CLI reconnects a tail that was cut) gets only new lines.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use tokio::sync::mpsc;

use super::routes::{plain, Failure, Resp};
use super::Platform;
use crate::heroku::LogSessionCreate;
use crate::types::LogQuery;

/// How often an idle tail sends a comment line.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events that are already waiting go out together, in chunks of about this many bytes.
const BATCH_BYTES: usize = 64 * 1024;

/// The query a session body asks for (`lines` 1–1500, `dyno`, `source`, `tail`), checked as
/// `GET /apps/{app}/logs` checks its query string.
pub(super) fn query_of(body: &LogSessionCreate) -> Result<LogQuery, Failure> {
    let mut parts = Vec::new();
    if let Some(n) = body.lines {
        parts.push(format!("n={n}"));
    }
    // Heroku's CLI sends a process type (`-p web`) in `dyno` too; `type` is the newer field.
    if let Some(ps) = body.dyno.as_deref().or(body.process_type.as_deref()) {
        parts.push(format!("ps={}", encode_query(ps)));
    }
    if let Some(source) = body.source.as_deref() {
        parts.push(format!("source={}", encode_query(source)));
    }
    if body.tail == Some(true) {
        parts.push("tail=1".into());
    }
    LogQuery::parse(&parts.join("&")).map_err(plain)
}

/// Keeps a value's `&` and `=` from reading as the query's own separators.
fn encode_query(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace('&', "%26")
        .replace('=', "%3D")
}

/// `BASE/log-sessions/{secret}`: on the API's own host and scheme, as the client reached it
/// ([`super::builds::base_url`]: `https://` over TLS).
pub(super) fn url_for(base: &str, secret: &str) -> String {
    format!("{base}/log-sessions/{secret}")
}

/// `GET /log-sessions/{secret}`: the session's lines as an event stream.
pub(super) async fn stream<P: Platform>(
    platform: &P,
    secret: &str,
    headers: &HeaderMap,
) -> Result<Resp, Failure> {
    let (app, mut query) = platform
        .log_session(secret.to_owned())
        .await
        .map_err(plain)?;
    let resumed = headers.contains_key("last-event-id");
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    if query.tail {
        if resumed {
            query.n = Some(0);
        }
        let mut lines = platform.tail(app, query).await.map_err(plain)?;
        tokio::spawn(async move {
            let mut id = 0u64;
            loop {
                let frame = tokio::select! {
                    line = lines.recv() => match line {
                        Some(line) => {
                            id += 1;
                            let mut frame = Vec::new();
                            push_event(&mut frame, id, &line);
                            // What else is waiting goes in the same chunk.
                            while frame.len() < BATCH_BYTES {
                                let Ok(line) = lines.try_recv() else { break };
                                id += 1;
                                push_event(&mut frame, id, &line);
                            }
                            Bytes::from(frame)
                        }
                        None => return,
                    },
                    () = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
    } else {
        let lines = platform.logs(app, query).await.map_err(plain)?;
        tokio::spawn(async move {
            let mut frame = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                push_event(&mut frame, i as u64 + 1, line);
                if frame.len() >= BATCH_BYTES
                    && tx.send(std::mem::take(&mut frame).into()).await.is_err()
                {
                    return;
                }
            }
            if !frame.is_empty() {
                let _ = tx.send(frame.into()).await;
            }
        });
    }
    let mut resp = Response::new(ChannelBody(rx).boxed());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// One event onto `out`: `id: N`, then the line as `data:` (a line holding a newline becomes
/// several `data:` fields, which a client joins back with newlines).
fn push_event(out: &mut Vec<u8>, id: u64, line: &str) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b'\n');
    for part in line.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(part.strip_suffix('\r').unwrap_or(part).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// A body of frames made by a task (log sessions, build output).
pub(super) struct ChannelBody(pub(super) mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|f| Ok(hyper::body::Frame::data(f))))
    }
}

/// A new session's secret: a random (version 4) UUID as 32 hex digits.
pub fn new_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HOST;

    fn event(id: u64, line: &str) -> Bytes {
        let mut out = Vec::new();
        push_event(&mut out, id, line);
        Bytes::from(out)
    }

    #[test]
    fn events_are_framed_line_by_line() {
        assert_eq!(
            event(3, "2026-12-07T10:00:00.000000+00:00 app[web.1]: hi"),
            Bytes::from_static(b"id: 3\ndata: 2026-12-07T10:00:00.000000+00:00 app[web.1]: hi\n\n")
        );
        assert_eq!(
            event(1, "a\r\nb"),
            Bytes::from_static(b"id: 1\ndata: a\ndata: b\n\n")
        );
    }

    #[test]
    fn session_bodies_become_log_queries() {
        let body: LogSessionCreate =
            serde_json::from_str(r#"{"source":"app","dyno":"web.1","lines":5,"tail":false}"#)
                .unwrap();
        let q = query_of(&body).unwrap();
        assert_eq!(
            (q.n, q.ps.as_deref(), q.source.as_deref(), q.tail),
            (Some(5), Some("web.1"), Some("app"), false)
        );
        let body: LogSessionCreate = serde_json::from_str(r#"{"dyno":"web&n=9"}"#).unwrap();
        assert!(query_of(&body).is_err());
        let body: LogSessionCreate = serde_json::from_str(r#"{"lines":0}"#).unwrap();
        assert!(query_of(&body).is_err());
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:5000"));
        let url = |h: &HeaderMap, tls| url_for(&super::super::builds::base_url(h, tls), "ab");
        assert_eq!(url(&h, false), "http://127.0.0.1:5000/log-sessions/ab");
        assert_eq!(url(&h, true), "https://127.0.0.1:5000/log-sessions/ab");
        h.insert(HOST, HeaderValue::from_static("evil/x?"));
        assert_eq!(url(&h, false), "http://localhost/log-sessions/ab");
    }
}
