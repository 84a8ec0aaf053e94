//! The router end to end through `dyno up` (privileged: run as root): every backend is a real
//! app in a real dyno (`support/router_app.py`, scripted by path), every client a socket in the
//! lab host. Each test asserts the status, the body where it means something, and the router's
//! log line in Heroku's exact shape (request ids and timings masked).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

const APP_PY: &str = include_str!("support/router_app.py");
const MB: usize = 1024 * 1024;

/// A `dyno up` of the scripted app, named `rt-<tag>`, its web dyno(s) up.
struct Rig {
    // Field order is drop order: stop `dyno up` before its app dir goes.
    up: Up,
    _app: TempApp,
    name: String,
    host: String,
}

impl Rig {
    fn start(tag: &str, extra: &[&str]) -> Rig {
        Rig::start_with(tag, "web: python3 app.py\n", extra, &["web.1"])
    }

    fn start_with(tag: &str, procfile: &str, extra: &[&str], wait: &[&str]) -> Rig {
        require_root();
        let name = format!("rt-{tag}");
        let app = app_dir(&format!("rt-{tag}"), procfile);
        std::fs::write(app.join("app.py"), APP_PY).unwrap();
        let mut args = vec!["--app", name.as_str(), "--stop-grace", "2s"];
        args.extend_from_slice(extra);
        let up = Up::start(&format!("rt-{tag}"), &app, &args);
        for dyno in wait {
            up.wait_up(dyno, Duration::from_secs(30));
        }
        Rig {
            up,
            _app: app,
            host: format!("{name}.localhost"),
            name,
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.up.get_with(&self.host, path, "")
    }

    fn get_with(&self, path: &str, extra: &str) -> Reply {
        self.up.get_with(&self.host, path, extra)
    }

    /// `GET path` with a request id of our own, and the router's line for it.
    fn get_logged(&self, path: &str) -> (Reply, String) {
        static N: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "rt-{}-{:06}-request-id",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let reply = self.get_with(path, &format!("X-Request-Id: {id}\r\n"));
        (reply, self.up.router_line_for(&id))
    }

    /// The router line of a request `/echo` answered (by the `X-Request-Id` the dyno saw).
    fn line_of_echo(&self, reply: &Reply) -> String {
        let echo = echoed(reply);
        let id = echo
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no request id in {reply:?}"));
        self.up.router_line_for(id)
    }

    /// The only router line with `code=<code>`, waited for.
    fn error_line(&self, code: &str) -> String {
        let needle = format!("at=error code={code} ");
        let line = self
            .up
            .wait_router_line(|l| l.starts_with(&needle), Duration::from_secs(10));
        let count = self
            .up
            .router_lines()
            .iter()
            .filter(|l| l.starts_with(&needle))
            .count();
        assert_eq!(count, 1, "{code} logged {count} times:\n{}", self.up.logs());
        line
    }

    /// Connections the app accepted so far (it logs each).
    fn accepted(&self, dyno: &str) -> usize {
        self.up
            .app_lines(dyno)
            .iter()
            .filter(|l| l.starts_with("accepted "))
            .count()
    }

    /// Waits until the app accepted `count` connections (the request reached the dyno).
    fn wait_accepted(&self, dyno: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.accepted(dyno) < count {
            assert!(
                Instant::now() < deadline,
                "{dyno} did not accept {count} connection(s):\n{}",
                self.up.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C, and nothing of the run is left.
    fn finish(mut self) {
        let status = self.up.interrupt();
        assert!(status.success(), "{status:?}\n{}", self.up.notes());
        self.up
            .assert_nothing_left(dyno_manager::up::app_uid(&self.name));
    }
}

/// What `/echo` saw: the dyno, the request line and the request headers.
struct Echo {
    dyno: String,
    request_line: String,
    headers: Vec<(String, String)>,
}

impl Echo {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn echoed(reply: &Reply) -> Echo {
    let text = reply.text();
    let mut lines = text.lines();
    let dyno = lines.next().unwrap_or_default().to_string();
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Echo {
        dyno,
        request_line,
        headers,
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `123ms` → 123.
fn millis(line: &str, key: &str) -> u64 {
    let v = value(line, key);
    v.strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key}={v} is not NNNms in {line}"))
}

/// The shape of an `at=error` line of a request that reached `dyno=web.1`.
fn error_shape(
    code: &str,
    desc: &str,
    method: &str,
    path: &str,
    host: &str,
    status: u16,
) -> String {
    format!(
        "at=error code={code} desc=\"{desc}\" method={method} path=\"{path}\" host={host} \
         request_id=* fwd=\"127.0.0.1\" dyno=web.1 connect=* service=* status={status} bytes=0 \
         protocol=http"
    )
}

const MASKED: [&str; 3] = ["request_id", "connect", "service"];

fn assert_application_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(
        reply.text().contains("Application Error"),
        "{}",
        reply.text()
    );
}

// ---- flags ------------------------------------------------------------------------------------

#[test]
fn dyno_up_help_documents_the_router_timeouts() {
    require_root();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["up", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "Router:\n",
        "--request-timeout <DURATION>",
        "H12 (503) when a dyno has sent no response byte this long after the request came in \
         (Heroku's router: 30s) [default: 30s]",
        "--idle-timeout <DURATION>",
        "(Heroku's router: 55s) [default: 55s]",
        "--header-timeout <DURATION>",
        "(slowloris) [default: 30s]",
    ] {
        assert!(help.contains(text), "missing {text:?} in:\n{help}");
    }
    // Durations are checked before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["up", ".", "--request-timeout", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("\"soon\" is not a duration like 30s, 500ms, 5m or 2h"),
        "{error}"
    );
}

// ---- headers ----------------------------------------------------------------------------------

#[test]
fn heroku_headers_reach_the_dyno_and_the_access_line_has_herokus_shape() {
    let rig = Rig::start("headers", &[]);
    let before = now_ms();
    let reply = rig.get("/echo");
    let after = now_ms();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("via"), Some("1.1 vegur"), "{reply:?}");
    let echo = echoed(&reply);
    assert_eq!(echo.dyno, "web.1");
    assert_eq!(echo.request_line, "GET /echo HTTP/1.1");
    assert_eq!(echo.header("host"), Some(rig.host.as_str()));
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-port"), Some("8080"));
    assert_eq!(echo.header("via"), Some("1.1 vegur"));
    let start: u128 = echo
        .header("x-request-start")
        .expect("x-request-start")
        .parse()
        .expect("X-Request-Start in ms");
    assert!(
        before <= start && start <= after,
        "{before} <= {start} <= {after}"
    );
    let id = echo
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    assert!(is_uuid(&id), "{id}");
    // The access line.
    let line = rig.up.router_line_for(&id);
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=GET path=\"/echo\" host={} request_id=* fwd=\"127.0.0.1\" dyno=web.1 \
             connect=* service=* status=200 bytes={} protocol=http",
            rig.host,
            reply.body.len()
        )
    );
    assert_eq!(value(&line, "request_id"), id);
    millis(&line, "connect");
    millis(&line, "service");

    // A client's X-Forwarded-For is appended to; a valid X-Request-Id is kept.
    let good = "abcDEF0123456789+/=-xyz";
    let reply = rig.get_with(
        "/echo?q=1",
        &format!("X-Forwarded-For: 203.0.113.7\r\nX-Request-Id: {good}\r\n"),
    );
    let echo = echoed(&reply);
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(echo.header("x-request-id"), Some(good));
    let line = rig.up.router_line_for(good);
    assert!(
        line.starts_with("at=info method=GET path=\"/echo?q=1\" "),
        "{line}"
    );
    assert!(line.contains(" fwd=\"203.0.113.7, 127.0.0.1\" "), "{line}");
    // Kept at both ends of 20–200 characters of [A-Za-z0-9+/=-].
    for kept in ["a".repeat(20), "Z9+/=-".repeat(33) + "ab"] {
        let reply = rig.get_with("/echo", &format!("X-Request-Id: {kept}\r\n"));
        assert_eq!(echoed(&reply).header("x-request-id"), Some(kept.as_str()));
    }
    // Replaced by a UUID otherwise.
    for bad in [
        "short".to_string(),
        "a".repeat(19),
        "a".repeat(201),
        "abcdefghijklmnopqrstu_v".to_string(),
        "has space in it but long enough".to_string(),
    ] {
        let reply = rig.get_with("/echo", &format!("X-Request-Id: {bad}\r\n"));
        let got = echoed(&reply)
            .header("x-request-id")
            .unwrap_or_default()
            .to_string();
        assert!(is_uuid(&got), "{bad:?} → {got:?}");
    }
    rig.finish();
}

// ---- limits -----------------------------------------------------------------------------------

#[test]
fn limits_answer_400_and_417_and_100_continue_reaches_the_dyno() {
    let rig = Rig::start("limits", &[]);
    let long_value = format!("X-Long: {}\r\n", "a".repeat(8 * 1024));
    let long_path = format!("/{}", "p".repeat(8 * 1024));
    // With Host and Connection: 1001 headers, and 2000.
    let many: String = (0..999).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let very_many: String = (0..1998).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let long_name = format!("{}: 1\r\n", "n".repeat(1001));
    let mut wrong = Vec::new();
    for (what, path, extra, status) in [
        ("header line over 8 KiB", "/echo", long_value.as_str(), 400),
        ("request line over 8 KiB", long_path.as_str(), "", 400),
        ("1001 headers", "/echo", many.as_str(), 400),
        ("2000 headers", "/echo", very_many.as_str(), 400),
        (
            "header name over 1000 bytes",
            "/echo",
            long_name.as_str(),
            400,
        ),
        (
            "Expect other than 100-continue",
            "/echo",
            "Expect: foo\r\n",
            417,
        ),
    ] {
        // Every case is tried; the wrong answers are listed at the end.
        let reply = rig.get_with(path, extra);
        if reply.status != status {
            wrong.push(format!(
                "{what}: expected {status}, got {} {:?}",
                reply.status,
                reply.text()
            ));
        }
    }
    assert_eq!(
        rig.accepted("web.1"),
        0,
        "a refused request reached the dyno"
    );

    // Expect: 100-continue: the router says 100 Continue, then the body goes to the dyno.
    let mut stream = rig.up.connect_router();
    let body: Vec<u8> = (0..11u8).collect();
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        rig.host,
        body.len()
    )
    .unwrap();
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; interim.len()];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .read_exact(&mut got)
        .expect("100 Continue before the body is sent");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(interim)
    );
    stream.write_all(&body).unwrap();
    let reply =
        parse_reply(&read_until_closed(&mut stream, Duration::from_secs(10))).expect("a response");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "received 11 bytes pattern ok\n");
    assert_eq!(rig.accepted("web.1"), 1);

    // Right at the limits, requests go through.
    let at_line = format!("X-Long: {}\r\n", "a".repeat(8 * 1024 - "X-Long: ".len()));
    let at_count: String = (0..998).map(|i| format!("X-H{i}: 1\r\n")).collect(); // + Host, Connection
    let at_name = format!("{}: 1\r\n", "n".repeat(1000));
    // `GET <path> HTTP/1.1` of 8 KiB.
    let at_path = format!(
        "/echo?{}",
        "p".repeat(8 * 1024 - "GET /echo? HTTP/1.1".len())
    );
    for (what, path, extra) in [
        ("8 KiB header line", "/echo", at_line.as_str()),
        ("8 KiB request line", at_path.as_str(), ""),
        ("1000 headers", "/echo", at_count.as_str()),
        ("1000-byte header name", "/echo", at_name.as_str()),
    ] {
        let reply = rig.get_with(path, extra);
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
        assert_eq!(echoed(&reply).dyno, "web.1");
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    rig.finish();
}

// ---- H-codes ----------------------------------------------------------------------------------

#[test]
fn h12_when_the_dyno_sends_nothing_within_the_request_timeout() {
    let rig = Rig::start("h12", &["--request-timeout", "1s"]);
    let t0 = Instant::now();
    let reply = rig.get("/hang");
    let took = t0.elapsed();
    assert_application_error(&reply, 503);
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let line = rig.error_line("H12");
    assert_eq!(
        shape(&line, &MASKED),
        error_shape("H12", "Request timeout", "GET", "/hang", &rig.host, 503)
    );
    let total = millis(&line, "connect") + millis(&line, "service");
    assert!((950..5000).contains(&total), "{line}");
    rig.finish();
}

#[test]
fn h13_when_the_dyno_closes_or_resets_without_a_response() {
    let rig = Rig::start("h13", &[]);
    for path in ["/close", "/reset"] {
        let (reply, line) = rig.get_logged(path);
        assert_application_error(&reply, 503);
        assert_eq!(
            shape(&line, &MASKED),
            error_shape(
                "H13",
                "Connection closed without response",
                "GET",
                path,
                &rig.host,
                503
            ),
            "{path}"
        );
    }
    rig.finish();
}

#[test]
fn h18_when_the_dyno_closes_while_the_request_body_is_still_coming() {
    let rig = Rig::start("h18", &[]);
    let mut stream = rig.up.connect_router();
    write!(
        stream,
        "POST /close HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        rig.host
    )
    .unwrap();
    // The client keeps the connection open, 90 bytes short.
    let line = rig.error_line("H18");
    assert_eq!(
        shape(&line, &MASKED),
        error_shape(
            "H18",
            "Server Request Interrupted",
            "POST",
            "/close",
            &rig.host,
            503
        )
    );
    let raw = read_until_closed(&mut stream, Duration::from_secs(5));
    let reply = parse_reply(&raw)
        .unwrap_or_else(|| panic!("no response after H18: {:?}", String::from_utf8_lossy(&raw)));
    assert_application_error(&reply, 503);
    rig.finish();
}

#[test]
fn h10_while_the_only_web_dyno_is_crashed_then_served_after_its_restart() {
    let rig = Rig::start("h10", &["--restart-cooloffs", "2s"]);
    // The request that crashes the dyno gets no response from it.
    let (reply, line) = rig.get_logged("/crash");
    assert_application_error(&reply, 503);
    assert!(
        line.starts_with("at=error code=H13 desc=\"Connection closed without response\" method=GET path=\"/crash\" "),
        "{line}"
    );
    rig.up.wait_for_log(
        "heroku[web.1]: State changed from up to crashed",
        1,
        Duration::from_secs(10),
    );
    let (reply, line) = rig.get_logged("/");
    assert_application_error(&reply, 503);
    assert_eq!(
        shape(&line, &["request_id"]),
        format!(
            "at=error code=H10 desc=\"App crashed\" method=GET path=\"/\" host={} request_id=* \
             fwd=\"127.0.0.1\" dyno= connect= service= status=503 bytes= protocol=http",
            rig.host
        )
    );
    // The supervisor restarts it after the cool-off; then it serves again.
    rig.up.wait_for_log(
        "heroku[web.1]: State changed from starting to up",
        2,
        Duration::from_secs(20),
    );
    let reply = rig.get("/");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello from web.1\n");
    let logs = messages(&rig.up.logs());
    for expected in [
        "app[web.1]: crashing on request",
        "heroku[web.1]: Process exited with status 3",
    ] {
        assert!(
            logs.iter().any(|l| l == expected),
            "no {expected:?}:\n{}",
            rig.up.logs()
        );
    }
    rig.finish();
}

#[test]
fn h14_when_the_app_has_no_web_dyno_running() {
    let rig = Rig::start_with(
        "h14",
        "web: python3 app.py\nworker: sleep 1000\n",
        &["--formation", "web=0,worker=1"],
        &["worker.1"],
    );
    let (reply, line) = rig.get_logged("/");
    assert_application_error(&reply, 503);
    assert_eq!(
        shape(&line, &["request_id"]),
        format!(
            "at=error code=H14 desc=\"No web dynos running\" method=GET path=\"/\" host={} \
             request_id=* fwd=\"127.0.0.1\" dyno= connect= service= status=503 bytes= \
             protocol=http",
            rig.host
        )
    );
    rig.finish();
}

#[test]
fn h15_when_the_dyno_goes_silent_in_the_middle_of_a_body() {
    let rig = Rig::start("h15", &["--idle-timeout", "1s"]);
    let t0 = Instant::now();
    let raw = rig.up.exchange(
        format!(
            "GET /slow-body HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            rig.host
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    let took = t0.elapsed();
    // The head and the one byte came through; then the router cut the response.
    let reply = parse_reply(&raw).expect("a response head");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-length"), Some("100"));
    assert_eq!(reply.body, b"x", "{reply:?}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    let line = rig.error_line("H15");
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=error code=H15 desc=\"Idle connection\" method=GET path=\"/slow-body\" host={} \
             request_id=* fwd=\"127.0.0.1\" dyno=web.1 connect=* service=* status=503 bytes=1 \
             protocol=http",
            rig.host
        )
    );
    rig.finish();
}

#[test]
fn h25_when_the_dyno_sends_a_response_head_over_512_kib() {
    let rig = Rig::start("h25", &[]);
    let (reply, line) = rig.get_logged("/huge-headers");
    assert_application_error(&reply, 502);
    assert_eq!(
        shape(&line, &MASKED),
        error_shape(
            "H25",
            "HTTP Restriction",
            "GET",
            "/huge-headers",
            &rig.host,
            502
        )
    );
    rig.finish();
}

#[test]
fn h27_when_the_client_goes_away_before_the_response() {
    let rig = Rig::start("h27", &[]);
    let mut stream = rig.up.connect_router();
    write!(stream, "GET /hang HTTP/1.1\r\nHost: {}\r\n\r\n", rig.host).unwrap();
    rig.wait_accepted("web.1", 1);
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    let line = rig.error_line("H27");
    assert_eq!(
        shape(&line, &MASKED),
        error_shape(
            "H27",
            "Client Request Interrupted",
            "GET",
            "/hang",
            &rig.host,
            499
        )
    );
    rig.finish();
}

#[test]
fn h28_when_the_client_stalls_in_the_middle_of_its_upload() {
    let rig = Rig::start("h28", &["--idle-timeout", "1s"]);
    let mut stream = rig.up.connect_router();
    let t0 = Instant::now();
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        rig.host
    )
    .unwrap();
    let line = rig.error_line("H28");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "H28 after {took:?}"
    );
    assert_eq!(
        shape(&line, &MASKED),
        error_shape(
            "H28",
            "Client Connection Idle",
            "POST",
            "/upload",
            &rig.host,
            499
        )
    );
    // The idle client is let go: the router closes its connection.
    let t1 = Instant::now();
    let raw = read_until_closed(&mut stream, Duration::from_secs(10));
    assert!(
        t1.elapsed() < Duration::from_secs(5),
        "the idle client's connection stayed open"
    );
    if let Some(reply) = parse_reply(&raw) {
        assert!(reply.status >= 400, "{reply:?}");
    }
    rig.finish();
}

#[test]
fn slowloris_is_cut_off_before_any_dyno_sees_a_connection() {
    let rig = Rig::start("slowloris", &["--header-timeout", "1s"]);
    let mut stream = rig.up.connect_router();
    write!(
        stream,
        "GET /echo HTTP/1.1\r\nHost: {}\r\nX-Slow: a",
        rig.host
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    let mut answer = Vec::new();
    // Trickle one byte every 100 ms (a slowloris) until the router hangs up.
    let closed = loop {
        if t0.elapsed() > Duration::from_secs(8) {
            break false;
        }
        if stream.write_all(b"a").is_err() {
            break true;
        }
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
    };
    let took = t0.elapsed();
    assert!(closed, "the slow client was not cut off within 8 s");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "cut off after {took:?}"
    );
    if let Some(reply) = parse_reply(&answer) {
        assert!(reply.status >= 400, "{reply:?}");
    }
    // A normal request is served; it is the only connection the dyno ever saw.
    let reply = rig.get("/echo");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        rig.accepted("web.1"),
        1,
        "the dyno saw the slow client:\n{}",
        rig.up.logs()
    );
    rig.finish();
}

// ---- retries, H21 -----------------------------------------------------------------------------

#[test]
fn retries_land_on_the_listening_dyno_and_h21_when_none_listens() {
    let rig = Rig::start_with(
        "retries",
        "web: python3 app.py\n",
        &["--formation", "web=2"],
        &["web.1", "web.2"],
    );
    stop_listening(&rig, "web.1");
    for i in 0..20 {
        let reply = rig.get("/echo");
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        assert_eq!(echoed(&reply).dyno, "web.2", "request {i}");
        let line = rig.line_of_echo(&reply);
        assert_eq!(
            shape(&line, &MASKED),
            format!(
                "at=info method=GET path=\"/echo\" host={} request_id=* fwd=\"127.0.0.1\" \
                 dyno=web.2 connect=* service=* status=200 bytes={} protocol=http",
                rig.host,
                reply.body.len()
            )
        );
    }
    // Now neither listens: H21 after the retries.
    stop_listening(&rig, "web.2");
    let (reply, line) = rig.get_logged("/");
    assert_application_error(&reply, 503);
    assert_eq!(
        shape(&line, &["request_id", "dyno", "connect", "service"]),
        format!(
            "at=error code=H21 desc=\"Backend connection refused\" method=GET path=\"/\" host={} \
             request_id=* fwd=\"127.0.0.1\" dyno=* connect=* service=* status=503 bytes=0 \
             protocol=http",
            rig.host
        )
    );
    assert!(["web.1", "web.2"].contains(&value(&line, "dyno")), "{line}");
    // Both dynos kept running all along (not listening is not a crash).
    let changes: Vec<String> = messages(&rig.up.logs())
        .into_iter()
        .filter(|l| l.contains("State changed from up"))
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    rig.finish();
}

/// Asks `dyno` to close its listening socket (requests land at random: repeat until it got one).
fn stop_listening(rig: &Rig, dyno: &str) {
    let path = format!("/stop-listening?dyno={dyno}");
    for _ in 0..100 {
        let reply = rig.get(&path);
        if reply.text() == format!("stopped listening: {dyno}\n") {
            rig.up.wait_for_log(
                &format!("app[{dyno}]: stopped listening"),
                1,
                Duration::from_secs(5),
            );
            return;
        }
        assert_eq!(reply.status, 409, "{reply:?}");
    }
    panic!("{dyno} never got the request to stop listening");
}

// ---- WebSocket --------------------------------------------------------------------------------

#[test]
fn websocket_echo_through_a_dyno() {
    let rig = Rig::start("websocket", &[]);
    let mut stream = open_websocket(&rig);
    let long = "x".repeat(300);
    for (opcode, message) in [
        (0x1, "hello through a dyno".as_bytes()),
        (0x1, long.as_bytes()),
        (0x2, &[0u8, 1, 2, 255][..]),
    ] {
        stream.write_all(&ws_frame(opcode, message)).unwrap();
        let (got_opcode, payload) = read_ws_frame(&mut stream);
        assert_eq!(got_opcode, opcode);
        assert_eq!(payload, message);
    }
    // Close, echoed back as the close handshake; then the dyno hangs up, and so does the router.
    stream
        .write_all(&ws_frame(0x8, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(
        read_ws_frame(&mut stream),
        (0x8, 1000u16.to_be_bytes().to_vec())
    );
    assert!(read_until_closed(&mut stream, Duration::from_secs(5)).is_empty());
    drop(stream);
    let line = rig.wait_line_for_path("/ws");
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=GET path=\"/ws\" host={} request_id=* fwd=\"127.0.0.1\" dyno=web.1 \
             connect=* service=* status=101 bytes=0 protocol=http",
            rig.host
        )
    );
    rig.finish();
}

#[test]
fn ctrl_c_stops_dyno_up_while_a_client_holds_a_websocket_open() {
    let mut rig = Rig::start("ws-stop", &[]);
    let mut stream = open_websocket(&rig);
    stream.write_all(&ws_frame(0x1, b"still here")).unwrap();
    assert_eq!(read_ws_frame(&mut stream), (0x1, b"still here".to_vec()));
    // The client stays; Ctrl-C stops the dyno (SIGTERM, 2 s grace), which ends the WebSocket.
    let mut reader = stream.try_clone().unwrap();
    let client_sees_the_end = std::thread::spawn(move || {
        let rest = read_until_closed(&mut reader, Duration::from_secs(20));
        (Instant::now(), rest)
    });
    let t0 = Instant::now();
    let stopped = rig.up.interrupt_within(Duration::from_secs(8));
    let stop_took = t0.elapsed();
    // The client goes (so that `dyno up` can finish even if it hung on the WebSocket).
    let _ = stream.shutdown(std::net::Shutdown::Both);
    drop(stream);
    let (ended, rest) = client_sees_the_end.join().unwrap();
    let Some(status) = stopped else {
        let after = rig.up.interrupt_within(Duration::from_secs(30));
        panic!(
            "dyno up did not stop within 8 s of Ctrl-C while a client held a WebSocket open \
             (the client's side ended {:?} after Ctrl-C{}); once the client closed it: {}\n{}\n\
             --- stderr:\n{}",
            ended.duration_since(t0),
            if rest.is_empty() { "" } else { ", with data" },
            match after {
                Some(s) => format!("it stopped ({s})"),
                None => "it still did not stop".into(),
            },
            rig.up.logs(),
            rig.up.notes()
        );
    };
    assert!(status.success(), "{status:?}\n{}", rig.up.notes());
    assert!(
        ended.duration_since(t0) < Duration::from_secs(8),
        "the client's WebSocket stayed open {:?} after Ctrl-C",
        ended.duration_since(t0)
    );
    assert!(rest.is_empty(), "{rest:?}");
    eprintln!("dyno up stopped {stop_took:?} after Ctrl-C");
    rig.up
        .assert_nothing_left(dyno_manager::up::app_uid(&rig.name));
}

/// A WebSocket to the app's `/ws`, through the router: handshake checked.
fn open_websocket(rig: &Rig) -> TcpStream {
    let mut stream = rig.up.connect_router();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // RFC 6455's own example key and answer.
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        rig.host
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the 101 head");
        head.push(byte[0]);
    }
    let reply = parse_reply(&head).unwrap();
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(
        reply
            .header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    assert_eq!(
        reply.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    stream
}

impl Rig {
    fn wait_line_for_path(&self, path: &str) -> String {
        let needle = format!(" path=\"{path}\" ");
        self.up
            .wait_router_line(|l| l.contains(&needle), Duration::from_secs(10))
    }
}

/// A client frame: FIN, `opcode`, masked.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A server frame (unmasked): its opcode and payload.
fn read_ws_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut two = [0u8; 2];
    stream.read_exact(&mut two).expect("a frame from the dyno");
    assert_eq!(two[0] & 0x80, 0x80, "not a final frame");
    assert_eq!(two[1] & 0x80, 0, "the server must not mask");
    let len = match two[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => panic!("unexpected 64-bit length"),
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (two[0] & 0x0f, payload)
}

// ---- big bodies, bounded memory ---------------------------------------------------------------

const HUNDRED_MB: usize = 100 * MB;
/// The slow side of a big transfer waits this long per MiB: 100 MB take about half a second,
/// long enough for the memory samples, and a router that reads ahead of it shows.
const PACE: Duration = Duration::from_millis(4);
/// Growth of `dyno up`'s resident memory allowed while 100 MB stream through its router.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// The app's byte pattern (`offset % 251`), twice a whole number of periods long, so that any
/// chunk of up to half its length at any offset is one slice of it.
fn pattern() -> Vec<u8> {
    (0..2 * 251 * 4096).map(|i| (i % 251) as u8).collect()
}

/// Samples `dyno up`'s VmRSS every 50 ms while it runs; `finish` gives the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Also resets the kernel's peak-RSS mark of `pid` (`clear_refs` 5), so that `VmHWM` at the
    /// end is the peak during the transfer even between two samples.
    fn start(pid: u32) -> RssSampler {
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        assert!(hwm_reset, "cannot reset the peak RSS of {pid}");
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib_of(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The peak: the highest sample, or the kernel's mark if higher.
    fn finish(mut self, pid: u32) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed).max(hwm_kib_of(pid))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The peak resident memory of a process since its mark was last reset, in KiB.
fn hwm_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM for {pid}"))
}

/// Warms the router up with a small transfer, then gives `dyno up`'s pid and its RSS.
fn rss_baseline(rig: &Rig) -> (u32, u64) {
    let reply = rig.get(&format!("/download?bytes={}", 4 * MB));
    assert_eq!(reply.body.len(), 4 * MB);
    std::thread::sleep(Duration::from_millis(200));
    let pid = rig.up.child.as_ref().unwrap().id();
    (pid, rig.up.rss_kib())
}

#[test]
fn a_100_mb_download_streams_through_with_bounded_router_memory() {
    let rig = Rig::start("download", &[]);
    let (pid, baseline) = rss_baseline(&rig);
    let sampler = RssSampler::start(pid);
    let t0 = Instant::now();
    let mut stream = rig.up.connect_router();
    let path = format!("/download?bytes={HUNDRED_MB}");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        rig.host
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // The head, byte by byte; then the body in reads of up to 1 MiB, checked against the
    // pattern.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the response head");
        head.push(byte[0]);
    }
    let reply = parse_reply(&head).unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-length"),
        Some(HUNDRED_MB.to_string().as_str())
    );
    let expected = pattern();
    let mut buf = vec![0u8; MB];
    let mut received = 0usize;
    let mut paced = 0usize;
    loop {
        let n = stream.read(&mut buf).expect("the body");
        if n == 0 {
            break;
        }
        // A slow reader (4 ms per MiB), so that a router reading ahead would pile data up.
        if received + n >= paced + MB {
            paced += MB;
            std::thread::sleep(PACE);
        }
        let start = received % 251;
        assert!(
            buf[..n] == expected[start..start + n],
            "wrong bytes at offset {received}"
        );
        received += n;
    }
    let took = t0.elapsed();
    let peak = sampler.finish(pid);
    assert_eq!(received, HUNDRED_MB);
    assert!(
        peak.saturating_sub(baseline) < RSS_BOUND_KIB,
        "dyno up grew from {baseline} KiB to {peak} KiB during the download"
    );
    let line = rig.wait_line_for_path(&path);
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=GET path=\"{path}\" host={} request_id=* fwd=\"127.0.0.1\" \
             dyno=web.1 connect=* service=* status=200 bytes={HUNDRED_MB} protocol=http",
            rig.host
        )
    );
    eprintln!("100 MB download in {took:?}; dyno up RSS {baseline} KiB → peak {peak} KiB");
    rig.finish();
}

#[test]
fn a_100_mb_upload_streams_through_with_bounded_router_memory() {
    let rig = Rig::start("upload", &[]);
    let (pid, baseline) = rss_baseline(&rig);
    let sampler = RssSampler::start(pid);
    let t0 = Instant::now();
    let mut stream = rig.up.connect_router();
    write!(
        stream,
        "POST /upload?pace_ms={} HTTP/1.1\r\nHost: {}\r\nContent-Length: {HUNDRED_MB}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        PACE.as_millis(),
        rig.host
    )
    .unwrap();
    // Whole periods of the pattern per write, from one buffer.
    let data = pattern();
    let mut left = HUNDRED_MB;
    while left > 0 {
        let n = left.min(data.len());
        stream.write_all(&data[..n]).expect("the upload");
        left -= n;
    }
    let reply = parse_reply(&read_until_closed(&mut stream, Duration::from_secs(30)))
        .expect("a response to the upload");
    let took = t0.elapsed();
    let peak = sampler.finish(pid);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.text(),
        format!("received {HUNDRED_MB} bytes pattern ok\n")
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_BOUND_KIB,
        "dyno up grew from {baseline} KiB to {peak} KiB during the upload"
    );
    let path = format!("/upload?pace_ms={}", PACE.as_millis());
    let line = rig.wait_line_for_path(&path);
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=POST path=\"{path}\" host={} request_id=* fwd=\"127.0.0.1\" \
             dyno=web.1 connect=* service=* status=200 bytes={} protocol=http",
            rig.host,
            reply.body.len()
        )
    );
    eprintln!("100 MB upload in {took:?}; dyno up RSS {baseline} KiB → peak {peak} KiB");
    rig.finish();
}

// ---- HTTP/2 -----------------------------------------------------------------------------------

#[test]
fn an_http2_client_is_served_by_an_http1_dyno() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let rig = Rig::start("h2c", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = runtime.block_on(async {
        let stream = rig.up.connect_router_async();
        // h2c with prior knowledge.
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("HTTP/2 handshake with the router");
        tokio::spawn(conn);
        let request = hyper::Request::builder()
            .uri(format!("http://{}/echo", rig.host))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("a response within 10 s")
            .expect("a response");
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    });
    assert_eq!(status, 200);
    let reply = Reply {
        status,
        headers: Vec::new(),
        body,
    };
    let echo = echoed(&reply);
    assert_eq!(echo.dyno, "web.1");
    // The dyno speaks HTTP/1.1 and sees the usual Heroku headers.
    assert_eq!(echo.request_line, "GET /echo HTTP/1.1");
    assert_eq!(echo.header("host"), Some(rig.host.as_str()));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("via"), Some("1.1 vegur"));
    let line = rig.line_of_echo(&reply);
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=GET path=\"/echo\" host={} request_id=* fwd=\"127.0.0.1\" dyno=web.1 \
             connect=* service=* status=200 bytes={} protocol=http",
            rig.host,
            reply.body.len()
        )
    );
    drop(runtime);
    rig.finish();
}
