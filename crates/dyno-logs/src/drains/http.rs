//! `https://` (and `http://`) drains: batches POSTed as Logplex does.
//!
//! ```text
//! POST /logs HTTP/1.1
//! Host: example.com
//! Content-Type: application/logplex-1
//! Logplex-Msg-Count: 2
//! Logplex-Frame-Id: 09C557EAFCFB6CF2740EE62F62971098
//! Logplex-Drain-Token: d.fc6b856b-3332-4546-93de-7d0ee272c3bd
//! User-Agent: dyno-logplex/0.1.0
//! Content-Length: 130
//!
//! 62 <190>1 2026-11-25T10:00:00.000000+00:00 host app web.1 - hello62 <190>1 …
//! ```
//!
//! One HTTP/1.1 keep-alive connection. A batch is sent when it holds `batch_lines` lines or
//! `batch_interval` after its first line. A 2xx answer ends the batch; a 5xx or 429 answer, a
//! connection error or a timeout sends the same batch again (same frame id) after a backoff; any
//! other answer (a 4xx: wrong URL or credentials) drops the batch with a warning, as retrying
//! would not help. `user:password@` in the URL becomes basic authentication.

use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::frame::Rfc5424;
use super::{Backoff, Scheme, Target, Writer};

type Sender = SendRequest<Full<Bytes>>;

const USER_AGENT: &str = concat!("dyno-logplex/", env!("CARGO_PKG_VERSION"));

async fn connect(target: &Target, writer: &Writer) -> io::Result<Sender> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let _ = tcp.set_nodelay(true);
    if target.scheme != Scheme::Https {
        return handshake(tcp).await;
    }
    let mut config = writer
        .options
        .tls
        .clone()
        .ok_or_else(|| io::Error::other("no TLS roots configured"))?;
    if config.alpn_protocols.is_empty() {
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        config = c.into();
    }
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    handshake(tls).await
}

async fn handshake<S>(stream: S) -> io::Result<Sender>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    // Ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `Host`: the port only when it is not the scheme's default.
fn host_header(target: &Target) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let default = if target.scheme == Scheme::Https {
        443
    } else {
        80
    };
    if target.port == default {
        host
    } else {
        format!("{host}:{}", target.port)
    }
}

fn basic_auth(userinfo: &str) -> String {
    let decoded = percent_decode(userinfo);
    format!("Basic {}", base64(&decoded))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// 32 hex digits, like Logplex's frame ids.
fn frame_id() -> String {
    format!("{:016X}{:016X}", fastrand::u64(..), fastrand::u64(..))
}

enum Outcome {
    Sent,
    Retry(String),
    Reject(StatusCode),
}

/// Why a batch did not reach the drain (the connection is dropped and made again).
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("reading the answer: {0}")]
    Answer(Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within the write timeout")]
    TimedOut,
}

async fn post(
    sender: &mut Sender,
    target: &Target,
    writer: &Writer,
    body: &Bytes,
    count: usize,
    frame_id: &str,
) -> Result<Outcome, PostError> {
    sender.ready().await?;
    let mut request = Request::post(target.path.as_str())
        .header(hyper::header::HOST, host_header(target))
        .header(hyper::header::CONTENT_TYPE, "application/logplex-1")
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header("Logplex-Msg-Count", count)
        .header("Logplex-Frame-Id", frame_id)
        .header("Logplex-Drain-Token", writer.token.as_str());
    if let Some(userinfo) = &target.userinfo {
        request = request.header(hyper::header::AUTHORIZATION, basic_auth(userinfo));
    }
    let request = request.body(Full::new(body.clone()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Read (a bounded part of) the answer so the connection can carry the next batch.
    Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(PostError::Answer)?;
    Ok(if status.is_success() {
        Outcome::Sent
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Retry(format!("answered {status}"))
    } else {
        Outcome::Reject(status)
    })
}

pub(crate) async fn run(writer: Writer, target: Target) {
    let format = Rfc5424 {
        hostname: "host".into(),
        structured_data: writer.options.structured_data,
    };
    let options = writer.options.clone();
    let mut backoff = Backoff::new(&options);
    let mut sender: Option<Sender> = None;
    let mut scratch = String::new();
    while let Some(batch) = writer.next_batch(options.batch_interval).await {
        let mut body = Vec::with_capacity(batch.len() * 128);
        for line in &batch {
            format.push_frame_with(&mut body, &mut scratch, line);
        }
        let body = Bytes::from(body);
        let frame_id = frame_id();
        loop {
            let s = match sender.as_mut() {
                Some(s) => s,
                None => match backoff.connect(&writer, connect(&target, &writer)).await {
                    Some(s) => sender.insert(s),
                    None => continue,
                },
            };
            let sent = tokio::time::timeout(
                options.write_timeout,
                post(s, &target, &writer, &body, batch.len(), &frame_id),
            )
            .await
            .unwrap_or(Err(PostError::TimedOut));
            match sent {
                Ok(Outcome::Sent) => {
                    backoff.reset();
                    break;
                }
                Ok(Outcome::Reject(status)) => {
                    tracing::warn!(drain = %writer.url, lines = batch.len(), "log drain answered {status}: batch dropped");
                    backoff.reset();
                    break;
                }
                Ok(Outcome::Retry(why)) => {
                    tracing::debug!(drain = %writer.url, "log drain {why}: retrying");
                    backoff.wait().await;
                }
                Err(e) => {
                    tracing::debug!(drain = %writer.url, "log drain: {e}: reconnecting");
                    sender = None;
                    backoff.wait().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_basic_auth() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(
            basic_auth("user:p%40ss"),
            format!("Basic {}", base64(b"user:p@ss"))
        );
        assert_eq!(percent_decode("a%2"), b"a%2");
        assert_eq!(percent_decode("%zz%41"), b"%zzA");
    }

    #[test]
    fn host_header_leaves_out_default_ports() {
        let t = Target::parse("https://example.com/logs").unwrap();
        assert_eq!(host_header(&t), "example.com");
        let t = Target::parse("https://[::1]:8443/").unwrap();
        assert_eq!(host_header(&t), "[::1]:8443");
        assert_eq!(frame_id().len(), 32);
    }
}
