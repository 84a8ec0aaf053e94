//! Per-request context (log line, in-flight slot) and the body wrappers that stream through
//! the router: the dyno's response (bytes, end-of-response log line, `H15` idle) and the
//! client's request body (`H28` idle, `H27` abort, completeness for `H18`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::codes::HerokuCode;
use crate::log::{LogSink, RouterLog};
use crate::upstream::{Pool, Sender};

/// Error type of bodies streamed by the router.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the log line needs to know about the request.
pub(crate) struct Ctx {
    pub(crate) start: Instant,
    pub(crate) app: Arc<str>,
    pub(crate) line: RouterLog,
    pub(crate) sink: Arc<dyn LogSink>,
    pub(crate) logged: bool,
    pub(crate) _in_flight: InFlight,
    /// The app's own pages for the router's answers.
    pub(crate) pages: crate::routes::ErrorPages,
}

impl Ctx {
    /// `service=`: the time since the request arrived, less the connect time.
    pub(crate) fn stamp_service(&mut self) {
        self.line.service_ms =
            Some(ms(self.start.elapsed()).saturating_sub(self.line.connect_ms.unwrap_or(0)));
    }

    /// The router answers `err` itself (its status; timings when a dyno was involved). Errors
    /// without an H-code are the client's (4xx) and leave no line in the app's log.
    pub(crate) fn set_error(&mut self, err: &crate::codes::RouterError) {
        if err.code().is_none() {
            self.discard();
        }
        self.line.code = err.code();
        self.line.status = err.status().as_u16();
        if self.line.dyno.is_some() {
            self.stamp_service();
            self.line.bytes = Some(0);
        }
    }

    /// No log line for this request (the client's own mistake, answered 4xx by the router,
    /// is not an event of the app).
    pub(crate) fn discard(&mut self) {
        self.logged = true;
    }

    /// Write the log line (once).
    pub(crate) fn emit(&mut self) {
        if !self.logged {
            self.logged = true;
            self.sink.log(&self.app, std::mem::take(&mut self.line));
        }
    }
}

impl Drop for Ctx {
    /// Dropped unlogged = the client went away before the response started: `H27`.
    fn drop(&mut self) {
        if !self.logged {
            let code = HerokuCode::H27;
            self.line.code = Some(code);
            self.line.status = code.status().as_u16();
            self.line.bytes = Some(0);
            self.stamp_service();
            self.emit();
        }
    }
}

/// One request counted in its app's in-flight total until the response is done.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn enter(counter: &Arc<AtomicUsize>) -> (Self, usize) {
        let n = counter.fetch_add(1, Ordering::AcqRel) + 1;
        (Self(counter.clone()), n)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The dyno's response body on its way to the client; counts bytes and writes the router log
/// line when it ends (or the client goes away).
pub(crate) struct LoggedBody {
    pub(crate) inner: Incoming,
    pub(crate) idle_timeout: Duration,
    /// Created on the first `Pending` only: most small responses never need a timer.
    pub(crate) idle: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(crate) bytes: u64,
    pub(crate) ctx: Option<Ctx>,
    /// The upstream connection, back to the pool once the whole response was read.
    pub(crate) upstream: Option<(Arc<Pool>, SocketAddr, Sender)>,
}

impl LoggedBody {
    fn finish(&mut self, complete: bool) {
        if let Some((pool, addr, sender)) = self.upstream.take() {
            if complete {
                pool.checkin(addr, sender);
            }
        }
        if let Some(mut ctx) = self.ctx.take() {
            ctx.line.bytes = Some(self.bytes);
            ctx.stamp_service();
            ctx.emit();
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if let Some(idle) = this.idle.as_mut() {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // No data from the dyno for the idle timeout: H15, cut the response.
                if let Some(ctx) = this.ctx.as_mut() {
                    ctx.line.code = Some(HerokuCode::H15);
                    ctx.line.status = HerokuCode::H15.status().as_u16();
                }
                this.finish(false);
                Poll::Ready(Some(Err(HerokuCode::H15.desc().into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

/// Where the client's request body stands, as seen by the proxy when the upstream send fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ReqState {
    /// Still being streamed to the dyno.
    Streaming = 0,
    /// Fully sent (or empty).
    Done = 1,
    /// The client sent nothing for the idle timeout: `H28`.
    ClientIdle = 2,
    /// The client's side failed (connection reset, aborted): `H27`.
    ClientGone = 3,
}

impl ReqState {
    pub(crate) fn load(cell: &AtomicU8) -> Self {
        match cell.load(Ordering::Acquire) {
            0 => Self::Streaming,
            1 => Self::Done,
            2 => Self::ClientIdle,
            _ => Self::ClientGone,
        }
    }
}

/// How the client's upload is going, shared between its body (which hyper's connection task
/// polls) and the request waiting for the dyno's answer (which runs the `H12` clock).
pub(crate) struct Upload {
    state: AtomicU8,
    /// Frames passed on to the dyno's connection so far.
    frames: AtomicU64,
    /// The last poll found nothing from the client yet: a stall is the client's (`H28`, its
    /// own timer), not the dyno's.
    awaiting_client: AtomicBool,
    /// Woken when `state` changes.
    changed: tokio::sync::Notify,
}

impl Upload {
    pub(crate) fn state(&self) -> ReqState {
        ReqState::load(&self.state)
    }

    fn set(&self, s: ReqState) {
        self.state.store(s as u8, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Resolves with the code the request fails with when the dyno is too slow: `H12` once
    /// `request_timeout` has passed after the whole body went to the dyno, or `H18` when the
    /// dyno took none of the upload for `idle` (it never reads it) — so a slow upload does not
    /// eat the dyno's 30 s, and no upload waits forever.
    pub(crate) async fn dyno_timeout(
        &self,
        request_timeout: Duration,
        idle: Duration,
    ) -> HerokuCode {
        let mut seen = self.frames.load(Ordering::Acquire);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state() != ReqState::Streaming {
                break;
            }
            if tokio::time::timeout(idle, changed).await.is_err() {
                let now = self.frames.load(Ordering::Acquire);
                let client_slow = self.awaiting_client.load(Ordering::Acquire);
                if now == seen && !client_slow && self.state() == ReqState::Streaming {
                    return HerokuCode::H18;
                }
                seen = now;
            }
        }
        tokio::time::sleep(request_timeout).await;
        HerokuCode::H12
    }
}

/// The client's request body on its way to the dyno.
pub(crate) struct ClientBody {
    inner: Incoming,
    upload: Arc<Upload>,
    idle_timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientBody {
    pub(crate) fn new(inner: Incoming, idle_timeout: Duration) -> (Self, Arc<Upload>) {
        let initial = if inner.is_end_stream() {
            ReqState::Done
        } else {
            ReqState::Streaming
        };
        let upload = Arc::new(Upload {
            state: AtomicU8::new(initial as u8),
            frames: AtomicU64::new(0),
            awaiting_client: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        });
        (
            Self {
                inner,
                upload: upload.clone(),
                idle_timeout,
                idle: None,
            },
            upload,
        )
    }

    fn set(&self, s: ReqState) {
        self.upload.set(s);
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = this.idle.as_mut() {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + this.idle_timeout);
                }
                this.upload.frames.fetch_add(1, Ordering::AcqRel);
                this.upload.awaiting_client.store(false, Ordering::Release);
                // hyper does not poll again after a frame that ends the body: it is done now.
                if this.inner.is_end_stream() {
                    this.set(ReqState::Done);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.set(ReqState::Done);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.set(ReqState::ClientGone);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                this.upload.awaiting_client.store(true, Ordering::Release);
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.set(ReqState::ClientIdle);
                Poll::Ready(Some(Err(HerokuCode::H28.desc().into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
