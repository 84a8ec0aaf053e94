//! The client side: accept loop, HTTP/1.1 keep-alive and h2c (prior knowledge) via hyper-util's
//! auto builder, per-connection tasks owned by the `serve` future. TLS listeners: [`crate::tls`].

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::RouterConfig;
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
        self.shared.pool.idle_count()
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
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .keep_alive(true)
            // Whole head; per-line limits (8 KiB) are checked in the proxy to answer 400.
            .max_buf_size((cfg.max_line_bytes * 8).max(64 * 1024))
            // One over the limit so that "too many" reaches the proxy and gets its 400.
            .max_headers(cfg.max_headers + 1);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(256 * 1024);
        let tls = tls.map(|acceptor| TlsConns::new(acceptor, &builder));
        let builder = Arc::new(builder);
        let local_port = listener.local_addr()?.port();
        let protocol = if tls.is_some() { "https" } else { "http" };

        let mut conns = JoinSet::new();
        let reaper_pool = self.shared.pool.clone();
        let reap_every = (cfg.pool_idle_timeout / 2).max(Duration::from_millis(100));
        conns.spawn(async move {
            let mut tick = tokio::time::interval(reap_every);
            loop {
                tick.tick().await;
                reaper_pool.reap();
            }
        });

        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(v) => v,
                        Err(e) => {
                            // EMFILE and friends: back off a little, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = self.shared.clone();
                    let builder = builder.clone();
                    let info = ConnInfo { peer, local_port, protocol };
                    match &tls {
                        None => conns.spawn(serve_conn(builder, shared, stream, info)),
                        Some(tls) => conns.spawn(tls.serve(builder, shared, stream, info)),
                    };
                }
                Some(_) = conns.join_next() => {}
            }
        }
    }
}

pub(crate) async fn serve_conn<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    stream: I,
    info: ConnInfo,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let svc = service_fn(move |req| shared.clone().handle(info, req));
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .await
    {
        tracing::debug!(error = %e, %peer, "client connection ended");
    }
}
