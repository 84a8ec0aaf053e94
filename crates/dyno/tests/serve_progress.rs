//! The long verbs' progress line on a terminal, through a real `dyno serve` (privileged: run as
//! root). The CLI runs under `script`, so its stderr is a terminal; the app's web dynos take a
//! second to boot, so that the line is redrawn a few times before the request returns.

mod support;

use std::process::Command;

use support::*;

const SERVE_ARGS: [&str; 4] = ["--boot-timeout", "20s", "--stop-grace", "5s"];

/// `dyno ARGS…` with a terminal as stdout and stderr: everything the terminal got.
fn on_terminal(up: &Up, args: &[&str]) -> String {
    let mut line = String::from(env!("CARGO_BIN_EXE_dyno"));
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    // -e: the command's exit status; -q: no "Script started" lines; the typescript is thrown
    // away, what the terminal showed comes on script's stdout.
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("DYNO_SOCKET", up.api_socket())
        .output()
        .expect("run script (util-linux)");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{line}:\n{shown:?}\n{}", up.notes());
    shown
}

#[test]
fn long_verbs_redraw_their_progress_on_a_terminal_and_stay_quiet_with_json() {
    let mut up = Up::serve("serve-progress", &SERVE_ARGS);
    up.wait_api();
    let app = app_dir("progress", "web: sleep 1; exec python3 web.py\n");
    std::fs::copy(repo().join("examples/hello/web.py"), app.join("web.py")).unwrap();
    assert!(up.cli(&["apps:create", "slow"]).status.success());

    let deployed = on_terminal(&up, &["deploy", &app.to_string_lossy(), "-a", "slow"]);
    // A deploy shows its build as it runs, then the release.
    assert!(
        deployed.contains("-----> Procfile app detected\r\n")
            && deployed.contains("       Released v2\r\n"),
        "{deployed:?}"
    );
    assert!(deployed.contains("done, v2 (Deploy "), "{deployed:?}");

    let scaled = on_terminal(&up, &["ps:scale", "web=3", "-a", "slow"]);
    assert!(
        scaled.contains("\r\x1b[2KScaling dynos... web 1/3 up, 2 starting"),
        "{scaled:?}"
    );
    // The counts give way to the result, on the same line.
    assert!(
        scaled.contains("\r\x1b[2KScaling dynos... done, now running web at 3:Standard-1X"),
        "{scaled:?}"
    );

    let set = on_terminal(&up, &["config:set", "GREETING=hi", "-a", "slow"]);
    assert!(
        set.contains("and restarting ⬢ slow... web 0/3 up"),
        "{set:?}"
    );
    assert!(
        set.contains("\r\x1b[2KSetting GREETING and restarting ⬢ slow... done, v3\r\n"),
        "{set:?}"
    );

    // --json: the terminal shows the JSON and nothing else.
    let json = on_terminal(&up, &["ps:scale", "web=1", "-a", "slow", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json.replace("\r\n", "\n"))
        .unwrap_or_else(|e| panic!("not pure JSON ({e}): {json:?}"));
    assert_eq!(value[0]["quantity"], 1, "{value}");

    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    let uid = up.app_uid("slow");
    up.assert_nothing_left(uid);
}
