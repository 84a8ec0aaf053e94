//! Test helpers: loopback backends, a router, a raw hyper client.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dyno_router::{ChannelSink, RouteTable, Router, RouterConfig, RouterLog};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;

/// SO_MARK needs CAP_NET_ADMIN: these tests must run as root, never silently skip.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("Uid line");
    assert_eq!(
        euid, "0",
        "this test needs root (SO_MARK on upstream sockets)"
    );
}

pub struct TestBackend {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// HTTP requests received so far.
    pub requests: Arc<AtomicUsize>,
}

/// A loopback dyno named `name`. Paths: `/hello` → "Hello, world!"; `/hang` → never answers;
/// anything else → "<name>\n" then the request headers as `name: value` lines.
pub async fn backend(name: &'static str) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let requests = Arc::new(AtomicUsize::new(0));
    let reqs = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let reqs = reqs.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    reqs.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if req.uri().path() == "/ws" {
                            let up = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(io) = up.await {
                                    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(io));
                                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                                }
                            });
                            let resp = Response::builder()
                                .status(101)
                                .header("connection", "upgrade")
                                .header("upgrade", "echo")
                                .body(full(Bytes::new()))
                                .expect("101");
                            return Ok::<_, Infallible>(resp);
                        }
                        if req.uri().path() == "/echo" {
                            // Stream the request body straight back.
                            let body = req.into_body();
                            return Ok(Response::new(body.boxed()));
                        }
                        let body = match req.uri().path() {
                            "/hello" => "Hello, world!".to_owned(),
                            "/hang" => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                String::new()
                            }
                            _ => {
                                let mut s = format!("{name}\n");
                                for (k, v) in req.headers() {
                                    s.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
                                }
                                s
                            }
                        };
                        Ok::<_, Infallible>(Response::new(full(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    TestBackend {
        addr,
        accepted,
        requests,
    }
}

fn full(b: Bytes) -> http_body_util::combinators::BoxBody<Bytes, hyper::Error> {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// An address on loopback where nothing listens (connect is refused).
pub async fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

pub struct TestRouter {
    pub addr: SocketAddr,
    pub routes: RouteTable,
    pub logs: UnboundedReceiver<(String, RouterLog)>,
}

impl TestRouter {
    /// Next log line (app, rendered line), within 2 s.
    pub async fn next_log(&mut self) -> (String, String) {
        let (app, line) = tokio::time::timeout(Duration::from_secs(2), self.logs.recv())
            .await
            .expect("a router log line within 2 s")
            .expect("log channel open");
        (app, line.to_string())
    }
}

pub async fn router(cfg: RouterConfig) -> TestRouter {
    require_root();
    let routes = RouteTable::new();
    let (sink, logs) = ChannelSink::new();
    let r = Router::new(cfg, routes.clone(), sink);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(r.serve(listener));
    TestRouter { addr, routes, logs }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect router");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = Request::builder().uri(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Empty::<Bytes>::new()).expect("request");
    let resp = sender.send_request(req).await.expect("response");
    collect(resp).await
}

/// One HTTP/2 (h2c, prior knowledge) request on a fresh connection.
pub async fn request_h2(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect router");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{host}{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    collect(resp).await
}

async fn collect(resp: Response<Incoming>) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Request headers the backend echoed (lower-case names), and its name (first line).
pub fn echoed(body: &str) -> (String, Vec<(String, String)>) {
    let mut lines = body.lines();
    let name = lines.next().unwrap_or_default().to_owned();
    let hs = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (name, hs)
}

pub fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A raw-TCP dyno: reads each request head, writes `reply` (maybe nothing), closes.
pub async fn raw_backend(reply: Vec<u8>) -> SocketAddr {
    raw_backend_hold(reply, false).await
}

/// Like `raw_backend`; with `hold` the connection stays open (silent) after the reply.
pub async fn raw_backend_hold(reply: Vec<u8>, hold: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw backend");
    let addr = listener.local_addr().expect("addr");
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&reply).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback address whose accept queue is full: new connects hang (SYNs are dropped).
/// Keep the returned values alive for as long as the address should stay black.
pub async fn blackhole_addr() -> (SocketAddr, Vec<Box<dyn std::any::Any + Send>>) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    sock.bind(&bind.into()).expect("bind");
    sock.listen(0).expect("listen");
    let addr = sock.local_addr().expect("addr").as_socket().expect("inet");
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(sock)];
    // Fill the queue; connects beyond it hang, so give each a short time.
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
        {
            keep.push(Box::new(s));
        }
    }
    (addr, keep)
}

/// One HTTP/1.1 POST with `body` on a fresh connection.
pub async fn post(addr: SocketAddr, host: &str, path: &str, body: Bytes) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect router");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host)
        .body(Full::new(body))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    collect(resp).await
}

/// Write raw bytes to `addr`, return whatever comes back within `wait` (or until EOF).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replace the varying values of `keys` with `*` so a log line can be compared exactly.
pub fn shape(line: &str, keys: &[&str]) -> String {
    let mut out = line.to_owned();
    for key in keys {
        let pat = format!(" {key}=");
        if let Some(i) = out.find(&pat) {
            let start = i + pat.len();
            let end = out[start..].find(' ').map_or(out.len(), |j| start + j);
            out.replace_range(start..end, "*");
        }
    }
    out
}

pub fn value<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!(" {key}=");
    let i = line.find(&pat).map(|i| i + pat.len()).expect("key in line");
    let rest = &line[i..];
    &rest[..rest.find(' ').unwrap_or(rest.len())]
}

pub fn test_cfg() -> dyno_router::RouterConfig {
    dyno_router::RouterConfig {
        connect_timeout: ms(1000),
        request_timeout: ms(2000),
        ..RouterConfig::default()
    }
}

/// One router serving both a plain listener (`TestRouter::addr`) and a TLS one (returned).
pub async fn router_with_tls(
    cfg: RouterConfig,
    acceptor: dyno_router::TlsAcceptor,
) -> (TestRouter, SocketAddr) {
    require_root();
    let routes = RouteTable::new();
    let (sink, logs) = ChannelSink::new();
    let r = Router::new(cfg, routes.clone(), sink);
    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let tls = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind TLS router");
    let (addr, tls_addr) = (
        plain.local_addr().expect("addr"),
        tls.local_addr().expect("addr"),
    );
    tokio::spawn(r.clone().serve_tls(tls, acceptor));
    tokio::spawn(r.serve(plain));
    (TestRouter { addr, routes, logs }, tls_addr)
}
