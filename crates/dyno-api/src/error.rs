//! API errors, written as Heroku's Platform API writes them:
//!
//! ```json
//! {"id":"not_found","message":"Couldn't find that app: \"my-app\". List your apps with `dyno apps`."}
//! ```
//!
//! `id` is stable (scripts match on it, see [`ids`]); `message` is for people and says what to do.
//! The HTTP status travels as the response status, not in the body.

pub use dyno_error::ErrorKind;
use serde::{Deserialize, Serialize};

/// The stable error ids. Never rename one: scripts match on them.
pub mod ids {
    /// 422: a field is present and well-formed JSON but its value is not allowed.
    pub const INVALID_PARAMS: &str = "invalid_params";
    /// 400 (415 for a wrong `Content-Type`): the request cannot be read (invalid JSON, …).
    pub const BAD_REQUEST: &str = "bad_request";
    /// 404: no such app (or other object), or no such endpoint.
    pub const NOT_FOUND: &str = "not_found";
    /// 409: the request conflicts with the state (a name already taken, …).
    pub const CONFLICT: &str = "conflict";
    /// 413: the request body is over the limit.
    pub const REQUEST_TOO_LARGE: &str = "request_too_large";
    /// 401: missing or wrong bearer token (TCP listener only).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 405: the endpoint exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 503: the state store cannot be written (read-only file system, …).
    pub const READ_ONLY: &str = "read_only";
    /// 507 (Insufficient Storage): the state store's disk is full.
    pub const DISK_FULL: &str = "disk_full";
    /// 422: the Procfile's `release` command failed on the new slug; nothing was released.
    pub const RELEASE_FAILED: &str = "release_failed";
    /// 500: a bug or an unexpected failure in the daemon.
    pub const INTERNAL_ERROR: &str = "internal_error";
    /// Client side only: the server sent an id this client does not know (a newer daemon).
    pub const UNKNOWN: &str = "unknown_error";

    /// Every id a server of this version sends.
    pub const ALL: [&str; 11] = [
        INVALID_PARAMS,
        BAD_REQUEST,
        NOT_FOUND,
        CONFLICT,
        REQUEST_TOO_LARGE,
        UNAUTHORIZED,
        METHOD_NOT_ALLOWED,
        READ_ONLY,
        DISK_FULL,
        RELEASE_FAILED,
        INTERNAL_ERROR,
    ];
}

/// The one table from a failure's kind to the API's status and error id.
pub fn status_and_id(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidParams => (422, ids::INVALID_PARAMS),
        ErrorKind::NotFound => (404, ids::NOT_FOUND),
        ErrorKind::Conflict | ErrorKind::Locked => (409, ids::CONFLICT),
        ErrorKind::ReadOnly => (503, ids::READ_ONLY),
        ErrorKind::DiskFull => (507, ids::DISK_FULL),
        ErrorKind::ReleaseFailed => (422, ids::RELEASE_FAILED),
        ErrorKind::Busy | ErrorKind::PoolExhausted => (503, ids::INTERNAL_ERROR),
        ErrorKind::Corrupt | ErrorKind::SchemaTooNew | ErrorKind::Internal => {
            (500, ids::INTERNAL_ERROR)
        }
    }
}

/// An error answer of the API. Serialises to `{"id":…,"message":…}`; `status` is the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub id: &'static str,
    pub message: String,
}

/// The body as it travels, for decoding on the client side.
#[derive(Deserialize)]
struct Wire {
    id: String,
    message: String,
}

impl ApiError {
    pub fn new(status: u16, id: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }

    /// 422 `invalid_params`.
    pub fn invalid_params(message: impl Into<String>) -> ApiError {
        ApiError::new(422, ids::INVALID_PARAMS, message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, ids::BAD_REQUEST, message)
    }

    /// 415 with id `bad_request`: a body that is not `application/json`.
    pub fn unsupported_media_type(got: Option<&str>) -> ApiError {
        let got = match got {
            Some(v) => format!("got {}", quote(v)),
            None => "got no Content-Type".to_owned(),
        };
        ApiError::new(
            415,
            ids::BAD_REQUEST,
            format!("Request bodies must be JSON: send `Content-Type: application/json` ({got})."),
        )
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, ids::NOT_FOUND, message)
    }

    /// 404 `not_found` for an app name (already validated or not).
    pub fn app_not_found(name: &str) -> ApiError {
        ApiError::not_found(format!(
            "Couldn't find that app: {}. List your apps with `dyno apps`.",
            quote(name)
        ))
    }

    /// 404 `not_found` for a path the API does not have.
    pub fn no_such_endpoint(method: &str, path: &str) -> ApiError {
        ApiError::not_found(format!(
            "No such endpoint: {} {}. See `dyno --help`.",
            clip(method, 16),
            clip(path, 100)
        ))
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, ids::CONFLICT, message)
    }

    /// 422 `invalid_params`: an app of that name exists (Heroku's answer, which its CLI shows).
    pub fn name_taken(name: &str) -> ApiError {
        ApiError::invalid_params(format!(
            "Name {} is already taken. Choose another name.",
            quote(name)
        ))
    }

    /// 413 `request_too_large`.
    pub fn request_too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            ids::REQUEST_TOO_LARGE,
            format!(
                "Request body is larger than {}. Send a smaller body.",
                human_bytes(limit)
            ),
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            ids::UNAUTHORIZED,
            "Missing or wrong API token. Send `Authorization: Bearer <token>` with the token the \
             daemon's TCP listener was started with.",
        )
    }

    /// 405 `method_not_allowed`; `allowed` like `"GET, POST"`.
    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> ApiError {
        ApiError::new(
            405,
            ids::METHOD_NOT_ALLOWED,
            format!(
                "Method {} is not allowed on {}. Use one of: {allowed}.",
                clip(method, 16),
                clip(path, 100)
            ),
        )
    }

    /// 503 `read_only`: the store refuses writes. `detail` says why (e.g. the file system error).
    pub fn read_only(detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            503,
            ids::READ_ONLY,
            format!(
                "The dyno daemon cannot write its state ({detail}). Nothing was changed; fix the \
                 state directory (permissions, read-only mount) and retry."
            ),
        )
    }

    /// 507 `disk_full` (Insufficient Storage, WebDAV's status for "the server cannot store
    /// what is needed to complete the request").
    pub fn disk_full(detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            507,
            ids::DISK_FULL,
            format!(
                "The dyno daemon's disk is full ({detail}). Nothing was changed; free some space \
                 and retry."
            ),
        )
    }

    /// An error of the daemon's state layer, by its stable id (`dyno_state::StateError::id`),
    /// with its message as it is: the id decides the status and the API's id. Ids the API has
    /// no name for (`busy`, `pool_exhausted`, `corrupt`, …) go out as `internal_error`, with 503
    /// when retrying later can help.
    pub fn from_kind(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        let (status, id) = status_and_id(kind);
        ApiError::new(status, id, message)
    }

    /// 500 `internal_error`.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            500,
            ids::INTERNAL_ERROR,
            format!(
                "Internal error in the dyno daemon: {detail}. Check the daemon's log; please \
                 report it if it persists."
            ),
        )
    }

    /// The JSON body, `{"id":…,"message":…}`.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising two strings cannot fail; keep a fallback anyway rather than panic.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"id":"internal_error","message":"error body could not be encoded"}"#.to_vec()
        })
    }

    /// Decode an error body received with HTTP `status`; `None` if it is not an API error body.
    /// An id this version does not know becomes [`ids::UNKNOWN`], its text kept in the message.
    pub fn from_json(status: u16, body: &[u8]) -> Option<ApiError> {
        let wire: Wire = serde_json::from_slice(body).ok()?;
        let id = ids::ALL.iter().find(|id| **id == wire.id).copied();
        Some(match id {
            Some(id) => ApiError::new(status, id, wire.message),
            None => ApiError::new(
                status,
                ids::UNKNOWN,
                format!("{} (error id {})", wire.message, quote(&wire.wire_id())),
            ),
        })
    }
}

impl Wire {
    fn wire_id(&self) -> String {
        clip(&self.id, 64)
    }
}

/// Quote user input for a message: Rust string escaping (control characters visible), and long
/// input shortened so an error never echoes a megabyte back.
pub(crate) fn quote(input: &str) -> String {
    const MAX: usize = 64;
    if input.chars().count() <= MAX {
        format!("{input:?}")
    } else {
        let head: String = input.chars().take(MAX).collect();
        format!("{head:?}… ({} characters)", input.chars().count())
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_like_heroku() {
        let e = ApiError::not_found("Couldn't find that app.");
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"id":"not_found","message":"Couldn't find that app."}"#
        );
    }

    #[test]
    fn decodes_known_and_unknown_ids() {
        let e = ApiError::from_json(409, br#"{"id":"conflict","message":"taken"}"#).unwrap();
        assert_eq!(
            (e.status, e.id, e.message.as_str()),
            (409, "conflict", "taken")
        );
        let e = ApiError::from_json(418, br#"{"id":"teapot","message":"short"}"#).unwrap();
        assert_eq!(e.id, ids::UNKNOWN);
        assert_eq!(e.message, r#"short (error id "teapot")"#);
        assert!(ApiError::from_json(500, b"<html>").is_none());
    }

    /// Every kind maps to one id and status, each id is one a client knows (so it decodes
    /// back to itself, not to `unknown_error`), and the message goes through unchanged.
    #[test]
    fn every_error_kind_maps_to_one_id_and_status() {
        let table = [
            (ErrorKind::InvalidParams, 422, ids::INVALID_PARAMS),
            (ErrorKind::NotFound, 404, ids::NOT_FOUND),
            (ErrorKind::Conflict, 409, ids::CONFLICT),
            (ErrorKind::Locked, 409, ids::CONFLICT),
            (ErrorKind::ReadOnly, 503, ids::READ_ONLY),
            (ErrorKind::DiskFull, 507, ids::DISK_FULL),
            (ErrorKind::ReleaseFailed, 422, ids::RELEASE_FAILED),
            (ErrorKind::Busy, 503, ids::INTERNAL_ERROR),
            (ErrorKind::PoolExhausted, 503, ids::INTERNAL_ERROR),
            (ErrorKind::Corrupt, 500, ids::INTERNAL_ERROR),
            (ErrorKind::SchemaTooNew, 500, ids::INTERNAL_ERROR),
            (ErrorKind::Internal, 500, ids::INTERNAL_ERROR),
        ];
        assert_eq!(
            table.map(|(kind, _, _)| kind),
            ErrorKind::ALL,
            "the table covers every kind, in order"
        );
        for (kind, status, id) in table {
            let e = ApiError::from_kind(kind, "why; what to do");
            assert_eq!((e.status, e.id), (status, id), "{kind}");
            assert_eq!(e.message, "why; what to do");
            let back = ApiError::from_json(e.status, &e.to_json()).unwrap();
            assert_eq!(back, e, "{kind} decodes back to itself");
        }
        assert_eq!(ApiError::disk_full("x").status, 507);
    }

    #[test]
    fn long_input_is_shortened() {
        let long = "x".repeat(10_000);
        let e = ApiError::app_not_found(&long);
        assert!(e.message.len() < 200, "{}", e.message);
        assert!(e.message.contains("(10000 characters)"));
        assert_eq!(quote("a\nb"), r#""a\nb""#);
        assert_eq!(
            ApiError::request_too_large(1 << 20).message,
            "Request body is larger than 1 MiB. Send a smaller body."
        );
    }
}
