//! Every H-code the router produces, triggered by a scripted backend or client on loopback,
//! asserting status and the exact log line.

mod common;

use common::*;
use dyno_router::{Backend, RouterConfig};

#[tokio::test]
async fn h14_h10_h80_h81_app_states() {
    let mut r = router(test_cfg()).await;
    r.routes.set_app("myapp", &[]);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(rep.body.contains("Application Error"));
    let (app, line) = r.next_log().await;
    assert_eq!(app, "myapp");
    assert_eq!(
        shape(&line, &["request_id"]),
        "at=error code=H14 desc=\"No web dynos running\" method=GET path=\"/\" host=myapp.localhost \
         request_id=* fwd=\"127.0.0.1\" dyno= connect= service= status=503 bytes= protocol=http"
    );
    // Crashed dynos → H10; maintenance → H80.
    r.routes.set_crashed("myapp", true);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(r
        .next_log()
        .await
        .1
        .starts_with("at=error code=H10 desc=\"App crashed\" "));
    r.routes.set_maintenance("myapp", true);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(rep.body.contains("Maintenance"));
    assert!(r
        .next_log()
        .await
        .1
        .starts_with("at=info code=H80 desc=\"Maintenance mode\" "));
    // Never deployed → H81 (maintenance wins while it is on, as on Heroku).
    r.routes.set_maintenance("myapp", false);
    r.routes.set_blank("myapp", true);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(rep.body.contains("not been deployed"), "{}", rep.body);
    assert!(r
        .next_log()
        .await
        .1
        .starts_with("at=info code=H81 desc=\"Blank app\" "));
}

#[tokio::test]
async fn h12_request_timeout() {
    let mut r = router(RouterConfig {
        request_timeout: ms(200),
        ..test_cfg()
    })
    .await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let t0 = std::time::Instant::now();
    let rep = request(r.addr, "myapp.localhost", "/hang", &[]).await;
    let took = t0.elapsed();
    assert_eq!(rep.status, 503);
    assert!(took >= ms(200) && took < ms(1500), "{took:?}");
    let (_, line) = r.next_log().await;
    assert_eq!(
        shape(&line, &["request_id", "connect", "service"]),
        "at=error code=H12 desc=\"Request timeout\" method=GET path=\"/hang\" host=myapp.localhost \
         request_id=* fwd=\"127.0.0.1\" dyno=web.1 connect=* service=* status=503 bytes=0 protocol=http"
    );
    let service: u64 = value(&line, "service")
        .trim_end_matches("ms")
        .parse()
        .expect("ms");
    assert!((150..1500).contains(&service), "{line}");
}

#[tokio::test]
async fn h21_retry_lands_on_healthy_dyno() {
    let mut r = router(test_cfg()).await;
    let good = backend("web.2").await;
    let dead = refusing_addr().await;
    r.routes.set_dynos(
        "myapp",
        vec![
            Backend::new("web.1", dead),
            Backend::new("web.2", good.addr),
        ],
    );
    for _ in 0..10 {
        let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
        assert_eq!(rep.status, 200);
        assert_eq!(echoed(&rep.body).0, "web.2");
        let (_, line) = r.next_log().await;
        assert!(
            line.starts_with("at=info ") && line.contains(" dyno=web.2 "),
            "{line}"
        );
    }

    // Every dyno refuses: H21 after the retries.
    let dead2 = refusing_addr().await;
    r.routes.set_dynos(
        "myapp",
        vec![Backend::new("web.1", dead), Backend::new("web.2", dead2)],
    );
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    let (_, line) = r.next_log().await;
    assert_code(&line, "H21", "Backend connection refused");
    assert!(line.contains(" status=503 bytes=0 protocol=http"), "{line}");
}

#[tokio::test]
async fn h11_backlog_too_deep() {
    let mut r = router(RouterConfig {
        backlog_per_dyno: 1,
        request_timeout: ms(500),
        ..test_cfg()
    })
    .await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let addr = r.addr;
    let hanging = tokio::spawn(async move { request(addr, "myapp.localhost", "/hang", &[]).await });
    tokio::time::sleep(ms(100)).await;
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    let (_, line) = r.next_log().await;
    assert_code(&line, "H11", "Backlog too deep");
    assert_eq!(hanging.await.expect("join").status, 503);
    assert!(r.next_log().await.1.starts_with("at=error code=H12 "));
    // The slot is free again.
    let rep = request(r.addr, "myapp.localhost", "/hello", &[]).await;
    assert_eq!(rep.status, 200);
}

#[tokio::test]
async fn h13_closed_without_response() {
    let mut r = router(test_cfg()).await;
    let b = raw_backend(Vec::new()).await;
    r.routes.set_dynos("myapp", vec![Backend::new("web.1", b)]);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    let (_, line) = r.next_log().await;
    assert_code(&line, "H13", "Connection closed without response");
    assert!(
        line.contains(" dyno=web.1 ") && line.contains(" status=503 bytes=0 "),
        "{line}"
    );
}

#[tokio::test]
async fn h25_response_headers_too_large() {
    let mut r = router(test_cfg()).await;
    let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..80 {
        reply.extend_from_slice(format!("x-big-{i}: {}\r\n", "b".repeat(8000)).as_bytes());
    }
    reply.extend_from_slice(b"content-length: 0\r\n\r\n");
    let b = raw_backend(reply).await;
    r.routes.set_dynos("myapp", vec![Backend::new("web.1", b)]);
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 502);
    let (_, line) = r.next_log().await;
    assert_code(&line, "H25", "HTTP Restriction");
    assert!(line.contains(" status=502 "), "{line}");
}

#[tokio::test]
async fn h27_client_request_interrupted() {
    let mut r = router(RouterConfig {
        request_timeout: ms(5000),
        ..test_cfg()
    })
    .await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let addr = r.addr;
    let client = tokio::spawn(async move { request(addr, "myapp.localhost", "/hang", &[]).await });
    tokio::time::sleep(ms(200)).await;
    client.abort();
    let (_, line) = r.next_log().await;
    assert_error_line(&line, "H27", "Client Request Interrupted", 499);
}

#[tokio::test]
async fn h19_connect_timeout() {
    let mut r = router(RouterConfig {
        connect_timeout: ms(300),
        ..test_cfg()
    })
    .await;
    let (hole, _keep) = blackhole_addr().await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", hole)]);
    let t0 = std::time::Instant::now();
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 503);
    assert!(t0.elapsed() < ms(2000), "{:?}", t0.elapsed());
    let (_, line) = r.next_log().await;
    assert_code(&line, "H19", "Backend connection timeout");
}

#[tokio::test]
async fn h15_idle_response() {
    let mut r = router(RouterConfig {
        idle_timeout: ms(300),
        ..test_cfg()
    })
    .await;
    let b = raw_backend_hold(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst".to_vec(),
        true,
    )
    .await;
    r.routes.set_dynos("myapp", vec![Backend::new("web.1", b)]);
    let stream = tokio::net::TcpStream::connect(r.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("hs");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("/")
        .header("host", "myapp.localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("req");
    let resp = sender.send_request(req).await.expect("head");
    assert_eq!(resp.status(), 200);
    let t0 = std::time::Instant::now();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "truncated body must error");
    assert!(
        t0.elapsed() >= ms(250) && t0.elapsed() < ms(2000),
        "{:?}",
        t0.elapsed()
    );
    let (_, line) = r.next_log().await;
    assert_code(&line, "H15", "Idle connection");
    assert!(line.contains(" status=503 bytes=5 "), "{line}");
}

/// Send a request head announcing 100 body bytes and only part of the body, then stall.
async fn partial_post(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: myapp.localhost\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    s
}

#[tokio::test]
async fn h28_client_idle_during_upload() {
    let mut r = router(RouterConfig {
        idle_timeout: ms(300),
        ..test_cfg()
    })
    .await;
    let b = raw_backend_hold(Vec::new(), true).await;
    r.routes.set_dynos("myapp", vec![Backend::new("web.1", b)]);
    let _client = partial_post(r.addr).await;
    let (_, line) = r.next_log().await;
    assert_error_line(&line, "H28", "Client Connection Idle", 499);
}

#[tokio::test]
async fn h18_dyno_closes_during_upload() {
    let mut r = router(RouterConfig {
        idle_timeout: ms(1500),
        ..test_cfg()
    })
    .await;
    let b = raw_backend(Vec::new()).await;
    r.routes.set_dynos("myapp", vec![Backend::new("web.1", b)]);
    let _client = partial_post(r.addr).await;
    let (_, line) = r.next_log().await;
    assert_code(&line, "H18", "Server Request Interrupted");
    assert!(line.contains(" status=503 "), "{line}");
}

/// An `at=error` line for `code` with Heroku's description, on web.1, with the client's status.
fn assert_error_line(line: &str, code: &str, desc: &str, status: u16) {
    assert_code(line, code, desc);
    assert!(
        line.contains(" dyno=web.1 ") && line.contains(&format!(" status={status} ")),
        "{line}"
    );
}

/// The line is an `at=error` line for `code`, with Heroku's description.
fn assert_code(line: &str, code: &str, desc: &str) {
    assert!(
        line.starts_with(&format!("at=error code={code} desc=\"{desc}\" ")),
        "{line}"
    );
}
