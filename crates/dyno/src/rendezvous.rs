//! The daemon's rendezvous listener (see [`dyno_api::rendezvous`]): where `heroku run` attaches
//! to one-off dynos, over TLS. Without a certificate from the operator, the daemon makes one for
//! the listener's address, signed by a CA of its own kept under `DATA_DIR/rendezvous/` (made
//! once, so a client that trusts it keeps trusting it across restarts): give Heroku's CLI that
//! CA with `NODE_EXTRA_CA_CERTS=DATA_DIR/rendezvous/ca.pem`.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

#[derive(Args)]
pub struct RendezvousArgs {
    /// Where `heroku run` attaches to one-off dynos (TLS, Heroku's rendezvous protocol).
    /// Default, with --api-listen: its IP, a port the system picks
    #[arg(long)]
    rendezvous_listen: Option<SocketAddr>,
    /// The rendezvous' certificate chain (PEM). Default: one dyno makes for the listener's
    /// address, signed by its CA in DATA_DIR/rendezvous/ca.pem (trust it in the CLI with
    /// NODE_EXTRA_CA_CERTS)
    #[arg(long, requires = "rendezvous_key")]
    rendezvous_cert: Option<PathBuf>,
    /// The key of --rendezvous-cert (PEM)
    #[arg(long, requires = "rendezvous_cert")]
    rendezvous_key: Option<PathBuf>,
    /// How long an attached one-off waits for its client before R13 stops it (Heroku's 60 s;
    /// tests use less)
    #[arg(long, default_value = "60s", value_parser = dyno_supervisor::lifecycle::parse_duration, hide = true)]
    pub attach_window: std::time::Duration,
}

/// A bound rendezvous listener and its TLS.
pub struct Rendezvous {
    pub listener: tokio::net::TcpListener,
    pub tls: dyno_api::rendezvous::TlsAcceptor,
    /// The address attach URLs name.
    pub addr: SocketAddr,
}

impl RendezvousArgs {
    /// The listener, if there is to be one: given, or next to the API's TCP listener.
    pub async fn bind(
        &self,
        api_listen: Option<SocketAddr>,
        data_dir: &Path,
    ) -> Result<Option<Rendezvous>, String> {
        let Some(wanted) = self
            .rendezvous_listen
            .or(api_listen.map(|a| SocketAddr::new(a.ip(), 0)))
        else {
            return Ok(None);
        };
        if wanted.ip().is_unspecified() {
            tracing::warn!(
                "no rendezvous for `heroku run`: attach URLs must name an address clients \
                 reach; give --rendezvous-listen IP:PORT"
            );
            return Ok(None);
        }
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .map_err(|e| format!("--rendezvous-listen {wanted}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("rendezvous: {e}"))?;
        let (cert, key) = match (&self.rendezvous_cert, &self.rendezvous_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => own_certificate(&data_dir.join("rendezvous"), addr.ip())?,
        };
        let tls = dyno_router::TlsSettings::new(cert, key)
            .load()
            .map_err(|e| format!("rendezvous: {e}"))?;
        Ok(Some(Rendezvous {
            listener,
            tls,
            addr,
        }))
    }
}

/// The daemon's own certificate for `ip` (and `localhost`), signed by its CA in `dir` (made on
/// first use); the paths of the chain and the key.
fn own_certificate(dir: &Path, ip: IpAddr) -> Result<(PathBuf, PathBuf), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("rendezvous {what}: {e}");
    std::fs::create_dir_all(dir).map_err(|e| fail(&dir.display().to_string(), &e))?;
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca_key = match std::fs::read_to_string(&ca_key_pem) {
        Ok(pem) if ca_pem.exists() => KeyPair::from_pem(&pem).map_err(|e| fail("CA key", &e))?,
        _ => {
            let key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
            let cert = ca_params().self_signed(&key).map_err(|e| fail("CA", &e))?;
            write_private(&ca_key_pem, &key.serialize_pem())?;
            std::fs::write(&ca_pem, cert.pem()).map_err(|e| fail("CA", &e))?;
            key
        }
    };
    let ca = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate().map_err(|e| fail("key", &e))?;
    let mut params = CertificateParams::new(vec![ip.to_string(), "localhost".to_string()])
        .map_err(|e| fail("certificate", &e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("dyno rendezvous {ip}"));
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|e| fail("certificate", &e))?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    write_private(&key_path, &key.serialize_pem())?;
    let chain = format!(
        "{}{}",
        cert.pem(),
        std::fs::read_to_string(&ca_pem).unwrap_or_default()
    );
    std::fs::write(&cert_path, chain).map_err(|e| fail("certificate", &e))?;
    Ok((cert_path, key_path))
}

/// The CA's parameters: the same every time, so that a kept CA key signs as the kept CA.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "dyno rendezvous CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("rendezvous key {}: {e}", path.display()))
}
