//! SNI endpoints and domains' certificates in the Platform API's shapes.
//!
//! The router picks a certificate by the names it covers (see [`dyno_router::sni`]), so an
//! endpoint's `domains` are the app's custom domains its certificate covers, and a domain's
//! `sni_endpoint` is the endpoint that serves it. `PATCH /apps/{app}/domains/{domain}` (what
//! `certs:add` sends for the domains one picks) is accepted when it names that endpoint.

use dyno_api::heroku::{Domain, Ref};
use dyno_api::server::sni_endpoints::{DomainUpdate, SniEndpoint, SniEndpointCreate, SslCert};
use dyno_api::{ApiError, AppName};
use dyno_router::SniCertificate;
use dyno_state::ids::formation_uuid;

use super::api::DaemonApi;
use super::api_shapes::time;
use super::certs::Parsed;

fn epoch_secs(secs: i64) -> String {
    dyno_api::rfc3339(time(secs.saturating_mul(1000)))
}

fn endpoint_shape((e, cert): &Parsed, app: &dyno_state::model::App, app_ref: &Ref) -> SniEndpoint {
    let domains = app
        .domains
        .iter()
        .filter(|d| cert.as_ref().is_some_and(|c| c.covers(d)))
        .map(|d| formation_uuid(&app.uuid, &format!("domain:{d}")))
        .collect();
    let ssl_cert = match cert {
        Some(c) => SslCert {
            id: e.id.clone(),
            ca_signed: false,
            self_signed: c.self_signed,
            cert_domains: c.names.clone(),
            starts_at: epoch_secs(c.not_before),
            expires_at: epoch_secs(c.not_after),
            issuer: c.issuer.clone(),
            subject: c.subject.clone(),
        },
        None => SslCert {
            id: e.id.clone(),
            ca_signed: false,
            self_signed: false,
            cert_domains: Vec::new(),
            starts_at: epoch_secs(0),
            expires_at: epoch_secs(0),
            issuer: String::new(),
            subject: String::new(),
        },
    };
    SniEndpoint {
        id: e.id.clone(),
        name: e.name.clone(),
        display_name: None,
        certificate_chain: e.certificate_chain.clone(),
        domains,
        app: app_ref.clone(),
        ssl_cert,
        created_at: dyno_api::rfc3339(time(e.created_at_ms)),
        updated_at: dyno_api::rfc3339(time(e.updated_at_ms)),
    }
}

/// The endpoint that serves `hostname`: the oldest whose certificate names it exactly, else
/// the oldest whose wildcard covers it (the router's own order).
fn serving<'a>(endpoints: &'a [Parsed], hostname: &str) -> Option<&'a Parsed> {
    let exact = |c: &SniCertificate| c.names.iter().any(|n| n == hostname);
    endpoints
        .iter()
        .find(|(_, c)| c.as_ref().is_some_and(exact))
        .or_else(|| {
            endpoints
                .iter()
                .find(|(_, c)| c.as_ref().is_some_and(|c| c.covers(hostname)))
        })
}

impl DaemonApi {
    async fn endpoints_out(
        &self,
        name: &AppName,
        endpoints: &[Parsed],
    ) -> Result<Vec<SniEndpoint>, ApiError> {
        let app = self.daemon.app(name.as_str()).await?;
        let app_ref = Ref {
            id: app.uuid.clone(),
            name: app.name.clone(),
        };
        Ok(endpoints
            .iter()
            .map(|e| endpoint_shape(e, &app, &app_ref))
            .collect())
    }

    async fn one_out(&self, name: &AppName, endpoint: Parsed) -> Result<SniEndpoint, ApiError> {
        let mut out = self.endpoints_out(name, &[endpoint]).await?;
        out.pop()
            .ok_or_else(|| ApiError::internal("an endpoint went missing"))
    }

    pub(super) async fn sni_endpoints_out(
        &self,
        name: AppName,
    ) -> Result<Vec<SniEndpoint>, ApiError> {
        let all = self.daemon.sni_endpoints(name.as_str()).await?;
        self.endpoints_out(&name, &all).await
    }

    pub(super) async fn add_sni_endpoint_out(
        &self,
        name: AppName,
        cert: SniEndpointCreate,
    ) -> Result<SniEndpoint, ApiError> {
        let added = self
            .daemon
            .add_sni_endpoint(name.as_str(), cert.certificate_chain, cert.private_key)
            .await?;
        self.one_out(&name, added).await
    }

    pub(super) async fn update_sni_endpoint_out(
        &self,
        name: AppName,
        which: String,
        cert: SniEndpointCreate,
    ) -> Result<SniEndpoint, ApiError> {
        let updated = self
            .daemon
            .update_sni_endpoint(
                name.as_str(),
                which,
                cert.certificate_chain,
                cert.private_key,
            )
            .await?;
        self.one_out(&name, updated).await
    }

    pub(super) async fn remove_sni_endpoint_out(
        &self,
        name: AppName,
        which: String,
    ) -> Result<SniEndpoint, ApiError> {
        let removed = self
            .daemon
            .remove_sni_endpoint(name.as_str(), which)
            .await?;
        self.one_out(&name, removed).await
    }

    /// `domains:add --cert NAME`: the named endpoint must be the app's and cover the name.
    pub(super) async fn check_endpoint_covers(
        &self,
        name: &AppName,
        which: &str,
        hostname: &str,
    ) -> Result<(), ApiError> {
        let endpoints = self.daemon.sni_endpoints(name.as_str()).await?;
        let found = endpoints
            .iter()
            .find(|(e, _)| e.name == which || e.id == which);
        match found {
            Some((_, Some(c))) if c.covers(hostname) => Ok(()),
            Some(_) => Err(ApiError::invalid_params(format!(
                "SSL certificate {which} does not cover {hostname}: add a certificate issued for \
                 {hostname} with `heroku certs:add`, or add the domain without --cert."
            ))),
            None => Err(ApiError::invalid_params(format!(
                "{name} has no SSL certificate {which}: see `heroku certs -a {name}`."
            ))),
        }
    }

    /// Fill in each custom domain's `sni_endpoint`: the endpoint the router serves it with.
    pub(super) async fn with_endpoints(
        &self,
        name: &AppName,
        mut domains: Vec<Domain>,
    ) -> Result<Vec<Domain>, ApiError> {
        let endpoints = self.daemon.sni_endpoints(name.as_str()).await?;
        for d in domains.iter_mut().filter(|d| d.kind == "custom") {
            d.sni_endpoint = serving(&endpoints, &d.hostname).map(|(e, _)| Ref {
                id: e.id.clone(),
                name: e.name.clone(),
            });
        }
        Ok(domains)
    }

    /// `PATCH /apps/{app}/domains/{domain}`: the router serves a domain with the endpoint
    /// whose certificate covers it, so naming that endpoint (or none, while none covers it)
    /// is accepted as it is; naming another is a `422` that says which one serves it.
    pub(super) async fn update_domain_out(
        &self,
        name: AppName,
        which: String,
        update: DomainUpdate,
        all: Vec<Domain>,
    ) -> Result<Domain, ApiError> {
        let which = which.to_ascii_lowercase();
        let domain = all
            .into_iter()
            .find(|d| d.kind == "custom" && (d.hostname == which || d.id == which))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "{which} is not a custom domain of {name}: see `heroku domains -a {name}`."
                ))
            })?;
        let hostname = domain.hostname.clone();
        let message = match (update.sni_endpoint, domain.sni_endpoint.as_ref()) {
            (Some(w), Some(e)) if w == e.name || w == e.id => return Ok(domain),
            (None, None) => return Ok(domain),
            (_, Some(e)) => format!(
                "{hostname} is served with SSL certificate {}, the one that covers it: dyno \
                 picks the certificate by the names it carries. Remove that one \
                 (`heroku certs:remove --name {}`) to serve {hostname} with another.",
                e.name, e.name
            ),
            (Some(w), None) => format!(
                "SSL certificate {w} does not cover {hostname} (or is not one of {name}'s): add \
                 a certificate issued for {hostname} with `heroku certs:add`."
            ),
        };
        Err(ApiError::invalid_params(message))
    }
}
