//! Request → [`Platform`] call → JSON response. Every failure is an [`ApiError`] answer; nothing
//! here panics on input.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::git::with_git_url;
use super::{v3, Platform, MAX_BODY_BYTES};
use crate::error::ApiError;

use crate::heroku;
use crate::types::{AppCreate, AppName};

/// Every answer's body: whole (`Full`) or streamed (`logs?tail=1`).
pub(super) type RespBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
pub(super) type Resp = Response<RespBody>;

pub(super) async fn handle<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    token: Option<&[u8]>,
) -> Resp {
    let request_id = v3::request_id(req.headers());
    let mut resp = match route(req, platform, token).await {
        Ok(resp) => resp,
        Err((e, allow)) => error_response(&e, allow),
    };
    resp.headers_mut().insert("request-id", request_id);
    resp
}

/// An error, and for 405 the methods to list in `Allow`.
pub(super) type Failure = (ApiError, Option<&'static str>);

async fn route<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    token: Option<&[u8]>,
) -> Result<Resp, Failure> {
    // A log session's URL is its own credential (Heroku's CLI sends no token there).
    if let Some(secret) = req.uri().path().strip_prefix("/log-sessions/") {
        if req.method() != Method::GET {
            return Err((
                ApiError::method_not_allowed(req.method().as_str(), req.uri().path(), "GET"),
                Some("GET"),
            ));
        }
        return super::log_sessions::stream(platform, secret, req.headers()).await;
    }
    // Source uploads and build outputs: their URLs are their credentials, as Heroku's are.
    if let Some(secret) = req.uri().path().strip_prefix("/sources/") {
        let secret = secret.to_string();
        return super::builds::source_route(req, platform, &secret).await;
    }
    if let Some(secret) = req.uri().path().strip_prefix("/build-outputs/") {
        let secret = secret.to_string();
        return super::builds::output_route(req, platform, &secret).await;
    }
    // Git's smart HTTP (`/APP.git/…`), with git's own credentials and `text/plain` answers.
    if let Some((app, action)) = super::git::parse_path(req.uri().path()) {
        let app = app.to_owned();
        return Ok(super::git::route(req, platform, token, &app, action).await);
    }
    if let Some(token) = token {
        if !authorized(req.headers(), token) {
            return Err((ApiError::unauthorized(), None));
        }
    }
    if let Some(secret) = req.uri().path().strip_prefix("/attach/") {
        let secret = secret.to_string();
        return super::attach::upgrade(req, platform, &secret).await;
    }
    v3::check_accept(req.headers()).map_err(plain)?;
    let range = req
        .headers()
        .get(hyper::header::RANGE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let range = range.as_deref();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let git_base = super::git::git_base(&req);
    let segments: Vec<&str> = match path.strip_prefix('/') {
        Some(rest) => rest.split('/').collect(),
        None => Vec::new(),
    };
    let not_allowed = |allow| {
        (
            ApiError::method_not_allowed(method.as_str(), &path, allow),
            Some(allow),
        )
    };
    let empty: [serde_json::Value; 0] = [];
    match segments.as_slice() {
        ["metrics"] => match method {
            Method::GET => {
                let text = platform.metrics().await.map_err(plain)?;
                let mut resp = response(StatusCode::OK, text.into_bytes());
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                Ok(resp)
            }
            _ => Err(not_allowed("GET")),
        },
        ["account"] => match method {
            Method::GET => json(StatusCode::OK, &platform.account().await.map_err(plain)?),
            _ => Err(not_allowed("GET")),
        },
        // No account-wide labs features, add-ons or attachments: empty lists, and a 404 for
        // one (Heroku's CLI then tries the app's feature).
        ["account", "features"] | ["addons"] | ["addon-attachments"] => match method {
            Method::GET => list(range, &empty, &["id"]),
            _ => Err(not_allowed("GET")),
        },
        ["account", "features", feature] => Err(plain(ApiError::not_found(format!(
            "No account feature {feature:?}: dyno's features belong to apps (`heroku features -a APP`)."
        )))),
        ["apps"] | ["users", "~", "apps"] => match method {
            Method::GET => {
                let apps = platform.list_apps().await.map_err(plain)?;
                let apps: Vec<_> = apps
                    .into_iter()
                    .map(|a| with_git_url(a, git_base.as_deref()))
                    .collect();
                list(range, &apps, &["name", "id"])
            }
            Method::POST if segments.len() == 1 => {
                let body: AppCreate = read_json(req).await.map_err(plain)?;
                check_local(body.region.as_deref(), heroku::REGION, "region")?;
                check_local(body.stack.as_deref(), heroku::STACK, "stack")?;
                let name = AppName::new(body.name).map_err(plain)?;
                let app = platform.create_app(name).await.map_err(plain)?;
                json(StatusCode::CREATED, &with_git_url(app, git_base.as_deref()))
            }
            _ if segments.len() == 1 => Err(not_allowed("GET, POST")),
            _ => Err(not_allowed("GET")),
        },
        // Validate the name (or resolve the id) before anything else about `/apps/{app}/…`.
        ["apps", app, rest @ ..] => {
            let name = app_name(platform, app).await?;
            super::app_routes::app_route(req, platform, name, rest, &method, &path, range).await
        }
        _ => Err(plain(ApiError::no_such_endpoint(method.as_str(), &path))),
    }
}

/// An app named in a path by its name or its id (a UUID, any case).
async fn app_name<P: Platform>(platform: &P, app: &str) -> Result<AppName, Failure> {
    let is_uuid = app.len() == 36
        && app.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    if is_uuid {
        platform.app_name_of(app.to_owned()).await.map_err(plain)
    } else {
        AppName::new(app).map_err(plain)
    }
}

/// Heroku's `region` / `stack` when creating an app: only this host's is taken.
fn check_local(given: Option<&str>, ours: &str, what: &str) -> Result<(), Failure> {
    match given {
        Some(g) if g != ours => Err(plain(ApiError::invalid_params(format!(
            "This host has one {what}, {ours:?}: got {g:?}. Leave it out or use {ours:?}."
        )))),
        _ => Ok(()),
    }
}

pub(super) fn plain(e: ApiError) -> Failure {
    (e, None)
}

/// `Authorization: Bearer <token>`, the token compared in constant time.
fn authorized(headers: &HeaderMap, token: &[u8]) -> bool {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    constant_time_eq(&value[7..], token)
}

/// Equal bytes, in a time that depends only on the lengths, not on where they differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// The body as `T`: `Content-Type: application/json` (415), at most [`MAX_BODY_BYTES`] (413),
/// valid JSON (400), the right fields (422).
pub(super) async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let content_type = req.headers().get(CONTENT_TYPE);
    if !content_type.is_some_and(is_json) {
        let got = content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return Err(ApiError::unsupported_media_type(got.as_deref()));
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::request_too_large(MAX_BODY_BYTES));
    }
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                ApiError::request_too_large(MAX_BODY_BYTES)
            } else {
                ApiError::bad_request(format!("Could not read the request body: {e}. Retry."))
            }
        })?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "Request body is not valid JSON: {e}. Send a JSON object such as \
             {{\"name\":\"my-app\"}}."
        ))
    })?;
    // serde would also take a struct from an array (`["my-app"]`): only objects are bodies.
    if !value.is_object() {
        return Err(ApiError::invalid_params(format!(
            "Request body must be a JSON object such as {{\"name\":\"my-app\"}}: got {}.",
            json_kind(&value)
        )));
    }
    T::deserialize(value).map_err(|e| {
        ApiError::invalid_params(format!(
            "Request body has the wrong fields: {e}. Send a JSON object such as \
             {{\"name\":\"my-app\"}}."
        ))
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `application/json`, any case, parameters (`; charset=utf-8`) allowed.
fn is_json(v: &HeaderValue) -> bool {
    let essence = v.as_bytes().split(|b| *b == b';').next().unwrap_or(b"");
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// A list, one page of it as `Range` asks (sorted by one of `fields`, the first by default):
/// `200`, or `206` with `Next-Range` when more is left.
pub(super) fn list<T: Serialize>(
    range: Option<&str>,
    items: &[T],
    fields: &[&str],
) -> Result<Resp, Failure> {
    let values = items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| plain(ApiError::internal(e)))?;
    let page = v3::page(values, range, fields).map_err(plain)?;
    let status = match page.next_range {
        Some(_) => StatusCode::PARTIAL_CONTENT,
        None => StatusCode::OK,
    };
    let mut resp = json(status, &page.items)?;
    if let Some(next) = page.next_range {
        let value = HeaderValue::from_str(&next).map_err(|e| plain(ApiError::internal(e)))?;
        resp.headers_mut().insert("next-range", value);
    }
    Ok(resp)
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Resp, Failure> {
    let body = serde_json::to_vec(value).map_err(|e| plain(ApiError::internal(e)))?;
    Ok(response(status, body))
}

pub(super) fn response(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(super) fn error_response(e: &ApiError, allow: Option<&'static str>) -> Resp {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = response(status, e.to_json());
    let headers = resp.headers_mut();
    if let Some(allow) = allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        // The rest of the body is not read: do not keep the connection.
        StatusCode::PAYLOAD_TOO_LARGE => {
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, b"secret"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer secret"));
        assert!(authorized(&h, b"secret"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic secret"));
        assert!(!authorized(&h, b"secret"));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
        ] {
            assert!(is_json(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
