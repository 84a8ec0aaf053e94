//! Heroku's rendezvous: how `heroku run` reaches an attached one-off. The dyno's `attach_url` is
//! `rendezvous://HOST:PORT/SECRET`; the CLI opens TLS to HOST:PORT (checking the certificate
//! against its trusted CAs: `NODE_EXTRA_CA_CERTS`), sends `SECRET\r\n`, drops the first chunk it
//! gets back, and from then on the connection is the one-off's terminal (see
//! [`crate::server::attach`]).
//!
//! A connection that does not finish its handshake and secret line within [`HELLO_TIMEOUT`] is
//! closed; an unknown, claimed or expired secret is told so in a line the CLI prints.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
pub use tokio_rustls::TlsAcceptor;

use crate::server::attach::AttachOptions;
use crate::server::{Platform, MAX_CONNECTIONS};

/// The TLS handshake and the secret line must arrive within this.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest secret line accepted (a secret is a UUID; Heroku's CLI adds the URL's query, if any).
const MAX_LINE: usize = 512;
/// The first chunk, which Heroku's CLI reads as "the dyno is here" and does not print.
const GREETING: &[u8] = b"rendezvous\r\n";

/// Serves the rendezvous on `listener` until the future is dropped.
pub async fn serve<P: Platform>(listener: TcpListener, tls: TlsAcceptor, platform: Arc<P>) {
    let mut conns = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                while conns.try_join_next().is_some() {}
                while conns.len() >= MAX_CONNECTIONS {
                    conns.join_next().await;
                }
                let (tls, platform) = (tls.clone(), platform.clone());
                conns.spawn(async move {
                    if let Err(e) = serve_conn(stream, tls, &*platform).await {
                        tracing::debug!(%peer, "rendezvous: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("rendezvous: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn<P: Platform>(
    stream: tokio::net::TcpStream,
    tls: TlsAcceptor,
    platform: &P,
) -> std::io::Result<()> {
    let hello = async {
        let mut stream = tls.accept(stream).await?;
        let line = read_line(&mut stream).await?;
        Ok::<_, std::io::Error>((stream, line))
    };
    let (mut stream, line) = tokio::time::timeout(HELLO_TIMEOUT, hello)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no secret line"))??;
    let secret = secret_of(&line);
    let claimed = platform.attach(secret.to_string()).await;
    stream.write_all(GREETING).await?;
    stream.flush().await?;
    match claimed {
        Ok(relay) => {
            relay(Box::new(stream), AttachOptions::default()).await;
            Ok(())
        }
        Err(e) => {
            stream
                .write_all(format!("{}\r\n", e.message).as_bytes())
                .await?;
            stream.shutdown().await
        }
    }
}

/// The bytes up to `\n` (without `\r\n`), at most [`MAX_LINE`] of them.
async fn read_line(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        if line.len() == MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "secret line too long",
            ));
        }
        line.push(byte);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The secret in the CLI's line: the URL's path without its `/` and query.
fn secret_of(line: &str) -> &str {
    let line = line.trim().trim_start_matches('/');
    line.split(['?', '#']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_the_clis_line() {
        assert_eq!(secret_of("abc-123"), "abc-123");
        assert_eq!(secret_of("/abc-123?x=1"), "abc-123");
        assert_eq!(secret_of(""), "");
    }

    #[tokio::test]
    async fn lines_end_at_newline_and_are_bounded() {
        let mut input: &[u8] = b"secret\r\nrest";
        assert_eq!(read_line(&mut input).await.unwrap(), "secret");
        assert_eq!(input, b"rest");
        let long = vec![b'a'; MAX_LINE + 1];
        let mut input: &[u8] = &long;
        assert!(read_line(&mut input).await.is_err());
    }
}
