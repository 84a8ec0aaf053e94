//! Buildpacks fetched by URL (privileged: run as root): a git URL (with `#ref`) is cloned, a
//! `.tgz` URL downloaded and unpacked with the source archive's checks, both from an HTTP
//! server in the daemon's own lab namespace; several buildpacks run in order.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use dyno_net::ns;
use support::*;

const APP: &str = "fetched";

/// `python3 -m http.server` serving `dir` on the lab's loopback, stopped on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_dir(up: &Up, dir: &Path, port: u16) -> Served {
    let mut command = Command::new("python3");
    command
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ns::command_in(&mut command, up.lab.host.netns(), None).unwrap();
    let served = Served(command.spawn().unwrap());
    // Up once the port answers (from inside the lab).
    poll_until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        || {
            let mut probe = Command::new("python3");
            probe.args([
                "-c",
                &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 1)"),
            ]);
            ns::command_in(&mut probe, up.lab.host.netns(), None).unwrap();
            probe
                .status()
                .ok()
                .filter(|s| s.success())
                .map(|_| ())
                .ok_or_else(|| format!("nothing listens on {port}"))
        },
    );
    served
}

fn write_buildpack(dir: &Path, name: &str, line: &str) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    for (script, body) in [
        ("detect", format!("echo {name}")),
        ("compile", format!("echo '       {line}'")),
        ("release", "echo ---".to_string()),
    ] {
        let path = dir.join("bin").join(script);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
}

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@localhost")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@localhost")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
}

#[test]
fn git_and_tgz_buildpacks_are_fetched_and_run_in_order() {
    let up = Up::serve(
        "fetched-bps",
        &["--boot-timeout", "20s", "--stop-grace", "2s"],
    );
    up.wait_api();
    up.cli_succeeds(&["apps:create", APP]);
    let www = up.scratch.join("www");
    std::fs::create_dir_all(&www).unwrap();

    // A git repository served over git's dumb HTTP, on a branch of its own.
    let work = up.scratch.join("bp-git-work");
    write_buildpack(&work, "FromGit", "compiled by the git buildpack");
    run(&work, &["git", "init", "-q", "-b", "main"]);
    run(&work, &["git", "add", "-A"]);
    run(&work, &["git", "commit", "-q", "-m", "bp"]);
    run(&work, &["git", "branch", "v1"]);
    let bare = www.join("bp.git");
    run(
        &up.scratch,
        &[
            "git",
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    run(&bare, &["git", "update-server-info"]);

    // A tarball of one top directory (as GitHub's archives are).
    let tgz_src = up.scratch.join("bp-tgz/buildpack-1.0");
    write_buildpack(&tgz_src, "FromTgz", "compiled by the tgz buildpack");
    run(
        &up.scratch.join("bp-tgz"),
        &[
            "tar",
            "czf",
            www.join("bp.tgz").to_str().unwrap(),
            "buildpack-1.0",
        ],
    );

    let _server = serve_dir(&up, &www, 8731);
    let git_url = "http://127.0.0.1:8731/bp.git#v1";
    let tgz_url = "http://127.0.0.1:8731/bp.tgz";
    up.cli_succeeds(&["buildpacks:add", git_url, "-a", APP]);
    up.cli_succeeds(&["buildpacks:add", tgz_url, "-a", APP]);
    let hello = repo().join("examples/hello");
    let (_, out) = up.cli_succeeds(&["deploy", hello.to_str().unwrap(), "-a", APP]);
    let order = [
        "-----> Using buildpacks:",
        &format!("       1. {git_url}"),
        &format!("       2. {tgz_url}"),
        "-----> FromGit app detected",
        "       compiled by the git buildpack",
        "-----> FromTgz app detected",
        "       compiled by the tgz buildpack",
        "       Released v2",
    ];
    let mut rest = out.as_str();
    for line in order {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing or out of order in:\n{out}"));
        rest = &rest[at + line.len()..];
    }

    // A buildpack URL that answers 404 fails the build with the fetcher's words.
    up.cli_succeeds(&[
        "buildpacks:set",
        "http://127.0.0.1:8731/missing.tgz",
        "-a",
        APP,
    ]);
    let (ok, _, out) = up.cli_result(&["deploy", hello.to_str().unwrap(), "-a", APP]);
    assert!(!ok);
    assert!(
        out.contains("Could not fetch the buildpack http://127.0.0.1:8731/missing.tgz"),
        "{out}"
    );
}
