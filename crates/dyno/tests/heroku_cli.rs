//! Heroku's own CLI (`heroku`, from npm, pinned in `.ci/run`) against a real `dyno serve` over
//! its TCP API (privileged: run as root). The CLI runs in the daemon's lab namespace with
//! `HEROKU_HOST` pointing at the API; every call it makes stays on that loopback.
//!
//! Each command is asserted on what it prints and on what changed in the daemon (read back
//! through dyno's own CLI).

mod support;

use std::time::Duration;

use support::heroku::*;
use support::*;

#[test]
fn heroku_cli_core_commands_drive_dyno_serve() {
    require_root();
    let h = Heroku::start("heroku-cli");

    // The account and an app of it.
    contains(&h.ok(&["auth:whoami"]), "dyno@localhost");
    let created = h.ok(&["apps:create", APP]);
    contains(&created, &format!("Creating {APP}... done"));
    contains(&created, &format!("http://{APP}.localhost:8080/"));
    assert_eq!(h.app_names(), [APP]);
    let apps = h.ok(&["apps"]);
    contains(&apps, "=== dyno@localhost Apps");
    contains(&apps, APP);
    let info = h.ok(&["apps:info", "-a", APP]);
    contains(&info, &format!("=== {APP}"));
    contains(&info, "Owner:");
    contains(&info, "dyno@localhost");
    contains(&info, "Stack:");
    contains(&info, "dyno-1");
    contains(&info, "Region:");

    // Deploy with dyno's own verb (a build; `git push` is tests/git_push.rs), then Heroku's `ps`.
    let dir = repo().join("examples/hello");
    h.up.cli_succeeds(&["deploy", dir.to_str().unwrap(), "-a", APP]);
    h.wait_web_up(1);
    let ps = h.ok(&["ps", "-a", APP]);
    contains(&ps, "=== web (Standard-1X): python3 web.py (1)");
    contains(&ps, "web.1: up ");
    contains(&ps, "ago)");

    // Config vars: set, read, unset; each a release.
    let set = h.ok(&["config:set", "GREETING=hi there", "-a", APP]);
    contains(
        &set,
        "Setting GREETING and restarting cli-hello... done, v3",
    );
    contains(&set, "GREETING: hi there");
    assert_eq!(h.config()["GREETING"], "hi there");
    contains(&h.ok(&["config", "-a", APP]), "GREETING: hi there");
    assert_eq!(
        h.ok(&["config:get", "GREETING", "-a", APP]).trim(),
        "hi there"
    );
    contains(
        &h.ok(&["config:unset", "GREETING", "-a", APP]),
        "Unsetting GREETING and restarting cli-hello... done, v4",
    );
    assert!(h.config().get("GREETING").is_none());

    // Formation: absolute and relative, and the size as typed.
    contains(
        &h.ok(&["ps:scale", "web=2", "-a", APP]),
        "now running web at 2:Standard-1X",
    );
    assert_eq!(h.web_quantity(), 2);
    h.wait_web_up(2);
    contains(
        &h.ok(&["ps:scale", "web-1", "-a", APP]),
        "now running web at 1:Standard-1X",
    );
    assert_eq!(h.web_quantity(), 1);
    contains(&h.ok(&["ps:scale", "-a", APP]), "web=1:Standard-1X");
    contains(
        &h.ok(&["ps:type", "web=standard-2x", "-a", APP]),
        "Standard-2X",
    );
    let formation = h.formation();
    assert_eq!(formation[0].size, "Standard-2X", "{formation:?}");
    h.wait_web_up(1);

    // Restarts and stops go through (the formation starts a stopped dyno again).
    h.ok(&["ps:restart", "-a", APP]);
    h.ok(&["ps:restart", "web", "-a", APP]);
    h.ok(&["ps:stop", "web.1", "-a", APP]);
    h.wait_web_up(1);

    // Releases, one of them, and a rollback to v3 (GREETING set).
    let releases = h.ok(&["releases", "-a", APP]);
    contains(&releases, "=== cli-hello Releases - Current: v4");
    contains(&releases, "Set GREETING config vars");
    contains(&releases, "dyno@localhost");
    let v3 = h.ok(&["releases:info", "v3", "-a", APP]);
    contains(&v3, "=== Release v3");
    contains(&v3, "GREETING: hi there");
    contains(
        &h.ok(&["rollback", "v3", "-a", APP]),
        "Rolling back cli-hello to v3... done, v5",
    );
    assert_eq!(h.config()["GREETING"], "hi there");

    // A detached one-off with an extra variable: its output goes to the app's log.
    let detached = h.ok(&[
        "run:detached",
        "-e",
        "WHO=detached",
        "-a",
        APP,
        "--",
        "echo",
        "hello-$WHO",
    ]);
    contains(&detached, "done, run.1");
    poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let (logs, _) = h.up.cli_succeeds(&["logs", "-a", APP, "--ps", "run.1"]);
        logs.contains("app[run.1]: hello-detached")
            .then_some(())
            .ok_or(format!("no output of run.1 yet:\n{logs}"))
    });
    // `heroku logs`: Heroku's log sessions; filtered by dyno and source.
    let logs = h.ok(&["logs", "-a", APP, "-n", "200"]);
    contains(&logs, "app[run.1]: hello-detached");
    contains(&logs, "heroku[web.1]: State changed from starting to up");
    // What the platform did, as Heroku's `app[api]` lines.
    contains(
        &logs,
        "app[api]: Set GREETING config vars by user dyno@localhost",
    );
    contains(&logs, "app[api]: Release v3 created by user dyno@localhost");
    contains(
        &logs,
        "app[api]: Scaled to web@2:Standard-1X worker@0:Standard-1X by user dyno@localhost",
    );
    contains(&logs, "app[api]: Rollback to v3 by user dyno@localhost");
    let filtered = h.ok(&["logs", "-a", APP, "--dyno", "run.1", "--source", "app"]);
    contains(&filtered, "app[run.1]: hello-detached");
    assert!(!filtered.contains("heroku[web.1]"), "{filtered}");
    // `--tail` sees a line printed after it started.
    let mut tail = h.command(&["logs", "--tail", "-a", APP, "--source", "app"]);
    tail.stdout(std::process::Stdio::piped());
    let mut tail = tail.spawn().unwrap();
    let seen = collect(tail.stdout.take().unwrap());
    let tail_shows = |text: &str| {
        poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let lines = seen.lock().unwrap();
            lines
                .iter()
                .any(|l| l.contains(text))
                .then_some(())
                .ok_or(format!("the tail does not show {text:?}: {lines:?}"))
        })
    };
    tail_shows("hello-detached");
    h.ok(&["run:detached", "-a", APP, "--", "echo", "tail-marker"]);
    tail_shows("app[run.2]: tail-marker");
    let _ = tail.kill();
    let _ = tail.wait();

    // Attached (more in tests/heroku_run.rs).
    contains(
        &h.ok(&["run", "-a", APP, "--", "echo", "attached-$DYNO"]),
        "attached-run.3",
    );

    // Maintenance, with the app's own page (framed, as Heroku serves it; status 503).
    h.ok(&[
        "config:set",
        "MAINTENANCE_PAGE_URL=https://pages.cli-hello.test/maintenance.html",
        "-a",
        APP,
    ]);
    h.ok(&["maintenance:on", "-a", APP]);
    assert_eq!(h.ok(&["maintenance", "-a", APP]).trim(), "on");
    let page = h.up.get_via_router("cli-hello.localhost", "/");
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    contains(
        &page,
        "<iframe src=\"https://pages.cli-hello.test/maintenance.html\">",
    );
    h.ok(&["maintenance:off", "-a", APP]);
    assert_eq!(h.ok(&["maintenance", "-a", APP]).trim(), "off");

    // Labs, drains, domains, certificates and add-ons.
    contains(&h.ok(&["labs", "-a", APP]), "log-runtime-metrics");
    h.ok(&["labs:enable", "log-runtime-metrics", "-a", APP]);
    contains(
        &h.up.cli_succeeds(&["labs", "-a", APP]).0,
        "[+] log-runtime-metrics",
    );
    // A syslog drain on the namespace's loopback, where nothing listens.
    let drain = "syslog://127.0.0.1:9";
    contains(
        &h.ok(&["drains:add", drain, "-a", APP]),
        "Successfully added drain syslog://127.0.0.1:9",
    );
    contains(&h.ok(&["drains", "-a", APP]), drain);
    h.ok(&["drains:remove", drain, "-a", APP]);
    assert!(!h.ok(&["drains", "-a", APP]).contains(drain));
    contains(&h.ok(&["domains", "-a", APP]), "cli-hello.localhost");
    // A custom domain: the router sends its requests to the app; no other app can take it.
    let domain = "www.cli-hello.test";
    contains(&h.ok(&["domains:add", domain, "-a", APP]), domain);
    let domains = h.ok(&["domains", "-a", APP]);
    contains(&domains, "=== cli-hello Custom Domains");
    contains(&domains, domain);
    let answer = h.up.get_via_router(domain, "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    contains(&answer, "hi there");
    h.ok(&["apps:create", "other-app"]);
    let (_, other) = h.fails(&["domains:add", domain, "-a", "other-app"]);
    contains(&other, "another app");
    let (_, wildcard) = h.fails(&["domains:add", "*.cli-hello.test", "-a", APP]);
    contains(&wildcard, "wildcard");
    h.ok(&["domains:remove", domain, "-a", APP]);
    assert!(!h.ok(&["domains", "-a", APP]).contains(domain));
    let answer = h.up.get_via_router(domain, "/");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    h.ok(&["domains:add", domain, "-a", "other-app"]);
    h.ok(&["apps:destroy", "other-app", "--confirm", "other-app"]);
    contains(&h.ok(&["certs", "-a", APP]), "has no SSL certificates");
    h.ok(&["addons", "-a", APP]);

    // Errors come back in Heroku's shape, and change nothing.
    let (_, taken) = h.fails(&["apps:create", APP]);
    contains(&taken, "already taken");
    let (_, unknown) = h.fails(&["apps:info", "-a", "no-such-app"]);
    contains(&unknown, "not_found");
    let (_, bad_scale) = h.fails(&["ps:scale", "web-5", "-a", APP]);
    contains(&bad_scale, "fewer than none");
    assert_eq!(h.web_quantity(), 1);
    let (code, stdout, stderr) = h.run_with("wrong-token-0123456789", &["apps"]);
    assert_ne!(code, 0);
    contains(&format!("{stdout}{stderr}"), "invalid");

    contains(
        &h.ok(&["apps:destroy", APP, "--confirm", APP]),
        "Destroying cli-hello",
    );
    assert!(h.app_names().is_empty(), "the apps are gone");
}
