//! The parts of Heroku's Platform API v3 shapes that several bodies share (references to an
//! app, a release, the account), and the bodies dyno had no shape for before: the account,
//! domains, add-ons. Field names are Heroku's; a client written for Heroku reads them.

use serde::{Deserialize, Serialize};

/// The account every API token acts as (one per daemon; there are no users).
pub const ACCOUNT_EMAIL: &str = "dyno@localhost";
/// The one region and stack: this host.
pub const REGION: &str = "local";
pub const STACK: &str = "dyno-1";

/// `{"id":…, "name":…}`: an app, a region, a stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub id: String,
    pub name: String,
}

/// `{"id":…, "email":…}`: an app's owner, a release's author.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub email: String,
}

/// `{"id":…, "version":…}`: the release a dyno runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub id: String,
    pub version: u32,
}

/// `GET /account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub verified: bool,
    pub two_factor_authentication: bool,
    pub beta: bool,
    pub allow_tracking: bool,
    pub default_organization: Option<Ref>,
    pub default_team: Option<Ref>,
    pub delinquent_at: Option<String>,
    pub suspended_at: Option<String>,
}

impl Account {
    pub fn new(id: String, created_at: String) -> Account {
        Account {
            id,
            email: ACCOUNT_EMAIL.to_string(),
            name: None,
            updated_at: created_at.clone(),
            created_at,
            verified: true,
            two_factor_authentication: false,
            beta: false,
            allow_tracking: false,
            default_organization: None,
            default_team: None,
            delinquent_at: None,
            suspended_at: None,
        }
    }

    pub fn as_owner(&self) -> UserRef {
        UserRef {
            id: self.id.clone(),
            email: self.email.clone(),
        }
    }
}

/// `GET /apps/{app}/domains`: the app's own hostname (`kind: heroku`) and custom ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub id: String,
    pub hostname: String,
    /// `heroku` (the app's own name under the router's domain) or `custom`.
    pub kind: String,
    pub cname: Option<String>,
    pub status: String,
    pub acm_status: Option<String>,
    pub acm_status_reason: Option<String>,
    pub sni_endpoint: Option<Ref>,
    pub app: Ref,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /apps/{app}/domains`: `{"hostname":"www.example.com","sni_endpoint":null}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainCreate {
    pub hostname: String,
    /// The certificate to serve it with (a name from `sni-endpoints`); none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_endpoint: Option<String>,
}

/// A `quantity` in a formation update: Heroku's CLI sends `"2"`, `"+1"` or `"-1"`; other
/// clients send a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityChange {
    To(u32),
    By(i64),
}

impl QuantityChange {
    /// The quantity after the change, from `current`; `None` below 0 or past `u32`.
    pub fn apply(self, current: u32) -> Option<u32> {
        match self {
            QuantityChange::To(n) => Some(n),
            QuantityChange::By(delta) => u32::try_from(i64::from(current) + delta).ok(),
        }
    }
}

impl Serialize for QuantityChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            QuantityChange::To(n) => s.serialize_u32(*n),
            QuantityChange::By(d) => s.serialize_str(&format!("{d:+}")),
        }
    }
}

impl<'de> Deserialize<'de> for QuantityChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        let bad = || {
            serde::de::Error::custom(
                "quantity is a number of dynos (2), or a change written \"+1\" or \"-1\"",
            )
        };
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Number(n) => Ok(QuantityChange::To(n)),
            Raw::Text(t) => {
                let t = t.trim();
                let relative = t.starts_with(['+', '-']);
                let digits = t.trim_start_matches(['+', '-']);
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad());
                }
                let n: i64 = digits.parse().map_err(|_| bad())?;
                Ok(match (relative, t.starts_with('-')) {
                    (false, _) => QuantityChange::To(n as u32),
                    (true, false) => QuantityChange::By(n),
                    (true, true) => QuantityChange::By(-n),
                })
            }
        }
    }
}

/// `POST /apps/{app}/releases`: Heroku's rollback (`{"release":"<id or version>"}`), or dyno's
/// deploy of a directory on the daemon's host (`{"dir":"/srv/app"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A release named by its id (a UUID) or its version (`3`, `"3"` or `"v3"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReleaseName {
    Version(u32),
    Text(String),
}

impl ReleaseName {
    /// The version it names when it is one (`3`, `"3"`, `"v3"`).
    pub fn version(&self) -> Option<u32> {
        match self {
            ReleaseName::Version(v) => Some(*v),
            ReleaseName::Text(t) => t.strip_prefix('v').unwrap_or(t).parse().ok(),
        }
    }

    pub fn text(&self) -> String {
        match self {
            ReleaseName::Version(v) => v.to_string(),
            ReleaseName::Text(t) => t.clone(),
        }
    }
}

/// `POST /apps/{app}/log-sessions`: which lines (`heroku logs -n 5 --dyno web.1 --source app
/// [--tail]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSessionCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dyno: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub process_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<bool>,
}

/// A log session: `logplex_url` streams the lines (see `server::log_sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSession {
    pub id: String,
    pub logplex_url: String,
    pub created_at: String,
    pub updated_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_heroku_cli_sends_them() {
        let q = |s: &str| serde_json::from_str::<QuantityChange>(s);
        assert_eq!(q("2").unwrap(), QuantityChange::To(2));
        assert_eq!(q("\"2\"").unwrap(), QuantityChange::To(2));
        assert_eq!(q("\"+1\"").unwrap(), QuantityChange::By(1));
        assert_eq!(q("\"-3\"").unwrap(), QuantityChange::By(-3));
        for bad in [
            "\"\"",
            "\"+\"",
            "\"two\"",
            "-1",
            "1.5",
            "\"1e3\"",
            "null",
            "\"9999999999\"",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
        assert_eq!(QuantityChange::By(-3).apply(2), None);
        assert_eq!(QuantityChange::By(-1).apply(2), Some(1));
        assert_eq!(QuantityChange::To(0).apply(5), Some(0));
        assert_eq!(
            serde_json::to_string(&QuantityChange::By(-1)).unwrap(),
            "\"-1\""
        );
    }

    #[test]
    fn releases_by_version_or_id() {
        let r: ReleaseCreate = serde_json::from_str(r#"{"release":"v3"}"#).unwrap();
        assert_eq!(r.release.unwrap().version(), Some(3));
        let r: ReleaseCreate = serde_json::from_str(r#"{"release":4}"#).unwrap();
        assert_eq!(r.release.unwrap().version(), Some(4));
        let r: ReleaseCreate =
            serde_json::from_str(r#"{"release":"1b4e28ba-2fa1-41d2-883f-000000000003"}"#).unwrap();
        assert_eq!(r.release.unwrap().version(), None);
        assert!(serde_json::from_str::<ReleaseCreate>(r#"{"slug":"x"}"#).is_err());
    }
}
