//! `/apps/{app}/sni-endpoints`: Heroku's SNI endpoints (`heroku certs`, `certs:add`,
//! `certs:info`, `certs:update`, `certs:remove`), and `PATCH /apps/{app}/domains/{domain}`
//! (`certs:add` associating domains with the new certificate).

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::routes::{json, list, plain, read_json, Failure, Resp};
use super::Platform;
use crate::error::ApiError;
use crate::heroku::Ref;
use crate::types::AppName;

/// An SNI endpoint in Heroku's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SniEndpoint {
    pub id: String,
    /// `sni-1a2b3c4d`
    pub name: String,
    pub display_name: Option<String>,
    pub certificate_chain: String,
    /// Ids of the app's custom domains the certificate serves.
    pub domains: Vec<String>,
    pub app: Ref,
    pub ssl_cert: SslCert,
    pub created_at: String,
    pub updated_at: String,
}

/// What Heroku shows of an endpoint's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SslCert {
    pub id: String,
    /// Issued by a CA the host trusts: dyno does not check chains against a trust store, so
    /// this is `false` (the CLI then says "not trusted" or "self signed").
    #[serde(rename = "ca_signed?")]
    pub ca_signed: bool,
    #[serde(rename = "self_signed?")]
    pub self_signed: bool,
    /// The names it is valid for (DNS subject alternative names).
    pub cert_domains: Vec<String>,
    pub starts_at: String,
    pub expires_at: String,
    pub issuer: String,
    pub subject: String,
}

/// `POST` and `PATCH` bodies: `{"certificate_chain": PEM, "private_key": PEM}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniEndpointCreate {
    pub certificate_chain: String,
    pub private_key: String,
}

/// `PATCH /apps/{app}/domains/{domain}`: `{"sni_endpoint": name or id, or null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainUpdate {
    pub sni_endpoint: Option<String>,
}

pub(super) async fn sni_route<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    name: AppName,
    rest: &[&str],
    method: &Method,
    path: &str,
    range: Option<&str>,
) -> Result<Resp, Failure> {
    let not_allowed = |allow| {
        (
            ApiError::method_not_allowed(method.as_str(), path, allow),
            Some(allow),
        )
    };
    match (rest, method) {
        ([_], &Method::GET) => list(
            range,
            &platform.sni_endpoints(name).await.map_err(plain)?,
            &["id", "name"],
        ),
        ([_], &Method::POST) => {
            let body: SniEndpointCreate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::CREATED,
                &platform.add_sni_endpoint(name, body).await.map_err(plain)?,
            )
        }
        ([_], _) => Err(not_allowed("GET, POST")),
        ([_, which], &Method::GET) => {
            let which = (*which).to_owned();
            let all = platform.sni_endpoints(name.clone()).await.map_err(plain)?;
            match all.into_iter().find(|e| e.name == which || e.id == which) {
                Some(e) => json(StatusCode::OK, &e),
                None => Err(plain(ApiError::not_found(format!(
                    "No SSL certificate {which:?} on {name}: see `heroku certs -a {name}`."
                )))),
            }
        }
        ([_, which], &Method::PATCH) => {
            let body: SniEndpointCreate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::OK,
                &platform
                    .update_sni_endpoint(name, (*which).to_owned(), body)
                    .await
                    .map_err(plain)?,
            )
        }
        ([_, which], &Method::DELETE) => json(
            StatusCode::OK,
            &platform
                .remove_sni_endpoint(name, (*which).to_owned())
                .await
                .map_err(plain)?,
        ),
        ([_, _], _) => Err(not_allowed("GET, PATCH, DELETE")),
        _ => Err(plain(ApiError::no_such_endpoint(method.as_str(), path))),
    }
}
