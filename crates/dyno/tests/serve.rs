//! `dyno serve` and the Heroku-style CLI end to end (privileged: run as root). The daemon runs
//! in a lab host namespace with its data dir, API socket and dyno state in the test's scratch
//! space; the CLI talks to it over the socket, requests go through its router.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// `dyno --socket S ARGS…`: (success, stdout, stderr).
fn cli(up: &Up, args: &[&str]) -> (bool, String, String) {
    up.cli_result(args)
}

fn cli_ok(up: &Up, args: &[&str]) -> String {
    up.cli_succeeds(args).0
}

fn cli_err(up: &Up, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(up, args);
    assert!(!ok, "dyno {args:?} should fail:\n{stdout}");
    stderr
}

/// Dynos of the app in state `up`, by name.
fn up_dynos(up: &Up, app: &str) -> Vec<String> {
    let json = cli_ok(up, &["ps", "-a", app, "--json"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "up")
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

const SERVE_ARGS: [&str; 4] = ["--boot-timeout", "20s", "--stop-grace", "5s"];

/// A `dyno serve` with app `hello` created and examples/hello deployed (v2).
fn serve_hello(tag: &str) -> Up {
    let up = Up::serve(tag, &SERVE_ARGS);
    up.wait_api();
    cli_ok(&up, &["apps:create", "hello"]);
    let dir = repo().join("examples/hello");
    cli_ok(&up, &["deploy", &dir.to_string_lossy(), "-a", "hello"]);
    up
}

/// Waits until every dyno of the app runs `release` and is up.
fn wait_for_release(up: &Up, app: &str, release: u64) {
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let json = cli_ok(up, &["ps", "-a", app, "--json"]);
        let list: serde_json::Value = serde_json::from_str(&json).unwrap();
        let all = list.as_array().unwrap();
        let done = !all.is_empty()
            && all
                .iter()
                .all(|d| d["release"]["version"] == release && d["state"] == "up");
        done.then_some(())
            .ok_or(format!("not all on v{release}: {json}"))
    });
}

#[test]
fn create_deploy_scale_serve_log_and_destroy_an_app() {
    let mut up = Up::serve("serve", &SERVE_ARGS);
    up.wait_api();
    assert_eq!(cli_ok(&up, &["apps"]), "=== Apps\n");

    let created = cli_ok(&up, &["apps:create", "hello"]);
    assert!(created.contains("Creating ⬢ hello... done"), "{created}");
    assert!(
        created.contains("http://hello.localhost:8080/"),
        "{created}"
    );
    let taken = cli_err(&up, &["apps:create", "hello"]);
    assert!(taken.contains("hello"), "{taken}");
    let bad = cli_err(&up, &["apps:create", "Bad_Name"]);
    assert!(bad.contains("lowercase"), "{bad}");
    // Never deployed: the router says so (H81).
    let blank = up.get_via_router("hello.localhost", "/");
    assert!(blank.starts_with("HTTP/1.1 503"), "{blank}");

    let deployed = cli_ok(
        &up,
        &[
            "deploy",
            &repo().join("examples/hello").to_string_lossy(),
            "-a",
            "hello",
        ],
    );
    assert!(deployed.starts_with("done, v2 (Deploy "), "{deployed}");
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let answer = up.get_via_router("hello.localhost", "/");
        answer
            .contains("Hello from web.1")
            .then_some(())
            .ok_or(format!("not served yet: {answer}"))
    });

    let scaled = cli_ok(&up, &["ps:scale", "web=2", "-a", "hello"]);
    assert!(scaled.contains("web at 2:Standard-1X"), "{scaled}");
    assert!(scaled.contains("worker at 0:Standard-1X"), "{scaled}");
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let now = up_dynos(&up, "hello");
        (now == ["web.1", "web.2"])
            .then_some(())
            .ok_or(format!("up: {now:?}"))
    });
    let ps = cli_ok(&up, &["ps", "-a", "hello"]);
    // Heroku's lines: `web.1: up 2026/12/06 10:00:00 +0000 (~ 3s ago)`.
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(
        lines[0], "=== web (Standard-1X): python3 web.py (2)",
        "{ps}"
    );
    for (line, dyno) in lines[1..3].iter().zip(["web.1", "web.2"]) {
        assert!(line.starts_with(&format!("{dyno}: up 20")), "{ps}");
        assert!(
            line.ends_with(" ago)") && line.contains(" +0000 (~ "),
            "{ps}"
        );
    }
    // The router spreads requests over both.
    poll_until(Duration::from_secs(10), Duration::from_millis(1), || {
        let answer = up.get_via_router("hello.localhost", "/");
        answer
            .contains("Hello from web.2")
            .then_some(())
            .ok_or(answer)
    });
    let bad_scale = cli_err(&up, &["ps:scale", "clock=1", "-a", "hello"]);
    assert!(bad_scale.contains("clock"), "{bad_scale}");

    let logs = cli_ok(&up, &["logs", "-a", "hello", "-n", "1500"]);
    assert!(
        logs.contains("heroku[web.1]: State changed from starting to up"),
        "{logs}"
    );
    assert!(
        logs.contains("heroku[router]: at=info method=GET path=\"/\" host=hello.localhost"),
        "{logs}"
    );
    // --tail streams: a line made after it started arrives without asking again.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args([
            "logs", "-a", "hello", "--tail", "--source", "router", "-n", "1",
        ])
        .env("DYNO_SOCKET", up.api_socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tailed = collect(tail.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    up.get_via_router("hello.localhost", "/tailed");
    poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let lines = tailed.lock().unwrap().clone();
        lines
            .iter()
            .any(|l| l.contains("heroku[router]: at=info method=GET path=\"/tailed\""))
            .then_some(())
            .ok_or(format!("not tailed: {lines:?}"))
    });
    let _ = tail.kill();
    let _ = tail.wait();
    let router_only = cli_ok(&up, &["logs", "-a", "hello", "--source", "router"]);
    assert!(!router_only.is_empty());
    assert!(
        router_only.lines().all(|l| l.contains(" heroku[router]: ")),
        "{router_only}"
    );

    // Prometheus metrics on the API: dynos by state, the router's requests.
    let metrics = up.metrics();
    assert!(
        metrics.contains("dyno_dynos{app=\"hello\",state=\"up\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dyno_router_requests_total{app=\"hello\",status=\"200\",code=\"\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("dyno_router_service_seconds_count{app=\"hello\"} "),
        "{metrics}"
    );

    let releases = cli_ok(&up, &["releases", "-a", "hello"]);
    assert!(releases.contains("v2    Deploy "), "{releases}");
    assert!(releases.contains("v1    Initial release"), "{releases}");

    // A one-off dyno: attached, its output here, its status ours; never restarted.
    let ran = cli_ok(
        &up,
        &["run", "-a", "hello", "--", "echo one-off $DYNO; ls /app"],
    );
    assert!(ran.starts_with("one-off run.1\n"), "{ran}");
    assert!(ran.contains("Procfile"), "{ran}");
    // One-off dynos run under the seccomp filter like the formation's.
    let status = cli_ok(
        &up,
        &[
            "run",
            "-a",
            "hello",
            "--",
            "grep Seccomp: /proc/self/status",
        ],
    );
    assert_eq!(status.trim(), "Seccomp:\t2", "{status}");
    let exited = up.cli(&["run", "-a", "hello", "--", "echo out; exit 3"]);
    assert_eq!(exited.status.code(), Some(3), "{exited:?}");
    assert_eq!(String::from_utf8_lossy(&exited.stdout), "out\n");

    // Config vars: each change is a release, and the dynos roll to it.
    let set = cli_ok(&up, &["config:set", "GREETING=hi there", "-a", "hello"]);
    assert!(set.contains("GREETING: hi there"), "{set}");
    let bad_key = cli_err(&up, &["config:set", "1BAD=x", "-a", "hello"]);
    assert!(bad_key.contains("1BAD"), "{bad_key}");
    wait_for_release(&up, "hello", 3);
    assert_eq!(
        cli_ok(&up, &["config", "-a", "hello"]),
        "=== ⬢ hello Config Vars\nGREETING: hi there\n"
    );
    let rolled = cli_ok(&up, &["rollback", "v2", "-a", "hello"]);
    assert!(rolled.contains("done, v4 (Rollback to v2)"), "{rolled}");
    wait_for_release(&up, "hello", 4);
    assert_eq!(
        cli_ok(&up, &["config", "-a", "hello"]),
        "=== ⬢ hello Config Vars\n"
    );
    // Maintenance: the router answers H80 for the app.
    cli_ok(&up, &["maintenance:on", "-a", "hello"]);
    let page = up.get_via_router("hello.localhost", "/");
    assert!(
        page.starts_with("HTTP/1.1 503") && page.contains("Maintenance"),
        "{page}"
    );
    cli_ok(&up, &["maintenance:off", "-a", "hello"]);
    let back = up.get_via_router("hello.localhost", "/");
    assert!(back.starts_with("HTTP/1.1 200"), "{back}");
    // A restart brings the dyno back.
    cli_ok(&up, &["ps:restart", "web.1", "-a", "hello"]);
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let now = up_dynos(&up, "hello");
        (now == ["web.1", "web.2"])
            .then_some(())
            .ok_or(format!("up: {now:?}"))
    });
    let resized = cli_ok(&up, &["ps:type", "worker=Standard-2X", "-a", "hello"]);
    assert!(resized.contains("worker=Standard-2X"), "{resized}");
    let bad_size = cli_err(&up, &["ps:type", "web=Enormous", "-a", "hello"]);
    assert!(bad_size.contains("Enormous"), "{bad_size}");
    let no_dyno = cli_err(&up, &["ps:restart", "web.9", "-a", "hello"]);
    assert!(no_dyno.contains("web.9"), "{no_dyno}");

    // A syslog drain (a listener in the lab) gets the router's lines, octet-framed RFC 5424.
    let listener = up
        .lab
        .host
        .netns()
        .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("syslog://127.0.0.1:{port}");
    let added = cli_ok(&up, &["drains:add", &url, "-a", "hello"]);
    assert_eq!(added, format!("Successfully added drain {url}\n"));
    let bad_drain = cli_err(&up, &["drains:add", "ftp://x", "-a", "hello"]);
    assert!(
        bad_drain.contains("unsupported drain scheme \"ftp\""),
        "{bad_drain}"
    );
    let listed = cli_ok(&up, &["drains", "-a", "hello"]);
    assert!(listed.contains(&format!("{url} (d.")), "{listed}");
    up.get_via_router("hello.localhost", "/drained");
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !String::from_utf8_lossy(&got).contains("path=\"/drained\"") {
        let n = std::io::Read::read(&mut conn, &mut buf).expect("drain data within 10 s");
        assert!(n > 0, "drain closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let frame = text
        .split('\n')
        .find(|f| f.contains("path=\"/drained\""))
        .unwrap();
    assert!(
        frame.contains(" heroku router - at=info method=GET path=\"/drained\""),
        "{frame}"
    );
    let removed = cli_ok(&up, &["drains:remove", &url, "-a", "hello"]);
    assert_eq!(removed, format!("Successfully removed drain {url}\n"));
    assert_eq!(
        cli_ok(&up, &["drains", "-a", "hello"]),
        "=== ⬢ hello Drains\n"
    );

    let unconfirmed = cli_err(&up, &["apps:destroy", "hello"]);
    assert!(unconfirmed.contains("--confirm hello"), "{unconfirmed}");
    let destroyed = cli_ok(&up, &["apps:destroy", "hello", "--confirm", "hello"]);
    assert!(
        destroyed.contains("Destroying ⬢ hello... done"),
        "{destroyed}"
    );
    assert_eq!(cli_ok(&up, &["apps"]), "=== Apps\n");
    let gone = up.get_via_router("hello.localhost", "/");
    assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");
    let unknown = cli_err(&up, &["ps", "-a", "hello"]);
    assert!(unknown.contains("hello"), "{unknown}");

    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    let uid = up.app_uid("hello");
    up.assert_nothing_left(uid);
}

/// A running dyno's sandbox spec, found by its name in the daemon's state root (tests only:
/// the API does not show addresses).
fn dyno_spec(up: &Up, dyno: &str) -> (std::path::PathBuf, dyno_sandbox::spec::SandboxSpec) {
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        for entry in std::fs::read_dir(up.scratch.join("state")).map_err(|e| e.to_string())? {
            let dir = entry.map_err(|e| e.to_string())?.path();
            let Ok(bytes) = std::fs::read(dir.join("spec.json")) else {
                continue;
            };
            let spec: dyno_sandbox::spec::SandboxSpec = serde_json::from_slice(&bytes).unwrap();
            if spec.name == dyno {
                return Ok((dir, spec));
            }
        }
        Err(format!("no state dir of {dyno}"))
    })
}

#[test]
fn a_daemon_killed_with_sigkill_adopts_its_dynos_and_loses_no_exit_status() {
    let mut up = serve_hello("serve-kill");
    cli_ok(&up, &["ps:scale", "web=2", "worker=1", "-a", "hello"]);
    let all_up = |up: &Up| {
        poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let json = cli_ok(up, &["ps", "-a", "hello", "--json"]);
            let list: serde_json::Value = serde_json::from_str(&json).unwrap();
            let n = list
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["state"] == "up")
                .count();
            (n == 3).then_some(()).ok_or(format!("not 3 up: {json}"))
        })
    };
    all_up(&up);
    let uid = up.app_uid("hello");
    let (_, web) = dyno_spec(&up, "web.1");
    let (worker_dir, _) = dyno_spec(&up, "worker.1");
    // (A stopped dyno's link goes once the kernel has destroyed its namespace.)
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let links = up.lab.host.links_with_prefix("dy").unwrap();
        (links.len() == 3).then_some(()).ok_or(format!(
            "{links:?}\n{}",
            cli_ok(&up, &["logs", "-a", "hello"])
        ))
    });

    let logs_before = cli_ok(&up, &["logs", "-a", "hello", "-n", "1500"]);
    // kill -9: the daemon does nothing more. Its dynos run on and serve (straight to the dyno,
    // the router being part of the daemon), and what they print is kept for the next daemon.
    up.kill_and_restart_serve_later();
    let answer = up.get(web.ip, 5000, "/while-the-daemon-is-down");
    assert!(answer.contains("404"), "{answer}");
    // A dyno that ends meanwhile: its shim records how.
    let worker_init: i32 = std::fs::read_to_string(worker_dir.join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill with a pid the test read from the dyno's state dir.
    unsafe { libc::kill(worker_init, libc::SIGKILL) };
    poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        worker_dir
            .join("exit.json")
            .exists()
            .then_some(())
            .ok_or("the worker's exit is not recorded".to_string())
    });
    // The web dynos' PID 1s (by their state dirs: other tests run apps named hello too).
    let web_inits: Vec<(String, String)> = ["web.1", "web.2"]
        .iter()
        .map(|dyno| {
            let (dir, _) = dyno_spec(&up, dyno);
            let pid = std::fs::read_to_string(dir.join("init.pid")).unwrap();
            let pid = pid.trim().to_string();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            (pid, String::from_utf8_lossy(&cmdline).to_string())
        })
        .collect();
    up.restart_serve(&SERVE_ARGS);
    up.wait_api();
    assert!(
        up.notes().contains("2 dyno(s) adopted, 1 ended"),
        "{}",
        up.notes()
    );
    // The web dynos are the same processes, on the same links; the worker starts again.
    for (pid, cmdline) in &web_inits {
        let now = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert_eq!(
            &String::from_utf8_lossy(&now),
            cmdline,
            "web PID 1 {pid} did not survive the daemon's restart\n{logs_before}\n{}",
            up.notes()
        );
    }
    all_up(&up);
    let logs = cli_ok(&up, &["logs", "-a", "hello", "-n", "1500"]);
    assert!(
        logs.contains("heroku[worker.1]: Process exited with status 137"),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("app[web.1]:") && l.contains("/while-the-daemon-is-down")),
        "{logs}"
    );
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let answer = up.get_via_router("hello.localhost", "/");
        answer
            .contains("Hello from web.")
            .then_some(())
            .ok_or(answer)
    });
    // The ended worker's link goes once the kernel has destroyed its namespace.
    let links = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let links = up.lab.host.links_with_prefix("dy").unwrap();
        (links.len() == 3)
            .then_some(links.clone())
            .ok_or(format!("{links:?}"))
    });
    let web_net = web.netns.file_name().unwrap().to_string_lossy().to_string();
    let web_link = format!("dy{}", web_net.trim_start_matches("dyno-"));
    assert!(
        links.iter().any(|(_, name)| *name == web_link),
        "web.1 kept its link {web_link}: {links:?}"
    );

    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    up.assert_nothing_left(uid);
}

/// Heroku's release phase: `release` runs once on the new slug while its release is pending; a
/// failure leaves a failed release, the formation keeps serving the current one.
#[test]
fn the_release_phase_runs_before_the_release_and_a_failure_is_a_failed_release() {
    let up = Up::serve(
        "serve-release",
        &[SERVE_ARGS.as_slice(), &["--release-timeout", "4s"]].concat(),
    );
    up.wait_api();
    cli_ok(&up, &["apps:create", "hello"]);
    let dir = repo().join("examples/hello");
    cli_ok(&up, &["deploy", &dir.to_string_lossy(), "-a", "hello"]);
    wait_for_release(&up, "hello", 2);
    let web = "web: exec python3 -m http.server $PORT\n";
    let failing = app_dir(
        "release-fail",
        &format!("{web}release: echo migrating; exit 3\n"),
    );
    let refused = cli_err(&up, &["deploy", &failing.to_string_lossy(), "-a", "hello"]);
    assert!(
        refused.contains("the release phase of v3 failed") && refused.contains("status 3"),
        "{refused}"
    );
    let releases = cli_ok(&up, &["releases", "-a", "hello", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&releases).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{releases}");
    let v3 = list.iter().find(|r| r["version"] == 3).unwrap();
    assert_eq!(v3["status"], "failed", "{releases}");
    assert_eq!(v3["current"], false, "{releases}");
    let slugs = std::fs::read_dir(up.scratch.join("data/slugs/hello"))
        .unwrap()
        .count();
    assert_eq!(slugs, 2, "the failed release keeps its slug");
    let shown = cli_ok(&up, &["releases", "-a", "hello"]);
    let v3 = shown.lines().find(|l| l.starts_with("v3 ")).unwrap();
    assert!(v3.ends_with("(release command failed)"), "{shown}");
    assert!(up
        .get_via_router("hello.localhost", "/")
        .contains("Hello from web.1"));

    let working = app_dir(
        "release-ok",
        &format!(
            "{web}release: if [ -n \"$BREAK\" ]; then exit 4; fi; echo \"migrated for $GREETING\"; \
             grep Seccomp: /proc/self/status\n"
        ),
    );
    cli_ok(&up, &["config:set", "GREETING=Howdy", "-a", "hello"]);
    cli_ok(&up, &["deploy", &working.to_string_lossy(), "-a", "hello"]);
    wait_for_release(&up, "hello", 5);
    let logs = cli_ok(&up, &["logs", "-a", "hello", "-n", "1500"]);
    assert!(logs.contains("app[release.1]: migrating"), "{logs}");
    assert!(
        logs.contains("heroku[release.1]: Process exited with status 3"),
        "{logs}"
    );
    assert!(
        logs.contains("app[release.1]: migrated for Howdy"),
        "{logs}"
    );
    // The release phase runs under the dynos' seccomp filter too (mode 2: a filter).
    assert!(logs.contains("app[release.1]: Seccomp:\t2"), "{logs}");
    // It is no part of the formation.
    let ps = cli_ok(&up, &["ps", "-a", "hello", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert!(
        list.as_array().unwrap().iter().all(|d| d["type"] == "web"),
        "{ps}"
    );
    let scale = cli_err(&up, &["ps:scale", "release=1", "-a", "hello"]);
    assert!(scale.contains("release"), "{scale}");

    // A config change is a release too: its release phase runs with the new config, and one
    // that fails changes nothing but the list of releases.
    cli_ok(&up, &["config:set", "GREETING=Hola", "-a", "hello"]);
    wait_for_release(&up, "hello", 6);
    let logs = cli_ok(&up, &["logs", "-a", "hello", "-n", "1500"]);
    assert!(logs.contains("app[release.1]: migrated for Hola"), "{logs}");
    let refused = cli_err(&up, &["config:set", "BREAK=1", "-a", "hello"]);
    assert!(refused.contains("status 4"), "{refused}");
    let config = cli_ok(&up, &["config", "-a", "hello", "--json"]);
    assert!(!config.contains("BREAK"), "{config}");
    // A release phase that outlasts --release-timeout is stopped, and its release failed.
    let slow = app_dir("release-slow", &format!("{web}release: exec sleep 60\n"));
    let refused = cli_err(&up, &["deploy", &slow.to_string_lossy(), "-a", "hello"]);
    assert!(refused.contains("did not end within 4s"), "{refused}");
    // A rollback to a release without a release phase needs none.
    cli_ok(&up, &["rollback", "v2", "-a", "hello"]);
    wait_for_release(&up, "hello", 9);
}

/// One request to refuse: method, path, content type, body, the status wanted (0: any 4xx).
type Case = (&'static str, String, Option<&'static str>, Vec<u8>, u16);
/// Sends one request to the daemon's API.
type SendFn<'a> = dyn Fn(&str, &str, Option<&str>, Vec<u8>) -> dyno_api::RawResponse + 'a;

/// Every field of the API with bad values (and garbage bodies, unknown apps) through a real
/// daemon: always a 4xx with `{"id","message"}`, and nothing in its state changes.
#[test]
fn bad_input_through_the_api_is_a_4xx_and_changes_nothing() {
    let mut up = serve_hello("serve-bad");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = dyno_api::ApiClient::unix(up.api_socket());
    // `None`: the client itself refuses to send it (not a valid URI).
    let try_send = |method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let body = bytes::Bytes::from(body);
        // A daemon that refuses a body by its length (413) answers and closes before the
        // client has written it all; the client may then see the broken write instead of the
        // answer. That race is HTTP's, not the daemon's: ask again.
        for _ in 0..5 {
            match runtime.block_on(api.request(method.clone(), path, content_type, body.clone())) {
                Ok(resp) => return Some(resp),
                Err(dyno_api::ClientError::Protocol { status: 0, .. }) => return None,
                Err(dyno_api::ClientError::Transport { .. })
                    if body.len() > dyno_api::MAX_BODY_BYTES => {}
                Err(e) => panic!("{path}: {e}"),
            }
        }
        panic!("{path}: no answer in 5 tries");
    };
    let send = |method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>| {
        try_send(method, path, content_type, body).expect("a valid request")
    };
    let snapshot = |send: &SendFn| {
        [
            "/apps",
            "/apps/hello/releases",
            "/apps/hello/formation",
            "/apps/hello/config-vars",
            "/apps/hello/log-drains",
        ]
        .iter()
        .map(|p| String::from_utf8_lossy(&send("GET", p, None, Vec::new()).body).into_owned())
        .collect::<Vec<_>>()
    };
    let before = snapshot(&send);
    let json = Some("application/json");
    let mut cases: Vec<Case> = Vec::new();
    for name in [
        "",
        "ab",
        "Bad",
        "1abc",
        "a_b",
        "a b",
        "a".repeat(31).as_str(),
        "héllo",
        "../x",
        "a\"b",
    ] {
        let body = serde_json::json!({ "name": name }).to_string().into_bytes();
        cases.push(("POST", "/apps".into(), json, body, 422));
    }
    cases.push(("POST", "/apps".into(), json, b"{not json".to_vec(), 400));
    cases.push((
        "POST",
        "/apps".into(),
        Some("text/plain"),
        b"{\"name\":\"ok-app\"}".to_vec(),
        415,
    ));
    cases.push(("POST", "/apps".into(), json, vec![b' '; 2 << 20], 413));
    cases.push((
        "POST",
        "/apps".into(),
        json,
        b"{\"name\":\"hello\"}".to_vec(),
        422,
    ));
    for (body, status) in [
        (r#"{"updates":[{"type":"web","quantity":101}]}"#, 422),
        (r#"{"updates":[{"type":"web","quantity":-1}]}"#, 422),
        (r#"{"updates":[{"type":"clock","quantity":1}]}"#, 404),
        (r#"{"updates":[{"type":"web","size":"Huge"}]}"#, 422),
        (r#"{"updates":[{"type":"bad type","quantity":1}]}"#, 422),
        (r#"{"updates":[]}"#, 422),
        (r#"{"updates":[{"type":"web"}]}"#, 422),
    ] {
        cases.push((
            "PATCH",
            "/apps/hello/formation".into(),
            json,
            body.into(),
            status,
        ));
    }
    for (body, status) in [
        (r#"{"1BAD":"x"}"#, 422),
        (r#"{"PORT":"80"}"#, 422),
        (r#"{}"#, 422),
        (r#"{"NOT_SET":null}"#, 404),
    ] {
        cases.push((
            "PATCH",
            "/apps/hello/config-vars".into(),
            json,
            body.into(),
            status,
        ));
    }
    cases.push((
        "POST",
        "/apps/hello/releases".into(),
        json,
        br#"{"release":99}"#.to_vec(),
        404,
    ));
    cases.push((
        "POST",
        "/apps/hello/releases".into(),
        json,
        br#"{"dir":"relative/dir"}"#.to_vec(),
        422,
    ));
    cases.push((
        "POST",
        "/apps/hello/releases".into(),
        json,
        br#"{"dir":"/no/such/dir"}"#.to_vec(),
        422,
    ));
    cases.push((
        "POST",
        "/apps/hello/dynos".into(),
        json,
        br#"{"command":"  "}"#.to_vec(),
        422,
    ));
    // A NUL byte cannot be in a process's arguments: refused, and the daemon goes on.
    cases.push((
        "POST",
        "/apps/hello/dynos".into(),
        json,
        br#"{"command":"echo a\u0000b"}"#.to_vec(),
        422,
    ));
    cases.push((
        "POST",
        "/apps/hello/log-drains".into(),
        json,
        br#"{"url":"ftp://x:1"}"#.to_vec(),
        422,
    ));
    cases.push(("GET", "/apps/nope-app/dynos".into(), None, Vec::new(), 404));
    cases.push((
        "DELETE",
        "/apps/hello/dynos/web.9".into(),
        None,
        Vec::new(),
        404,
    ));
    cases.push((
        "POST",
        "/apps/hello/log-sessions".into(),
        json,
        br#"{"lines":0}"#.to_vec(),
        422,
    ));
    // Random bytes as app names in paths: a 4xx every time, never a 5xx.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..100 {
        let mut name = String::new();
        for _ in 0..(seed % 12) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let c = (seed % 94 + 33) as u8 as char;
            if c != '/' && c != '?' && c != '#' {
                name.push(c);
            }
        }
        cases.push((
            "GET",
            format!("/apps/{name}/formation"),
            None,
            Vec::new(),
            0,
        ));
    }
    for (method, path, content_type, body, want) in cases {
        if want == 0 {
            if let Some(resp) = try_send(method, &path, content_type, body) {
                assert!(
                    (400..500).contains(&resp.status) || resp.status == 200,
                    "{method} {path}: {}",
                    resp.status
                );
            }
            continue;
        }
        let resp = send(method, &path, content_type, body);
        let error: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        assert_eq!(
            resp.status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        assert!(
            error["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{method} {path}: {error}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| m.len() > 10),
            "{method} {path}: {error}"
        );
    }
    assert_eq!(
        snapshot(&send),
        before,
        "a refused request changed the state"
    );
    drop(runtime);
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    let uid = up.app_uid("hello");
    up.assert_nothing_left(uid);
}
