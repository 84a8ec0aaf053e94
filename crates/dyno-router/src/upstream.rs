//! Upstream side: marked TCP connects to dynos and a keep-alive pool of HTTP/1.1 connections.
//!
//! We keep our own small pool (instead of hyper-util's legacy `Client`) so the proxy controls
//! connect retries across dynos before the request body is consumed, and gets the request back
//! when a pooled connection turned out to be dead (`try_send_request`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Firewall mark on every router → dyno socket (`SO_MARK`): only marked traffic may reach `$PORT`.
pub const ROUTER_MARK: u32 = 0x6479;

/// Why a connect to a dyno failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The dyno refused the connection (`H21`).
    #[error("connection refused")]
    Refused,
    /// The connect budget ran out (`H19`).
    #[error("connect timeout")]
    Timeout,
    /// Setting up the socket failed (mark, options) — a platform problem (`H99`).
    #[error("socket setup: {0}")]
    Socket(io::Error),
    /// Any other connect failure (unreachable, reset…), treated like a refusal.
    #[error("connect: {0}")]
    Io(io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
}

/// A keep-alive pool of connections to dynos, as the dyno choice uses it.
pub(crate) trait Upstreams {
    type Conn;
    /// An idle connection to `addr` that still looks open.
    fn checkout(&self, addr: SocketAddr) -> Option<Self::Conn>;
    /// A new connection to `addr` within `budget`.
    fn connect(
        &self,
        addr: SocketAddr,
        budget: Duration,
    ) -> impl std::future::Future<Output = Result<Self::Conn, ConnectError>> + Send;
    /// Drop every idle connection to `addr` (it refused us).
    fn forget(&self, addr: SocketAddr);
}

/// A ready upstream connection.
pub(crate) type Sender = SendRequest<crate::body::ClientBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Keep-alive pool of upstream connections, per dyno address.
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    idle_timeout: Duration,
    mark: Option<u32>,
    max_response_header_bytes: usize,
}

impl Pool {
    pub(crate) fn new(
        idle_timeout: Duration,
        mark: Option<u32>,
        max_response_header_bytes: usize,
    ) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            mark,
            max_response_header_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle, ready connection to `addr`, if the pool has one.
    fn take_idle(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < self.idle_timeout && entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Put `sender` back: now if it is ready for the next request, else once its current
    /// response is fully read (spawned; never blocks).
    pub(crate) fn checkin(self: &Arc<Self>, addr: SocketAddr, mut sender: Sender) {
        if sender.is_ready() {
            self.put(addr, sender);
            return;
        }
        if sender.is_closed() {
            return;
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(addr, sender);
            }
        });
    }

    fn put(&self, addr: SocketAddr, sender: Sender) {
        self.lock().entry(addr).or_default().push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Drop idle connections older than the idle timeout, closed ones, and those to dynos that
    /// are no longer `up` (`keep` says which are).
    pub(crate) fn reap(&self, keep: impl Fn(SocketAddr) -> bool) {
        let timeout = self.idle_timeout;
        self.lock().retain(|addr, list| {
            if !keep(*addr) {
                return false;
            }
            list.retain(|e| e.since.elapsed() < timeout && !e.sender.is_closed());
            !list.is_empty()
        });
    }

    /// Number of idle connections (tests, metrics).
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Open a new marked TCP connection to `addr` and do the HTTP/1.1 handshake.
    async fn open(&self, addr: SocketAddr, budget: Duration) -> Result<Sender, ConnectError> {
        let stream = tokio::time::timeout(budget, connect_marked(addr, self.mark))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(self.max_response_header_bytes.max(8192))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, %addr, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// Keep-alive pool of plain upstream connections (the HTTP/1.1 engine owns the HTTP on them).
pub(crate) struct Conns {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
    idle_timeout: Duration,
    mark: Option<u32>,
}

impl Conns {
    pub(crate) fn new(idle_timeout: Duration, mark: Option<u32>) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            mark,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<(TcpStream, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `addr` that still looks open.
    fn take_idle(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        while let Some((stream, since)) = list.pop() {
            // tokio only reads when the socket was reported readable since our last read: an
            // idle, open connection costs no syscall here. EOF or stray bytes: not reusable.
            let open = matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            if open && since.elapsed() < self.idle_timeout {
                return Some(stream);
            }
        }
        None
    }

    /// Put back a connection whose last response was read to its end.
    pub(crate) fn checkin(&self, addr: SocketAddr, stream: TcpStream) {
        self.lock()
            .entry(addr)
            .or_default()
            .push((stream, Instant::now()));
    }

    /// Close idle connections older than the idle timeout, and every one to a dyno that is no
    /// longer `up` (`keep` says which are): closed now, while the dyno's network still exists,
    /// both ends finish their TCP close instead of lingering in the dyno's namespace.
    pub(crate) fn reap(&self, keep: impl Fn(SocketAddr) -> bool) {
        let timeout = self.idle_timeout;
        self.lock().retain(|addr, list| {
            if !keep(*addr) {
                return false;
            }
            list.retain(|(_, since)| since.elapsed() < timeout);
            !list.is_empty()
        });
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

impl Upstreams for Arc<Pool> {
    type Conn = Sender;

    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        self.take_idle(addr)
    }

    fn connect(
        &self,
        addr: SocketAddr,
        budget: Duration,
    ) -> impl std::future::Future<Output = Result<Sender, ConnectError>> + Send {
        self.open(addr, budget)
    }

    fn forget(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }
}

impl Upstreams for Arc<Conns> {
    type Conn = TcpStream;

    fn checkout(&self, addr: SocketAddr) -> Option<TcpStream> {
        self.take_idle(addr)
    }

    fn connect(
        &self,
        addr: SocketAddr,
        budget: Duration,
    ) -> impl std::future::Future<Output = Result<TcpStream, ConnectError>> + Send {
        let mark = self.mark;
        async move {
            tokio::time::timeout(budget, connect_marked(addr, mark))
                .await
                .map_err(|_| ConnectError::Timeout)?
        }
    }

    fn forget(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }
}

/// TCP connect with `SO_MARK` set before `connect(2)`, `TCP_NODELAY` after.
pub(crate) async fn connect_marked(
    addr: SocketAddr,
    mark: Option<u32>,
) -> Result<tokio::net::TcpStream, ConnectError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(ConnectError::Socket)?;
    if let Some(mark) = mark {
        sock.set_mark(mark).map_err(ConnectError::Socket)?;
    }
    sock.set_nonblocking(true).map_err(ConnectError::Socket)?;
    let std_stream: std::net::TcpStream = sock.into();
    let tsock = tokio::net::TcpSocket::from_std_stream(std_stream);
    let stream = tsock.connect(addr).await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        io::ErrorKind::TimedOut => ConnectError::Timeout,
        _ => ConnectError::Io(e),
    })?;
    stream.set_nodelay(true).map_err(ConnectError::Socket)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstream_socket_carries_router_mark() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0");
        assert!(root, "this test needs root (SO_MARK)");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let s = connect_marked(addr, Some(ROUTER_MARK))
            .await
            .expect("connect");
        assert_eq!(
            socket2::SockRef::from(&s).mark().expect("SO_MARK"),
            ROUTER_MARK
        );
        drop(l);
        assert!(matches!(
            connect_marked(addr, Some(ROUTER_MARK)).await,
            Err(ConnectError::Refused)
        ));
    }
}
