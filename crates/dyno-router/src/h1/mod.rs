//! The HTTP/1.1 engine: one task per client connection does everything for its requests —
//! parse, route, write to the dyno, read the answer, stream both bodies, log — with no channel
//! or second task on the way. This is the router's hot path; HTTP/2 clients go through hyper
//! (`proxy.rs`) instead.
//!
//! Per request, in order:
//! 1. read the head (the first one must be complete within `header_read_timeout` of its first
//!    byte: slow clients never reach a dyno), parse it and check Heroku's limits ([`head`]);
//! 2. route it (`Host`), apply the app's state (`H80`, `H10`, `H14`, `H11`);
//! 3. take a pooled connection to a random `up` dyno or connect (retries across dynos);
//! 4. write the rewritten head, then stream the body while already reading the dyno's answer
//!    (a dyno may answer before it has read the whole upload);
//! 5. stream the response, then put the dyno connection back in the pool when both messages
//!    ended cleanly.
//!
//! A client that opens with the HTTP/2 preface is handed back to the caller for hyper's h2c.
//!
//! This file holds the connection loop (a head in, one exchange per request); `forward.rs` sends
//! each request to a dyno, `respond.rs` writes the dyno's answer back, `relay.rs` streams the
//! bodies and `answer.rs` writes the router's own error pages.

mod answer;
pub(crate) mod chunked;
mod forward;
#[cfg(test)]
mod fuzz;
pub(crate) mod head;
mod relay;
mod respond;
mod timer;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::client_limits::ClientSlot;
use crate::codes::RouterError;
use crate::proxy::{ConnInfo, Shared};
use answer::error_response;
use head::{HeadError, Limits, RequestHead};
use timer::Timer;

/// First bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes read at a time while streaming a body.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes read at a time while waiting for a head (most heads fit: one read, little memory per
/// idle keep-alive connection).
const HEAD_CHUNK: usize = 4 * 1024;
/// Bytes of a following (pipelined) request the router holds while waiting for a response.
const MAX_PIPELINED: usize = 64 * 1024;
/// Largest request head buffered (each line is limited separately).
const MAX_REQUEST_HEAD: usize = 256 * 1024;

/// A client connection speaking HTTP/1.x, with its buffers (reused for every request).
pub(crate) struct Conn<S> {
    io: S,
    info: ConnInfo,
    /// The client's address as `X-Forwarded-For` and the log line show it.
    peer_ip: String,
    /// Bytes from the client not handled yet.
    buf: BytesMut,
    /// Bytes from the dyno not handled yet.
    ubuf: BytesMut,
    /// The request head for the dyno.
    req_out: Vec<u8>,
    /// The response head for the client.
    resp_out: Vec<u8>,
    /// Decoded chunk data (HTTP/1.0 clients of chunked responses).
    scratch: Vec<u8>,
    /// Deadlines on the client side (head, upload idle) and the dyno side (`H12`, `H15`).
    client_timer: Timer,
    dyno_timer: Timer,
}

/// How a connection ended.
pub(crate) enum Ended<S> {
    /// Closed (or to be closed).
    Done,
    /// The client opened with the HTTP/2 preface: serve it as h2c, replaying `buf` first.
    Http2(S, BytesMut),
}

/// What happened to a request head read.
enum NextHead {
    Request(RequestHead),
    Http2,
    Closed,
    Refuse(RouterError),
}

/// Make room for one more read of up to `chunk` bytes. An emptied buffer is reused in place, so
/// a connection keeps one small buffer per side however many requests it carries.
fn room(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(io: S, info: ConnInfo, shared: &Shared) -> Self {
        let cfg = &shared.cfg;
        let step = cfg
            .header_read_timeout
            .min(cfg.request_timeout)
            .min(cfg.idle_timeout);
        Self {
            io,
            info,
            peer_ip: info.peer.ip().to_canonical().to_string(),
            buf: BytesMut::with_capacity(HEAD_CHUNK),
            ubuf: BytesMut::new(),
            req_out: Vec::with_capacity(1024),
            resp_out: Vec::with_capacity(1024),
            scratch: Vec::new(),
            client_timer: Timer::new(step),
            dyno_timer: Timer::new(step),
        }
    }

    /// Serve requests until the connection ends.
    /// Serve requests until the connection ends; `slot` learns when it waits idle (and may
    /// be closed then to make room for another).
    pub(crate) async fn serve(mut self, shared: &Arc<Shared>, slot: &ClientSlot) -> Ended<S> {
        let mut first = true;
        loop {
            let head = match self.read_head(shared, first, slot).await {
                NextHead::Request(h) => h,
                NextHead::Http2 => return Ended::Http2(self.io, self.buf),
                NextHead::Closed => return Ended::Done,
                NextHead::Refuse(err) => {
                    error_response(
                        &mut self.resp_out,
                        &err,
                        &Default::default(),
                        "",
                        false,
                        true,
                    );
                    let _ = self.io.write_all(&self.resp_out).await;
                    let _ = self.io.shutdown().await;
                    return Ended::Done;
                }
            };
            first = false;
            if !self.exchange(shared, head).await {
                let _ = self.io.shutdown().await;
                return Ended::Done;
            }
        }
    }

    async fn read_head(&mut self, shared: &Shared, first: bool, slot: &ClientSlot) -> NextHead {
        let cfg = &shared.cfg;
        let limits = Limits {
            max_line: cfg.max_line_bytes,
            max_headers: cfg.max_headers,
            max_name: cfg.max_header_name_bytes,
            max_head: MAX_REQUEST_HEAD.max(cfg.max_line_bytes * 2),
        };
        // Between requests a connection may idle; once a head starts it must be complete in
        // time. A new connection must start its first head within the head timeout too.
        let now = Instant::now();
        let wait = now
            + if first {
                cfg.header_read_timeout
            } else {
                cfg.idle_timeout
            };
        let mut head_deadline = (!self.buf.is_empty()).then(|| now + cfg.header_read_timeout);
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(H2_PREFACE.len());
                if first && self.buf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        return NextHead::Http2;
                    }
                } else {
                    match head::parse_request(&self.buf, &limits, &mut self.req_out) {
                        Ok(Some(h)) => return NextHead::Request(h),
                        Ok(None) => {}
                        Err(HeadError::Bad(why)) => {
                            return NextHead::Refuse(RouterError::BadRequest(why))
                        }
                        Err(HeadError::TooLarge) => {
                            return NextHead::Refuse(RouterError::HeadTooLarge)
                        }
                    }
                }
            }
            let deadline = *head_deadline.get_or_insert(wait);
            room(&mut self.buf, HEAD_CHUNK);
            let idle = self.buf.is_empty();
            let read = self
                .client_timer
                .within(deadline, self.io.read_buf(&mut self.buf));
            let read = if idle {
                slot.idle();
                tokio::select! {
                    read = read => read,
                    // Closed to make room for another connection: as an idle timeout would.
                    () = slot.closed_for_another() => return NextHead::Closed,
                }
            } else {
                read.await
            };
            if idle {
                slot.busy();
            }
            match read {
                // Idle between requests, or a head that never completes (slowloris): close.
                None | Some(Ok(0)) | Some(Err(_)) => return NextHead::Closed,
                Some(Ok(_)) => {
                    if head_deadline == Some(wait) && !first {
                        head_deadline = Some(Instant::now() + cfg.header_read_timeout);
                    }
                }
            }
        }
    }
}
