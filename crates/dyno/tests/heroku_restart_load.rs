//! `heroku ps:restart web` under steady load (privileged: run as root): while an app's web
//! dynos restart, requests that find none up wait for the new ones (Heroku's boot wait)
//! instead of getting `H14`. A client loop sends requests through the router in the lab's
//! namespace (loopback) the whole time; not one may get a 503. Scaling from 0 is the same.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::heroku::*;
use support::*;

/// Requests answered, by status class, and connections that broke.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    broken: AtomicU64,
}

/// Sends `GET /` to the app over and over (a new connection each time, as many clients do)
/// until `stop`.
fn load(up: &Up, tally: &Tally, stop: &AtomicBool) {
    let request = format!("GET / HTTP/1.1\r\nHost: {APP}.localhost\r\nConnection: close\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let raw = up.exchange(request.as_bytes(), Duration::from_secs(120));
        match parse_reply(&raw).map(|r| r.status) {
            Some(200) => tally.ok.fetch_add(1, Ordering::Relaxed),
            Some(503) => tally.unavailable.fetch_add(1, Ordering::Relaxed),
            Some(_) => tally.other.fetch_add(1, Ordering::Relaxed),
            None => tally.broken.fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[test]
fn ps_restart_under_steady_load_and_scaling_from_zero_give_no_503() {
    require_root();
    let h = Heroku::start("restart-load");
    h.ok(&["apps:create", APP]);
    let dir = repo().join("examples/hello");
    h.up.cli_succeeds(&["deploy", dir.to_str().unwrap(), "-a", APP]);
    h.ok(&["ps:scale", "web=2", "-a", APP]);
    h.wait_web_up(2);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = std::thread::scope(|s| {
        for _ in 0..4 {
            let (up, tally, stop) = (&h.up, tally.clone(), stop.clone());
            s.spawn(move || load(up, &tally, &stop));
        }
        // Some load before, the restart, then load until both new dynos are up and a bit on.
        poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let n = tally.ok.load(Ordering::Relaxed);
            (n >= 200)
                .then_some(())
                .ok_or(format!("{n} requests answered"))
        });
        let restarted = h.ok(&["ps:restart", "--process-type", "web", "-a", APP]);
        h.wait_web_up(2);
        let after = tally.ok.load(Ordering::Relaxed);
        poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let n = tally.ok.load(Ordering::Relaxed);
            (n >= after + 200)
                .then_some(())
                .ok_or(format!("{n} requests answered"))
        });
        stop.store(true, Ordering::Relaxed);
        restarted
    });
    contains(&restarted, "Restarting");
    contains(&restarted, "done");

    let (ok, unavailable, other, broken) = (
        tally.ok.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
        tally.broken.load(Ordering::Relaxed),
    );
    // The app's log (the last 1,500 lines) says which H-codes the router answered, if any.
    let (logs, _) = h.up.cli_succeeds(&["logs", "-a", APP, "-n", "1500"]);
    let codes: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("heroku[router]:") && l.contains(" code=H"))
        .collect();
    eprintln!(
        "ps:restart web under load: {} requests, {ok} answered 200, {unavailable} 503, {other} \
         other, {broken} broken; router H-code lines: {codes:?}",
        ok + unavailable + other + broken
    );
    assert_eq!(
        (unavailable, other, broken),
        (0, 0, 0),
        "every request of the restart is answered by a dyno; H-code lines: {codes:#?}"
    );
    assert!(ok >= 400, "the load ran through the restart: {ok}");

    // Scaled to 0 there is no web dyno at all: H14 at once. Scaled from 0, a request made
    // while the new dyno boots (this one sleeps 3 s first) waits for it and is answered by it.
    let slow = app_dir("restart-load-slow", "web: sleep 3; exec python3 web.py\n");
    std::fs::copy(dir.join("web.py"), slow.join("web.py")).unwrap();
    h.ok(&["apps:create", "slow-boot"]);
    h.up.cli_succeeds(&["deploy", slow.to_str().unwrap(), "-a", "slow-boot"]);
    h.ok(&["ps:scale", "web=0", "-a", "slow-boot"]);
    let none = h.up.get_via_router("slow-boot.localhost", "/");
    assert!(none.starts_with("HTTP/1.1 503 "), "{none}");
    // The scale returns once the dyno is up: the request goes out while it is starting.
    let answer = std::thread::scope(|s| {
        let scaling = s.spawn(|| h.ok(&["ps:scale", "web=1", "-a", "slow-boot"]));
        poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
            let ps = h.dyno_json(&["ps", "-a", "slow-boot", "--json"]);
            (ps[0]["state"] == "starting")
                .then_some(())
                .ok_or(format!("not starting yet: {ps}"))
        });
        let answer = h.up.get_via_router("slow-boot.localhost", "/");
        scaling.join().unwrap();
        answer
    });
    assert!(
        answer.starts_with("HTTP/1.1 200 "),
        "{answer}\n{}",
        h.up.notes()
    );
    let (logs, _) =
        h.up.cli_succeeds(&["logs", "-a", "slow-boot", "-n", "1500"]);
    let h14: Vec<&str> = logs.lines().filter(|l| l.contains("code=H")).collect();
    assert_eq!(
        h14.len(),
        1,
        "only the request made at web=0 (H14): {h14:#?}"
    );
    assert!(h14[0].contains("code=H14"), "{h14:#?}");
}
