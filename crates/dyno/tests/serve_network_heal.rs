//! A dyno whose network is changed under it (privileged: run as root). `dyno serve` runs one
//! web dyno; then, in the daemon's host namespace, as an operator's tool might:
//!
//! - its `ip . $PORT` element is deleted from the firewall's `exposed` set: the daemon puts it
//!   back, says so in the app's log, and the app answers through the router again;
//! - its host route is deleted: the daemon says the network was lost and starts the dyno
//!   afresh on a new network (it is not left `up` while unreachable), and the app answers again.

mod support;

use std::process::Command;
use std::time::Duration;

use dyno_net::ns;
use support::*;

const SERVE_ARGS: [&str; 4] = ["--boot-timeout", "20s", "--stop-grace", "2s"];

/// `COMMAND ARGS…` in the daemon's (the lab host's) network namespace; must succeed.
fn in_host(up: &Up, program: &str, args: &[&str]) -> String {
    let mut command = Command::new(program);
    command.args(args);
    ns::command_in(&mut command, up.lab.host.netns(), None).unwrap();
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The address of the one dyno: its host route's destination.
fn dyno_address(up: &Up) -> String {
    poll_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || match dyno_routes(&up.lab).as_slice() {
            [one] => Ok(one.split_whitespace().next().unwrap().to_string()),
            routes => Err(format!("not one dyno route: {routes:#?}")),
        },
    )
}

fn serves(up: &Up) {
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let answer = up.get_via_router("mend.localhost", "/");
        answer
            .starts_with("HTTP/1.1 200")
            .then_some(())
            .ok_or(format!("not served: {answer}"))
    });
}

fn heroku_lines(up: &Up) -> Vec<String> {
    let out = up.cli(&["logs", "-a", "mend", "-n", "1500", "--source", "heroku"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_for_line(up: &Up, wanted: &str) -> Vec<String> {
    poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let lines = heroku_lines(up);
        lines
            .iter()
            .any(|l| l.contains(wanted))
            .then_some(lines.clone())
            .ok_or(format!("no line with {wanted:?}:\n{}", lines.join("\n")))
    })
}

#[test]
fn a_dyno_whose_network_is_changed_under_it_is_healed_or_restarted() {
    require_root();
    let up = Up::serve("heal", &SERVE_ARGS);
    up.wait_api();
    up.cli_succeeds(&["apps:create", "mend"]);
    let hello = repo().join("examples/hello");
    up.cli_succeeds(&["deploy", &hello.to_string_lossy(), "-a", "mend"]);
    serves(&up);
    let ip = dyno_address(&up);

    // The router's way in is closed: put back.
    let element = format!("{{ {ip} . 5000 }}");
    in_host(
        &up,
        "nft",
        &["delete", "element", "inet", "dyno", "exposed", &element],
    );
    wait_for_line(
        &up,
        &format!("heroku[web.1]: Network: the firewall no longer let the router reach {ip}:5000; opened it again"),
    );
    let set = in_host(&up, "nft", &["list", "set", "inet", "dyno", "exposed"]);
    assert!(set.contains(&format!("{ip} . 5000")), "{set}");
    serves(&up);

    // The route is gone: the dyno starts again on a new network, and is not `up` meanwhile.
    in_host(&up, "ip", &["route", "del", &format!("{ip}/32")]);
    let lines = wait_for_line(
        &up,
        &format!("heroku[web.1]: Network lost: the host's route to {ip} is gone"),
    );
    let lost = lines
        .iter()
        .position(|l| l.contains("Network lost"))
        .unwrap();
    poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let lines = heroku_lines(&up);
        let after: Vec<&String> = lines.iter().skip(lost).collect();
        let starting = after
            .iter()
            .position(|l| l.contains("State changed from up to starting"));
        let up_again = after
            .iter()
            .position(|l| l.contains("State changed from starting to up"));
        match (starting, up_again) {
            (Some(s), Some(u)) if s < u => Ok(()),
            _ => Err(format!("not restarted:\n{}", lines.join("\n"))),
        }
    });
    serves(&up);
    let new_ip = dyno_address(&up);
    let routes = in_host(&up, "ip", &["-4", "route", "show", &format!("{new_ip}/32")]);
    assert!(routes.contains(" dev dy"), "{routes}");
}
