//! End-to-end router tests on loopback: backends and router as tokio tasks.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use dyno_router::{Backend, RouterConfig};

#[tokio::test]
async fn host_routing_random_choice_and_unknown_host() {
    let mut r = router(test_cfg()).await;
    let b1 = backend("web.1").await;
    let b2 = backend("web.2").await;
    let other = backend("other").await;
    r.routes.set_app("myapp", &["www.example.com".to_owned()]);
    r.routes.set_dynos(
        "myapp",
        vec![
            Backend::new("web.1", b1.addr),
            Backend::new("web.2", b2.addr),
        ],
    );
    r.routes
        .set_dynos("otherapp", vec![Backend::new("web.1", other.addr)]);

    let mut seen = HashSet::new();
    for _ in 0..40 {
        let rep = request(r.addr, "MyApp.localhost:8080", "/", &[]).await;
        assert_eq!(rep.status, 200);
        seen.insert(echoed(&rep.body).0);
    }
    assert_eq!(
        seen,
        HashSet::from(["web.1".to_owned(), "web.2".to_owned()])
    );

    let rep = request(r.addr, "www.example.com", "/", &[]).await;
    assert!(rep.body.starts_with("web."), "{}", rep.body);
    let rep = request(r.addr, "otherapp.localhost", "/", &[]).await;
    assert_eq!(echoed(&rep.body).0, "other");

    let rep = request(r.addr, "nope.localhost", "/", &[]).await;
    assert_eq!(rep.status, 404);
    assert!(
        rep.body.contains("There's nothing here, yet."),
        "{}",
        rep.body
    );

    let rep = request(r.addr, "bad host", "/", &[]).await;
    assert_eq!(rep.status, 400);
    // Drain: every proxied request logged to its app.
    for _ in 0..42 {
        let (app, _) = r.next_log().await;
        assert!(app == "myapp" || app == "otherapp");
    }
}

#[tokio::test]
async fn heroku_headers() {
    let mut r = router(test_cfg()).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);

    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let rep = request(
        r.addr,
        "myapp.localhost",
        "/",
        &[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ],
    )
    .await;
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(
        rep.headers.get("via").map(|v| v.as_bytes()),
        Some(&b"1.1 vegur"[..])
    );
    let (_, hs) = echoed(&rep.body);
    assert_eq!(header(&hs, "x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
    assert_eq!(header(&hs, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(&hs, "x-forwarded-port"),
        Some(r.addr.port().to_string().as_str())
    );
    let start: u128 = header(&hs, "x-request-start")
        .expect("x-request-start")
        .parse()
        .expect("ms");
    assert!(
        before <= start && start <= after,
        "{before} <= {start} <= {after}"
    );
    assert_eq!(header(&hs, "via"), Some("1.1 vegur"));
    assert_eq!(header(&hs, "host"), Some("myapp.localhost"));
    assert_eq!(
        header(&hs, "x-secret"),
        None,
        "Connection-listed header must not be forwarded"
    );
    let rid = header(&hs, "x-request-id").expect("x-request-id");
    assert!(uuid::Uuid::parse_str(rid).is_ok(), "{rid}");
    let (_, line) = r.next_log().await;
    assert!(line.contains(&format!("request_id={rid} ")), "{line}");
    assert!(line.contains("fwd=\"1.2.3.4, 127.0.0.1\""), "{line}");

    // Client request id kept when 20–200 chars of [A-Za-z0-9+/=-].
    let good = "abcDEF0123456789+/=-xyz";
    let rep = request(r.addr, "myapp.localhost", "/", &[("x-request-id", good)]).await;
    assert_eq!(header(&echoed(&rep.body).1, "x-request-id"), Some(good));
    // Replaced when too short, too long or with other characters.
    for bad in [
        "short",
        "has space in it but long enough",
        &"a".repeat(201),
        "abcdefghijklmnopqrstu_v",
    ] {
        let rep = request(r.addr, "myapp.localhost", "/", &[("x-request-id", bad)]).await;
        let got = header(&echoed(&rep.body).1, "x-request-id")
            .unwrap_or_default()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "{bad:?} → {got:?}");
    }
}

#[tokio::test]
async fn info_log_line_shape() {
    let mut r = router(test_cfg()).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let rep = request(r.addr, "myapp.localhost", "/hello?x=1", &[]).await;
    assert_eq!(rep.body, "Hello, world!");
    let (app, line) = r.next_log().await;
    assert_eq!(app, "myapp");
    assert_eq!(
        shape(&line, &["request_id", "connect", "service"]),
        "at=info method=GET path=\"/hello?x=1\" host=myapp.localhost request_id=* fwd=\"127.0.0.1\" \
         dyno=web.1 connect=* service=* status=200 bytes=13 protocol=http"
    );
    assert!(value(&line, "connect").ends_with("ms") && value(&line, "service").ends_with("ms"));
}

#[tokio::test]
async fn upstream_keep_alive_reuse() {
    let mut r = router(test_cfg()).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    for _ in 0..5 {
        let rep = request(r.addr, "myapp.localhost", "/hello", &[]).await;
        assert_eq!(rep.status, 200);
        r.next_log().await;
        tokio::time::sleep(ms(20)).await;
    }
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection for 5 requests"
    );
}

#[tokio::test]
async fn h2c_client_to_http1_dyno() {
    let mut r = router(test_cfg()).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let rep = request_h2(r.addr, "myapp.localhost", "/").await;
    assert_eq!(rep.status, 200);
    let (name, hs) = echoed(&rep.body);
    assert_eq!(name, "web.1");
    assert_eq!(header(&hs, "host"), Some("myapp.localhost"));
    r.next_log().await;
}

#[tokio::test]
async fn limits_and_expect() {
    let mut r = router(test_cfg()).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let rep = request(
        r.addr,
        "myapp.localhost",
        "/",
        &[("expect", "something-else")],
    )
    .await;
    assert_eq!(rep.status, 417);
    let long = "a".repeat(8 * 1024);
    let rep = request(r.addr, "myapp.localhost", "/", &[("x-long", &long)]).await;
    assert_eq!(rep.status, 400);
    let path = format!("/{}", "p".repeat(8 * 1024));
    let rep = request(r.addr, "myapp.localhost", &path, &[]).await;
    assert_eq!(rep.status, 400);
    let names: Vec<String> = (0..1001).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let rep = request(r.addr, "myapp.localhost", "/", &many).await;
    assert!(rep.status == 400 || rep.status == 431, "{}", rep.status);
    // A normal request still works (nothing above reached the dyno).
    let rep = request(r.addr, "myapp.localhost", "/hello", &[]).await;
    assert_eq!(rep.status, 200);
    assert!(r.next_log().await.1.contains(" status=200 "));
    assert!(r.logs.try_recv().is_err());
}

#[tokio::test]
async fn upgrade_tunnel_echo() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut r = router(test_cfg()).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let mut s = tokio::net::TcpStream::connect(r.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"hello through the router"] {
        s.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(ms(2000), s.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(got, msg);
    }
    let (_, line) = r.next_log().await;
    assert!(
        line.starts_with("at=info method=GET path=\"/ws\" ") && line.contains(" status=101 "),
        "{line}"
    );
}

#[tokio::test]
async fn bodies_streamed_both_ways() {
    let mut r = router(test_cfg()).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let rep = post(
        r.addr,
        "myapp.localhost",
        "/echo",
        bytes::Bytes::from(data.clone()),
    )
    .await;
    assert_eq!(rep.status, 200);
    assert_eq!(rep.body.len(), data.len());
    assert!(rep.body.as_bytes() == data.as_slice());
    let (_, line) = r.next_log().await;
    assert!(
        line.contains(&format!(" status=200 bytes={} ", data.len())),
        "{line}"
    );
}

#[tokio::test]
async fn slowloris_cut_off_before_any_dyno_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = router(RouterConfig {
        header_read_timeout: ms(300),
        ..test_cfg()
    })
    .await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    let mut s = tokio::net::TcpStream::connect(r.addr)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nX-Slow: a")
        .await
        .expect("write");
    let t0 = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(ms(3000), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "router must close the slow connection");
    assert!(t0.elapsed() < ms(2000), "{:?}", t0.elapsed());
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        0,
        "no dyno connection held"
    );
}

#[tokio::test]
async fn pool_idle_connections_expire() {
    let mut r = router(RouterConfig {
        pool_idle_timeout: ms(200),
        ..test_cfg()
    })
    .await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    assert_eq!(
        request(r.addr, "myapp.localhost", "/hello", &[])
            .await
            .status,
        200
    );
    r.next_log().await;
    tokio::time::sleep(ms(50)).await;
    assert_eq!(
        request(r.addr, "myapp.localhost", "/hello", &[])
            .await
            .status,
        200
    );
    r.next_log().await;
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1, "reused while fresh");
    tokio::time::sleep(ms(400)).await;
    assert_eq!(
        request(r.addr, "myapp.localhost", "/hello", &[])
            .await
            .status,
        200
    );
    r.next_log().await;
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        2,
        "expired after the idle timeout"
    );
}
