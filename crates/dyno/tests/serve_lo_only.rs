//! The router reaches dynos on a host whose only addresses are `lo`'s (privileged: run as
//! root). Nothing on such a host can be the source of the router's connections to a dyno but
//! the platform's own address (169.254.1.1 on `lo`, the dyno routes' preferred source); before
//! it existed, every request ended in H19 after 5 s.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// `ip -4 -o addr` of the daemon's (the lab host's) network namespace.
fn host_addresses(up: &Up) -> String {
    let pid = up.child.as_ref().unwrap().id();
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-4", "-o", "addr"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_router_reaches_dynos_on_a_host_with_only_lo() {
    require_root();
    let up = Up::serve_lo_only("lo-only", &["--boot-timeout", "20s", "--stop-grace", "2s"]);
    up.wait_api();
    // The lab host has lo's 127.0.0.1 and nothing else of its own.
    let before = host_addresses(&up);
    let others: Vec<&str> = before
        .lines()
        .filter(|l| !(l.contains("127.0.0.1") || l.contains("169.254.1.1")))
        .collect();
    assert!(
        others.is_empty(),
        "the lab host has other addresses:\n{before}"
    );

    up.cli_succeeds(&["apps:create", "lonely"]);
    let hello = repo().join("examples/hello");
    up.cli_succeeds(&["deploy", &hello.to_string_lossy(), "-a", "lonely"]);
    let answer = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let answer = up.get_via_router("lonely.localhost", "/");
        answer
            .starts_with("HTTP/1.1 200")
            .then_some(answer.clone())
            .ok_or(format!("not served: {answer}"))
    });
    assert!(answer.contains("Hello from web.1"), "{answer}");
    // The platform's address is what made it: it is on lo.
    let now = host_addresses(&up);
    assert!(
        now.lines()
            .any(|l| l.contains(" lo ") && l.contains("169.254.1.1/32")),
        "{now}"
    );
}
