//! `dyno up`'s router flags, the Heroku headers a dyno sees, and the request limits.

use std::io::{Read, Write};
use std::time::Duration;

use crate::rig::*;
use crate::support::*;

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
    assert_plain_echo(&echo, &rig.host);
    assert_eq!(echo.header("x-forwarded-port"), Some("8080"));
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
    assert_echo_access_line(&line, &rig.host, &reply);
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
    rig.wait_accepted("web.1", 1);
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
