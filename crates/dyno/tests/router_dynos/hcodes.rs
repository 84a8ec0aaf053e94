//! Every H-code, triggered by the scripted app in a real dyno or by a scripted client; retries
//! across dynos.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::rig::*;
use crate::support::*;

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
        "{took:?}\n{}\n{reply:?}",
        {
            std::thread::sleep(Duration::from_millis(500));
            rig.up.logs()
        }
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
    // Its log line may still be on the way.
    rig.wait_accepted("web.1", 1);
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
