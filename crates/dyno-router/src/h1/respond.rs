//! Writing the dyno's response to the client: the rewritten head, the body (while an upload
//! may still be going on), the log line, and the tunnel after `101 Switching Protocols`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::head::{self, Framing, RequestHead, ResponseHead};
use super::relay::{relay, BodyState, RelayError};
use super::{Conn, READ_CHUNK};
use crate::body::Ctx;
use crate::codes::HerokuCode;
use crate::proxy::Shared;

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Send the dyno's response to the client and log the request.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn respond(
        &mut self,
        shared: &Arc<Shared>,
        mut ctx: Ctx,
        head: &RequestHead,
        mut stream: TcpStream,
        addr: std::net::SocketAddr,
        upload: &mut BodyState,
        response: ResponseHead,
    ) -> bool {
        let cfg = &shared.cfg;
        self.ubuf.advance(response.len);
        ctx.line.status = response.status;
        if response.status == 101 {
            if head.upgrade.is_none() {
                return self
                    .fail(&mut ctx, HerokuCode::H25.into(), head, false)
                    .await;
            }
            return self.tunnel(ctx, stream, cfg.idle_timeout).await;
        }
        let (framing, decode) = match response.relay {
            head::Relay::Pass(f) => (f, false),
            head::Relay::Dechunk => (Framing::Chunked, true),
        };
        let mut body = BodyState::new(framing, decode);
        // What the dyno already sent goes out with the head, in one write.
        match body.take(&self.ubuf, &mut self.scratch) {
            Ok((n, forward)) => {
                self.resp_out.extend_from_slice(forward);
                self.ubuf.advance(n);
            }
            Err(_) => return self.cut(ctx, &body, HerokuCode::H18),
        }
        if self.io.write_all(&self.resp_out).await.is_err() {
            return self.log_end(ctx, &body, None);
        }
        if !body.done {
            let Conn {
                io,
                buf,
                ubuf,
                scratch,
                client_timer,
                dyno_timer,
                ..
            } = self;
            let idle = cfg.idle_timeout;
            let relayed = if upload.done {
                relay(
                    &mut body,
                    &mut stream,
                    ubuf,
                    io,
                    scratch,
                    dyno_timer,
                    idle,
                    None,
                )
                .await
            } else {
                // The dyno answers while the upload goes on (an echo, an early error): both
                // directions at once. The upload stops when the response ends.
                let (mut client_read, mut client_write) = tokio::io::split(&mut *io);
                let (mut up_read, mut up_write) = stream.split();
                let mut no_scratch = Vec::new();
                let down = relay(
                    &mut body,
                    &mut up_read,
                    ubuf,
                    &mut client_write,
                    scratch,
                    dyno_timer,
                    idle,
                    None,
                );
                let up = relay(
                    upload,
                    &mut client_read,
                    buf,
                    &mut up_write,
                    &mut no_scratch,
                    client_timer,
                    idle,
                    None,
                );
                tokio::pin!(down, up);
                let mut uploading = true;
                loop {
                    tokio::select! {
                        relayed = &mut down => break relayed,
                        _ = &mut up, if uploading => uploading = false,
                    }
                }
            };
            match relayed {
                Ok(()) => {}
                Err(RelayError::SrcIdle) => return self.cut(ctx, &body, HerokuCode::H15),
                Err(RelayError::SrcGone | RelayError::Malformed) => {
                    return self.cut(ctx, &body, HerokuCode::H18)
                }
                Err(RelayError::Dst | RelayError::DstIdle) => {
                    return self.log_end(ctx, &body, None)
                }
            }
        } else if self.io.flush().await.is_err() {
            return self.log_end(ctx, &body, None);
        }
        let request_done = upload.done;
        if response.upstream_keep_alive && request_done && self.ubuf.is_empty() {
            shared.conns.checkin(addr, stream);
        }
        self.log_end(ctx, &body, None);
        !response.close_client && request_done
    }

    /// The response was cut by the dyno: log `code` and close the client connection.
    fn cut(&mut self, ctx: Ctx, body: &BodyState, code: HerokuCode) -> bool {
        self.log_end(ctx, body, Some(code))
    }

    /// Write the log line for a finished (or cut) response. Returns `false` (close) when cut.
    fn log_end(&mut self, mut ctx: Ctx, body: &BodyState, code: Option<HerokuCode>) -> bool {
        if let Some(code) = code {
            ctx.line.code = Some(code);
            ctx.line.status = code.status().as_u16();
        }
        ctx.line.bytes = Some(body.data);
        ctx.stamp_service();
        ctx.emit();
        false
    }

    /// `101 Switching Protocols`: pass the head on, then copy both ways until either side
    /// closes or nothing moves for `idle` (Heroku: 55 s for WebSockets too). Logged at the 101.
    async fn tunnel(&mut self, mut ctx: Ctx, mut stream: TcpStream, idle: Duration) -> bool {
        ctx.line.bytes = Some(0);
        ctx.stamp_service();
        ctx.emit();
        let Conn {
            io,
            buf,
            ubuf,
            resp_out,
            client_timer,
            ..
        } = self;
        if io.write_all(resp_out).await.is_err()
            || io.write_all(ubuf).await.is_err()
            || io.flush().await.is_err()
            || stream.write_all(buf).await.is_err()
        {
            return false;
        }
        buf.clear();
        ubuf.clear();
        let _keep = ctx;
        let (mut up_read, mut up_write) = stream.split();
        let mut from_client = vec![0u8; READ_CHUNK];
        let mut from_dyno = vec![0u8; READ_CHUNK];
        let mut client_open = true;
        let mut last = Instant::now();
        loop {
            tokio::select! {
                read = io.read(&mut from_client), if client_open => match read {
                    Ok(0) | Err(_) => {
                        client_open = false;
                        let _ = up_write.shutdown().await;
                    }
                    Ok(n) => {
                        if up_write.write_all(&from_client[..n]).await.is_err() {
                            break;
                        }
                        last = Instant::now();
                    }
                },
                read = up_read.read(&mut from_dyno) => match read {
                    // The dyno ended the conversation (or is gone): end it for the client too,
                    // and close our side now, while the dyno's network still exists.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&from_dyno[..n]).await.is_err() || io.flush().await.is_err() {
                            break;
                        }
                        last = Instant::now();
                    }
                },
                () = client_timer.until(last + idle) => break,
            }
        }
        false
    }
}
