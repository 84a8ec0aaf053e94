//! Hostile and malformed requests: 400 (or another 4xx), never a crash, never two requests
//! to the dyno where the client sent one.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use dyno_router::{Backend, RouterConfig};

async fn setup() -> (TestRouter, TestBackend) {
    let r = router(RouterConfig {
        request_timeout: ms(2000),
        ..RouterConfig::default()
    })
    .await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);
    (r, b)
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn malformed_requests_get_400_and_router_survives() {
    let (mut r, b) = setup().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no host", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("bad host", b"GET / HTTP/1.1\r\nHost: my app\r\n\r\n".to_vec()),
        ("absolute-form", b"GET http://myapp.localhost/ HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n".to_vec()),
        ("bare LF in value", b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nX-A: a\rb\r\n\r\n".to_vec()),
        ("two CL", b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec()),
        ("invalid utf-8 path", b"GET /\xff\xfe HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n".to_vec()),
        ("garbage", b"\x00\x01\x02 nonsense\r\n\r\n".to_vec()),
        ("TE not ending in chunked", b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n".to_vec()),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let resp = raw_exchange(r.addr, &bytes, ms(500)).await;
        assert_eq!(status_of(&resp), 400, "{what}: {resp:?}");
    }
    assert_eq!(
        b.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the dyno"
    );
    // Still serving.
    let rep = request(r.addr, "myapp.localhost", "/hello", &[]).await;
    assert_eq!(rep.status, 200);
    assert!(r.next_log().await.1.contains(" status=200 "));
}

#[tokio::test]
async fn crlf_injection_in_header_value_rejected() {
    let (r, b) = setup().await;
    let resp = raw_exchange(
        r.addr,
        b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nX-Evil: a\r\n\r\nGET /second HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n",
        ms(500),
    )
    .await;
    // Two well-formed pipelined requests are fine; what matters is that each reached the dyno once.
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp:?}");
    assert_eq!(b.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn smuggling_with_cl_and_te_never_reaches_dyno_twice() {
    // Both framings at once is how requests are smuggled: 400 and close, nothing forwarded, the
    // "smuggled" request never parsed.
    let (_r, b) = setup().await;
    let resp = raw_exchange(
        _r.addr,
        b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n",
        ms(500),
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp:?}");
    assert_eq!(status_of(&resp), 400, "{resp:?}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp:?}"
    );
    assert!(!resp.contains("/smuggled"));
    assert_eq!(b.requests.load(Ordering::SeqCst), 0);
}
