//! The heroku CLI's core commands, one after another against one `dyno serve` (privileged: run
//! as root): each either works or fails with the message that says why. Run with
//! `--no-capture` to get the table (command, exit code, first lines) for the note.
//! What each command does to the state is asserted in heroku_cli.rs, heroku_run.rs,
//! heroku_certs.rs and heroku_behaviour.rs; this file pins which ones work at all. Left out:
//! commands that ask hosts of Heroku's other than the API (`apps:errors` asks its metrics
//! host), which a test must not try to reach.

mod support;

use support::heroku::*;
use support::*;

/// What a command must do here.
enum Expect {
    /// Exit 0, its output containing this.
    Works(&'static str),
    /// A failure whose output says this (why it does not work here).
    Fails(&'static str),
}

use Expect::*;

#[test]
fn the_clis_core_commands_work_or_say_why_not() {
    require_root();
    let h = Heroku::start("heroku-table");
    let dir = repo().join("examples/hello");
    let renamed = "table-renamed";
    let steps: Vec<(Vec<&str>, Expect)> = vec![
        (vec!["auth:whoami"], Works("dyno@localhost")),
        (vec!["apps:create", APP], Works("done")),
        (vec!["apps"], Works(APP)),
        (vec!["apps:info", "-a", APP], Works("Web URL")),
        (
            vec!["apps:stacks", "-a", APP],
            Fails("No such endpoint: GET /stacks"),
        ),
        (vec!["config:set", "A=1", "-a", APP], Works("A: 1")),
        (vec!["config", "-a", APP], Works("A:")),
        (vec!["config:get", "A", "-a", APP], Works("1")),
        (vec!["config:unset", "A", "-a", APP], Works("Unsetting A")),
        (vec!["ps", "-a", APP], Works("web (Standard-1X)")),
        (
            vec!["ps:scale", "web=2", "-a", APP],
            Works("web at 2:Standard-1X"),
        ),
        (
            vec!["ps:type", "web=standard-2x", "-a", APP],
            Works("Standard-2X"),
        ),
        (
            vec!["ps:restart", "web.1", "-a", APP],
            Works("Restarting dyno web.1"),
        ),
        (
            vec!["ps:stop", "web.2", "-a", APP],
            Works("Stopping dyno web.2"),
        ),
        (vec!["ps:wait", "-a", APP], Works("")),
        // SSH into a dyno (Heroku's Exec) is not offered.
        (vec!["ps:exec", "-a", APP], Fails("dyno has no Heroku Exec")),
        (vec!["ps:scale", "web=1", "-a", APP], Works("web at 1")),
        (vec!["releases", "-a", APP], Works("Releases - Current")),
        (vec!["releases:info", "-a", APP], Works("=== Release v")),
        (
            vec!["releases:output", "-a", APP],
            Works("no release output"),
        ),
        (vec!["rollback", "v2", "-a", APP], Works("Rolling back")),
        (
            vec!["releases:retry", "-a", APP],
            Fails("release-phase command"),
        ),
        (vec!["logs", "-n", "3", "-a", APP], Works("+00:00")),
        (
            vec!["run", "--exit-code", "-a", APP, "--", "echo ran"],
            Works("ran"),
        ),
        (
            vec!["run:detached", "-a", APP, "--", "echo ran"],
            Works("done, run."),
        ),
        // Running inside a formation dyno (Fir's `run:inside`) is not offered.
        (
            vec!["run:inside", "web.1", "echo hi", "-a", APP],
            Fails("is not allowed"),
        ),
        (
            vec!["domains:add", "www.example.com", "-a", APP],
            Works("www.example.com"),
        ),
        (vec!["domains", "-a", APP], Works("www.example.com")),
        (
            vec!["domains:info", "www.example.com", "-a", APP],
            Works("custom"),
        ),
        (
            vec!["domains:wait", "www.example.com", "-a", APP],
            Works("done"),
        ),
        (
            vec!["domains:remove", "www.example.com", "-a", APP],
            Works("done"),
        ),
        (vec!["domains:clear", "-a", APP], Works("done")),
        (vec!["certs", "-a", APP], Works("no SSL certificates")),
        (vec!["features", "-a", APP], Works("preboot")),
        (
            vec!["features:info", "preboot", "-a", APP],
            Works("preboot"),
        ),
        (vec!["features:enable", "preboot", "-a", APP], Works("done")),
        (
            vec!["features:disable", "preboot", "-a", APP],
            Works("done"),
        ),
        (vec!["labs", "-a", APP], Works("log-runtime-metrics")),
        (
            vec!["labs:info", "log-runtime-metrics", "-a", APP],
            Works("Enabled"),
        ),
        (
            vec!["labs:enable", "log-runtime-metrics", "-a", APP],
            Works("done"),
        ),
        (
            vec!["labs:disable", "log-runtime-metrics", "-a", APP],
            Works("done"),
        ),
        (vec!["maintenance:on", "-a", APP], Works("done")),
        (vec!["maintenance", "-a", APP], Works("on")),
        (vec!["maintenance:off", "-a", APP], Works("done")),
        // A documentation address: nothing there, the drain retries in the lab namespace.
        (
            vec!["drains:add", "syslog://198.51.100.7:514", "-a", APP],
            Works("Successfully added"),
        ),
        (vec!["drains", "-a", APP], Works("198.51.100.7")),
        (
            vec!["drains:remove", "syslog://198.51.100.7:514", "-a", APP],
            Works("Successfully removed"),
        ),
        (vec!["addons", "-a", APP], Works("No add-ons")),
        (vec!["access", "-a", APP], Works("email")),
        (vec!["keys"], Fails("No such endpoint: GET /account/keys")),
        (vec!["webhooks", "-a", APP], Fails("No such endpoint")),
        (vec!["buildpacks", "-a", APP], Works("has no Buildpacks")),
        (vec!["regions"], Fails("No such endpoint: GET /regions")),
        (vec!["apps:rename", renamed, "-a", APP], Works(renamed)),
        (
            vec!["apps:destroy", renamed, "--confirm", renamed],
            Works("done"),
        ),
    ];
    let mut table = vec![
        "| command | exit | says |".to_string(),
        "|---|---|---|".to_string(),
    ];
    for (args, expect) in steps {
        let (code, out, err) = h.run_with(TOKEN, &args);
        if args[0] == "apps:create" {
            // The app has a release and a web dyno from here on.
            h.up.cli_succeeds(&["deploy", dir.to_str().unwrap(), "-a", APP]);
            h.wait_web_up(1);
        }
        let text = format!("{out}{err}");
        let said: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty() && !l.contains("terms of service") && !l.contains("deprecated")
            })
            .take(2)
            .collect();
        table.push(format!(
            "| `heroku {}` | {code} | {} |",
            args.join(" "),
            said.join(" / ").replace('|', "\\|")
        ));
        match expect {
            Works(what) => assert!(
                code == 0 && text.contains(what),
                "heroku {args:?} should work and say {what:?}: exit {code}\n{text}"
            ),
            Fails(why) => assert!(
                code != 0 && text.contains(why),
                "heroku {args:?} should fail saying {why:?}: exit {code}\n{text}"
            ),
        }
    }
    println!("{}", table.join("\n"));
}
