//! Heroku's documented behaviour, driven with Heroku's own CLI against a real `dyno serve`
//! (privileged: run as root): a failed release phase leaves a `failed` release (pending while
//! it runs), `preboot` is an app feature that decides how a release replaces web dynos, and
//! `apps:rename` moves everything the name keys.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::heroku::*;
use support::*;

const WEB: &str = "web: exec python3 -m http.server $PORT\n";

/// `dyno deploy DIR -a APP`, started in the background.
fn deploy_in_background(h: &Heroku, dir: &TempApp) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["deploy", dir.to_str().unwrap(), "-a", APP])
        .env("DYNO_SOCKET", h.up.api_socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The app's releases as the API has them, newest first: (version, status, current).
fn releases(h: &Heroku, app: &str) -> Vec<(u64, String, bool)> {
    let (code, stdout, stderr) = h.run_with(TOKEN, &["releases", "-a", app, "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut out: Vec<(u64, String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
                r["current"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.0));
    out
}

#[test]
fn a_failed_release_phase_is_recorded_as_failed_and_a_running_one_as_pending() {
    require_root();
    let h = Heroku::start_with("heroku-release-status", &["--release-timeout", "30s"]);
    h.ok(&["apps:create", APP]);
    let good = app_dir(
        "status-good",
        &format!("{WEB}release: sleep 12; echo migrated\n"),
    );
    // While the release command runs, its release is listed as pending.
    let mut deploy = deploy_in_background(&h, &good);
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let list = releases(&h, APP);
        (list.first() == Some(&(2, "pending".to_string(), false)))
            .then_some(())
            .ok_or(format!("no pending v2: {list:?}"))
    });
    let shown = h.ok(&["releases", "-a", APP]);
    contains(&shown, "Current: v1");
    contains(&shown, "release command executing");
    let done = deploy.wait().unwrap();
    assert!(done.success(), "{done:?}");
    assert_eq!(releases(&h, APP)[0], (2, "succeeded".to_string(), true));
    h.wait_web_up(1);

    // A failing release command: the release stays, failed; v2 stays current and running.
    let bad = app_dir(
        "status-bad",
        &format!("{WEB}release: echo broken; exit 3\n"),
    );
    let out = h.up.cli(&["deploy", bad.to_str().unwrap(), "-a", APP]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("v3 failed") && err.contains("status 3"),
        "{err}"
    );
    assert_eq!(
        releases(&h, APP),
        [
            (3, "failed".to_string(), false),
            (2, "succeeded".to_string(), true),
            (1, "succeeded".to_string(), false),
        ]
    );
    let shown = h.ok(&["releases", "-a", APP]);
    contains(&shown, "Current: v2");
    let v3 = shown
        .lines()
        .find(|l| l.trim_start().starts_with("v3"))
        .unwrap_or_else(|| panic!("no v3 in:\n{shown}"));
    assert!(v3.contains("release command failed"), "{shown}");
    let info = h.ok(&["releases:info", "v3", "-a", APP]);
    contains(&info, "release command failed");
    let ps = h.dyno_json(&["ps", "-a", APP, "--json"]);
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .all(|d| d["release"]["version"] == 2 && d["state"] == "up"),
        "{ps}"
    );

    // A config change whose release command fails (here: times out) is failed too, and the
    // config vars stay as they were.
    h.up.cli_succeeds(&["deploy", good.to_str().unwrap(), "-a", APP]);
    assert_eq!(releases(&h, APP)[0], (4, "succeeded".to_string(), true));
    let slow = app_dir(
        "status-slow",
        &format!("{WEB}release: if [ -n \"$SLOW\" ]; then exec sleep 600; fi\n"),
    );
    h.up.cli_succeeds(&["deploy", slow.to_str().unwrap(), "-a", APP]);
    let (_, out) = h.fails(&["config:set", "SLOW=1", "-a", APP]);
    contains(&out, "did not end within 30s");
    assert_eq!(releases(&h, APP)[0], (6, "failed".to_string(), false));
    assert!(h.config().get("SLOW").is_none(), "{}", h.config());
    // The next release numbers on after the failed one; rollback to a failed one is refused.
    contains(
        &h.ok(&["config:set", "FAST=1", "-a", APP]),
        "Setting FAST and restarting cli-hello... done, v7",
    );
    let (_, out) = h.fails(&["releases:rollback", "v6", "-a", APP]);
    contains(&out, "failed");
    assert_eq!(releases(&h, APP)[0], (7, "succeeded".to_string(), true));
}

/// The positions of `heroku[web.1]` state changes in the log after the last `Set KEY config
/// vars` line: (the old dyno's `up to down`, the new one's `starting to up`).
fn web1_handover(h: &Heroku, key: &str) -> (usize, usize) {
    poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let logs = h.ok(&["logs", "-a", APP, "-n", "1500"]);
        let lines: Vec<&str> = logs.lines().collect();
        let set = format!("Set {key} config vars");
        let Some(from) = lines.iter().rposition(|l| l.contains(&set)) else {
            return Err(format!("no {set:?}:\n{logs}"));
        };
        let after = &lines[from..];
        let find = |what: &str| {
            after
                .iter()
                .position(|l| l.contains(&format!("heroku[web.1]: State changed from {what}")))
        };
        match (find("up to down"), find("starting to up")) {
            (Some(down), Some(up)) => Ok((down, up)),
            _ => Err(format!("no handover of web.1 after {set:?}:\n{logs}")),
        }
    })
}

#[test]
fn preboot_is_an_app_feature_off_by_default_and_decides_the_handover() {
    require_root();
    let h = Heroku::start("heroku-preboot");
    h.ok(&["apps:create", APP]);
    let features = h.ok(&["features", "-a", APP]);
    contains(&features, "App Features");
    contains(&features, APP);
    contains(&features, "[ ] preboot");
    // A general feature: not among the labs.
    let labs = h.ok(&["labs", "-a", APP]);
    assert!(!labs.contains("preboot"), "{labs}");
    contains(&labs, "log-runtime-metrics");

    let dir = app_dir("preboot", WEB);
    h.up.cli_succeeds(&["deploy", dir.to_str().unwrap(), "-a", APP]);
    h.wait_web_up(1);
    // Off: the old web.1 is down before the new one is up; requests made meanwhile wait for
    // the new one (the router's boot wait) rather than failing.
    let statuses = std::sync::Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let request =
                format!("GET / HTTP/1.1\r\nHost: {APP}.localhost\r\nConnection: close\r\n\r\n");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let raw = h.up.exchange(request.as_bytes(), Duration::from_secs(120));
                let status = parse_reply(&raw).map_or(0, |r| r.status);
                statuses.lock().unwrap().push(status);
            }
        });
        h.ok(&["config:set", "ROUND=1", "-a", APP]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let statuses = statuses.into_inner().unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request answered by a dyno: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    let (down, up) = web1_handover(&h, "ROUND");
    assert!(down < up, "without preboot the old web.1 stops first");

    contains(
        &h.ok(&["features:enable", "preboot", "-a", APP]),
        "Enabling preboot for",
    );
    contains(&h.ok(&["features", "-a", APP]), "[+] preboot");
    contains(
        &h.ok(&["features:info", "preboot", "-a", APP]),
        "Enabled:     true",
    );
    let (_, out) = h.fails(&["features:enable", "preboot", "-a", APP]);
    contains(&out, "already enabled");
    // On: the new web.1 is up before the old one stops.
    h.ok(&["config:set", "STEP=2", "-a", APP]);
    let (down, up) = web1_handover(&h, "STEP");
    assert!(up < down, "with preboot the new web.1 is up first");
    h.wait_web_up(1);

    h.ok(&["features:disable", "preboot", "-a", APP]);
    contains(&h.ok(&["features", "-a", APP]), "[ ] preboot");
    let (_, out) = h.fails(&["features:enable", "no-such-feature", "-a", APP]);
    contains(&out, "no-such-feature");
}

#[test]
fn apps_rename_moves_the_app_and_frees_its_old_name() {
    require_root();
    let h = Heroku::start("heroku-rename");
    let new = "cli-renamed";
    h.ok(&["apps:create", APP]);
    h.ok(&["apps:create", "cli-other"]);
    let dir = app_dir("rename", WEB);
    h.up.cli_succeeds(&["deploy", dir.to_str().unwrap(), "-a", APP]);
    h.wait_web_up(1);
    h.ok(&["config:set", "GREETING=hi", "-a", APP]);
    h.ok(&["domains:add", "www.example.com", "-a", APP]);
    h.ok(&["drains:add", "syslog://203.0.113.9:514", "-a", APP]);
    h.wait_web_up(1);
    let app_id = |name: &str| -> serde_json::Value {
        let info = h.ok(&["apps:info", "-a", name, "--json"]);
        let start = info.find('{').unwrap();
        let json: serde_json::Value = serde_json::from_str(&info[start..]).unwrap();
        json["app"]["id"].clone()
    };
    let before_id = app_id(APP);
    assert_eq!(
        h.up.get_with(&format!("{APP}.localhost"), "/", "").status,
        200
    );

    // Taken and invalid names: Heroku-shaped refusals, nothing changes.
    let rename = |args: &[&str]| {
        let out = h.command(args).current_dir(&h.home).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = rename(&["apps:rename", "cli-other", "-a", APP]);
    assert_ne!(code, 0, "{out}");
    contains(&out, "is already taken");
    let (code, out) = rename(&["apps:rename", "Not_A_Name", "-a", APP]);
    assert_ne!(code, 0, "{out}");
    let mut names = h.app_names();
    names.sort();
    assert_eq!(names, ["cli-hello", "cli-other"]);

    let (code, out) = rename(&["apps:rename", new, "-a", APP]);
    assert_eq!(code, 0, "{out}\n{}", h.up.notes());
    contains(&out, &format!("Renaming {APP} to {new}... done"));
    contains(&out, &format!("http://{new}.localhost:8080/"));
    let mut names = h.app_names();
    names.sort();
    assert_eq!(names, ["cli-other", new]);
    assert_eq!(app_id(new), before_id, "the app keeps its id");

    // Its releases, config, domains, dynos and log follow it.
    let list = releases(&h, new);
    assert_eq!(list[0], (3, "succeeded".to_string(), true), "{list:?}");
    contains(&h.ok(&["config", "-a", new]), "GREETING: hi");
    contains(&h.ok(&["domains", "-a", new]), "www.example.com");
    poll_until(Duration::from_secs(40), Duration::from_millis(200), || {
        let ps = h.dyno_json(&["ps", "-a", new, "--json"]);
        let up = ps
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "web.1" && d["state"] == "up");
        up.then_some(()).ok_or(format!("{ps}"))
    });
    assert_eq!(
        h.up.get_with(&format!("{new}.localhost"), "/", "").status,
        200
    );
    assert_eq!(h.up.get_with("www.example.com", "/", "").status, 200);
    let logs = h.ok(&["logs", "-a", new, "-n", "1500"]);
    contains(&logs, "Set GREETING config vars");

    // The drain went along, with its token.
    let drains = h.ok(&["drains", "-a", new]);
    contains(&drains, "syslog://203.0.113.9:514");

    // The old name is gone from the router and free for a new app.
    assert_eq!(
        h.up.get_with(&format!("{APP}.localhost"), "/", "").status,
        404
    );
    h.ok(&["apps:create", APP]);
    assert_eq!(releases(&h, APP).len(), 1);
    let logs = h.ok(&["logs", "-a", APP, "-n", "1500"]);
    assert!(!logs.contains("GREETING"), "{logs}");

    // dyno's own CLI renames through the same API; a taken name is refused there too.
    let (ok, _, err) = h.up.cli_result(&["apps:rename", APP, "-a", new]);
    assert!(!ok && err.contains("is already taken"), "{err}");
    let (_, err) = h.up.cli_succeeds(&["apps:rename", "cli-third", "-a", new]);
    assert!(
        err.contains(&format!("Renaming ⬢ {new} to cli-third... ")),
        "{err}"
    );
    let mut names = h.app_names();
    names.sort();
    assert_eq!(names, ["cli-hello", "cli-other", "cli-third"]);
    contains(&h.ok(&["config", "-a", "cli-third"]), "GREETING: hi");
}
