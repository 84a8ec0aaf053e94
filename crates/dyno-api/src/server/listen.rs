//! The API's listeners: the unix socket (no token: the file mode is the authentication), TCP
//! with a token, and TCP with TLS and a token. Each connection is served by hyper's HTTP/1.1,
//! every request marked with the [`Connection`] it came on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::{
    bind_unix, builds, routes, Platform, ServeError, UnixApiListener, HEADER_READ_TIMEOUT,
    MAX_CONNECTIONS, MAX_HEAD_BYTES, MIN_TOKEN_LEN,
};
use crate::error::ApiError;

/// What the server knows of the connection a request came on (a request extension).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The client's address; `None` on the unix socket.
    pub peer: Option<SocketAddr>,
    /// Whether the connection is TLS (its requests also carry [`builds::Tls`]).
    pub tls: bool,
    /// The API's URL as clients elsewhere reach it (`https://127.0.0.1:5000`), for what the
    /// unix socket's answers name (an app's `git_url`); TCP answers use the request's own host.
    pub public_url: Option<Arc<str>>,
}

/// Bind `path` (see [`bind_unix`]) and serve the API there until the future is dropped; dropping
/// it closes every connection and removes the socket file (if it is still ours).
pub async fn serve_unix<P: Platform>(
    path: impl AsRef<Path>,
    platform: Arc<P>,
) -> Result<(), ServeError> {
    let listener = bind_unix(path.as_ref()).await?;
    serve_unix_listener(listener, platform).await;
    Ok(())
}

/// Serve the API on an already bound unix listener, forever (until dropped).
pub async fn serve_unix_listener<P: Platform>(listener: UnixApiListener, platform: Arc<P>) {
    serve_unix_listener_with(listener, platform, None).await
}

/// [`serve_unix_listener`], naming `public_url` (the TCP API's URL, if there is one a client
/// elsewhere can reach) where answers give URLs for clients other than this socket's.
pub async fn serve_unix_listener_with<P: Platform>(
    listener: UnixApiListener,
    platform: Arc<P>,
    public_url: Option<String>,
) {
    let conn = Connection {
        public_url: public_url.map(Arc::from),
        ..Connection::default()
    };
    let mut conns = JoinSet::new();
    loop {
        match listener.listener().accept().await {
            Ok((stream, _)) => {
                make_room(&mut conns).await;
                conns.spawn(serve_conn(stream, platform.clone(), None, conn.clone()));
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Serve the API on a TCP listener; every request must carry `Authorization: Bearer <token>`
/// (compared in constant time), else `401 unauthorized`. Runs until the future is dropped.
pub async fn serve_tcp<P: Platform>(
    listener: TcpListener,
    token: impl Into<String>,
    platform: Arc<P>,
) -> Result<(), ServeError> {
    serve_tcp_with(listener, token.into(), platform, None).await
}

/// [`serve_tcp`] over TLS: the handshake (which must end within [`HEADER_READ_TIMEOUT`]), then
/// HTTP/1.1. `tls` should offer ALPN `http/1.1` only: this server speaks no HTTP/2. Requests
/// carry [`builds::Tls`], so the URLs answers hand out are `https://`.
pub async fn serve_tls<P: Platform>(
    listener: TcpListener,
    tls: TlsAcceptor,
    token: impl Into<String>,
    platform: Arc<P>,
) -> Result<(), ServeError> {
    serve_tcp_with(listener, token.into(), platform, Some(tls)).await
}

async fn serve_tcp_with<P: Platform>(
    listener: TcpListener,
    token: String,
    platform: Arc<P>,
    tls: Option<TlsAcceptor>,
) -> Result<(), ServeError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(ServeError::WeakToken { len: token.len() });
    }
    let token: Arc<[u8]> = Arc::from(token.into_bytes());
    let mut conns = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                make_room(&mut conns).await;
                let conn = Connection {
                    peer: Some(peer),
                    tls: tls.is_some(),
                    public_url: None,
                };
                let (platform, token) = (platform.clone(), Some(token.clone()));
                match &tls {
                    None => conns.spawn(serve_conn(stream, platform, token, conn)),
                    Some(tls) => {
                        let tls = tls.clone();
                        // The handshake in the connection's task: a slow client holds only
                        // its own slot, never the accept loop.
                        conns.spawn(async move {
                            match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => serve_conn(stream, platform, token, conn).await,
                                Ok(Err(e)) => tracing::debug!(%peer, "api: TLS handshake: {e}"),
                                Err(_) => tracing::debug!(%peer, "api: TLS handshake timed out"),
                            }
                        })
                    }
                };
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Forget finished connections; at [`MAX_CONNECTIONS`], wait until one ends.
async fn make_room(conns: &mut JoinSet<()>) {
    while conns.try_join_next().is_some() {}
    while conns.len() >= MAX_CONNECTIONS {
        conns.join_next().await;
    }
}

/// `accept` fails on resource exhaustion (EMFILE, ENOBUFS…) or an aborted connection: log, pause
/// briefly so a full fd table does not spin the loop, go on.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!("api: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn serve_conn<S, P>(io: S, platform: Arc<P>, token: Option<Arc<[u8]>>, conn: Connection)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Platform,
{
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let platform = platform.clone();
        let token = token.clone();
        if conn.tls {
            req.extensions_mut().insert(builds::Tls);
        }
        req.extensions_mut().insert(conn.clone());
        // Its own task, so a panic in the platform is a 500 answer, not a dropped connection.
        let task =
            tokio::spawn(async move { routes::handle(req, &*platform, token.as_deref()).await });
        async move {
            Ok::<_, Infallible>(match task.await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::error!("api: request handler failed: {e}");
                    routes::error_response(&ApiError::internal("the request handler failed"), None)
                }
            })
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!("api: connection ended: {e}");
    }
}

/// A TLS acceptor for [`serve_tls`] from a server configuration (certificate and key already
/// in it), offering ALPN `http/1.1` only: a client that was offered `h2` would speak HTTP/2 to
/// this HTTP/1.1 server.
pub fn http1_acceptor(mut config: tokio_rustls::rustls::ServerConfig) -> TlsAcceptor {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}
