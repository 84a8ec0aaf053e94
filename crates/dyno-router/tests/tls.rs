//! TLS for clients: a self-signed `*.localhost` certificate made at test time, clients on
//! loopback that trust it, HTTP/1.1 and ALPN h2, a silent client, and bad certificate files.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use dyno_router::{Backend, RouterConfig, TlsError, TlsSettings};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A certificate and key in PEM files in a fresh directory, removed on drop.
struct TestCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestCert {
    fn new(tag: &str) -> TestCert {
        let dir = std::env::temp_dir().join(format!(
            "dyno-router-tls-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // webpki (like browsers) will not match a wildcard directly under a single-label name,
        // so `*.localhost` alone does not cover myapp.localhost: name the app too.
        let ck = rcgen::generate_simple_self_signed(vec![
            "*.localhost".to_owned(),
            "localhost".to_owned(),
            "myapp.localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        TestCert {
            dir,
            cert,
            key,
            der: ck.cert.der().clone(),
        }
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings::new(&self.cert, &self.key)
    }

    /// A file in this certificate's directory with `contents`.
    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

/// A TLS client trusting only `cert`, offering `alpn`.
async fn tls_connect(addr: SocketAddr, cert: &TestCert, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).expect("trust the test cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect router");
    let name = ServerName::try_from("myapp.localhost").expect("server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the router")
}

/// GET `/` for myapp over HTTP/1.1 on `stream`.
async fn get_http1(stream: TlsStream<TcpStream>) -> (u16, String) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/")
        .header("host", "myapp.localhost")
        .header("x-forwarded-proto", "http")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.version(), Version::HTTP_11);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_http11_gets_https_headers_and_log_plain_stays_http() {
    let cert = TestCert::new("h1");
    let acceptor = cert.settings().load().expect("load the test cert");
    let (mut r, tls_addr) = router_with_tls(test_cfg(), acceptor).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);

    // A client offering http/1.1 only.
    let stream = tls_connect(tls_addr, &cert, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get_http1(stream).await;
    assert_eq!(status, 200, "{body}");
    let (name, hs) = echoed(&body);
    assert_eq!(name, "web.1");
    // The client's own X-Forwarded-Proto is replaced by the router's.
    assert_eq!(header(&hs, "x-forwarded-proto"), Some("https"), "{body}");
    let port = tls_addr.port().to_string();
    assert_eq!(header(&hs, "x-forwarded-port"), Some(port.as_str()));
    let (app, line) = r.next_log().await;
    assert_eq!(app, "myapp");
    assert!(line.contains(" dyno=web.1 "), "{line}");
    assert!(line.contains(" status=200 "), "{line}");
    assert!(line.ends_with(" protocol=https"), "{line}");
    assert!(
        line.starts_with("at=info method=GET path=\"/\" host=myapp.localhost "),
        "{line}"
    );

    // A client offering no ALPN at all gets HTTP/1.1 too.
    let stream = tls_connect(tls_addr, &cert, &[]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let (status, body) = get_http1(stream).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&echoed(&body).1, "x-forwarded-proto"), Some("https"));
    assert!(r.next_log().await.1.ends_with(" protocol=https"));

    // The same router's plain listener still says http, with its own port.
    let rep = request(r.addr, "myapp.localhost", "/", &[]).await;
    assert_eq!(rep.status, 200);
    let (_, hs) = echoed(&rep.body);
    assert_eq!(header(&hs, "x-forwarded-proto"), Some("http"));
    let port = r.addr.port().to_string();
    assert_eq!(header(&hs, "x-forwarded-port"), Some(port.as_str()));
    assert!(r.next_log().await.1.ends_with(" protocol=http"));
}

#[tokio::test]
async fn alpn_h2_gets_http2_to_an_http1_dyno() {
    let cert = TestCert::new("h2");
    let acceptor = cert.settings().load().expect("load the test cert");
    let (mut r, tls_addr) = router_with_tls(test_cfg(), acceptor).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);

    let stream = tls_connect(tls_addr, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    // Two requests on one HTTP/2 connection.
    for path in ["/", "/hello"] {
        let req = Request::builder()
            .uri(format!("https://myapp.localhost{path}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if path == "/" {
            let (name, hs) = echoed(&body);
            assert_eq!(name, "web.1");
            assert_eq!(header(&hs, "x-forwarded-proto"), Some("https"));
            let port = tls_addr.port().to_string();
            assert_eq!(header(&hs, "x-forwarded-port"), Some(port.as_str()));
            assert_eq!(header(&hs, "host"), Some("myapp.localhost"));
        } else {
            assert_eq!(body, "Hello, world!");
        }
        let (app, line) = r.next_log().await;
        assert_eq!(app, "myapp");
        assert!(line.contains(&format!(" path=\"{path}\" ")), "{line}");
        assert!(line.contains(" status=200 "), "{line}");
        assert!(line.ends_with(" protocol=https"), "{line}");
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn silent_client_is_cut_off_and_bad_handshakes_do_not_stop_the_router() {
    let cert = TestCert::new("silent");
    let acceptor = cert.settings().load().expect("load the test cert");
    let cfg = RouterConfig {
        header_read_timeout: ms(300),
        ..test_cfg()
    };
    let (mut r, tls_addr) = router_with_tls(cfg, acceptor).await;
    let b = backend("web.1").await;
    r.routes
        .set_dynos("myapp", vec![Backend::new("web.1", b.addr)]);

    // Connects, never sends a ClientHello: closed after the handshake timeout.
    let mut silent = TcpStream::connect(tls_addr).await.expect("connect");
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the router closes a silent client well within 5 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF or reset, got {read:?}"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= ms(250),
        "cut off after {waited:?}, before the 300 ms timeout"
    );
    assert!(waited < ms(2000), "cut off only after {waited:?}");

    // Plain HTTP to the TLS port: the handshake fails, that connection ends.
    let mut plain = TcpStream::connect(tls_addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut out))
        .await
        .expect("the router closes a non-TLS client");
    assert!(
        !String::from_utf8_lossy(&out).contains("HTTP/1.1"),
        "{out:?}"
    );

    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        0,
        "the dyno saw a connection"
    );
    // The accept loop is still serving.
    let (status, body) = get_http1(tls_connect(tls_addr, &cert, &[b"http/1.1"]).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(r.next_log().await.1.ends_with(" protocol=https"));
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

fn path_of(e: &TlsError) -> &Path {
    match e {
        TlsError::Read { path, .. }
        | TlsError::NoCertificate { path }
        | TlsError::BadCertificate { path, .. }
        | TlsError::NoKey { path }
        | TlsError::BadKey { path, .. } => path,
        TlsError::KeyMismatch { key, .. } => key,
        TlsError::Config { cert, .. } => cert,
    }
}

#[test]
fn loading_errors_name_the_file_and_say_what_to_give() {
    let cert = TestCert::new("errors");
    let other = TestCert::new("errors-other");
    assert!(cert.settings().load().is_ok());
    assert!(
        cert.settings()
            .server_config()
            .expect("config")
            .alpn_protocols
            == vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    let missing = cert.dir.join("missing.pem");
    let e = TlsSettings::new(&missing, &cert.key)
        .load()
        .err()
        .expect("missing cert");
    assert!(
        matches!(&e, TlsError::Read { what: "certificate", source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert_eq!(path_of(&e), missing);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "TLS certificate {}: cannot read it (",
            missing.display()
        )),
        "{msg}"
    );
    assert!(msg.ends_with("give a readable PEM file"), "{msg}");

    let e = TlsSettings::new(&cert.cert, &missing)
        .load()
        .err()
        .expect("missing key");
    assert!(
        matches!(
            &e,
            TlsError::Read {
                what: "private key",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(&format!(
            "TLS private key {}: cannot read it",
            missing.display()
        )),
        "{e}"
    );

    let empty = cert.file("empty.pem", b"");
    let e = TlsSettings::new(&empty, &cert.key)
        .load()
        .err()
        .expect("empty cert");
    assert!(
        matches!(&e, TlsError::NoCertificate { path } if *path == empty),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("TLS certificate {}: no PEM certificate found; give the full chain in PEM (-----BEGIN CERTIFICATE-----, the server's own first)", empty.display())
    );

    let garbage = cert.file("garbage.pem", b"\x00\xffnot a certificate at all\n");
    let e = TlsSettings::new(&garbage, &cert.key)
        .load()
        .err()
        .expect("garbage cert");
    assert!(
        matches!(&e, TlsError::NoCertificate { path } if *path == garbage),
        "{e:?}"
    );

    // Cert and key swapped: the key file has no certificate in it.
    let e = TlsSettings::new(&cert.key, &cert.cert)
        .load()
        .err()
        .expect("swapped");
    assert!(
        matches!(&e, TlsError::NoCertificate { path } if *path == cert.key),
        "{e:?}"
    );

    let bad_b64 = cert.file(
        "bad-base64.pem",
        b"-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );
    let e = TlsSettings::new(&bad_b64, &cert.key)
        .load()
        .err()
        .expect("bad base64");
    assert!(
        matches!(&e, TlsError::BadCertificate { path, .. } if *path == bad_b64),
        "{e:?}"
    );
    assert!(e.to_string().contains("not valid PEM"), "{e}");

    let truncated = cert.file("truncated.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n");
    let e = TlsSettings::new(&truncated, &cert.key)
        .load()
        .err()
        .expect("truncated");
    assert!(
        matches!(&e, TlsError::BadCertificate { path, .. } if *path == truncated),
        "{e:?}"
    );

    let not_der = cert.file(
        "not-der.pem",
        b"-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    );
    let e = TlsSettings::new(&not_der, &cert.key)
        .load()
        .err()
        .expect("not DER");
    assert!(
        matches!(&e, TlsError::BadCertificate { path, .. } if *path == not_der),
        "{e:?}"
    );
    assert!(e.to_string().contains("not a usable certificate"), "{e}");

    let e = TlsSettings::new(&cert.cert, &garbage)
        .load()
        .err()
        .expect("garbage key");
    assert!(
        matches!(&e, TlsError::NoKey { path } if *path == garbage),
        "{e:?}"
    );
    assert!(e.to_string().contains("no PEM private key found"), "{e}");
    assert!(e.to_string().contains("unencrypted"), "{e}");

    let bad_key = cert.file(
        "bad-key.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    );
    let e = TlsSettings::new(&cert.cert, &bad_key)
        .load()
        .err()
        .expect("bad key");
    assert!(
        matches!(&e, TlsError::BadKey { path, .. } if *path == bad_key),
        "{e:?}"
    );

    // A real key, but not the certificate's.
    let e = TlsSettings::new(&cert.cert, &other.key)
        .load()
        .err()
        .expect("mismatch");
    assert!(
        matches!(&e, TlsError::KeyMismatch { cert: c, key: k } if *c == cert.cert && *k == other.key),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "TLS private key {} does not match the certificate {}; give the key the certificate was issued for (and the server's own certificate first in the chain)",
            other.key.display(),
            cert.cert.display()
        )
    );

    // A chain whose first certificate is not the key's: also a mismatch.
    let mut chain = std::fs::read(&other.cert).expect("read");
    chain.extend(std::fs::read(&cert.cert).expect("read"));
    let chain = cert.file("wrong-order.pem", &chain);
    let e = TlsSettings::new(&chain, &cert.key)
        .load()
        .err()
        .expect("wrong order");
    assert!(matches!(&e, TlsError::KeyMismatch { .. }), "{e:?}");
}
