//! One app never waits for another (privileged: run as root). App `slow` deploys a release
//! whose web dyno never binds `$PORT` within the test, so its deploy waits in preboot (the old
//! web dynos serve until the new ones are up); meanwhile every operation on app `quick` finishes
//! and is in effect while `slow` still waits, and destroying `slow` ends its wait at once.
//!
//! "Finishes" is bounded by a limit far below the boot timeout (600 s): an operation that
//! waited for `slow`'s preboot would hit the limit, and the test says so.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Far more than any operation here needs, far less than `slow`'s boot timeout.
const LIMIT: Duration = Duration::from_secs(60);

/// `dyno ARGS…`, which must succeed within [`LIMIT`]; its stdout.
fn cli_within(up: &Up, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(args)
        .env("DYNO_SOCKET", up.api_socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dyno {args:?} did not finish within {LIMIT:?}: it waits for the other app\n\
                 --- daemon:\n{}",
                up.notes()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dyno {args:?} failed:\n{stdout}{}\n--- daemon:\n{}",
        String::from_utf8_lossy(&out.stderr),
        up.notes()
    );
    stdout
}

/// (name, state, release) of each dyno of the app.
fn dynos(up: &Up, app: &str) -> Vec<(String, String, u64)> {
    let json = up.cli_succeeds(&["ps", "-a", app, "--json"]).0;
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
                d["release"]["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `slow`'s new web dyno still boots: the operation just done did not wait for it.
fn assert_slow_still_boots(up: &Up, after: &str) {
    let slow = dynos(up, "slow");
    assert_eq!(
        slow,
        [("web.1".to_string(), "starting".to_string(), 2)],
        "after {after}, slow's web.1 should still be booting"
    );
}

fn starts_of(up: &Up, app: &str, dyno: &str) -> usize {
    let logs = up.cli_succeeds(&["logs", "-a", app]).0;
    let needle = format!("heroku[{dyno}]: Starting process");
    logs.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn operations_on_one_app_never_wait_for_another_apps_preboot() {
    require_root();
    let up = Up::serve(
        "apps-apart",
        &["--boot-timeout", "600s", "--stop-grace", "5s"],
    );
    up.wait_api();
    let hello = repo().join("examples/hello");
    cli_within(&up, &["apps:create", "quick"]);
    cli_within(&up, &["deploy", &hello.to_string_lossy(), "-a", "quick"]);
    assert_eq!(
        dynos(&up, "quick"),
        [("web.1".to_string(), "up".to_string(), 2)]
    );

    // `slow`: its web dyno sleeps instead of binding $PORT; its deploy waits in preboot.
    let slow_app = app_dir("apps-apart-slow", "web: exec sleep 3600\n");
    cli_within(&up, &["apps:create", "slow"]);
    let deploy = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["deploy", &slow_app.to_string_lossy(), "-a", "slow"])
        .env("DYNO_SOCKET", up.api_socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let slow = dynos(&up, "slow");
        (slow == [("web.1".to_string(), "starting".to_string(), 2)])
            .then_some(())
            .ok_or(format!("slow: {slow:?}"))
    });

    let scaled = cli_within(&up, &["ps:scale", "web=3", "-a", "quick"]);
    assert!(scaled.contains("web at 3:Standard-1X"), "{scaled}");
    let up_names = |dynos: Vec<(String, String, u64)>| -> Vec<String> {
        dynos
            .into_iter()
            .filter(|(_, state, _)| state == "up")
            .map(|(name, _, _)| name)
            .collect()
    };
    // The scale returns once its new web dynos are up (preboot).
    assert_eq!(up_names(dynos(&up, "quick")), ["web.1", "web.2", "web.3"]);
    assert_slow_still_boots(&up, "quick's ps:scale");

    cli_within(&up, &["config:set", "GREETING=apart", "-a", "quick"]);
    let quick = dynos(&up, "quick");
    assert!(
        quick.len() == 3 && quick.iter().all(|(_, s, r)| s == "up" && *r == 3),
        "quick should run v3 (the config change) on 3 web dynos: {quick:?}"
    );
    assert_slow_still_boots(&up, "quick's config:set");

    let before = starts_of(&up, "quick", "web.2");
    cli_within(&up, &["ps:restart", "-a", "quick"]);
    assert_eq!(
        starts_of(&up, "quick", "web.2"),
        before + 1,
        "web.2 restarted"
    );
    assert_eq!(up_names(dynos(&up, "quick")), ["web.1", "web.2", "web.3"]);
    assert_slow_still_boots(&up, "quick's ps:restart");

    cli_within(&up, &["apps:destroy", "quick", "--confirm", "quick"]);
    let apps = up.cli_succeeds(&["apps"]).0;
    assert!(!apps.contains("quick"), "{apps}");
    assert_slow_still_boots(&up, "quick's apps:destroy");

    // Destroying `slow` itself wins over its waiting deploy: both end at once.
    cli_within(&up, &["apps:destroy", "slow", "--confirm", "slow"]);
    let start = Instant::now();
    let mut deploy = deploy;
    while deploy.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < LIMIT,
            "slow's deploy still waits after slow was destroyed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let apps = up.cli_succeeds(&["apps"]).0;
    assert_eq!(apps, "=== Apps\n");
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let left = processes_of(up.app_uid("slow"));
        left.is_empty()
            .then_some(())
            .ok_or(format!("slow's processes left: {left:?}"))
    });
}
