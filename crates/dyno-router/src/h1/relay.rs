//! Streaming a message body from one side to the other ([`relay`]), delimited by its framing
//! ([`BodyState`]): bodies are passed through as they come, never buffered whole.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::chunked::{ChunkError, Chunked};
use super::head::Framing;
use super::timer::Timer;
use super::{room, READ_CHUNK};

/// Why streaming a body stopped early.
#[derive(Debug)]
pub(super) enum RelayError {
    /// The sender sent nothing for the idle timeout.
    SrcIdle,
    /// The sender closed or failed before the body's end.
    SrcGone,
    /// The body broke the chunked coding.
    Malformed,
    /// Writing to the receiver failed.
    Dst,
    /// The receiver took none of the body for the idle timeout (a dyno that never reads an
    /// upload): the write is given up, so no request waits on it forever.
    DstIdle,
}

impl From<ChunkError> for RelayError {
    fn from(_: ChunkError) -> Self {
        RelayError::Malformed
    }
}

/// Where a body stands: what is left of it and how it is delimited.
pub(super) struct BodyState {
    framing: Framing,
    left: u64,
    chunked: Chunked,
    /// Forward only the chunk data (to a client that cannot take chunked).
    decode: bool,
    pub(super) done: bool,
    /// Body bytes (chunk data only) seen so far.
    pub(super) data: u64,
}

impl BodyState {
    pub(super) fn new(framing: Framing, decode: bool) -> Self {
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
    pub(super) fn take<'a>(
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

/// Stream a body from `src` (bytes already read first, from `buf`) to `dst`, until its end.
/// Each read must come within `idle`; with a `write_timer`, so must each write.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay<R, W>(
    state: &mut BodyState,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    scratch: &mut Vec<u8>,
    timer: &mut Timer,
    idle: Duration,
    mut write_timer: Option<&mut Timer>,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if !buf.is_empty() {
            let (n, forward) = state.take(buf, scratch)?;
            if !forward.is_empty() {
                let write = dst.write_all(forward);
                let written = match write_timer.as_deref_mut() {
                    Some(t) => t
                        .within(Instant::now() + idle, write)
                        .await
                        .ok_or(RelayError::DstIdle)?,
                    None => write.await,
                };
                written.map_err(|_| RelayError::Dst)?;
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
