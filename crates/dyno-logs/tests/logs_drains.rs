//! The log hub and its drains, over loopback only: the ring and filters, `--tail`, syslog over
//! TCP and TLS, HTTPS batches, and a drain that cannot keep up (L10).
//!
//! Times here are hang detectors, generous for a loaded 2-core VM; nothing asserts speed.

use std::time::{Duration, SystemTime};

use dyno_logs::drains::{self, DrainOptions};
use dyno_logs::logqueue::Item;
use dyno_logs::logring::{Filter, HubOptions, LogHub};
use dyno_logs::logs::{rfc3339_micros, rfc3339_seconds, LogLine, Source};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::timeout;

#[path = "logs_drains/support.rs"]
mod support;
use support::{acceptor, logplex_endpoint, new_pki, read_frames, take_frames, Frame, Pki};

const PATIENCE: Duration = Duration::from_secs(120);

fn at(secs: u64, source: Source, dyno: &str, message: &str) -> LogLine {
    LogLine {
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_800 + secs),
        source,
        dyno: dyno.into(),
        message: message.into(),
    }
}

fn messages(lines: &[LogLine]) -> Vec<String> {
    lines.iter().map(|l| l.message.clone()).collect()
}

// ---- ring, filters, tail ----

#[test]
fn ring_keeps_exactly_the_last_1500_lines_and_n_picks_the_newest() {
    let hub = LogHub::new();
    for i in 0..2000 {
        hub.append("a", at(i, Source::App, "web.1", &format!("line {i}")));
    }
    hub.append("b", at(0, Source::App, "web.1", "other app"));
    let all = hub.recent("a", &Filter::all(), 10_000);
    assert_eq!(all.len(), 1500);
    let expected: Vec<String> = (500..2000).map(|i| format!("line {i}")).collect();
    assert_eq!(messages(&all), expected);
    let last = hub.recent("a", &Filter::all(), 100);
    assert_eq!(messages(&last), expected[1400..]);
    assert!(hub.recent("a", &Filter::all(), 0).is_empty());
    assert_eq!(
        messages(&hub.recent("b", &Filter::all(), 100)),
        ["other app"]
    );
    assert!(hub.recent("nope", &Filter::all(), 100).is_empty());
}

#[test]
fn filters_by_dyno_process_type_and_source() {
    let hub = LogHub::new();
    let lines = [
        (Source::App, "web.1", "w1 a"),
        (Source::Heroku, "web.1", "State changed from starting to up"),
        (Source::App, "web.2", "w2 a"),
        (Source::App, "web.10", "w10 a"),
        (Source::App, "worker.1", "k1 a"),
        (Source::App, "webhook.1", "hook a"),
        (Source::Heroku, "router", "at=info method=GET path=\"/\""),
        (Source::App, "web.1", "w1 b"),
    ];
    for (i, (s, d, m)) in lines.iter().enumerate() {
        hub.append("a", at(i as u64, *s, d, m));
    }
    let show = |f: Filter, n| messages(&hub.recent("a", &f, n));
    assert_eq!(
        show(Filter::ps("web.1"), 100),
        ["w1 a", "State changed from starting to up", "w1 b"]
    );
    assert_eq!(
        show(Filter::ps("web"), 100),
        [
            "w1 a",
            "State changed from starting to up",
            "w2 a",
            "w10 a",
            "w1 b"
        ]
    );
    assert_eq!(show(Filter::ps("web"), 2), ["w10 a", "w1 b"]);
    assert_eq!(show(Filter::ps("worker"), 100), ["k1 a"]);
    assert_eq!(
        show(Filter::ps("router"), 100),
        ["at=info method=GET path=\"/\""]
    );
    assert_eq!(
        show(Filter::source(Source::Heroku), 100),
        [
            "State changed from starting to up",
            "at=info method=GET path=\"/\""
        ]
    );
    assert_eq!(
        show(Filter::source(Source::Router), 100),
        ["at=info method=GET path=\"/\""]
    );
    let app_web1 = Filter {
        ps: Some("web.1".into()),
        source: Some(Source::App),
    };
    assert_eq!(show(app_web1, 100), ["w1 a", "w1 b"]);
}

#[tokio::test]
async fn tail_gets_new_matching_lines_in_order_right_after_the_recent_ones() {
    let hub = LogHub::new();
    for i in 0..10 {
        hub.append("a", at(i, Source::App, "web.1", &format!("old {i}")));
    }
    let (recent, mut tail) = hub.tail("a", Filter::ps("web"), 3);
    assert_eq!(messages(&recent), ["old 7", "old 8", "old 9"]);
    let mut everything = hub.subscribe("a", Filter::all());
    let writer = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for i in 0..500u64 {
                let dyno = if i % 2 == 0 { "web.1" } else { "worker.1" };
                hub.append("a", at(100 + i, Source::App, dyno, &format!("new {i}")));
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < 250 {
        match timeout(PATIENCE, tail.next()).await.expect("tail line") {
            Some(Item::Line(l)) => got.push(l.message.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    let expected: Vec<String> = (0..500).step_by(2).map(|i| format!("new {i}")).collect();
    assert_eq!(got, expected);
    assert!(tail.try_next().is_none());
    let mut all = 0;
    while let Some(Item::Line(l)) = everything.try_next() {
        assert_eq!(l.message, format!("new {all}"));
        all += 1;
    }
    assert_eq!(all, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_that_never_reads_does_not_block_append_and_is_told_what_it_missed() {
    let hub = LogHub::new();
    let mut stalled = hub.subscribe("a", Filter::all());
    let appender = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..100_000u64 {
                hub.append("a", at(i, Source::App, "web.1", &format!("line {i}")));
            }
        })
    };
    timeout(PATIENCE, appender)
        .await
        .expect("100k appends finish although a subscriber never reads")
        .unwrap();
    // Bounded: the subscriber holds its 10,000 lines, the ring its 1,500.
    let held = hub.options().tail_lines as u64;
    assert_eq!(held, 10_000);
    assert_eq!(stalled.queued() as u64, held);
    assert_eq!(hub.recent("a", &Filter::all(), 100_000).len(), 1500);
    for i in 0..held {
        match stalled.try_next() {
            Some(Item::Line(l)) => assert_eq!(l.message, format!("line {i}")),
            other => panic!("line {i}: {other:?}"),
        }
    }
    assert_eq!(
        stalled.try_next(),
        Some(Item::Dropped {
            count: 100_000 - held,
            since: at(held, Source::App, "", "").time
        })
    );
    assert_eq!(stalled.try_next(), None);
    // Once it reads again it gets new lines.
    hub.append("a", at(0, Source::App, "web.1", "after"));
    assert!(matches!(stalled.try_next(), Some(Item::Line(l)) if l.message == "after"));
}

// ---- syslog ----

fn sample_lines() -> Vec<LogLine> {
    let mut first = at(0, Source::App, "web.1", "hello world");
    first.time += Duration::from_micros(123);
    vec![
        first,
        at(
            1,
            Source::Heroku,
            "web.1",
            "State changed from starting to up",
        ),
        at(
            2,
            Source::Heroku,
            "router",
            "at=info method=GET path=\"/\" status=200",
        ),
        at(3, Source::App, "worker.1", "ünïcödé ✓ and  two spaces"),
        at(4, Source::App, "web.2", ""),
    ]
}

fn check_sample(frames: &[Frame], hostname: &str) {
    let expect = |pri, secs: &str, app: &str, procid: &str, msg: &str| Frame {
        pri,
        version: "1".into(),
        timestamp: format!("2026-11-25T10:00:{secs}+00:00"),
        hostname: hostname.into(),
        app: app.into(),
        procid: procid.into(),
        msgid: "-".into(),
        msg: msg.into(),
    };
    assert_eq!(
        frames,
        [
            expect(190, "00.000123", "app", "web.1", "hello world"),
            expect(
                134,
                "01.000000",
                "heroku",
                "web.1",
                "State changed from starting to up"
            ),
            expect(
                158,
                "02.000000",
                "heroku",
                "router",
                "at=info method=GET path=\"/\" status=200"
            ),
            expect(
                190,
                "03.000000",
                "app",
                "worker.1",
                "ünïcödé ✓ and  two spaces"
            ),
            expect(190, "04.000000", "app", "web.2", ""),
        ]
    );
}

fn quick() -> DrainOptions {
    DrainOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        batch_interval: Duration::from_millis(200),
        ..DrainOptions::default()
    }
}

#[tokio::test]
async fn syslog_drain_sends_octet_counted_rfc5424_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("syslog://{}", listener.local_addr().unwrap());
    let hub = LogHub::new();
    let info = hub.add_drain("a", &url, quick()).unwrap();
    assert_eq!(info.url, url);
    for line in sample_lines() {
        hub.append("a", line);
    }
    hub.append("other", at(9, Source::App, "web.1", "not for this drain"));
    let (mut conn, _) = timeout(PATIENCE, listener.accept()).await.unwrap().unwrap();
    let frames = read_frames(&mut conn, 5).await;
    check_sample(&frames, &info.token);
    // Destroying the app stops its drain: the connection ends, nothing else was sent.
    hub.remove_app("a");
    let mut rest = Vec::new();
    let n = timeout(PATIENCE, conn.read_to_end(&mut rest))
        .await
        .expect("drain closes its connection")
        .unwrap();
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
    assert!(hub.drains("a").is_empty());
}

#[tokio::test]
async fn syslog_drain_reconnects_to_a_server_that_comes_up_later() {
    // Reserve a port, close it: the drain first finds nobody there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hub = LogHub::new();
    let info = hub
        .add_drain("a", &format!("syslog://127.0.0.1:{port}"), quick())
        .unwrap();
    for line in sample_lines() {
        hub.append("a", line);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (mut conn, _) = timeout(PATIENCE, listener.accept()).await.unwrap().unwrap();
    check_sample(&read_frames(&mut conn, 5).await, &info.token);
}

// ---- TLS ----

fn trusting(pki: &Pki) -> DrainOptions {
    let roots = drains::roots_from_pem(pki.ca_pem.as_bytes(), "test CA").unwrap();
    DrainOptions {
        tls: Some(drains::tls_config(roots)),
        ..quick()
    }
}

#[tokio::test]
async fn syslog_tls_drain_verifies_the_server_and_sends_frames() {
    let pki = new_pki();
    let stranger = new_pki();
    let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = LogHub::new();
    let info = hub
        .add_drain(
            "a",
            &format!("syslog+tls://{}", good.local_addr().unwrap()),
            trusting(&pki),
        )
        .unwrap();
    // A drain trusting another CA must refuse this server.
    hub.add_drain(
        "a",
        &format!(
            "syslog+tls://localhost:{}",
            bad.local_addr().unwrap().port()
        ),
        trusting(&stranger),
    )
    .unwrap();
    for line in sample_lines() {
        hub.append("a", line);
    }
    let (tcp, _) = timeout(PATIENCE, good.accept()).await.unwrap().unwrap();
    let mut tls = timeout(PATIENCE, acceptor(&pki, &[]).accept(tcp))
        .await
        .unwrap()
        .expect("handshake with a drain trusting our CA");
    check_sample(&read_frames(&mut tls, 5).await, &info.token);

    let (tcp, _) = timeout(PATIENCE, bad.accept()).await.unwrap().unwrap();
    let refused = timeout(PATIENCE, acceptor(&pki, &[]).accept(tcp))
        .await
        .unwrap();
    assert!(
        refused.is_err(),
        "a drain trusting another CA completed the handshake"
    );
}

// ---- HTTPS ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_drain_posts_logplex_batches_and_retries_a_5xx() {
    let pki = new_pki();
    let (port, mut posts) = logplex_endpoint(&pki).await;
    let hub = LogHub::new();
    let options = DrainOptions {
        batch_lines: 50,
        ..trusting(&pki)
    };
    let url = format!("https://user:p%40ss@127.0.0.1:{port}/logs?app=a");
    let info = hub.add_drain("a", &url, options).unwrap();
    for i in 0..120u64 {
        hub.append("a", at(i, Source::App, "web.1", &format!("line {i}")));
    }
    let mut received = Vec::new();
    let mut all = Vec::new();
    while received.len() < 120 {
        let post = timeout(PATIENCE, posts.recv())
            .await
            .expect("a POST")
            .unwrap();
        let h = |name: &str| {
            post.headers
                .get(name)
                .unwrap_or_else(|| panic!("no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(post.path, "/logs?app=a");
        assert_eq!(h("content-type"), "application/logplex-1");
        assert_eq!(h("logplex-drain-token"), info.token);
        assert_eq!(h("host"), format!("127.0.0.1:{port}"));
        assert_eq!(h("authorization"), "Basic dXNlcjpwQHNz", "user:p@ss");
        assert_eq!(h("content-length"), post.body.len().to_string());
        assert!(h("user-agent").starts_with("dyno-logplex/"));
        let frame_id = h("logplex-frame-id");
        assert!(frame_id.len() == 32 && frame_id.chars().all(|c| c.is_ascii_hexdigit()));
        let mut body = post.body.to_vec();
        let frames = take_frames(&mut body);
        assert!(body.is_empty(), "body is whole frames");
        assert_eq!(h("logplex-msg-count"), frames.len().to_string());
        assert!(!frames.is_empty() && frames.len() <= 50);
        for f in &frames {
            assert_eq!(
                (
                    f.pri,
                    f.hostname.as_str(),
                    f.app.as_str(),
                    f.procid.as_str()
                ),
                (190, "host", "app", "web.1")
            );
        }
        if post.answered == 200 {
            received.extend(frames.into_iter().map(|f| f.msg));
        }
        all.push((frame_id, post.body, post.answered));
    }
    let expected: Vec<String> = (0..120).map(|i| format!("line {i}")).collect();
    assert_eq!(received, expected, "every line once, in order");
    // The batch answered 503 came again, the same frame id and body.
    assert_eq!(all[0].2, 503);
    assert_eq!((&all[1].0, &all[1].1), (&all[0].0, &all[0].1));
    assert!(all[1..].iter().all(|p| p.2 == 200));
}

// ---- a drain that cannot keep up ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drain_never_blocks_append_and_reports_l10_to_itself_and_the_log() {
    const LINES: u64 = 100_000;
    // A small receive buffer, and nobody reads until the appends are done.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let url = format!("syslog://{}", listener.local_addr().unwrap());
    // A ring that keeps every line, so that an L10 logged early is still there to compare.
    let hub = LogHub::with_options(HubOptions {
        ring_lines: 2 * LINES as usize,
        ..HubOptions::default()
    });
    let mut l10_tail = hub.subscribe("a", Filter::ps("logplex"));
    let options = DrainOptions {
        write_timeout: Duration::from_secs(600),
        ..quick()
    };
    let info = hub.add_drain("a", &url, options).unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });

    let pad = "x".repeat(180);
    let appender = {
        let (hub, pad) = (hub.clone(), pad.clone());
        tokio::task::spawn_blocking(move || {
            for i in 0..LINES {
                hub.append(
                    "a",
                    at(i, Source::App, "web.1", &format!("line {i:06} {pad}")),
                );
            }
        })
    };
    timeout(PATIENCE, appender)
        .await
        .expect("100k appends finish although the drain does not read")
        .unwrap();
    assert_eq!(
        hub.recent("a", &Filter::all(), 1)[0].message,
        format!("line {:06} {pad}", LINES - 1)
    );

    // Now the drain reads: every line is either received, in order, or counted by an L10.
    let mut conn = timeout(PATIENCE, accept).await.unwrap().unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let (mut kept, mut dropped, mut next_index) = (0u64, 0u64, 0u64);
    let mut l10s = Vec::new();
    while kept + dropped < LINES {
        let n = timeout(PATIENCE, conn.read(&mut chunk))
            .await
            .expect("drain keeps sending")
            .unwrap();
        assert!(n > 0, "drain closed");
        buf.extend_from_slice(&chunk[..n]);
        for f in take_frames(&mut buf) {
            assert_eq!(f.hostname, info.token);
            if f.procid == "logplex" {
                assert_eq!((f.pri, f.app.as_str()), (172, "heroku"));
                let count: u64 = f
                    .msg
                    .strip_prefix("Error L10 (output buffer overflow): ")
                    .and_then(|m| m.split_once(" messages dropped since "))
                    .and_then(|(n, _)| n.parse().ok())
                    .unwrap_or_else(|| panic!("not an L10: {}", f.msg));
                // Since the first line of the gap: the one after the last line received.
                let since = rfc3339_seconds(at(next_index, Source::App, "", "").time);
                assert!(f.msg.ends_with(&format!(" since {since}.")), "{}", f.msg);
                dropped += count;
                next_index += count;
                l10s.push(f);
            } else {
                let index: u64 = f.msg[5..11].parse().unwrap();
                assert_eq!(
                    index, next_index,
                    "every line received or counted, in order"
                );
                next_index = index + 1;
                kept += 1;
            }
        }
    }
    eprintln!(
        "slow drain: {kept} received, {dropped} dropped in {} gap(s)",
        l10s.len()
    );
    assert_eq!(kept + dropped, LINES);
    assert!(
        !l10s.is_empty() && dropped > 0,
        "lines were dropped: {kept} kept"
    );

    // The app's log got the same L10 lines, with the same time.
    let logged = hub.recent("a", &Filter::ps("logplex"), 100);
    let logged: Vec<(String, String)> = logged
        .iter()
        .map(|l| {
            assert_eq!(l.source, Source::Heroku);
            (rfc3339_micros(l.time), l.message.clone())
        })
        .collect();
    let sent: Vec<(String, String)> = l10s
        .iter()
        .map(|f| (f.timestamp.clone(), f.msg.clone()))
        .collect();
    assert_eq!(logged, sent);
    let mut tailed = Vec::new();
    while let Some(Item::Line(l)) = l10_tail.try_next() {
        tailed.push((rfc3339_micros(l.time), l.message.clone()));
    }
    assert_eq!(tailed, sent, "tails see the L10 lines too");
    let shown = hub.recent("a", &Filter::ps("logplex"), 1)[0].to_string();
    assert!(
        shown.contains(" heroku[logplex]: Error L10 (output buffer overflow): "),
        "{shown}"
    );
}
