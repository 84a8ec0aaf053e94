//! SNI endpoints (`heroku certs:*`): each app's certificates, checked before they are stored,
//! then handed to the router's TLS listener ([`dyno_router::SniCertificates`]), which serves
//! them from the next handshake on.

use std::time::{SystemTime, UNIX_EPOCH};

use dyno_error::ErrorKind;
use dyno_router::{parse_certificate, SniCertificate};
use dyno_state::model::SniEndpoint;
use dyno_state::{AppName, StateError, Store};

use super::{app_name, Daemon, DaemonError};

/// Seconds since the Unix epoch.
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A stored endpoint with its parsed certificate (`None` when it no longer parses: it is
/// listed but not served).
pub(crate) type Parsed = (SniEndpoint, Option<SniCertificate>);

fn parse_stored(e: SniEndpoint) -> Parsed {
    // Stored ones were checked when added; an expired one is still served (as Heroku does)
    // until it is replaced or removed.
    let parsed = parse_certificate(&e.certificate_chain, &e.private_key, i64::MIN);
    if let Err(err) = &parsed {
        tracing::warn!(app = %e.app, endpoint = %e.name, error = %err, "SNI endpoint not served");
    }
    (e, parsed.ok())
}

impl Daemon {
    /// Check an uploaded chain and key: `422 invalid_params` saying what to give.
    fn check_certificate(chain: &str, key: &str) -> Result<SniCertificate, DaemonError> {
        parse_certificate(chain, key, now_secs())
            .map_err(|e| DaemonError::new(ErrorKind::InvalidParams, e.to_string()))
    }

    /// Refuse a certificate for a name that is another app's custom domain: the router would
    /// never serve it there, and listing it would only mislead.
    async fn check_names_are_ours(
        &self,
        app: &str,
        cert: &SniCertificate,
    ) -> Result<(), DaemonError> {
        let apps = self.with_store(|s| s.list_apps()).await?;
        for other in apps.iter().filter(|a| a.name != app) {
            if let Some(name) = cert.names.iter().find(|n| other.domains.contains(*n)) {
                return Err(DaemonError::new(
                    ErrorKind::InvalidParams,
                    format!(
                        "{name} is a domain of another app: a certificate of {app} cannot serve \
                         it. Add the certificate to that app, or move the domain first \
                         (`heroku domains:remove {name}` there, `heroku domains:add {name}` here)."
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The app's endpoints, each with its parsed certificate.
    pub(crate) async fn sni_endpoints(&self, name: &str) -> Result<Vec<Parsed>, DaemonError> {
        let app = app_name(name)?;
        let all = self.with_store(move |s| s.sni_endpoints(&app)).await?;
        Ok(all.into_iter().map(parse_stored).collect())
    }

    /// `certs:add`: checked, stored, served.
    pub(crate) async fn add_sni_endpoint(
        &self,
        name: &str,
        chain: String,
        key: String,
    ) -> Result<Parsed, DaemonError> {
        self.store_checked(name, chain, key, |s, app, chain, key| {
            s.add_sni_endpoint(app, chain, key)
        })
        .await
    }

    /// `certs:update`: a new chain and key for the endpoint (name or id).
    pub(crate) async fn update_sni_endpoint(
        &self,
        name: &str,
        which: String,
        chain: String,
        key: String,
    ) -> Result<Parsed, DaemonError> {
        self.store_checked(name, chain, key, move |s, app, chain, key| {
            s.update_sni_endpoint(app, &which, chain, key)
        })
        .await
    }

    /// A chain and key checked (they parse, match, have not expired, name no other app's
    /// domain), written by `write`, and the app's certificates served again.
    async fn store_checked(
        &self,
        name: &str,
        chain: String,
        key: String,
        write: impl FnOnce(&mut Store, &AppName, &str, &str) -> Result<SniEndpoint, StateError>
            + Send
            + 'static,
    ) -> Result<Parsed, DaemonError> {
        let app = app_name(name)?;
        let cert = Self::check_certificate(&chain, &key)?;
        self.check_names_are_ours(name, &cert).await?;
        let stored = self
            .with_store(move |s| write(s, &app, &chain, &key))
            .await?;
        self.serve_certificates(name).await?;
        Ok((stored, Some(cert)))
    }

    /// `certs:remove`: no longer served from the next handshake on.
    pub(crate) async fn remove_sni_endpoint(
        &self,
        name: &str,
        which: String,
    ) -> Result<Parsed, DaemonError> {
        let app = app_name(name)?;
        let removed = self
            .with_store(move |s| s.remove_sni_endpoint(&app, &which))
            .await?;
        self.serve_certificates(name).await?;
        Ok(parse_stored(removed))
    }

    /// Hand the router the app's certificates as the store has them (after a change, and
    /// when an app is renamed).
    pub async fn serve_certificates(&self, name: &str) -> Result<(), DaemonError> {
        let certs = self
            .sni_endpoints(name)
            .await?
            .into_iter()
            .filter_map(|(_, cert)| cert)
            .collect();
        self.certs.set_app(name, certs);
        Ok(())
    }

    /// Every app's certificates, at start.
    pub(super) async fn serve_all_certificates(&self) -> Result<(), DaemonError> {
        let all = self.with_store(|s| s.all_sni_endpoints()).await?;
        let mut by_app: std::collections::BTreeMap<String, Vec<SniCertificate>> =
            Default::default();
        for (endpoint, cert) in all.into_iter().map(parse_stored) {
            let list = by_app.entry(endpoint.app).or_default();
            list.extend(cert);
        }
        for (app, certs) in by_app {
            self.certs.set_app(&app, certs);
        }
        Ok(())
    }
}
