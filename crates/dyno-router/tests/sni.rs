//! HTTPS by SNI ([`SniCertificates`]): each app's certificates picked by the name the client
//! asks for, exact names before wildcards, never another app's certificate, the default one
//! for unknown names (or a failed handshake without one), changes live from the next
//! handshake. Certificates are made at test time (rcgen); clients on loopback record what
//! the router presents.

mod common;

use std::sync::Arc;

use common::*;
use dyno_router::{
    parse_certificate, Backend, ChannelSink, RouteTable, Router, SniCertificate, SniCertificates,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `names`: its DER (what a client sees) and the parsed form.
fn cert(names: &[&str]) -> (CertificateDer<'static>, SniCertificate) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate");
    let parsed = parse_certificate(&ck.cert.pem(), &ck.signing_key.serialize_pem(), 0)
        .expect("a fresh certificate parses");
    (ck.cert.der().clone(), parsed)
}

/// Accepts whatever the server presents: the test compares it itself.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// The certificate presented for `sni` and, when the handshake worked, the answer to a GET.
async fn visit(addr: std::net::SocketAddr, sni: &str) -> Option<(CertificateDer<'static>, String)> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("name");
    let mut tls = connector().connect(name, tcp).await.ok()?;
    let presented = tls.get_ref().1.peer_certificates()?[0].clone().into_owned();
    let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    Some((presented, answer))
}

#[tokio::test]
async fn each_name_gets_its_apps_certificate_never_another_apps_and_unknown_ones_the_default() {
    require_root();
    let routes = RouteTable::new();
    let (a_der, a_cert) = cert(&["www.a.test"]);
    let (b_der, b_cert) = cert(&["*.b.test"]);
    let (b_exact_der, b_exact) = cert(&["api.b.test"]);
    // App b also holds a certificate naming app a's domain: it must never be served for it.
    let (_, b_claims_a) = cert(&["www.a.test"]);
    let (default_der, default_cert) = cert(&["default.test"]);
    let certs = SniCertificates::new(routes.clone(), Some(default_cert.key.clone()));
    routes.set_app("a", &["www.a.test".to_owned()]);
    routes.set_app("b", &["api.b.test".to_owned(), "web.b.test".to_owned()]);
    let backend = backend("web.1").await;
    routes.set_dynos("a", vec![Backend::new("web.1", backend.addr)]);
    certs.set_app("a", vec![a_cert]);
    certs.set_app("b", vec![b_claims_a, b_cert, b_exact]);

    let (sink, _logs) = ChannelSink::new();
    let router = Router::new(test_cfg(), routes.clone(), sink);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(router.serve_tls(listener, certs.acceptor()));

    let (presented, answer) = visit(addr, "www.a.test").await.expect("handshake");
    assert_eq!(presented, a_der);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let (_, headers) = echoed(answer.split("\r\n\r\n").nth(1).unwrap_or_default());
    assert_eq!(header(&headers, "x-forwarded-proto"), Some("https"));
    assert_eq!(
        header(&headers, "x-forwarded-port"),
        Some(addr.port().to_string().as_str())
    );
    // An exact name wins over a wildcard that also covers it, whatever the order.
    assert_eq!(visit(addr, "api.b.test").await.expect("tls").0, b_exact_der);
    assert_eq!(visit(addr, "web.b.test").await.expect("tls").0, b_der);
    // Unknown names get the default certificate.
    assert_eq!(
        visit(addr, "nowhere.test").await.expect("tls").0,
        default_der
    );

    // Live: a removes its certificate; its name now gets the default, not b's.
    certs.remove_app("a");
    assert_eq!(visit(addr, "www.a.test").await.expect("tls").0, default_der);
    // Without a default, names no certificate covers fail the handshake; others still work.
    certs.set_default(None);
    assert!(visit(addr, "www.a.test").await.is_none());
    assert!(visit(addr, "nowhere.test").await.is_none());
    assert_eq!(visit(addr, "web.b.test").await.expect("tls").0, b_der);
}
