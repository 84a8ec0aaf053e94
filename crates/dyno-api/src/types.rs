//! Request and response bodies, shaped like Heroku's Platform API. The JSON field names are part
//! of the API: add fields, never rename or remove one.
//!
//! | endpoint | request body | answer |
//! |---|---|---|
//! | `GET /apps`, `GET /users/~/apps` | – | `200` `[App, …]` by name (a page: see [`crate::server::v3`]) |
//! | `POST /apps` | [`AppCreate`] `{"name":"my-app"}` | `201` [`App`] |
//! | `GET /apps/{name or id}` | – | `200` [`App`] |
//! | `GET /account` | – | `200` [`crate::heroku::Account`] (every token acts as it) |
//! | `DELETE /apps/{name}` | – | `200` [`App`] (the app as it was) |
//! | `POST /apps/{name}/releases` | [`Deploy`] `{"dir":"/srv/app"}` | `201` [`Release`] (the formation rolls to it) |
//! | `GET /apps/{name}/releases` | `Range: version ..; max=15, order=desc` | `200`/`206` `[Release, …]` |
//! | `GET /apps/{name}/releases/{version or id}[/config-vars]` | – | `200` [`Release`] / its config |
//! | `GET /apps/{name}/formation` | – | `200` `[Formation, …]` |
//! | `PATCH /apps/{name}/formation` | [`FormationUpdates`] `{"updates":[{"type":"web","quantity":3}]}` | `200` `[Formation, …]` |
//! | `GET /apps/{name}/dynos` | – | `200` `[Dyno, …]` |
//! | `GET /apps/{name}/logs?n=100&ps=web.1&source=app` | – | `200` `["2026-… app[web.1]: …", …]` oldest first |
//! | `PATCH /apps/{name}` | [`AppUpdate`] `{"maintenance":true}` | `200` [`App`] |
//! | `GET /apps/{name}/config-vars` | – | `200` `{"KEY":"value", …}` |
//! | `PATCH /apps/{name}/config-vars` | `{"KEY":"value","OLD":null}` (null unsets) | `200` the new config; each call is a release |
//! | `POST /apps/{name}/releases` | [`crate::heroku::ReleaseCreate`] `{"release":"<id or version>"}` | `201` [`Release`]: Heroku's rollback |
//! | `POST /apps/{name}/dynos` | [`DynoCreate`] `{"command":"python3 manage.py migrate"}` | `201` [`Dyno`] (a one-off `run.N`; its output and exit status go to the app's log) |
//! | `DELETE /apps/{name}/dynos[/{dyno}]`, `DELETE …/formations/{type}`, `POST …/dynos/{dyno}/actions/stop` | – | `202` `{}`: restart all, a type (`web`) or one dyno (`web.1`) |
//! | `GET /apps/{name}/domains` | – | `200` `[Domain, …]` (the app's own hostname) |
//! | `GET /apps/{name}/{addons,collaborators,sni-endpoints}`, `GET /addon-attachments` | – | `200` `[]` |
//! | `GET /metrics` | – | `200` Prometheus text (`dyno_dynos`, `dyno_router_requests_total`, `dyno_router_service_seconds`, `dyno_restarts_total`, `dyno_listen_queue`, `dyno_listen_backlog`) |
//! | `GET /apps/{name}/log-drains` | – | `200` `[LogDrain, …]` |
//! | `POST /apps/{name}/log-drains` | [`LogDrainCreate`] `{"url":"syslog+tls://logs.example.com:6514"}` | `201` [`LogDrain`] |
//! | `DELETE /apps/{name}/log-drains/{token}` | – | `200` [`LogDrain`] |
//! | `GET /apps/{name}/features` | – | `200` `[AppFeature, …]` (Heroku Labs: `log-runtime-metrics`) |
//! | `GET /apps/{name}/features/{feature}` | – | `200` [`AppFeature`]; `404 not_found` for a feature there is not |
//! | `PATCH /apps/{name}/features/{feature}` | [`AppFeatureUpdate`] `{"enabled":true}` | `200` [`AppFeature`] |
//!
//! An [`App`] in JSON: `{"name":"my-app","created_at":"2026-11-25T10:00:00Z","maintenance":false,"web_url":"http://my-app.localhost:8080/"}`

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{quote, ApiError};
use crate::heroku::{QuantityChange, Ref, ReleaseRef, UserRef};
pub use crate::logquery::LogQuery;

/// The router's default HTTP port, as used in [`App::web_url`].
pub const DEFAULT_ROUTER_PORT: u16 = 8080;

/// An app as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// `"my-app"`: matches `^[a-z][a-z0-9-]{2,29}$`.
    pub name: String,
    /// `"2026-11-25T10:00:00Z"`: RFC 3339, UTC, whole seconds (see [`rfc3339`]).
    pub created_at: String,
    /// `false`: when `true` the router answers every request with the maintenance page (H80).
    pub maintenance: bool,
    /// `"http://my-app.localhost:8080/"`: where the router serves the app.
    pub web_url: String,
    /// Heroku's fields from here on (a client of dyno's first API may not send them).
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub owner: UserRef,
    #[serde(default)]
    pub region: Ref,
    #[serde(default)]
    pub stack: Ref,
    #[serde(default)]
    pub build_stack: Ref,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub released_at: Option<String>,
    #[serde(default)]
    pub git_url: Option<String>,
    /// Always present, `null` when unknown (Heroku's CLI reads both).
    #[serde(default)]
    pub repo_size: Option<u64>,
    #[serde(default)]
    pub slug_size: Option<u64>,
    #[serde(default)]
    pub create_status: String,
    #[serde(default)]
    pub acm: bool,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub internal_routing: Option<bool>,
    #[serde(default)]
    pub space: Option<Ref>,
    #[serde(default)]
    pub organization: Option<Ref>,
    #[serde(default)]
    pub team: Option<Ref>,
    #[serde(default)]
    pub archived_at: Option<String>,
    #[serde(default)]
    pub buildpack_provided_description: Option<String>,
}

impl App {
    /// An app created at `created_at`, not in maintenance, served by a router on port 8080;
    /// `id` its UUID, `owner` the account.
    pub fn new(name: &AppName, id: &str, owner: UserRef, created_at: SystemTime) -> App {
        let created_at = rfc3339(created_at);
        let local = |name: &str| Ref {
            id: format!("00000000-0000-4000-8000-{:012x}", name.len()),
            name: name.to_string(),
        };
        App {
            name: name.to_string(),
            maintenance: false,
            web_url: web_url(name, DEFAULT_ROUTER_PORT),
            id: id.to_string(),
            owner,
            region: local(crate::heroku::REGION),
            stack: local(crate::heroku::STACK),
            build_stack: local(crate::heroku::STACK),
            updated_at: created_at.clone(),
            released_at: Some(created_at.clone()),
            created_at,
            git_url: None,
            repo_size: None,
            slug_size: None,
            create_status: "complete".into(),
            acm: false,
            locked: false,
            internal_routing: None,
            space: None,
            organization: None,
            team: None,
            archived_at: None,
            buildpack_provided_description: None,
        }
    }

    /// `{"id":…, "name":…}` of this app.
    pub fn to_ref(&self) -> Ref {
        Ref {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }
}

/// `POST /apps` body: `{"name":"my-app"}`. Unknown fields are refused (422), so a typo such as
/// `{"nmae":…}` is reported rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCreate {
    pub name: String,
    /// Heroku's: only this host's region and stack are taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// An app name that passed [`validate_app_name`]. The only way to build one is [`AppName::new`],
/// so a [`crate::Platform`] never sees an invalid name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AppName(String);

impl AppName {
    pub fn new(name: impl Into<String>) -> Result<AppName, ApiError> {
        let name = name.into();
        validate_app_name(&name)?;
        Ok(AppName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for AppName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The app name rule, `^[a-z][a-z0-9-]{2,29}$`, with a message that says how to fix the name.
///
/// This is the one place the rule lives in this crate: when the state crate's validator is
/// available, make this function call it.
pub fn validate_app_name(name: &str) -> Result<(), ApiError> {
    let b = name.as_bytes();
    let ok = (3..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_params(format!(
            "Name must start with a letter and contain only lowercase letters, digits and dashes \
             (3–30 characters): got {}.",
            quote(name)
        )))
    }
}

/// `http://NAME.localhost:PORT/`.
pub fn web_url(name: &AppName, router_port: u16) -> String {
    format!("http://{name}.localhost:{router_port}/")
}

/// `2026-11-25T10:00:00Z`: RFC 3339 in UTC, whole seconds, as Heroku's API writes times.
/// Times before 1970 are written as the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let t = Utc::of(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// A time's UTC calendar fields, without a date crate (times before 1970 are the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    pub micros: u32,
}

impl Utc {
    pub fn of(time: SystemTime) -> Utc {
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        Utc {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
            micros: since.subsec_micros(),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calendar_edges() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn name_rule() {
        for good in [
            "abc",
            "my-app",
            "a12",
            "a--",
            &format!("a{}", "b".repeat(29)),
        ] {
            assert!(validate_app_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "1ab",
            "-ab",
            "Abc",
            "a_b",
            "a.b",
            "äbc",
            &"a".repeat(31),
        ] {
            let e = validate_app_name(bad).unwrap_err();
            assert_eq!((e.status, e.id), (422, "invalid_params"), "{bad}");
        }
        assert_eq!(
            validate_app_name("Bad_Name").unwrap_err().message,
            "Name must start with a letter and contain only lowercase letters, digits and dashes \
             (3–30 characters): got \"Bad_Name\"."
        );
    }

    #[test]
    fn app_json_shape() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_800);
        let owner = UserRef {
            id: "u1".into(),
            email: "dyno@localhost".into(),
        };
        let app = App::new(&AppName::new("my-app").unwrap(), "a1", owner, t);
        let json = serde_json::to_value(&app).unwrap();
        assert_eq!(json["name"], "my-app");
        assert_eq!(json["created_at"], "2026-11-25T10:00:00Z");
        assert_eq!(json["web_url"], "http://my-app.localhost:8080/");
        // What Heroku's CLI needs of an app (`apps:info` fails without any of them).
        assert_eq!(json["id"], "a1");
        assert_eq!(json["owner"]["email"], "dyno@localhost");
        assert_eq!(json["region"]["name"], "local");
        assert_eq!(json["stack"]["name"], "dyno-1");
        assert_eq!(json["build_stack"]["name"], "dyno-1");
        assert_eq!(json["create_status"], "complete");
        assert!(json["repo_size"].is_null() && json.get("repo_size").is_some());
        assert!(json["slug_size"].is_null() && json.get("slug_size").is_some());
        // A body of dyno's first API (without Heroku's fields) still reads.
        let old: App = serde_json::from_str(
            r#"{"name":"my-app","created_at":"2026-11-25T10:00:00Z","maintenance":false,"web_url":"http://my-app.localhost:8080/"}"#,
        )
        .unwrap();
        assert_eq!(old.name, "my-app");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert!(serde_json::from_str::<AppCreate>(r#"{"nmae":"x"}"#).is_err());
    }
}

/// `POST /apps/{name}/releases`: deploy a directory of this host (the daemon copies it into an
/// immutable slug; it must hold a Procfile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Absolute path on the daemon's host.
    pub dir: String,
}

/// A release as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// `3` for v3.
    pub version: u32,
    /// `Deploy 3f2a9c1`, `Set FOO config vars`, `Rollback to v2`, `Initial release`.
    pub description: String,
    pub created_at: String,
    /// The newest release (the one the dynos run).
    pub current: bool,
    #[serde(default)]
    pub id: String,
    /// `succeeded` (dyno has no release phase that can leave one pending).
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub user: UserRef,
    #[serde(default)]
    pub app: Ref,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub eligible_for_rollback: bool,
    #[serde(default)]
    pub addon_plan_names: Vec<String>,
    #[serde(default)]
    pub output_stream_url: Option<String>,
    #[serde(default)]
    pub slug: Option<Ref>,
}

/// One process type's line of the formation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formation {
    #[serde(rename = "type")]
    pub process_type: String,
    pub quantity: u32,
    /// `Standard-1X`
    pub size: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub app: Ref,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

/// `PATCH /apps/{name}/formation`: `ps:scale` and `ps:type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormationUpdates {
    pub updates: Vec<FormationUpdate>,
}

/// A new quantity, a new size, or both, for one process type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormationUpdate {
    #[serde(rename = "type")]
    pub process_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<QuantityChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// A running dyno as `dyno ps` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dyno {
    /// `web.1`
    pub name: String,
    #[serde(rename = "type")]
    pub process_type: String,
    /// `starting`, `up`, `crashed`, `down`
    pub state: String,
    /// The release it runs.
    pub release: ReleaseRef,
    pub size: String,
    pub command: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub app: Ref,
    /// When it came into its state (Heroku's `ps` prints it).
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub attach_url: Option<String>,
}

/// `PATCH /apps/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<bool>,
    /// Heroku's rename (`apps:rename`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A log drain: where the app's log lines are copied (syslog over TCP or TLS, HTTPS batches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDrain {
    /// `d.<uuid>`
    pub token: String,
    pub url: String,
    pub created_at: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub updated_at: String,
    /// Always `null`: dyno has no add-ons (Heroku's CLI lists add-on drains apart).
    #[serde(default)]
    pub addon: Option<Ref>,
}

/// `POST /apps/{name}/log-drains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogDrainCreate {
    pub url: String,
}

/// `POST /apps/{name}/dynos`: a one-off dyno.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynoCreate {
    pub command: String,
    /// Heroku's `run` attaches (`true`); `run:detached` sends `false`, its output goes to the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<bool>,
    /// Extra environment for this one-off (Heroku's `run -e`, and `TERM`, `COLUMNS`, `LINES`,
    /// which its CLI sends as numbers: numbers and booleans are taken as their text).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "env_values"
    )]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub process_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_no_tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<u64>,
}

/// An environment whose values may be JSON strings, numbers or booleans (null: left out).
fn env_values<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::collections::BTreeMap<String, String>>, D::Error> {
    use serde::de::Error;
    let raw: Option<std::collections::BTreeMap<String, serde_json::Value>> =
        Option::deserialize(d)?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut env = std::collections::BTreeMap::new();
    for (key, value) in raw {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            other => {
                return Err(D::Error::custom(format!(
                    "env {key}: expected a string, got {other}"
                )))
            }
        };
        env.insert(key, text);
    }
    Ok(Some(env))
}

/// A Heroku Labs feature of an app (`dyno labs -a APP`), e.g. `log-runtime-metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppFeature {
    /// `log-runtime-metrics`
    pub name: String,
    /// What it does, in a sentence.
    pub description: String,
    pub enabled: bool,
    #[serde(default)]
    pub id: String,
    /// `general` (Heroku's `features` lists it) or `beta` (a labs feature: `labs`).
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub doc_url: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub feedback_email: String,
}

/// `PATCH /apps/{name}/features/{feature}`: `labs:enable` / `labs:disable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFeatureUpdate {
    pub enabled: bool,
}

/// Feature names: 1 to 60 of `a-z`, `0-9` and `-` (anything else names no feature, and is not
/// echoed back as it is).
pub fn validate_feature_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=60).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_params(format!(
            "A feature name has only lowercase letters, digits and dashes, e.g. \
             log-runtime-metrics: got {}.",
            quote(name)
        )))
    }
}
