//! The client side: accept loop, per-connection tasks owned by the `serve` future; HTTP/1.x
//! through the router's own engine (`crate::h1`), HTTP/2 (h2c with prior knowledge, or ALPN)
//! through hyper. TLS listeners: [`crate::tls`].

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::client_limits::ClientSlot;
use crate::config::RouterConfig;
use crate::h1::{self, Ended};
use crate::log::LogSink;
use crate::proxy::{ConnInfo, Shared};
use crate::routes::RouteTable;
use crate::tls::{TlsAcceptor, TlsConns};

/// The HTTP router. Cheap to clone the handle it was built from (`RouteTable`) to update routes.
/// Clones share everything (pool, routes, log): serve a plain and a TLS listener from one router.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

impl Router {
    /// A router over `routes`, sending log lines to `log`.
    pub fn new(config: RouterConfig, routes: RouteTable, log: impl LogSink) -> Router {
        Router {
            shared: Arc::new(Shared::new(config, routes, Arc::new(log))),
        }
    }

    /// The route table this router reads.
    pub fn routes(&self) -> &RouteTable {
        &self.shared.routes
    }

    /// Idle upstream connections in the keep-alive pool.
    pub fn idle_upstream_connections(&self) -> usize {
        self.shared.pool.idle_count() + self.shared.conns.idle_count()
    }

    /// Serve clients from `listener` until this future is dropped (which also drops every client
    /// connection it accepted).
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        self.accept_loop(listener, None).await
    }

    /// Like [`serve`](Self::serve), for TLS clients (see [`crate::tls`]): the handshake must end
    /// within `header_read_timeout`; ALPN `h2` gets HTTP/2, anything else HTTP/1.1.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        acceptor: TlsAcceptor,
    ) -> std::io::Result<()> {
        self.accept_loop(listener, Some(acceptor)).await
    }

    async fn accept_loop(
        self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<()> {
        let cfg = &self.shared.cfg;
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new()).max_header_list_size(256 * 1024);
        let h2 = Arc::new(h2);
        let tls = tls.map(TlsConns::new);
        let local_port = listener.local_addr()?.port();
        let protocol = if tls.is_some() { "https" } else { "http" };

        let mut conns = JoinSet::new();
        let shared = self.shared.clone();
        let reap_every = (cfg.pool_idle_timeout / 2).max(Duration::from_millis(100));
        conns.spawn(async move {
            let mut tick = tokio::time::interval(reap_every);
            let mut changes = shared.routes.changes();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = changes.changed() => {}
                }
                let routes = &shared.routes;
                shared.pool.reap(|addr| routes.routes_to(addr));
                shared.conns.reap(|addr| routes.routes_to(addr));
            }
        });

        let mut failing = AcceptFailures::default();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(v) => v,
                        Err(e) => {
                            // EMFILE and friends: back off, keep serving what is open.
                            tokio::time::sleep(failing.failed(&e)).await;
                            continue;
                        }
                    };
                    failing.recovered();
                    // Over the bounds with nothing idle to close: refused (closed at once).
                    let Some(slot) = self.shared.clients.admit(peer.ip().to_canonical()) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = self.shared.clone();
                    let h2 = h2.clone();
                    let info = ConnInfo { peer, local_port, protocol };
                    match &tls {
                        None => conns.spawn(serve_conn(h2, shared, stream, info, false, slot)),
                        Some(tls) => conns.spawn(tls.serve(h2, shared, stream, info, slot)),
                    };
                }
                Some(_) = conns.join_next() => {}
            }
        }
    }
}

/// A burst of failed accepts (out of files, most often): logged once when it starts and once
/// when it ends, with a back-off that doubles from 20 ms to 1 s meanwhile.
#[derive(Default)]
struct AcceptFailures {
    count: u32,
    since: Option<std::time::Instant>,
}

impl AcceptFailures {
    /// How long to wait before the next accept.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.count == 0 {
            self.since = Some(std::time::Instant::now());
            tracing::warn!(%error, "the router cannot accept connections; backing off until it can");
        }
        self.count = self.count.saturating_add(1);
        Duration::from_millis(20 << self.count.min(7).saturating_sub(1)).min(Duration::from_secs(1))
    }

    fn recovered(&mut self) {
        if self.count > 0 {
            let ms = self.since.map_or(0, |s| s.elapsed().as_millis());
            tracing::warn!(
                failures = self.count,
                ms,
                "the router accepts connections again"
            );
            *self = AcceptFailures::default();
        }
    }
}

/// HTTP/2 server settings for clients.
pub(crate) type H2Builder = Arc<http2::Builder<TokioExecutor>>;

/// Serve one client connection: the HTTP/1.1 engine, or hyper's HTTP/2 when the client chose
/// it by ALPN (`alpn_h2`) or opened with the HTTP/2 preface (h2c with prior knowledge).
pub(crate) async fn serve_conn<I>(
    h2: H2Builder,
    shared: Arc<Shared>,
    stream: I,
    info: ConnInfo,
    alpn_h2: bool,
    slot: ClientSlot,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The slot is held (counted) until the connection ends, whichever protocol serves it.
    if alpn_h2 {
        return serve_h2(h2, shared, stream, info).await;
    }
    match h1::Conn::new(stream, info, &shared)
        .serve(&shared, &slot)
        .await
    {
        Ended::Done => {}
        Ended::Http2(stream, read) => {
            let replay = Rewind {
                read: read.freeze(),
                inner: stream,
            };
            serve_h2(h2, shared, replay, info).await
        }
    }
}

async fn serve_h2<I>(h2: H2Builder, shared: Arc<Shared>, stream: I, info: ConnInfo)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let svc = service_fn(move |req| shared.clone().handle(info, req));
    if let Err(e) = h2.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!(error = %e, %peer, "client connection ended");
    }
}

/// A stream that first yields bytes already read from it.
struct Rewind<I> {
    read: Bytes,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_back_off_doubles_up_to_a_second_and_resets() {
        let mut f = AcceptFailures::default();
        let e = std::io::Error::other("Too many open files");
        let waits: Vec<u128> = (0..8).map(|_| f.failed(&e).as_millis()).collect();
        assert_eq!(waits, [20, 40, 80, 160, 320, 640, 1000, 1000]);
        f.recovered();
        assert_eq!(f.failed(&e).as_millis(), 20);
    }
}
