//! HTTPS by SNI: the apps' own certificates (Heroku's SNI endpoints), picked per handshake.
//!
//! [`SniCertificates`] holds each app's certificates and an optional default one. For a
//! client's SNI name it looks up the app the name routes to (its custom domains, through the
//! [`RouteTable`]) and serves that app's certificate whose names cover it — an exact name first,
//! then a `*.` wildcard one label deep. A certificate is never served for a name that routes to
//! another app, whatever names it carries. Changes (`set_app`, `remove_app`) take effect from
//! the next handshake, without a restart.
//!
//! An unknown SNI name, one no certificate of its app covers, or no SNI at all gets the
//! default certificate when the operator gave one (`dyno serve --router-tls-cert/-key`), like
//! a router with one catch-all certificate; without one, the handshake fails cleanly (rustls
//! sends the fatal `access_denied` alert) and only that connection ends. The router never makes
//! up a certificate, and never serves one app's certificate for another app's name.
//!
//! [`parse_certificate`] checks what an API client uploads: a PEM chain and key that parse,
//! the key that matches the first certificate, a certificate not expired; and reads what
//! Heroku shows of it (names, subject, issuer, validity).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
pub use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::routes::{normalize_host, RouteTable};
use crate::tls::ALPN;

/// A certificate chain with its key, checked, and what Heroku shows of it.
#[derive(Clone)]
pub struct SniCertificate {
    /// The names it is valid for (DNS SANs; the subject's CN when it has none), lowercase.
    pub names: Vec<String>,
    /// Subject and issuer, as RFC 4514 strings (`CN=www.example.com, O=…`).
    pub subject: String,
    pub issuer: String,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Serial number, hex with `:` between bytes.
    pub serial: String,
    /// Issued by itself (subject = issuer).
    pub self_signed: bool,
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for SniCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniCertificate")
            .field("names", &self.names)
            .field("subject", &self.subject)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl SniCertificate {
    /// Whether the certificate is valid for `host` (lowercase): an exact name, or a `*.`
    /// wildcard covering exactly one label.
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| name_covers(n, host))
    }

    fn covers_exactly(&self, host: &str) -> bool {
        self.names.iter().any(|n| n == host)
    }
}

/// `*.example.com` covers `www.example.com`, not `example.com` nor `a.b.example.com`.
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

/// Why an uploaded certificate or key cannot be used. Each message says what to give.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("No certificate found in certificate_chain: give the full chain in PEM (-----BEGIN CERTIFICATE-----), the domain's own certificate first.")]
    NoCertificate,
    #[error("certificate_chain is not a valid PEM certificate chain ({0}): give the full chain in PEM, the domain's own certificate first.")]
    BadCertificate(String),
    #[error("No private key found in private_key: give the certificate's key in PEM (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY), unencrypted.")]
    NoKey,
    #[error("private_key is not a usable private key ({0}): give an unencrypted RSA, ECDSA (P-256/P-384) or Ed25519 key in PEM.")]
    BadKey(String),
    #[error("The private key does not match the certificate: give the key the certificate was issued for (and the domain's own certificate first in the chain).")]
    KeyMismatch,
    #[error("The certificate expired at {0} UTC: renew it and upload the new one.")]
    Expired(String),
    #[error("The certificate names no domain (no DNS subject alternative name, no common name): issue it for the domains it is to serve.")]
    NoNames,
}

/// Parse and check a PEM chain (the domain's certificate first) and its PEM key, as of
/// `now` (seconds since the Unix epoch).
pub fn parse_certificate(
    chain_pem: &str,
    key_pem: &str,
    now: i64,
) -> Result<SniCertificate, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertificateError::NoCertificate,
            e => CertificateError::BadCertificate(e.to_string()),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertificateError::NoCertificate);
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| CertificateError::BadCertificate(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => CertificateError::NoKey,
        e => CertificateError::BadKey(e.to_string()),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertificateError::BadKey(e.to_string()))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertificateError::KeyMismatch)
        }
        Err(e) => return Err(CertificateError::BadCertificate(e.to_string())),
    }
    let validity = cert.validity();
    let not_after = validity.not_after.timestamp();
    if not_after < now {
        return Err(CertificateError::Expired(validity.not_after.to_string()));
    }
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    names.retain(|n| n.strip_prefix("*.").map_or(n.as_str(), |p| p).contains('.'));
    names.dedup();
    if names.is_empty() {
        return Err(CertificateError::NoNames);
    }
    let subject = cert.subject().to_string();
    let issuer = cert.issuer().to_string();
    Ok(SniCertificate {
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        names,
        subject,
        issuer,
        not_before: validity.not_before.timestamp(),
        not_after,
        serial: cert.raw_serial_as_string(),
        key: Arc::new(certified),
    })
}

#[derive(Default, Clone)]
struct Certs {
    by_app: HashMap<Arc<str>, Arc<[SniCertificate]>>,
    default: Option<Arc<CertifiedKey>>,
}

/// The apps' certificates and the default one, shared by the TLS listener's resolver and the
/// daemon that updates them. Cheap to clone; reads never lock.
#[derive(Clone)]
pub struct SniCertificates {
    routes: RouteTable,
    certs: Arc<ArcSwap<Certs>>,
    write: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for SniCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniCertificates")
            .field("apps", &self.certs.load().by_app.len())
            .field("default", &self.certs.load().default.is_some())
            .finish()
    }
}

impl SniCertificates {
    /// Certificates for the apps of `routes`; `default` answers names no app certificate
    /// covers (without it, such handshakes fail).
    pub fn new(routes: RouteTable, default: Option<Arc<CertifiedKey>>) -> SniCertificates {
        let certs = SniCertificates {
            routes,
            certs: Arc::default(),
            write: Arc::default(),
        };
        certs.set_default(default);
        certs
    }

    fn update(&self, f: impl FnOnce(&mut Certs)) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Certs::clone(&self.certs.load());
        f(&mut next);
        self.certs.store(Arc::new(next));
    }

    /// The certificate for names no app certificate covers (`None`: those handshakes fail).
    pub fn set_default(&self, default: Option<Arc<CertifiedKey>>) {
        self.update(|c| c.default = default);
    }

    /// Replace the app's certificates (empty: it has none).
    pub fn set_app(&self, app: &str, certs: Vec<SniCertificate>) {
        self.update(|c| {
            if certs.is_empty() {
                c.by_app.remove(app);
            } else {
                c.by_app.insert(Arc::from(app), certs.into());
            }
        });
    }

    /// Forget the app's certificates.
    pub fn remove_app(&self, app: &str) {
        self.set_app(app, Vec::new());
    }

    /// The certificate for a client's SNI name: its app's that covers it, else the default.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.app_certificate(sni)
            .or_else(|| self.certs.load().default.clone())
    }

    fn app_certificate(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let host = normalize_host(sni?)?;
        let route = self.routes.lookup(&host)?;
        let certs = self.certs.load();
        let mine = certs.by_app.get(&route.name)?;
        mine.iter()
            .find(|c| c.covers_exactly(&host))
            .or_else(|| mine.iter().find(|c| c.covers(&host)))
            .map(|c| c.key.clone())
    }

    /// A TLS acceptor that picks certificates this way (ALPN `h2`, `http/1.1`), for
    /// [`Router::serve_tls`](crate::Router::serve_tls).
    pub fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// rustls' hook, asked once per handshake.
#[derive(Debug)]
struct Resolver(SniCertificates);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "www.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", ".example.com"));
        assert!(name_covers("www.example.com", "www.example.com"));
        assert!(!name_covers("www.example.com", "api.example.com"));
    }

    #[test]
    fn garbage_and_missing_pem_say_what_to_give() {
        assert_eq!(
            parse_certificate("hello", "hello", 0).unwrap_err(),
            CertificateError::NoCertificate
        );
        let e = parse_certificate(
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            "",
            0,
        )
        .unwrap_err();
        assert!(matches!(e, CertificateError::BadCertificate(_)), "{e:?}");
    }
}
