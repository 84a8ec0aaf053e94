//! Unit tests of the git bridge's parsing: paths, credentials, CGI header blocks.

use super::cgi::{parse_cgi_head, MAX_CGI_HEAD};
use super::*;

#[test]
fn git_paths() {
    assert_eq!(
        parse_path("/my-app.git/info/refs"),
        Some(("my-app", GitAction::InfoRefs))
    );
    assert_eq!(
        parse_path("/my-app.git/git-receive-pack"),
        Some(("my-app", GitAction::ReceivePack))
    );
    assert_eq!(
        parse_path("/my-app.git/git-upload-pack"),
        Some(("my-app", GitAction::UploadPack))
    );
    assert_eq!(
        parse_path("/my-app.git/HEAD"),
        Some(("my-app", GitAction::Other))
    );
    assert_eq!(
        parse_path("/my-app.git/objects/info/packs"),
        Some(("my-app", GitAction::Other))
    );
    // Not git's: the API's own paths, and names without `.git`.
    for path in [
        "/apps",
        "/apps/my-app",
        "/my-app.git",
        "/.git/info/refs",
        "/",
        "",
    ] {
        assert_eq!(parse_path(path), None, "{path}");
    }
}

#[test]
fn services_in_queries() {
    assert_eq!(
        service_of("service=git-receive-pack"),
        Some("git-receive-pack")
    );
    assert_eq!(
        service_of("x=1&service=git-upload-pack"),
        Some("git-upload-pack")
    );
    assert_eq!(service_of("service=git-shell"), None);
    assert_eq!(service_of(""), None);
}

fn auth(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    h
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

#[test]
fn basic_credentials_carry_the_token_as_password() {
    assert_eq!(
        credential(&auth(&basic("heroku:s3cret-token"))),
        Some(Credential::Basic {
            user: "heroku".into(),
            password: b"s3cret-token".to_vec()
        })
    );
    // The password may hold colons; the user name may be empty.
    assert_eq!(
        credential(&auth(&basic(":a:b"))).map(|c| c.secret().to_vec()),
        Some(b"a:b".to_vec())
    );
    // Any case of the scheme, as HTTP says.
    assert!(credential(&auth(&basic("u:p").replace("Basic", "bAsIc"))).is_some());
    assert_eq!(
        credential(&auth("Bearer tok")),
        Some(Credential::Bearer(b"tok".to_vec()))
    );
    for bad in ["Basic", "Basic !!!", "Digest abc", "Basicabc", ""] {
        assert_eq!(credential(&auth(bad)), None, "{bad:?}");
    }
    // No colon: no password.
    assert_eq!(credential(&auth(&basic("justuser"))), None);
    assert_eq!(credential(&HeaderMap::new()), None);
}

#[test]
fn remote_user_is_a_plain_basic_user_name() {
    assert_eq!(user_of(&auth(&basic("heroku:x"))), "heroku");
    assert_eq!(user_of(&auth(&basic(":x"))), "dyno");
    assert_eq!(user_of(&auth(&basic("a b:x"))), "dyno");
    assert_eq!(user_of(&auth("Bearer x")), "dyno");
    assert_eq!(user_of(&HeaderMap::new()), "dyno");
}

#[test]
fn cgi_heads() {
    let out = b"Expires: Fri, 01 Jan 1980 00:00:00 GMT\r\nPragma: no-cache\r\n\
        Content-Type: application/x-git-receive-pack-advertisement\r\n\r\n001f# service";
    let (head, at) = parse_cgi_head(out).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(&out[at..], b"001f# service");
    let names: Vec<_> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["expires", "pragma", "content-type"]);
    assert_eq!(
        head.headers[2].1,
        "application/x-git-receive-pack-advertisement"
    );

    // `Status:` sets the status; bare `\n` line ends; headers that are the server's are left out.
    let out = b"Status: 404 Not Found\nContent-Length: 9\nConnection: close\n\nnot found";
    let (head, at) = parse_cgi_head(out).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert!(head.headers.is_empty());
    assert_eq!(&out[at..], b"not found");

    // Incomplete: more to read.
    assert!(parse_cgi_head(b"Content-Type: text/plain\r\n")
        .unwrap()
        .is_none());
    assert!(parse_cgi_head(b"Content-Ty").unwrap().is_none());
    assert!(parse_cgi_head(b"").unwrap().is_none());

    // Broken.
    assert!(matches!(
        parse_cgi_head(b"no colon here\n\n"),
        Err(CgiError::BadLine(_))
    ));
    assert!(matches!(
        parse_cgi_head(b"Status: teapot\n\n"),
        Err(CgiError::BadStatus(_))
    ));
    assert!(matches!(
        parse_cgi_head(b"Status: 99\n\n"),
        Err(CgiError::BadStatus(_))
    ));
    let endless = format!("X-A: {}\n", "a".repeat(MAX_CGI_HEAD));
    assert!(matches!(
        parse_cgi_head(endless.as_bytes()),
        Err(CgiError::HeadTooLarge)
    ));
    let unterminated = vec![b'a'; MAX_CGI_HEAD + 1];
    assert!(matches!(
        parse_cgi_head(&unterminated),
        Err(CgiError::HeadTooLarge)
    ));
}

#[test]
fn git_urls_name_the_api() {
    let app = |git_url: Option<&str>| {
        let name = AppName::new("my-app").unwrap();
        let mut app = App::new(&name, "id", Default::default(), std::time::UNIX_EPOCH);
        app.git_url = git_url.map(str::to_owned);
        app
    };
    assert_eq!(
        with_git_url(app(None), Some("https://127.0.0.1:5000")).git_url,
        Some("https://127.0.0.1:5000/my-app.git".into())
    );
    assert_eq!(with_git_url(app(None), None).git_url, None);
    // The platform's own stays.
    assert_eq!(
        with_git_url(app(Some("x")), Some("https://h")).git_url,
        Some("x".into())
    );
}

#[tokio::test]
async fn answers_are_text_in_herokus_words() {
    let body = |resp: Resp| async move {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let resp = no_such_app("nope-app");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()[hyper::header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(body(resp).await, "!\tNo such app as nope-app.\n");
    let resp = unauthorized();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()[hyper::header::WWW_AUTHENTICATE],
        "Basic realm=\"dyno\""
    );
    let text = body(resp).await;
    assert!(
        text.starts_with(
            "!\tWARNING:\n!\tDo not authenticate with username and password using git.\n"
        ),
        "{text}"
    );
}
