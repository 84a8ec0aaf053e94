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

pub(crate) mod chunked;
#[cfg(test)]
mod fuzz;
pub(crate) mod head;
mod timer;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::admission::{self, Verdict};
use crate::body::{ms, Ctx};
use crate::codes::{HerokuCode, RouterError};
use crate::proxy::{new_request_id, ConnInfo, Shared};
use crate::upstream::Upstreams;
use chunked::{ChunkError, Chunked};
use head::{ClientSide, Framing, HeadError, Limits, RequestHead, ResponseHead};
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

/// Why sending a request or waiting for its response failed.
#[derive(Debug)]
enum Fail {
    /// The router answers with this (and logs it when it has an H-code).
    Answer(RouterError),
    /// A pooled connection turned out to be closed before any of the response arrived.
    Stale,
}

impl From<HerokuCode> for Fail {
    fn from(c: HerokuCode) -> Self {
        Fail::Answer(c.into())
    }
}

/// Why streaming a body stopped early.
#[derive(Debug)]
enum RelayError {
    /// The sender sent nothing for the idle timeout.
    SrcIdle,
    /// The sender closed or failed before the body's end.
    SrcGone,
    /// The body broke the chunked coding.
    Malformed,
    /// Writing to the receiver failed.
    Dst,
}

impl From<ChunkError> for RelayError {
    fn from(_: ChunkError) -> Self {
        RelayError::Malformed
    }
}

/// Where a body stands: what is left of it and how it is delimited.
struct BodyState {
    framing: Framing,
    left: u64,
    chunked: Chunked,
    /// Forward only the chunk data (to a client that cannot take chunked).
    decode: bool,
    done: bool,
    /// Body bytes (chunk data only) seen so far.
    data: u64,
}

impl BodyState {
    fn new(framing: Framing, decode: bool) -> Self {
        Self {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: Chunked::new(),
            decode,
            done: framing == Framing::Empty,
            data: 0,
        }
    }

    /// Take the body's bytes from the start of `buf`: how many were consumed, and the bytes to
    /// forward (the same bytes, or only the chunk data when decoding).
    fn take<'a>(
        &mut self,
        buf: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<(usize, &'a [u8]), ChunkError> {
        if self.done {
            return Ok((0, &[]));
        }
        match self.framing {
            Framing::Empty => Ok((0, &[])),
            Framing::Length(_) => {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.left -= n as u64;
                self.data += n as u64;
                self.done = self.left == 0;
                Ok((n, &buf[..n]))
            }
            Framing::UntilClose => {
                self.data += buf.len() as u64;
                Ok((buf.len(), buf))
            }
            Framing::Chunked => {
                scratch.clear();
                let mut at = 0;
                while at < buf.len() && !self.chunked.is_done() {
                    let step = self.chunked.step(&buf[at..])?;
                    if let Some(r) = step.data {
                        self.data += r.len() as u64;
                        if self.decode {
                            scratch.extend_from_slice(&buf[at + r.start..at + r.end]);
                        }
                    }
                    at += step.consumed;
                }
                self.done = self.chunked.is_done();
                if self.decode {
                    Ok((at, scratch.as_slice()))
                } else {
                    Ok((at, &buf[..at]))
                }
            }
        }
    }
}

/// Make room for one more read of up to `chunk` bytes. An emptied buffer is reused in place, so
/// a connection keeps one small buffer per side however many requests it carries.
fn room(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}

/// Stream a body from `src` (bytes already read first, from `buf`) to `dst`, until its end.
/// Each read must come within `idle`.
#[allow(clippy::too_many_arguments)]
async fn relay<R, W>(
    state: &mut BodyState,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    scratch: &mut Vec<u8>,
    timer: &mut Timer,
    idle: Duration,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if !buf.is_empty() {
            let (n, forward) = state.take(buf, scratch)?;
            if !forward.is_empty() {
                dst.write_all(forward).await.map_err(|_| RelayError::Dst)?;
            }
            buf.advance(n);
        }
        if state.done {
            return dst.flush().await.map_err(|_| RelayError::Dst);
        }
        dst.flush().await.map_err(|_| RelayError::Dst)?;
        room(buf, READ_CHUNK);
        match timer.within(Instant::now() + idle, src.read_buf(buf)).await {
            None => return Err(RelayError::SrcIdle),
            Some(Ok(0)) if state.framing == Framing::UntilClose => {
                state.done = true;
            }
            Some(Ok(0)) | Some(Err(_)) => return Err(RelayError::SrcGone),
            Some(Ok(_)) => {}
        }
    }
}

/// Read the dyno's response head into `ubuf` and rewrite it for the client into `out`.
async fn read_response_head<R: AsyncRead + Unpin>(
    src: &mut R,
    ubuf: &mut BytesMut,
    client: ClientSide,
    via: &str,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, ResponseFail> {
    loop {
        if !ubuf.is_empty() {
            match head::parse_response(ubuf, client, via, out) {
                Ok(Some(h)) if h.len <= max => return Ok(h),
                Ok(Some(_)) => return Err(ResponseFail::Bad),
                Ok(None) if ubuf.len() > max => return Err(ResponseFail::Bad),
                Ok(None) => {}
                Err(head::BadResponse) => return Err(ResponseFail::Bad),
            }
        }
        room(ubuf, HEAD_CHUNK);
        match src.read_buf(ubuf).await {
            Ok(0) | Err(_) => {
                return Err(ResponseFail::Closed {
                    nothing: ubuf.is_empty(),
                })
            }
            Ok(_) => {}
        }
    }
}

#[derive(Debug)]
enum ResponseFail {
    /// Unparsable or too large: `H25`.
    Bad,
    /// The dyno closed (or reset) the connection; `nothing` of a response had arrived.
    Closed { nothing: bool },
}

/// `HTTP/1.1 100 Continue`, sent when the router starts reading an `Expect`ing body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The router's own answer for `err` (a complete response) into `out`.
fn error_response(
    out: &mut Vec<u8>,
    err: &RouterError,
    request_id: &str,
    head_only: bool,
    close: bool,
) {
    let status = err.status();
    let html = err.html();
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-cache, no-store\r\n\
         Content-Length: {}\r\nDate: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Client Closed Request"),
        html.len(),
        httpdate::fmt_http_date(SystemTime::now()),
    );
    if !request_id.is_empty() {
        head::push_header(out, b"X-Request-Id", request_id.as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(html.as_bytes());
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
    pub(crate) async fn serve(mut self, shared: &Arc<Shared>) -> Ended<S> {
        let mut first = true;
        loop {
            let head = match self.read_head(shared, first).await {
                NextHead::Request(h) => h,
                NextHead::Http2 => return Ended::Http2(self.io, self.buf),
                NextHead::Closed => return Ended::Done,
                NextHead::Refuse(err) => {
                    error_response(&mut self.resp_out, &err, "", false, true);
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

    async fn read_head(&mut self, shared: &Shared, first: bool) -> NextHead {
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
            match self
                .client_timer
                .within(deadline, self.io.read_buf(&mut self.buf))
                .await
            {
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

    /// Write the router's own answer (no dyno involved, nothing logged). Returns whether the
    /// connection may carry another request.
    async fn refuse(&mut self, err: &RouterError, rid: &str, head: &RequestHead) -> bool {
        // An unread body would be taken for the next request: close instead.
        let keep = head.keep_alive && head.body == Framing::Empty;
        error_response(&mut self.resp_out, err, rid, head.is_head, !keep);
        self.io.write_all(&self.resp_out).await.is_ok() && self.io.flush().await.is_ok() && keep
    }

    /// Answer with an H-code page and log it.
    async fn fail(
        &mut self,
        ctx: &mut Ctx,
        err: RouterError,
        head: &RequestHead,
        body_done: bool,
    ) -> bool {
        ctx.set_error(&err);
        if matches!(err.code(), Some(HerokuCode::H27 | HerokuCode::H28)) {
            // 499 is for the log: the client left or went silent, there is nobody to answer.
            ctx.emit();
            return false;
        }
        let keep = head.keep_alive && body_done;
        error_response(
            &mut self.resp_out,
            &err,
            &ctx.line.request_id,
            head.is_head,
            !keep,
        );
        ctx.emit();
        self.io.write_all(&self.resp_out).await.is_ok() && self.io.flush().await.is_ok() && keep
    }

    /// One request and its response. Returns whether the connection may carry another.
    async fn exchange(&mut self, shared: &Arc<Shared>, mut head: RequestHead) -> bool {
        let start = std::time::Instant::now();
        let cfg = &shared.cfg;
        self.buf.advance(head.len);
        let rid = head.request_id.take().unwrap_or_else(new_request_id);
        let fwd = match head.forwarded_for.take() {
            Some(chain) => format!("{chain}, {}", self.peer_ip),
            None => self.peer_ip.clone(),
        };
        let verdict = shared.admit(admission::Request {
            start,
            host: head.host.as_deref(),
            expect_other: head.expect_other,
            method: std::mem::take(&mut head.method),
            path: std::mem::take(&mut head.target),
            request_id: rid.clone(),
            fwd,
            protocol: self.info.protocol,
        });
        let no_body = head.body == Framing::Empty;
        let (mut ctx, route) = match verdict {
            Verdict::Refused(err) => return self.refuse(&err, &rid, &head).await,
            Verdict::Failed(mut ctx, err) => return self.fail(&mut ctx, err, &head, no_body).await,
            Verdict::Admitted(ctx, route) => (ctx, route),
        };
        let conns = &shared.conns;
        let connect_budget = cfg.connect_timeout;
        let picked = shared.pick_and_connect(&route, &mut ctx, conns).await;
        let (addr, mut stream, mut pooled) = match picked {
            Ok(v) => v,
            Err(e) => return self.fail(&mut ctx, e, &head, no_body).await,
        };

        // The rewritten head: the client's headers were copied when it was parsed.
        {
            let out = &mut self.req_out;
            head::push_header(out, b"X-Forwarded-For", ctx.line.fwd.as_bytes());
            head::push_header(out, b"X-Forwarded-Proto", self.info.protocol.as_bytes());
            let _ = write!(out, "X-Forwarded-Port: {}\r\n", self.info.local_port);
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms);
            let _ = write!(out, "X-Request-Start: {now_ms}\r\n");
            head::push_header(out, b"X-Request-Id", ctx.line.request_id.as_bytes());
            head::push_header(out, b"Via", cfg.via.as_bytes());
            match head.body {
                Framing::Length(n) => {
                    let _ = write!(out, "Content-Length: {n}\r\n");
                }
                Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                _ => {}
            }
            if let Some(proto) = &head.upgrade {
                out.extend_from_slice(b"Connection: upgrade\r\n");
                head::push_header(out, b"Upgrade", proto);
            }
            out.extend_from_slice(b"\r\n");
        }
        let mut upload = BodyState::new(head.body, false);
        // Body bytes that came with the head go out in the same write (the client that asked
        // for `100 Continue` has sent none yet).
        if !head.expect_continue {
            let (n, forward) = match upload.take(&self.buf, &mut self.scratch) {
                Ok(v) => v,
                Err(_) => {
                    let err = RouterError::BadRequest("Malformed chunked body.");
                    return self.fail(&mut ctx, err, &head, false).await;
                }
            };
            self.req_out.extend_from_slice(forward);
            self.buf.advance(n);
        }
        // Only a request that is whole in `req_out` can be sent again on a new connection.
        let replayable = upload.done;
        let client = ClientSide {
            http10: head.http10,
            keep_alive: head.keep_alive,
            is_head: head.is_head,
            upgrade: head.upgrade.is_some(),
        };
        let h12 = Instant::from_std(start + cfg.request_timeout);
        let response = loop {
            match self
                .send(
                    shared,
                    &mut stream,
                    &mut upload,
                    client,
                    head.expect_continue,
                    h12,
                )
                .await
            {
                Err(Fail::Stale) if pooled && replayable => {
                    // The dyno had closed the pooled connection: nothing reached it, so send
                    // the request again on a new one.
                    pooled = false;
                    let budget = connect_budget.saturating_sub(start.elapsed());
                    match conns.connect(addr, budget).await {
                        Ok(s) => stream = s,
                        Err(crate::upstream::ConnectError::Timeout) => {
                            return self
                                .fail(&mut ctx, HerokuCode::H19.into(), &head, false)
                                .await
                        }
                        Err(_) => {
                            return self
                                .fail(&mut ctx, HerokuCode::H21.into(), &head, false)
                                .await
                        }
                    }
                }
                Err(Fail::Stale) => {
                    let code = if upload.done {
                        HerokuCode::H13
                    } else {
                        HerokuCode::H18
                    };
                    return self.fail(&mut ctx, code.into(), &head, false).await;
                }
                Err(Fail::Answer(err)) => {
                    return self.fail(&mut ctx, err, &head, upload.done).await;
                }
                Ok(r) => break r,
            }
        };
        self.respond(shared, ctx, &head, stream, addr, &mut upload, response)
            .await
    }

    /// Write the request to the dyno and wait for its response head, streaming the request
    /// body meanwhile.
    async fn send(
        &mut self,
        shared: &Shared,
        stream: &mut TcpStream,
        upload: &mut BodyState,
        client: ClientSide,
        expect_continue: bool,
        h12: Instant,
    ) -> Result<ResponseHead, Fail> {
        let cfg = &shared.cfg;
        let Conn {
            io,
            buf,
            ubuf,
            req_out,
            resp_out,
            scratch,
            client_timer,
            dyno_timer,
            ..
        } = self;
        let (mut up_read, mut up_write) = stream.split();
        if up_write.write_all(req_out).await.is_err() {
            return Err(Fail::Stale);
        }
        ubuf.clear();
        let response = read_response_head(
            &mut up_read,
            ubuf,
            client,
            cfg.via,
            cfg.max_response_header_bytes,
            resp_out,
        );
        tokio::pin!(response);
        if !upload.done {
            if expect_continue
                && (io.write_all(CONTINUE).await.is_err() || io.flush().await.is_err())
            {
                return Err(HerokuCode::H27.into());
            }
            let body = relay(
                upload,
                io,
                buf,
                &mut up_write,
                scratch,
                client_timer,
                cfg.idle_timeout,
            );
            tokio::pin!(body);
            tokio::select! {
                biased;
                head = &mut response => return head_result(head, false),
                sent = &mut body => match sent {
                    Ok(()) => {}
                    Err(RelayError::SrcIdle) => return Err(HerokuCode::H28.into()),
                    Err(RelayError::SrcGone) => return Err(HerokuCode::H27.into()),
                    Err(RelayError::Malformed) => {
                        return Err(Fail::Answer(RouterError::BadRequest("Malformed chunked body.")))
                    }
                    // The dyno hung up while the body was still coming.
                    Err(RelayError::Dst) => return Err(HerokuCode::H18.into()),
                },
                () = dyno_timer.until(h12) => return Err(HerokuCode::H12.into()),
            }
        }
        // Wait for the answer; meanwhile notice a client that goes away (`H27`).
        loop {
            tokio::select! {
                biased;
                head = &mut response => return head_result(head, true),
                read = io.read_buf(buf), if buf.len() < MAX_PIPELINED => match read {
                    Ok(0) | Err(_) => return Err(HerokuCode::H27.into()),
                    Ok(_) => {}
                },
                () = dyno_timer.until(h12) => return Err(HerokuCode::H12.into()),
            }
        }
    }

    /// Send the dyno's response to the client and log the request.
    #[allow(clippy::too_many_arguments)]
    async fn respond(
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
                relay(&mut body, &mut stream, ubuf, io, scratch, dyno_timer, idle).await
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
                );
                let up = relay(
                    upload,
                    &mut client_read,
                    buf,
                    &mut up_write,
                    &mut no_scratch,
                    client_timer,
                    idle,
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
                Err(RelayError::Dst) => return self.log_end(ctx, &body, None),
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

fn head_result(
    head: Result<ResponseHead, ResponseFail>,
    request_done: bool,
) -> Result<ResponseHead, Fail> {
    match head {
        Ok(h) => Ok(h),
        Err(ResponseFail::Bad) => Err(HerokuCode::H25.into()),
        Err(ResponseFail::Closed { nothing: true }) if request_done => Err(Fail::Stale),
        Err(ResponseFail::Closed { .. }) if request_done => Err(HerokuCode::H13.into()),
        // The dyno hung up while the body was still coming.
        Err(ResponseFail::Closed { .. }) => Err(HerokuCode::H18.into()),
    }
}
