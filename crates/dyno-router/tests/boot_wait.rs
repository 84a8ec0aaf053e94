//! Heroku's boot wait and `H12` counted from the end of the upload: a request that finds no
//! web dyno up while some are starting waits for one (`H20` when none comes up within
//! `boot_wait`); `H14` stays for an app with no web dyno at all; waiting requests count against
//! `H11`'s backlog. A slow upload does not eat the dyno's request timeout, and a dyno that never
//! reads an upload is still bounded.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use dyno_router::{Backend, RouteTable, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests of `app` the router holds right now (waiting for a dyno or in flight).
fn in_flight(routes: &RouteTable, app: &str) -> usize {
    routes
        .lookup(&format!("{app}.localhost"))
        .map_or(0, |r| r.in_flight.load(Ordering::SeqCst))
}

/// Waits (without a deadline of its own: the test runner's applies) until `n` requests of
/// `app` are held by the router.
async fn until_held(routes: &RouteTable, app: &str, n: usize) {
    while in_flight(routes, app) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_request_made_while_web_dynos_start_is_answered_once_one_is_up() {
    let mut r = router(RouterConfig {
        boot_wait: Duration::from_secs(60),
        ..test_cfg()
    })
    .await;
    r.routes.set_app("myapp", &[]);
    r.routes.set_web_dynos("myapp", vec![], 2, false);
    let addr = r.addr;
    let h1 = tokio::spawn(async move { request(addr, "myapp.localhost", "/hello", &[]).await });
    let h2 = tokio::spawn(async move { request_h2(addr, "myapp.localhost", "/hello").await });
    until_held(&r.routes, "myapp", 2).await;
    assert!(
        !h1.is_finished() && !h2.is_finished(),
        "both wait for a dyno"
    );

    // The first of the two starting dynos comes up: both requests go to it.
    let b = backend("web.1").await;
    r.routes
        .set_web_dynos("myapp", vec![Backend::new("web.1", b.addr)], 1, false);
    for reply in [h1.await.expect("h1"), h2.await.expect("h2")] {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, "Hello, world!");
    }
    for _ in 0..2 {
        let (app, line) = r.next_log().await;
        assert_eq!(app, "myapp");
        assert!(
            line.starts_with("at=info method=GET path=\"/hello\" "),
            "{line}"
        );
        assert!(
            line.contains(" dyno=web.1 ") && line.contains(" status=200 "),
            "{line}"
        );
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn none_up_within_the_boot_wait_is_h20_and_no_dyno_at_all_is_h14() {
    let mut r = router(RouterConfig {
        boot_wait: Duration::from_millis(300),
        ..test_cfg()
    })
    .await;
    r.routes.set_app("myapp", &[]);
    r.routes.set_web_dynos("myapp", vec![], 1, false);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(rep.body.contains("Application Error"), "{}", rep.body);
    let (_, line) = r.next_log().await;
    assert_eq!(
        shape(&line, &["request_id"]),
        "at=error code=H20 desc=\"App boot timeout\" method=GET path=\"/\" host=myapp.localhost \
         request_id=* fwd=\"127.0.0.1\" dyno= connect= service= status=503 bytes= protocol=http"
    );
    let rep = request_h2(r.addr, "myapp.localhost", "/").await;
    assert_eq!(rep.status, 503);
    assert!(r.next_log().await.1.starts_with("at=error code=H20 "));

    // The starting dyno went away without coming up: no web dyno at all, H14 at once.
    r.routes.set_web_dynos("myapp", vec![], 0, false);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(r.next_log().await.1.starts_with("at=error code=H14 "));
}

#[tokio::test]
async fn a_waiting_request_learns_of_a_crash_and_waiting_ones_count_against_h11() {
    let mut r = router(RouterConfig {
        boot_wait: Duration::from_secs(60),
        backlog_per_dyno: 2,
        ..test_cfg()
    })
    .await;
    r.routes.set_app("myapp", &[]);
    r.routes.set_web_dynos("myapp", vec![], 1, false);
    let addr = r.addr;
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { request(addr, "myapp.localhost", "/", &[]).await }))
        .collect();
    until_held(&r.routes, "myapp", 2).await;
    // A third one is over the backlog (2 per starting dyno): refused at once.
    let rep = request(addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(r.next_log().await.1.starts_with("at=error code=H11 "));

    // The starting dyno crashed instead of coming up: the waiting requests get H10.
    r.routes.set_web_dynos("myapp", vec![], 0, true);
    for w in waiting {
        assert_eq!(w.await.expect("request").status, 503);
        assert!(r.next_log().await.1.starts_with("at=error code=H10 "));
    }
}

/// A dyno that reads the whole body, then answers with its length.
async fn counting_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let (head_end, length) = loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while got.len() < head_end + length {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("{}", got.len() - head_end);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_slow_upload_does_not_eat_the_request_timeout() {
    // The upload takes longer than the whole request timeout; the dyno answers as soon as it
    // has the body. H12 counted from the head would cut it; counted from the body's end, not.
    let mut r = router(RouterConfig {
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        ..test_cfg()
    })
    .await;
    let dyno = counting_backend().await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", dyno)]);
    let mut s = tokio::net::TcpStream::connect(r.addr)
        .await
        .expect("connect");
    s.write_all(b"POST /up HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: close\r\nContent-Length: 10\r\n\r\n")
        .await
        .expect("head");
    for byte in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&[*byte]).await.expect("body byte");
    }
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("\r\n\r\n10"), "{reply}");
    let (_, line) = r.next_log().await;
    assert!(line.starts_with("at=info method=POST "), "{line}");

    // The same over HTTP/2 (hyper's path): the body comes slowly, the dyno still answers.
    let reply = slow_h2_post(r.addr, 10, Duration::from_millis(100)).await;
    assert_eq!(reply, (200, "10".to_owned()));
    let (_, line) = r.next_log().await;
    assert!(line.starts_with("at=info method=POST "), "{line}");
}

/// An h2c POST whose `n` body bytes come one every `every`; the status and body.
async fn slow_h2_post(addr: std::net::SocketAddr, n: usize, every: Duration) -> (u16, String) {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for _ in 0..n {
            tokio::time::sleep(every).await;
            if tx.send(Bytes::from_static(b"x")).await.is_err() {
                return;
            }
        }
    });
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://myapp.localhost/up")
        .header("content-length", n.to_string())
        .body(ChannelBody(rx))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A request body whose chunks come from a channel; it ends when the sender goes.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn a_dyno_that_never_reads_the_upload_is_still_bounded() {
    // The dyno reads the head and then nothing: once the socket buffers are full the upload
    // stalls on the dyno's side. It must end (H18 after the idle timeout), not hang.
    let mut r = router(RouterConfig {
        request_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_millis(500),
        ..test_cfg()
    })
    .await;
    let dyno = raw_backend_hold(Vec::new(), true).await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", dyno)]);
    let size = 64 << 20;
    let mut s = tokio::net::TcpStream::connect(r.addr)
        .await
        .expect("connect");
    let head =
        format!("POST /up HTTP/1.1\r\nHost: myapp.localhost\r\nContent-Length: {size}\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("head");
    let (mut rd, mut wr) = s.into_split();
    // The client keeps sending as fast as the router takes it.
    let upload = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < size && wr.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        wr
    });
    let mut reply = Vec::new();
    let _ = rd.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    let (_, line) = r.next_log().await;
    assert!(
        line.starts_with("at=error code=H18 desc=\"Server Request Interrupted\" "),
        "{line}"
    );
    upload.abort();
}

#[tokio::test]
async fn an_http2_upload_that_has_ended_starts_the_h12_clock() {
    // The whole body is sent at once and the dyno never answers: H12 after the request
    // timeout (counted from the body's end), not H18 at the idle timeout.
    let mut r = router(RouterConfig {
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(20),
        ..test_cfg()
    })
    .await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(r.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri("http://myapp.localhost/hang")
        .header("content-length", "10")
        .body(http_body_util::Full::new(Bytes::from_static(b"0123456789")))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 503);
    let _ = resp.into_body().collect().await;
    let (_, line) = r.next_log().await;
    assert!(
        line.starts_with("at=error code=H12 desc=\"Request timeout\" method=POST "),
        "{line}"
    );
}
