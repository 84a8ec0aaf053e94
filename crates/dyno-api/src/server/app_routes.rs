//! The routes under `/apps/{app}/…`: the app, its config vars, releases, formation, dynos,
//! drains, domains, logs and features, in Heroku's Platform API v3 shapes.

use std::collections::BTreeMap;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use super::routes::{json, list, plain, read_json, Failure, Resp};
use super::Platform;
use crate::error::ApiError;
use crate::heroku::{DomainCreate, LogSession, LogSessionCreate, ReleaseCreate, ReleaseName};
use crate::types::{
    validate_feature_name, AppFeatureUpdate, AppName, AppUpdate, Deploy, DynoCreate,
    FormationUpdate, FormationUpdates, LogDrainCreate,
};

pub(super) async fn app_route<P: Platform>(
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
    let empty: [serde_json::Value; 0] = [];
    let git_base = super::git::git_base(&req);
    let git = |app| super::git::with_git_url(app, git_base.as_deref());
    match (rest, method) {
        ([], &Method::GET) => json(
            StatusCode::OK,
            &git(platform.app(name).await.map_err(plain)?),
        ),
        ([], &Method::DELETE) => json(
            StatusCode::OK,
            &git(platform.destroy_app(name).await.map_err(plain)?),
        ),
        ([], &Method::PATCH) => {
            let body: AppUpdate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::OK,
                &git(platform.update_app(name, body).await.map_err(plain)?),
            )
        }
        ([], _) => Err(not_allowed("GET, PATCH, DELETE")),
        // dyno has no add-ons or collaborators yet: empty lists.
        (["addons"] | ["addon-attachments"] | ["collaborators"], &Method::GET) => {
            platform.app(name).await.map_err(plain)?;
            list(range, &empty, &["id"])
        }
        (["addons"] | ["addon-attachments"] | ["collaborators"], _) => Err(not_allowed("GET")),
        (["sources"] | ["builds", ..] | ["build-cache"] | ["buildpack-installations"], _) => {
            super::builds::app_build_route(req, platform, name, rest, path, range).await
        }
        (["sni-endpoints", ..], _) => {
            super::sni_endpoints::sni_route(req, platform, name, rest, method, path, range).await
        }
        (["domains", which], &Method::PATCH) => {
            let body: super::sni_endpoints::DomainUpdate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::OK,
                &platform
                    .update_domain(name, (*which).to_owned(), body)
                    .await
                    .map_err(plain)?,
            )
        }
        (["domains"], &Method::GET) => list(
            range,
            &platform.domains(name).await.map_err(plain)?,
            &["id", "hostname"],
        ),
        (["domains"], &Method::POST) => {
            let body: DomainCreate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::CREATED,
                &platform.add_domain(name, body).await.map_err(plain)?,
            )
        }
        (["domains"], _) => Err(not_allowed("GET, POST")),
        (["domains", which], &Method::GET) => {
            let all = platform.domains(name).await.map_err(plain)?;
            let which = which.to_ascii_lowercase();
            match all
                .into_iter()
                .find(|d| d.hostname == which || d.id == which)
            {
                Some(d) => json(StatusCode::OK, &d),
                None => Err(plain(ApiError::not_found(format!(
                    "No domain {which:?} on this app."
                )))),
            }
        }
        (["domains", which], &Method::DELETE) => json(
            StatusCode::OK,
            &platform
                .remove_domain(name, (*which).to_owned())
                .await
                .map_err(plain)?,
        ),
        (["domains", _], _) => Err(not_allowed("GET, PATCH, DELETE")),
        (["config-vars"], &Method::GET) => {
            json(StatusCode::OK, &platform.config(name).await.map_err(plain)?)
        }
        (["config-vars"], &Method::PATCH) => {
            let body: BTreeMap<String, Option<String>> = read_json(req).await.map_err(plain)?;
            if body.is_empty() {
                return Err(plain(ApiError::invalid_params(
                    "No config vars given: send {\"KEY\":\"value\"} to set, {\"KEY\":null} to unset.",
                )));
            }
            json(
                StatusCode::OK,
                &platform.update_config(name, body).await.map_err(plain)?,
            )
        }
        (["config-vars"], _) => Err(not_allowed("GET, PATCH")),
        (["releases"], &Method::GET) => list(
            range,
            &platform.releases(name).await.map_err(plain)?,
            &["version", "id"],
        ),
        (["releases"], &Method::POST) => {
            let body: ReleaseCreate = read_json(req).await.map_err(plain)?;
            let release = match (body.release, body.dir) {
                (Some(which), None) => {
                    let version = platform
                        .release(name.clone(), which)
                        .await
                        .map_err(plain)?
                        .version;
                    platform.rollback(name, version).await.map_err(plain)?
                }
                (None, Some(dir)) => platform.deploy(name, Deploy { dir }).await.map_err(plain)?,
                _ => {
                    return Err(plain(ApiError::invalid_params(
                        "Send {\"release\":\"<id or version>\"} to roll back to a release, or \
                         {\"dir\":\"/path/on/the/host\"} to deploy a directory.",
                    )))
                }
            };
            json(StatusCode::CREATED, &release)
        }
        (["releases"], _) => Err(not_allowed("GET, POST")),
        (["releases", which], &Method::GET) => json(
            StatusCode::OK,
            &platform
                .release(name, release_name(which))
                .await
                .map_err(plain)?,
        ),
        (["releases", _], _) => Err(not_allowed("GET")),
        (["releases", which, "config-vars"], &Method::GET) => json(
            StatusCode::OK,
            &platform
                .release_config(name, release_name(which))
                .await
                .map_err(plain)?,
        ),
        (["formation"], &Method::GET) => list(
            range,
            &platform.formation(name).await.map_err(plain)?,
            &["type", "id"],
        ),
        (["formation"], &Method::PATCH) => {
            let body: FormationUpdates = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::OK,
                &platform.scale(name, body).await.map_err(plain)?,
            )
        }
        (["formation"], _) => Err(not_allowed("GET, PATCH")),
        (["formation", process_type], &Method::GET) => {
            let all = platform.formation(name).await.map_err(plain)?;
            match all
                .into_iter()
                .find(|f| f.process_type == *process_type || f.id == *process_type)
            {
                Some(f) => json(StatusCode::OK, &f),
                None => Err(plain(ApiError::not_found(format!(
                    "No process type {process_type:?} in the formation."
                )))),
            }
        }
        (["formation", process_type], &Method::PATCH) => {
            let mut update: FormationUpdate = read_json_with_type(req, process_type).await?;
            update.process_type = (*process_type).to_owned();
            let updated = platform
                .scale(
                    name,
                    FormationUpdates {
                        updates: vec![update],
                    },
                )
                .await
                .map_err(plain)?;
            match updated
                .into_iter()
                .find(|f| f.process_type == *process_type)
            {
                Some(f) => json(StatusCode::OK, &f),
                None => Err(plain(ApiError::internal("the formation has no such type"))),
            }
        }
        (["formation", _], _) => Err(not_allowed("GET, PATCH")),
        (["dynos"], &Method::POST) => {
            let body: DynoCreate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::CREATED,
                &platform.run(name, body).await.map_err(plain)?,
            )
        }
        (["dynos"], &Method::DELETE) => {
            platform.restart(name, None).await.map_err(plain)?;
            json(StatusCode::ACCEPTED, &serde_json::json!({}))
        }
        (["dynos"], &Method::GET) => list(
            range,
            &platform.dynos(name).await.map_err(plain)?,
            &["name", "id"],
        ),
        (["dynos"], _) => Err(not_allowed("GET, POST, DELETE")),
        (["dynos", which], &Method::GET) => {
            let which = dyno_or_type(which)?;
            let all = platform.dynos(name).await.map_err(plain)?;
            match all.into_iter().find(|d| d.name == which || d.id == which) {
                Some(d) => json(StatusCode::OK, &d),
                None => Err(plain(ApiError::not_found(format!("No dyno {which:?}.")))),
            }
        }
        // Heroku's restart and stop of one dyno (`web.1`) or a process type (`web`); a stopped
        // dyno of the formation starts again, as on Heroku.
        (["dynos", which], &Method::DELETE)
        | (["formations", which], &Method::DELETE)
        | (["dynos", which, "actions", "stop"], &Method::POST)
        | (["formations", which, "actions", "stop"], &Method::POST) => {
            let which = dyno_or_type(which)?;
            platform.restart(name, Some(which)).await.map_err(plain)?;
            json(StatusCode::ACCEPTED, &serde_json::json!({}))
        }
        (["dynos", _], _) => Err(not_allowed("GET, DELETE")),
        (["log-drains"], &Method::GET) => list(
            range,
            &platform.drains(name).await.map_err(plain)?,
            &["id", "url", "token"],
        ),
        (["log-drains"], &Method::POST) => {
            let body: LogDrainCreate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::CREATED,
                &platform.add_drain(name, body).await.map_err(plain)?,
            )
        }
        (["log-drains"], _) => Err(not_allowed("GET, POST")),
        (["log-drains", token], &Method::DELETE) => {
            // Heroku's CLI names the drain by its URL, percent-encoded into the segment.
            let token = percent_decode(token).ok_or_else(|| {
                plain(ApiError::bad_request("Bad percent-encoding in the drain."))
            })?;
            json(
                StatusCode::OK,
                &platform.remove_drain(name, token).await.map_err(plain)?,
            )
        }
        (["log-drains", _], _) => Err(not_allowed("DELETE")),
        (["log-sessions"], &Method::POST) => {
            let base = super::builds::request_base(&req);
            let body: LogSessionCreate = read_json(req).await.map_err(plain)?;
            let query = super::log_sessions::query_of(&body)?;
            let secret = platform
                .open_log_session(name, query)
                .await
                .map_err(plain)?;
            let now = crate::types::rfc3339(std::time::SystemTime::now());
            json(
                StatusCode::CREATED,
                &LogSession {
                    logplex_url: super::log_sessions::url_for(&base, &secret),
                    id: secret,
                    created_at: now.clone(),
                    updated_at: now,
                },
            )
        }
        (["log-sessions"], _) => Err(not_allowed("POST")),
        (["features"], &Method::GET) => json(
            StatusCode::OK,
            &platform.features(name).await.map_err(plain)?,
        ),
        (["features"], _) => Err(not_allowed("GET")),
        (["features", feature], &Method::GET) => {
            validate_feature_name(feature).map_err(plain)?;
            let feature = (*feature).to_owned();
            json(
                StatusCode::OK,
                &platform.feature(name, feature).await.map_err(plain)?,
            )
        }
        (["features", feature], &Method::PATCH) => {
            validate_feature_name(feature).map_err(plain)?;
            let feature = (*feature).to_owned();
            let body: AppFeatureUpdate = read_json(req).await.map_err(plain)?;
            json(
                StatusCode::OK,
                &platform
                    .update_feature(name, feature, body)
                    .await
                    .map_err(plain)?,
            )
        }
        (["features", _], _) => Err(not_allowed("GET, PATCH")),
        _ => Err(plain(ApiError::no_such_endpoint(method.as_str(), path))),
    }
}

/// `3`, `v3` or a release id.
fn release_name(which: &str) -> ReleaseName {
    match which.strip_prefix('v').unwrap_or(which).parse::<u32>() {
        Ok(v) => ReleaseName::Version(v),
        Err(_) => ReleaseName::Text(which.to_owned()),
    }
}

/// A dyno (`web.1`) or a process type (`web`) named in a path.
fn dyno_or_type(which: &str) -> Result<String, Failure> {
    let ok = !which.is_empty()
        && which.len() <= 40
        && which
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(which.to_owned())
    } else {
        Err(plain(ApiError::invalid_params(
            "Name a dyno (web.1) or a process type (web).",
        )))
    }
}

/// `%XX` decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A single formation update's body (`PATCH /apps/{app}/formation/{type}`), whose type is
/// the path's.
async fn read_json_with_type(
    req: Request<Incoming>,
    process_type: &str,
) -> Result<FormationUpdate, Failure> {
    let mut value: serde_json::Value = read_json(req).await.map_err(plain)?;
    if let Some(object) = value.as_object_mut() {
        object
            .entry("type")
            .or_insert_with(|| serde_json::Value::String(process_type.to_owned()));
    }
    serde_json::from_value(value).map_err(|e| {
        plain(ApiError::invalid_params(format!(
            "Request body has the wrong fields: {e}. Send {{\"quantity\":2}} or {{\"size\":\"Standard-2X\"}}."
        )))
    })
}
