//! Helpers for `logs_drains`: an independent RFC 5424 / octet-counting parser, a test CA,
//! and a Logplex HTTPS endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{HeaderMap, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::PATIENCE;

// ---- syslog frames ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub pri: u32,
    pub version: String,
    pub timestamp: String,
    pub hostname: String,
    pub app: String,
    pub procid: String,
    pub msgid: String,
    pub msg: String,
}

/// Take every complete octet-counted frame from the front of `buf`.
pub fn take_frames(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(sp) = buf.iter().position(|b| *b == b' ') {
        let len: usize = std::str::from_utf8(&buf[..sp])
            .expect("length is ASCII")
            .parse()
            .unwrap_or_else(|_| panic!("bad frame length {:?}", &buf[..sp]));
        if buf.len() < sp + 1 + len {
            break;
        }
        let message = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).expect("UTF-8");
        buf.drain(..sp + 1 + len);
        frames.push(parse_rfc5424(&message));
    }
    frames
}

/// `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID MSG` (Heroku: no STRUCTURED-DATA).
pub fn parse_rfc5424(message: &str) -> Frame {
    let rest = message.strip_prefix('<').expect("PRI");
    let (pri, rest) = rest.split_once('>').expect("PRI end");
    let mut fields = rest.splitn(7, ' ');
    let mut next = || fields.next().expect("field").to_owned();
    Frame {
        pri: pri.parse().expect("PRI number"),
        version: next(),
        timestamp: next(),
        hostname: next(),
        app: next(),
        procid: next(),
        msgid: next(),
        msg: next(),
    }
}

pub async fn read_frames<S: AsyncRead + Unpin>(stream: &mut S, want: usize) -> Vec<Frame> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while frames.len() < want {
        let n = timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("drain sends")
            .expect("read");
        assert!(n > 0, "drain closed after {} frames", frames.len());
        buf.extend_from_slice(&chunk[..n]);
        frames.extend(take_frames(&mut buf));
    }
    assert!(buf.is_empty(), "no partial frame left");
    frames
}

// ---- TLS ----

pub struct Pki {
    pub ca_pem: String,
    pub leaf: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

/// A self-signed CA and a certificate it issued for 127.0.0.1 and localhost.
pub fn new_pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dyno test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

pub fn acceptor(pki: &Pki, alpn: &[&[u8]]) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.key.clone_key())
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

// ---- HTTPS ----

#[derive(Debug)]
pub struct Post {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: u16,
}

/// An HTTPS server on loopback answering 503 to its first POST and 200 after.
pub async fn logplex_endpoint(pki: &Pki) -> (u16, mpsc::UnboundedReceiver<Post>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = acceptor(pki, &[b"http/1.1"]);
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let (tx, seen) = (tx.clone(), seen.clone());
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (tx, seen) = (tx.clone(), seen.clone());
                async move {
                    let path = req.uri().to_string();
                    let headers = req.headers().clone();
                    let body = req.into_body().collect().await?.to_bytes();
                    let answered = if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        503
                    } else {
                        200
                    };
                    let _ = tx.send(Post {
                        path,
                        headers,
                        body,
                        answered,
                    });
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *response.status_mut() = hyper::StatusCode::from_u16(answered).unwrap();
                    Ok::<_, hyper::Error>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service),
            );
        }
    });
    (port, rx)
}
