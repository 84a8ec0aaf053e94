//! Request → [`Platform`] call → JSON response. Every failure is an [`ApiError`] answer; nothing
//! here panics on input.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Platform, MAX_BODY_BYTES};
use crate::error::ApiError;
use std::collections::BTreeMap;

use crate::types::{
    validate_feature_name, AppCreate, AppFeatureUpdate, AppName, AppUpdate, Deploy, DynoCreate,
    FormationUpdates, LogDrainCreate, LogQuery, Rollback,
};

/// Every answer's body: whole (`Full`) or streamed (`logs?tail=1`).
pub(super) type RespBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
type Resp = Response<RespBody>;

pub(super) async fn handle<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    token: Option<&[u8]>,
) -> Resp {
    match route(req, platform, token).await {
        Ok(resp) => resp,
        Err((e, allow)) => error_response(&e, allow),
    }
}

/// An error, and for 405 the methods to list in `Allow`.
type Failure = (ApiError, Option<&'static str>);

async fn route<P: Platform>(
    req: Request<Incoming>,
    platform: &P,
    token: Option<&[u8]>,
) -> Result<Resp, Failure> {
    if let Some(token) = token {
        if !authorized(req.headers(), token) {
            return Err((ApiError::unauthorized(), None));
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
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
        ["apps"] => match method {
            Method::GET => json(StatusCode::OK, &platform.list_apps().await.map_err(plain)?),
            Method::POST => {
                let body: AppCreate = read_json(req).await.map_err(plain)?;
                let name = AppName::new(body.name).map_err(plain)?;
                let app = platform.create_app(name).await.map_err(plain)?;
                json(StatusCode::CREATED, &app)
            }
            _ => Err(not_allowed("GET, POST")),
        },
        // Validate the name before anything else about `/apps/{name}/…`.
        ["apps", name, rest @ ..] => {
            let name = AppName::new(*name).map_err(plain)?;
            match (rest, &method) {
                ([], &Method::GET) => {
                    json(StatusCode::OK, &platform.app(name).await.map_err(plain)?)
                }
                ([], &Method::DELETE) => json(
                    StatusCode::OK,
                    &platform.destroy_app(name).await.map_err(plain)?,
                ),
                ([], &Method::PATCH) => {
                    let body: AppUpdate = read_json(req).await.map_err(plain)?;
                    json(
                        StatusCode::OK,
                        &platform.update_app(name, body).await.map_err(plain)?,
                    )
                }
                ([], _) => Err(not_allowed("GET, PATCH, DELETE")),
                (["config"], &Method::GET) => {
                    json(StatusCode::OK, &platform.config(name).await.map_err(plain)?)
                }
                (["config"], &Method::PATCH) => {
                    let body: BTreeMap<String, Option<String>> =
                        read_json(req).await.map_err(plain)?;
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
                (["config"], _) => Err(not_allowed("GET, PATCH")),
                (["rollback"], &Method::POST) => {
                    let body: Rollback = read_json(req).await.map_err(plain)?;
                    json(
                        StatusCode::CREATED,
                        &platform.rollback(name, body).await.map_err(plain)?,
                    )
                }
                (["rollback"], _) => Err(not_allowed("POST")),
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
                (["dynos", which], &Method::DELETE) => {
                    let which = (*which).to_owned();
                    let ok = !which.is_empty()
                        && which.len() <= 40
                        && which
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                    if !ok {
                        return Err(plain(ApiError::invalid_params(
                            "Name a dyno (web.1) or a process type (web).",
                        )));
                    }
                    platform.restart(name, Some(which)).await.map_err(plain)?;
                    json(StatusCode::ACCEPTED, &serde_json::json!({}))
                }
                (["dynos", _], _) => Err(not_allowed("DELETE")),
                (["log-drains"], &Method::GET) => {
                    json(StatusCode::OK, &platform.drains(name).await.map_err(plain)?)
                }
                (["log-drains"], &Method::POST) => {
                    let body: LogDrainCreate = read_json(req).await.map_err(plain)?;
                    json(
                        StatusCode::CREATED,
                        &platform.add_drain(name, body).await.map_err(plain)?,
                    )
                }
                (["log-drains"], _) => Err(not_allowed("GET, POST")),
                (["log-drains", token], &Method::DELETE) => {
                    let token = (*token).to_owned();
                    json(
                        StatusCode::OK,
                        &platform.remove_drain(name, token).await.map_err(plain)?,
                    )
                }
                (["log-drains", _], _) => Err(not_allowed("DELETE")),
                (["releases"], &Method::POST) => {
                    let body: Deploy = read_json(req).await.map_err(plain)?;
                    let release = platform.deploy(name, body).await.map_err(plain)?;
                    json(StatusCode::CREATED, &release)
                }
                (["releases"], &Method::GET) => json(
                    StatusCode::OK,
                    &platform.releases(name).await.map_err(plain)?,
                ),
                (["releases"], _) => Err(not_allowed("GET, POST")),
                (["formation"], &Method::GET) => json(
                    StatusCode::OK,
                    &platform.formation(name).await.map_err(plain)?,
                ),
                (["formation"], &Method::PATCH) => {
                    let body: FormationUpdates = read_json(req).await.map_err(plain)?;
                    json(
                        StatusCode::OK,
                        &platform.scale(name, body).await.map_err(plain)?,
                    )
                }
                (["formation"], _) => Err(not_allowed("GET, PATCH")),
                (["dynos"], &Method::GET) => {
                    json(StatusCode::OK, &platform.dynos(name).await.map_err(plain)?)
                }
                (["dynos"], _) => Err(not_allowed("GET, POST, DELETE")),
                (["logs"], &Method::GET) => {
                    let query = LogQuery::parse(req.uri().query().unwrap_or("")).map_err(plain)?;
                    if query.tail {
                        // The recent lines, then every new one, a line per chunk, until the
                        // client goes away.
                        let lines = platform.tail(name, query).await.map_err(plain)?;
                        let mut resp = Response::new(LinesBody(lines).boxed());
                        resp.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; charset=utf-8"),
                        );
                        return Ok(resp);
                    }
                    json(
                        StatusCode::OK,
                        &platform.logs(name, query).await.map_err(plain)?,
                    )
                }
                (["logs"], _) => Err(not_allowed("GET")),
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
                _ => Err(plain(ApiError::no_such_endpoint(method.as_str(), &path))),
            }
        }
        _ => Err(plain(ApiError::no_such_endpoint(method.as_str(), &path))),
    }
}

fn plain(e: ApiError) -> Failure {
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
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
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

fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Resp, Failure> {
    let body = serde_json::to_vec(value).map_err(|e| plain(ApiError::internal(e)))?;
    Ok(response(status, body))
}

fn response(status: StatusCode, body: Vec<u8>) -> Resp {
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

/// A streamed body of text lines.
struct LinesBody(tokio::sync::mpsc::Receiver<String>);

impl hyper::body::Body for LinesBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|line| {
            line.map(|mut l| {
                l.push('\n');
                Ok(hyper::body::Frame::data(Bytes::from(l)))
            })
        })
    }
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
