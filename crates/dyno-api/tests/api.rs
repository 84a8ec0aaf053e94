//! The API end to end over loopback: a unix socket in a temp dir (and 127.0.0.1 for TCP), an
//! in-memory `Platform`, requests through `ApiClient` (raw bytes where a client would not send
//! such a request).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dyno_api::{
    bind_unix, serve_tcp, serve_unix, serve_unix_listener, ApiClient, ApiError, App, AppFeature,
    AppFeatureUpdate, AppName, ClientError, Platform, RawResponse, ServeError,
};
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

// ---------- fixtures ----------

/// The state, in memory.
#[derive(Default)]
struct Fake {
    apps: Mutex<BTreeMap<String, App>>,
    /// Apps with the one feature the fake knows on.
    featured: Mutex<std::collections::BTreeSet<String>>,
}

const FAKE_FEATURE: &str = "log-runtime-metrics";

impl Fake {
    fn feature_of(&self, name: &AppName) -> AppFeature {
        AppFeature {
            name: FAKE_FEATURE.into(),
            description: "Samples in the log.".into(),
            enabled: self.featured.lock().unwrap().contains(name.as_str()),
            ..Default::default()
        }
    }

    fn known(&self, name: &AppName, feature: &str) -> Result<(), ApiError> {
        if !self.apps.lock().unwrap().contains_key(name.as_str()) {
            return Err(ApiError::app_not_found(name.as_str()));
        }
        if feature != FAKE_FEATURE {
            return Err(ApiError::not_found(format!(
                "No feature {feature}: there is {FAKE_FEATURE}."
            )));
        }
        Ok(())
    }
}

impl Platform for Fake {
    async fn list_apps(&self) -> Result<Vec<App>, ApiError> {
        Ok(self.apps.lock().unwrap().values().cloned().collect())
    }

    async fn create_app(&self, name: AppName) -> Result<App, ApiError> {
        let mut apps = self.apps.lock().unwrap();
        if apps.contains_key(name.as_str()) {
            return Err(ApiError::name_taken(name.as_str()));
        }
        let owner = dyno_api::heroku::UserRef {
            id: "00000000-0000-4000-8000-000000000001".into(),
            email: dyno_api::heroku::ACCOUNT_EMAIL.into(),
        };
        let app = App::new(
            &name,
            "00000000-0000-4000-8000-0000000000a1",
            owner,
            SystemTime::now(),
        );
        apps.insert(name.into_string(), app.clone());
        Ok(app)
    }

    async fn destroy_app(&self, name: AppName) -> Result<App, ApiError> {
        let mut apps = self.apps.lock().unwrap();
        apps.remove(name.as_str())
            .ok_or_else(|| ApiError::app_not_found(name.as_str()))
    }

    async fn app(&self, name: AppName) -> Result<App, ApiError> {
        let apps = self.apps.lock().unwrap();
        apps.get(name.as_str())
            .cloned()
            .ok_or_else(|| ApiError::app_not_found(name.as_str()))
    }

    async fn features(&self, name: AppName) -> Result<Vec<AppFeature>, ApiError> {
        self.known(&name, FAKE_FEATURE)?;
        Ok(vec![self.feature_of(&name)])
    }

    async fn feature(&self, name: AppName, feature: String) -> Result<AppFeature, ApiError> {
        self.known(&name, &feature)?;
        Ok(self.feature_of(&name))
    }

    async fn update_feature(
        &self,
        name: AppName,
        feature: String,
        update: AppFeatureUpdate,
    ) -> Result<AppFeature, ApiError> {
        self.known(&name, &feature)?;
        let mut featured = self.featured.lock().unwrap();
        if update.enabled {
            featured.insert(name.to_string());
        } else {
            featured.remove(name.as_str());
        }
        drop(featured);
        Ok(self.feature_of(&name))
    }
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dyno-api-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server on a unix socket in its own temp dir; stopped on drop.
struct Server {
    task: JoinHandle<()>,
    sock: PathBuf,
    client: ApiClient,
    fake: Arc<Fake>,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(tag: &str) -> Server {
    let dir = TempDir::new(tag);
    let sock = dir.0.join("api.sock");
    let fake = Arc::new(Fake::default());
    let listener = bind_unix(&sock).await.unwrap();
    let task = tokio::spawn(serve_unix_listener(listener, fake.clone()));
    Server {
        task,
        client: ApiClient::unix(&sock),
        sock,
        fake,
        _dir: dir,
    }
}

fn api_err(r: Result<impl std::fmt::Debug, ClientError>) -> ApiError {
    match r {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn body_err(r: &RawResponse) -> ApiError {
    ApiError::from_json(r.status, &r.body)
        .unwrap_or_else(|| panic!("not an error body: {:?}", String::from_utf8_lossy(&r.body)))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn names(apps: &[App]) -> Vec<&str> {
    apps.iter().map(|a| a.name.as_str()).collect()
}

// ---------- unix socket, round trip ----------

#[tokio::test]
async fn socket_is_0600_and_apps_round_trip() {
    let s = start("roundtrip").await;
    let meta = std::fs::symlink_metadata(&s.sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&s.sock), 0o600);
    // The private directory used for binding is gone.
    let left: Vec<_> = std::fs::read_dir(s.sock.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("api.sock")]);

    let c = &s.client;
    assert_eq!(c.list_apps().await.unwrap(), vec![]);

    let created = c.create_app("my-app").await.unwrap();
    assert_eq!(created.name, "my-app");
    assert_eq!(created.web_url, "http://my-app.localhost:8080/");
    assert!(!created.maintenance);
    assert_eq!(created.created_at.len(), "2026-11-25T10:00:00Z".len());
    assert!(created.created_at.ends_with('Z'), "{}", created.created_at);

    // The raw answer: 201 and JSON with exactly the documented fields.
    let raw = c
        .request(Method::GET, "/apps/my-app", None, Bytes::new())
        .await
        .unwrap();
    assert_eq!(raw.status, 200);
    assert_eq!(raw.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    for key in [
        "created_at",
        "maintenance",
        "name",
        "web_url",
        "id",
        "owner",
        "region",
        "stack",
        "build_stack",
        "repo_size",
        "slug_size",
        "create_status",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing: {keys:?}");
    }
    assert!(raw.headers.contains_key("request-id"), "{:?}", raw.headers);

    c.create_app("other-app").await.unwrap();
    let listed = c.list_apps().await.unwrap();
    assert_eq!(names(&listed), ["my-app", "other-app"]);
    assert_eq!(listed[0], created);
    assert_eq!(c.app("my-app").await.unwrap(), created);

    assert_eq!(c.destroy_app("my-app").await.unwrap(), created);
    let e = api_err(c.app("my-app").await);
    assert_eq!((e.status, e.id), (404, "not_found"));
    assert_eq!(names(&c.list_apps().await.unwrap()), ["other-app"]);

    // Generic calls give the same as the typed ones.
    let v: serde_json::Value = c.get("/apps").await.unwrap();
    assert_eq!(v[0]["name"], "other-app");
}

#[tokio::test]
async fn duplicate_name_is_refused_as_heroku_does() {
    let s = start("dup").await;
    let first = s.client.create_app("taken").await.unwrap();
    let e = api_err(s.client.create_app("taken").await);
    assert_eq!((e.status, e.id), (422, "invalid_params"));
    assert_eq!(
        e.message,
        "Name \"taken\" is already taken. Choose another name."
    );
    assert_eq!(s.client.list_apps().await.unwrap(), vec![first]);
}

// ---------- bad input: 4xx, clear message, state unchanged ----------

const BAD_NAMES: [&str; 16] = [
    "",
    "ab",
    "abcdefghijklmnopqrstuvwxyz01234", // 31
    "Bad_Name",
    "MyApp",
    "1app",
    "-app",
    "app_1",
    "my.app",
    "my app",
    "ápp",
    "app-😀",
    "../x",
    "app\n",
    "abc\0",
    "%61pp",
];

#[tokio::test]
async fn invalid_names_are_422_and_change_nothing() {
    let s = start("names").await;
    let c = &s.client;
    c.create_app("seed-app").await.unwrap();
    let before = c.list_apps().await.unwrap();

    for bad in BAD_NAMES {
        let e = api_err(c.create_app(bad).await);
        assert_eq!(
            (e.status, e.id),
            (422, "invalid_params"),
            "POST {bad:?}: {e:?}"
        );
        assert!(
            e.message
                .starts_with("Name must start with a letter and contain only lowercase"),
            "{bad:?}: {}",
            e.message
        );
        assert!(
            e.message.contains(&format!("got {bad:?}")),
            "{bad:?}: {}",
            e.message
        );

        // In the path too, where a URI can carry it (`/apps/../x` has `..` as its name).
        if bad.bytes().all(|b| b.is_ascii_graphic()) {
            for method in [Method::GET, Method::DELETE] {
                let path = format!("/apps/{bad}");
                let r = c
                    .request(method.clone(), &path, None, Bytes::new())
                    .await
                    .unwrap();
                let e = body_err(&r);
                assert_eq!((r.status, e.id), (422, "invalid_params"), "{method} {path}");
            }
        }
    }
    assert_eq!(c.list_apps().await.unwrap(), before);
    assert_eq!(s.fake.apps.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_bodies_are_4xx_and_change_nothing() {
    let s = start("bodies").await;
    let c = &s.client;
    c.create_app("seed-app").await.unwrap();
    let before = c.list_apps().await.unwrap();
    let json = Some("application/json");
    let cases: Vec<(Option<&str>, Bytes, u16, &str, &str)> = vec![
        (json, Bytes::from_static(b"{\"name\":"), 400, "bad_request", "Request body is not valid JSON"),
        (json, Bytes::from_static(b"not json"), 400, "bad_request", "Request body is not valid JSON"),
        (json, Bytes::new(), 400, "bad_request", "Request body is not valid JSON"),
        (json, Bytes::from_static(b"{\"nmae\":\"my-app\"}"), 422, "invalid_params", "Request body has the wrong fields: unknown field `nmae`"),
        (json, Bytes::from_static(b"{}"), 422, "invalid_params", "Request body has the wrong fields: missing field `name`"),
        (json, Bytes::from_static(b"{\"name\":42}"), 422, "invalid_params", "Request body has the wrong fields"),
        (json, Bytes::from_static(b"[\"my-app\"]"), 422, "invalid_params", "Request body must be a JSON object such as {\"name\":\"my-app\"}: got an array."),
        (json, Bytes::from_static(b"null"), 422, "invalid_params", "Request body must be a JSON object"),
        (json, Bytes::from_static(b"{\"name\":\"my-app\"} trailing"), 400, "bad_request", "Request body is not valid JSON"),
        (Some("text/plain"), Bytes::from_static(b"{\"name\":\"my-app\"}"), 415, "bad_request", "Request bodies must be JSON: send `Content-Type: application/json` (got \"text/plain\")."),
        (None, Bytes::from_static(b"{\"name\":\"my-app\"}"), 415, "bad_request", "Request bodies must be JSON: send `Content-Type: application/json` (got no Content-Type)."),
        (json, Bytes::from(vec![b' '; 2 << 20]), 413, "request_too_large", "Request body is larger than 1 MiB. Send a smaller body."),
    ];
    for (ct, body, status, id, message) in cases {
        let len = body.len();
        let r = c.request(Method::POST, "/apps", ct, body).await.unwrap();
        assert_eq!(r.status, status, "{ct:?} {len} bytes: {r:?}");
        let e = body_err(&r);
        assert_eq!(e.id, id, "{ct:?} {len} bytes: {}", e.message);
        assert!(e.message.starts_with(message), "{}", e.message);
    }
    // A JSON body of exactly the limit is read (and then refused for its content, not its size).
    let mut at_limit = vec![b' '; dyno_api::MAX_BODY_BYTES];
    at_limit[..2].copy_from_slice(b"{}");
    let r = c
        .request(Method::POST, "/apps", json, at_limit.into())
        .await
        .unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(c.list_apps().await.unwrap(), before);
}

/// 2 MiB sent chunked (no Content-Length): cut off at 1 MiB while reading.
#[tokio::test]
async fn chunked_huge_body_is_413() {
    let s = start("chunked").await;
    let mut stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
    let head = "POST /apps HTTP/1.1\r\nHost: dyno\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    // The server stops reading once it is over the limit: ignore write errors after that.
    for _ in 0..32 {
        let mut msg = format!("{:x}\r\n", chunk.len()).into_bytes();
        msg.extend_from_slice(&chunk);
        msg.extend_from_slice(b"\r\n");
        if stream.write_all(&msg).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains(r#"{"id":"request_too_large","#), "{answer}");
    assert_eq!(s.client.list_apps().await.unwrap(), vec![]);
}

/// Bytes that are not HTTP get an answer (or a close), and the server goes on serving.
#[tokio::test]
async fn garbage_does_not_hurt_the_server() {
    let s = start("garbage").await;
    for junk in [
        &b"\x00\xff\xfe garbage\r\n\r\n"[..],
        b"GET /apps HTTP/9.9\r\n\r\n",
        b"\r\n\r\n\r\n",
    ] {
        let mut stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
        stream.write_all(junk).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
    s.client.create_app("still-up").await.unwrap();
    assert_eq!(names(&s.client.list_apps().await.unwrap()), ["still-up"]);
}

#[tokio::test]
async fn unknown_app_is_404() {
    let s = start("unknown").await;
    for r in [
        s.client.app("no-such-app").await,
        s.client.destroy_app("no-such-app").await,
    ] {
        let e = api_err(r);
        assert_eq!((e.status, e.id), (404, "not_found"));
        assert_eq!(
            e.message,
            "Couldn't find that app: \"no-such-app\". List your apps with `dyno apps`."
        );
    }
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_405() {
    let s = start("routes").await;
    let c = &s.client;
    c.create_app("my-app").await.unwrap();
    for (method, path) in [
        (Method::GET, "/x"),
        (Method::GET, "/"),
        (Method::GET, "/apps/my-app/nope"),
        (Method::POST, "/apps/my-app/nope"),
        (Method::GET, "/apps?x=1/"),
    ] {
        let r = c
            .request(method.clone(), path, None, Bytes::new())
            .await
            .unwrap();
        if path.starts_with("/apps?") {
            // The query is ignored: this is `GET /apps`.
            assert_eq!(r.status, 200);
            continue;
        }
        let e = body_err(&r);
        assert_eq!((r.status, e.id), (404, "not_found"), "{method} {path}");
        assert_eq!(
            e.message,
            format!("No such endpoint: {method} {path}. See `dyno --help`.")
        );
    }
    for (method, path, allow) in [
        (Method::PUT, "/apps", "GET, POST"),
        (Method::DELETE, "/apps", "GET, POST"),
        (Method::POST, "/apps/my-app", "GET, PATCH, DELETE"),
        (Method::PUT, "/apps/my-app", "GET, PATCH, DELETE"),
        (Method::PUT, "/apps/my-app/config-vars", "GET, PATCH"),
        (Method::PUT, "/apps/my-app/releases", "GET, POST"),
        (Method::PUT, "/apps/my-app/dynos", "GET, POST, DELETE"),
    ] {
        let r = c
            .request(method.clone(), path, None, Bytes::new())
            .await
            .unwrap();
        let e = body_err(&r);
        assert_eq!(
            (r.status, e.id),
            (405, "method_not_allowed"),
            "{method} {path}"
        );
        assert_eq!(r.headers["allow"], allow);
        assert_eq!(
            e.message,
            format!("Method {method} is not allowed on {path}. Use one of: {allow}.")
        );
    }
    assert_eq!(names(&c.list_apps().await.unwrap()), ["my-app"]);
}

#[tokio::test]
async fn features_are_listed_read_and_switched() {
    let s = start("features").await;
    let c = &s.client;
    c.create_app("my-app").await.unwrap();
    let list = c.features("my-app").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].enabled),
        (FAKE_FEATURE, false)
    );
    let on = c.set_feature("my-app", FAKE_FEATURE, true).await.unwrap();
    assert!(on.enabled);
    let read: AppFeature = c
        .get(&format!("/apps/my-app/features/{FAKE_FEATURE}"))
        .await
        .unwrap();
    assert!(read.enabled);
    assert!(
        !c.set_feature("my-app", FAKE_FEATURE, false)
            .await
            .unwrap()
            .enabled
    );
    // An unknown feature: the platform's 404, whose message names the features there are.
    let e = api_err(c.set_feature("my-app", "preboot", true).await);
    assert_eq!((e.status, e.id), (404, "not_found"));
    assert!(e.message.contains(FAKE_FEATURE), "{}", e.message);
    // Not a feature name at all: refused before the platform sees it.
    let r = c
        .request(
            Method::GET,
            "/apps/my-app/features/Bad%20Name",
            None,
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!((r.status, body_err(&r).id), (422, "invalid_params"));
    // The body is `{"enabled": bool}` and nothing else.
    for body in [r#"{"enabled":"yes"}"#, r#"{"enabled":true,"x":1}"#, r#"{}"#] {
        let r = c
            .request(
                Method::PATCH,
                &format!("/apps/my-app/features/{FAKE_FEATURE}"),
                Some("application/json"),
                Bytes::from(body),
            )
            .await
            .unwrap();
        assert_eq!(
            (r.status, body_err(&r).id),
            (422, "invalid_params"),
            "{body}"
        );
    }
    for (method, path, allow) in [
        (Method::POST, "/apps/my-app/features".to_string(), "GET"),
        (
            Method::DELETE,
            format!("/apps/my-app/features/{FAKE_FEATURE}"),
            "GET, PATCH",
        ),
    ] {
        let r = c.request(method, &path, None, Bytes::new()).await.unwrap();
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.headers["allow"], allow);
    }
    let e = api_err(c.features("ghost-app").await);
    assert_eq!((e.status, e.id), (404, "not_found"));
    assert!(!s.fake.featured.lock().unwrap().contains("my-app"));
}

/// A store that fails: its errors go out as they are, a panic is a 500 and the server lives on.
struct Broken;

impl Platform for Broken {
    async fn list_apps(&self) -> Result<Vec<App>, ApiError> {
        panic!("bug in the store")
    }

    async fn create_app(&self, _: AppName) -> Result<App, ApiError> {
        Err(ApiError::read_only("attempt to write a readonly database"))
    }

    async fn destroy_app(&self, _: AppName) -> Result<App, ApiError> {
        Err(ApiError::disk_full("database or disk is full"))
    }

    async fn app(&self, _: AppName) -> Result<App, ApiError> {
        Err(ApiError::internal("no such table: apps"))
    }
}

#[tokio::test]
async fn platform_errors_and_panics_become_answers() {
    let dir = TempDir::new("broken");
    let sock = dir.0.join("api.sock");
    let listener = bind_unix(&sock).await.unwrap();
    let task = tokio::spawn(serve_unix_listener(listener, Arc::new(Broken)));
    let c = ApiClient::unix(&sock);
    for _ in 0..2 {
        let e = api_err(c.list_apps().await);
        assert_eq!((e.status, e.id), (500, "internal_error"), "{e:?}");
    }
    let e = api_err(c.create_app("my-app").await);
    assert_eq!((e.status, e.id), (503, "read_only"));
    assert!(
        e.message.contains("attempt to write a readonly database"),
        "{}",
        e.message
    );
    let e = api_err(c.destroy_app("my-app").await);
    assert_eq!((e.status, e.id), (507, "disk_full"));
    let e = api_err(c.app("my-app").await);
    assert_eq!((e.status, e.id), (500, "internal_error"));
    assert!(e.message.contains("no such table: apps"));
    task.abort();
}

// ---------- TCP with a bearer token ----------

#[tokio::test]
async fn tcp_needs_the_bearer_token() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Fake::default());
    let task = tokio::spawn(serve_tcp(listener, TOKEN, fake.clone()));
    struct Abort(JoinHandle<Result<(), ServeError>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _task = Abort(task);

    for token in ["", "wrong", &TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}x")] {
        let c = ApiClient::tcp(addr, token);
        let r = c
            .request(Method::GET, "/apps", None, Bytes::new())
            .await
            .unwrap();
        let e = body_err(&r);
        assert_eq!((r.status, e.id), (401, "unauthorized"), "token {token:?}");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        // Checked before the body is looked at, and nothing changes.
        let e = api_err(c.create_app("sneaky").await);
        assert_eq!(e.status, 401);
    }
    assert!(fake.apps.lock().unwrap().is_empty());

    let c = ApiClient::tcp(addr, TOKEN);
    assert_eq!(c.list_apps().await.unwrap(), vec![]);
    let r = c
        .request(Method::GET, "/apps", None, Bytes::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    c.create_app("over-tcp").await.unwrap();
    assert_eq!(names(&c.list_apps().await.unwrap()), ["over-tcp"]);
}

#[tokio::test]
async fn tcp_refuses_a_short_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve_tcp(listener, "short", Arc::new(Fake::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::WeakToken { len: 5 }), "{err:?}");
    assert!(err.to_string().contains("openssl rand -hex 32"), "{err}");
}

// ---------- socket file lifecycle ----------

#[tokio::test]
async fn second_daemon_on_a_live_socket_fails_clearly() {
    let s = start("live").await;
    s.client.create_app("first-one").await.unwrap();
    let err = serve_unix(&s.sock, Arc::new(Fake::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::AlreadyListening(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "another daemon listens on {}; stop it first (or give this one another socket path)",
            s.sock.display()
        )
    );
    // The first daemon is untouched.
    assert_eq!(names(&s.client.list_apps().await.unwrap()), ["first-one"]);
    assert_eq!(mode(&s.sock), 0o600);
}

/// A killed daemon's socket may live on for a moment in a process that inherited it (a child
/// between fork and exec): connects queue there, nothing answers. That is not a daemon.
#[tokio::test]
async fn a_socket_that_accepts_but_never_answers_is_replaced() {
    let dir = TempDir::new("mute");
    let sock = dir.0.join("api.sock");
    let mute = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let listener = bind_unix(&sock).await.unwrap();
    let task = tokio::spawn(serve_unix_listener(listener, Arc::new(Fake::default())));
    let client = ApiClient::unix(&sock);
    client.create_app("after-mute").await.unwrap();
    task.abort();
    let _ = task.await;
    drop(mute);
}

#[tokio::test]
async fn stale_socket_is_replaced_and_other_files_are_not() {
    let dir = TempDir::new("stale");
    let sock = dir.0.join("api.sock");
    // A socket file nobody listens on, as a killed daemon leaves it (and with a loose mode).
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let client = ApiClient::unix(&sock);
    let e = client.list_apps().await.unwrap_err();
    assert!(e.to_string().contains("Connection refused"), "{e}");

    let listener = bind_unix(&sock).await.unwrap();
    assert_eq!(mode(&sock), 0o600);
    let fake = Arc::new(Fake::default());
    let task = tokio::spawn(serve_unix_listener(listener, fake));
    client.create_app("after-stale").await.unwrap();
    assert_eq!(names(&client.list_apps().await.unwrap()), ["after-stale"]);
    task.abort();
    let _ = task.await;
    // Stopping removes the socket file it created.
    assert!(!sock.exists());

    // A regular file is never replaced.
    std::fs::write(&sock, b"precious").unwrap();
    let err = bind_unix(&sock).await.unwrap_err();
    assert!(matches!(err, ServeError::NotASocket { .. }), "{err:?}");
    assert!(
        err.to_string().contains("exists and is not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
}

#[tokio::test]
async fn client_says_how_to_start_the_daemon() {
    let dir = TempDir::new("nodaemon");
    let sock = dir.0.join("api.sock");
    let err = ApiClient::unix(&sock).list_apps().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach the dyno daemon at {}: No such file or directory; start it with \
             `dyno serve`",
            sock.display()
        )
    );
    assert!(matches!(err, ClientError::Connect { .. }));
}
