//! TLS for clients: one certificate chain and key (PEM files) given by the operator, ALPN `h2`
//! and `http/1.1`, rustls with the `ring` provider.
//!
//! A TLS connection is served like a plain one once the handshake is done: HTTP/2 when ALPN
//! chose `h2`, HTTP/1.1 (keep-alive) otherwise. Its requests carry `X-Forwarded-Proto: https`
//! and `X-Forwarded-Port: <TLS port>`, and its log lines say `protocol=https`. The handshake must
//! finish within [`RouterConfig::header_read_timeout`](crate::RouterConfig) or the connection is
//! dropped; a failed handshake is logged at debug level and ends only that connection.
//!
//! ```no_run
//! # async fn demo(router: dyno_router::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let acceptor = dyno_router::TlsSettings::new("/etc/dyno/fullchain.pem", "/etc/dyno/key.pem")
//!     .load()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! router.serve_tls(listener, acceptor).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ServerConfig};
pub use tokio_rustls::TlsAcceptor;

use crate::client_limits::ClientSlot;
use crate::proxy::{ConnInfo, Shared};
use crate::server::H2Builder;

/// ALPN protocols the router offers, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the operator's certificate chain and private key are (both PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The full chain in PEM: the server's certificate first, then the intermediates.
    pub cert: PathBuf,
    /// The certificate's private key in PEM (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key: PathBuf,
}

/// Why the certificate or key could not be used. Each message names the file and what to give.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} {}: cannot read it ({source}); give a readable PEM file", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS certificate {}: no PEM certificate found; give the full chain in PEM (-----BEGIN CERTIFICATE-----, the server's own first)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("TLS certificate {}: {detail}; give the full chain in PEM, the server's own certificate first", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("TLS private key {}: no PEM private key found; give the certificate's key in PEM (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY), unencrypted", path.display())]
    NoKey { path: PathBuf },
    #[error("TLS private key {}: {detail}; give an unencrypted RSA, ECDSA (P-256/P-384) or Ed25519 key in PEM", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("TLS private key {} does not match the certificate {}; give the key the certificate was issued for (and the server's own certificate first in the chain)", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS certificate {} with key {}: {detail}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

impl TlsSettings {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Read and check both files; an acceptor offering ALPN `h2` and `http/1.1`.
    pub fn load(&self) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(Arc::new(self.server_config()?)))
    }

    /// The rustls server configuration [`load`](Self::load) wraps.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let chain = read_chain(&self.cert)?;
        let key = read_key(&self.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.config_error(e))?
            .with_no_client_auth();
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                }
            }
            rustls::Error::InvalidCertificate(e) => TlsError::BadCertificate {
                path: self.cert.clone(),
                detail: format!("not a usable certificate ({e})"),
            },
            // The key is parsed first; rustls reports "failed to parse private key ..." here.
            rustls::Error::General(e) => TlsError::BadKey {
                path: self.key.clone(),
                detail: e,
            },
            e => self.config_error(e),
        })?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// Read and check both files as one certificate for [`crate::SniCertificates`] (the
    /// default certificate of an SNI listener).
    pub fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let chain = read_chain(&self.cert)?;
        let key = read_key(&self.key)?;
        let provider = rustls::crypto::ring::default_provider();
        let signing =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::BadKey {
                    path: self.key.clone(),
                    detail: e.to_string(),
                })?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(Arc::new(certified))
            }
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(TlsError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                })
            }
            Err(e) => Err(TlsError::BadCertificate {
                path: self.cert.clone(),
                detail: format!("not a usable certificate ({e})"),
            }),
        }
    }

    fn config_error(&self, e: rustls::Error) -> TlsError {
        TlsError::Config {
            cert: self.cert.clone(),
            key: self.key.clone(),
            detail: e.to_string(),
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read("certificate", path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoCertificate {
                path: path.to_owned(),
            },
            e => TlsError::BadCertificate {
                path: path.to_owned(),
                detail: format!("not valid PEM ({e})"),
            },
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => TlsError::BadKey {
            path: path.to_owned(),
            detail: format!("not valid PEM ({e})"),
        },
    })
}

/// What the accept loop needs to serve a TLS listener.
pub(crate) struct TlsConns {
    acceptor: TlsAcceptor,
}

impl TlsConns {
    pub(crate) fn new(acceptor: TlsAcceptor) -> TlsConns {
        TlsConns { acceptor }
    }

    /// Handshake (within `header_read_timeout`), then serve the connection like a plain one.
    pub(crate) fn serve(
        &self,
        h2: H2Builder,
        shared: Arc<Shared>,
        stream: TcpStream,
        info: ConnInfo,
        slot: ClientSlot,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let accept = self.acceptor.accept(stream);
        async move {
            let limit = shared.cfg.header_read_timeout;
            let tls = match tokio::time::timeout(limit, accept).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, peer = %info.peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %info.peer, ?limit, "TLS handshake timed out");
                    return;
                }
            };
            let alpn_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            crate::server::serve_conn(h2, shared, tls, info, alpn_h2, slot).await;
        }
    }
}
