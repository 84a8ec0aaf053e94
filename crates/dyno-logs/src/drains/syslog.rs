//! `syslog://` and `syslog+tls://` drains: octet-counted RFC 5424 frames over one TCP (or TLS)
//! connection, remade with backoff when it fails.

use std::io;
use std::pin::Pin;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::frame::Rfc5424;
use super::{Backoff, Scheme, Target, Writer};

type Conn = Pin<Box<dyn AsyncWrite + Send>>;

pub(crate) async fn connect(target: &Target, writer: &Writer) -> io::Result<Conn> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let _ = tcp.set_nodelay(true);
    if target.scheme != Scheme::SyslogTls {
        return Ok(Box::pin(tcp));
    }
    let config = writer
        .options
        .tls
        .clone()
        .ok_or_else(|| io::Error::other("no TLS roots configured"))?;
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Box::pin(tls))
}

pub(crate) async fn run(writer: Writer, target: Target) {
    let format = Rfc5424 {
        hostname: writer.token.clone(),
        structured_data: writer.options.structured_data,
    };
    let options = writer.options.clone();
    let mut backoff = Backoff::new(&options);
    let mut conn: Option<Conn> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut scratch = String::new();
    loop {
        if pending.is_empty() {
            let Some(batch) = writer.next_batch(std::time::Duration::ZERO).await else {
                if let Some(mut c) = conn.take() {
                    let _ = tokio::time::timeout(options.write_timeout, c.shutdown()).await;
                }
                return;
            };
            for line in &batch {
                format.push_frame_with(&mut pending, &mut scratch, line);
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match backoff.connect(&writer, connect(&target, &writer)).await {
                Some(c) => conn.insert(c),
                None => continue,
            },
        };
        let write = async {
            c.write_all(&pending).await?;
            c.flush().await
        };
        match tokio::time::timeout(options.write_timeout, write).await {
            Ok(Ok(())) => {
                pending.clear();
                backoff.reset();
            }
            Ok(Err(e)) => {
                tracing::debug!(drain = %writer.url, "log drain: write: {e}");
                conn = None;
                backoff.wait().await;
            }
            Err(_) => {
                tracing::debug!(drain = %writer.url, "log drain: write timed out");
                conn = None;
                backoff.wait().await;
            }
        }
    }
}
