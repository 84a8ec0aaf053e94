//! Forwarding one request: admission and routing, the rewritten head to a dyno (again on a
//! new connection when a pooled one turns out closed), the upload streamed while the dyno's
//! response head is awaited.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::head::{self, ClientSide, Framing, RequestHead, ResponseHead};
use super::relay::{relay, BodyState, RelayError};
use super::{room, Conn, HEAD_CHUNK, MAX_PIPELINED};
use crate::admission::{self, Verdict};
use crate::body::ms;
use crate::codes::{HerokuCode, RouterError};
use crate::proxy::{new_request_id, Shared};
use crate::upstream::Upstreams;

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

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// One request and its response. Returns whether the connection may carry another.
    pub(super) async fn exchange(&mut self, shared: &Arc<Shared>, mut head: RequestHead) -> bool {
        let start = std::time::Instant::now();
        let cfg = &shared.cfg;
        self.buf.advance(head.len);
        let rid = head.request_id.take().unwrap_or_else(new_request_id);
        let fwd = match head.forwarded_for.take() {
            Some(chain) => format!("{chain}, {}", self.peer_ip),
            None => self.peer_ip.clone(),
        };
        let verdict = shared
            .admit(admission::Request {
                start,
                host: head.host.as_deref(),
                expect_other: head.expect_other,
                method: std::mem::take(&mut head.method),
                path: std::mem::take(&mut head.target),
                request_id: rid.clone(),
                fwd,
                protocol: self.info.protocol,
            })
            .await;
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
        let response = loop {
            match self
                .send(
                    shared,
                    &mut stream,
                    &mut upload,
                    client,
                    head.expect_continue,
                )
                .await
            {
                Err(Fail::Stale) if pooled && replayable => {
                    // The dyno had closed the pooled connection: nothing reached it, so send
                    // the request again on a new one.
                    pooled = false;
                    // A whole budget: the request may have waited for a dyno to boot.
                    let budget = connect_budget;
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
    /// body meanwhile. `H12` counts from when the whole request has been written: a slow
    /// upload does not eat the dyno's time. While the upload goes on, each side must move
    /// within the idle timeout instead (the client: `H28`; a dyno that takes none of it: `H18`),
    /// so no request waits forever.
    async fn send(
        &mut self,
        shared: &Shared,
        stream: &mut TcpStream,
        upload: &mut BodyState,
        client: ClientSide,
        expect_continue: bool,
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
                Some(&mut *dyno_timer),
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
                    // The dyno hung up while the body was still coming, or took none of it
                    // for the idle timeout.
                    Err(RelayError::Dst | RelayError::DstIdle) => {
                        return Err(HerokuCode::H18.into())
                    }
                },
            }
        }
        let h12 = Instant::now() + cfg.request_timeout;
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
